import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { handleHttp, handleRefreshTimer } from '../src/http/azure.js';

/** POST /api/refresh (admin key): refresh now, e.g. after changing a group. */
export async function refreshNow(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  return handleHttp(request, context, false);
}

app.http('refresh', { methods: ['POST'], authLevel: 'anonymous', route: 'refresh', handler: refreshNow });
// The schedule is an app setting (NCRONTAB); default every 5 minutes.
app.timer('refreshTimer', { schedule: process.env.PDP_REFRESH_SCHEDULE || '0 */5 * * * *', runOnStartup: false, handler: handleRefreshTimer });
