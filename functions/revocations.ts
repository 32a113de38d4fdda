import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { handleHttp } from '../src/http/azure.js';

/** GET and POST /api/revocations, DELETE /api/revocations/{id}: the deny-list; admin key required. */
export async function revocations(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  return handleHttp(request, context, false);
}

app.http('revocations', { methods: ['GET', 'POST'], authLevel: 'anonymous', route: 'revocations', handler: revocations });
app.http('revocation', { methods: ['DELETE'], authLevel: 'anonymous', route: 'revocations/{id}', handler: revocations });
