import { app, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { handleHttp, handleRefreshTimer, refreshSchedule } from '../src/http/azure.js';

/** POST /api/refresh (admin key): refresh now, e.g. after changing a group. */
export async function refreshNow(request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> {
  return handleHttp(request, context, false);
}

app.http('refresh', { methods: ['POST'], authLevel: 'anonymous', route: 'refresh', handler: refreshNow });
// The schedule is the app setting PDP_REFRESH_SCHEDULE (NCRONTAB; its default is in src/config/settings.ts).
app.timer('refreshTimer', { schedule: refreshSchedule(), runOnStartup: false, handler: handleRefreshTimer });
