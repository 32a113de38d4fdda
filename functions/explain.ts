import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { handleHttp } from '../src/http/azure.js';

/** GET /api/explain (the page) and POST /api/explain (the trace as JSON); admin key required. */
export async function explain(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  return handleHttp(request, context, false);
}

app.http('explain', { methods: ['GET', 'POST'], authLevel: 'anonymous', route: 'explain', handler: explain });
