import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { handleHttp } from '../src/http/azure.js';

/** POST /api/decide (JSON), any method with forward-auth headers, and /api/decide/{*path} (Envoy). */
export async function decide(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  return handleHttp(request, context, true);
}

const methods = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'] as const;
app.http('decide', { methods: [...methods], authLevel: 'function', route: 'decide', handler: decide });
app.http('decide-envoy', { methods: [...methods], authLevel: 'function', route: 'decide/{*path}', handler: decide });
