import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { handleHttp } from '../src/http/azure.js';

/** GET /api/smart-configuration: SMART discovery for the FHIR base (public; 404 when not configured). */
export async function smartConfiguration(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  return handleHttp(request, context, false);
}

app.http('smart-configuration', { methods: ['GET', 'HEAD'], authLevel: 'anonymous', route: 'smart-configuration', handler: smartConfiguration });
