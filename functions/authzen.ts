import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { handleHttp } from '../src/http/azure.js';

/**
 * The OpenID AuthZEN Authorization API 1.0 (docs/authzen.md): POST /api/access/v1/evaluation and
 * /api/access/v1/evaluations (function key, as /api/decide), and the public PDP metadata at
 * /api/.well-known/authzen-configuration.
 */
export async function authzen(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  return handleHttp(request, context, true);
}

export async function authzenMetadata(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  return handleHttp(request, context, false);
}

app.http('authzen-evaluation', { methods: ['POST'], authLevel: 'function', route: 'access/v1/evaluation', handler: authzen });
app.http('authzen-evaluations', { methods: ['POST'], authLevel: 'function', route: 'access/v1/evaluations', handler: authzen });
app.http('authzen-configuration', { methods: ['GET'], authLevel: 'anonymous', route: '.well-known/authzen-configuration', handler: authzenMetadata });
