import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { handleHttp } from '../src/http/azure.js';

/** GET /api/health: key freshness, snapshot age, last refresh; 503 until a decision can be made. */
export async function health(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  return handleHttp(request, context, false);
}

app.http('health', { methods: ['GET', 'HEAD'], authLevel: 'anonymous', route: 'health', handler: health });
