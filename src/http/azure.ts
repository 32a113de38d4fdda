/**
 * The Azure Functions adapter: the only module that imports @azure/functions. It turns an
 * HttpRequest into a PdpHttpRequest, routes it like the standalone host, and owns the one
 * PdpService of this worker (created on first use from app settings).
 */
import type { HttpRequest, HttpResponseInit, InvocationContext, Timer } from '@azure/functions';
import { loadConfigFromEnv } from '../config/load.js';
import { keyList, readSettings } from '../config/settings.js';
import { decisionLine } from '../decision-json.js';
import { PdpService } from '../runtime.js';
import { KeyRing } from './keys.js';
import { route } from './routes.js';
import type { PdpHttpRequest, PdpHttpResponse } from './types.js';

const MAX_BODY_BYTES = 256 * 1024;

interface Worker {
  readonly service: PdpService;
  readonly keys: KeyRing;
  readonly started: Promise<void>;
}

let worker: Worker | undefined;

/** The worker's service; configuration errors surface on first use with every problem listed. */
export function workerService(env: Record<string, string | undefined> = process.env): Worker {
  if (!worker) {
    const settings = readSettings(env);
    const service = new PdpService({
      config: loadConfigFromEnv(env),
      env,
      // Function output goes to the host's logs and Application Insights; one JSON line per decision.
      ...(settings.PDP_LOG_DECISIONS === 'true' ? { logger: (event, decision) => console.log(decisionLine(event, decision.principal)) } : {}),
      snapshotPollMs: settings.PDP_SNAPSHOT_POLL_SECONDS * 1000,
    });
    const started = service.start(settings.PDP_SNAPSHOT_STORE === 'memory' ? { refreshIntervalMs: settings.PDP_REFRESH_INTERVAL_SECONDS * 1000 } : {});
    started.catch(() => undefined);
    worker = { service, keys: new KeyRing(keyList(settings.PDP_API_KEYS), keyList(settings.PDP_ADMIN_KEYS)), started };
  }
  return worker;
}

/** For tests: forget the worker so the next call reads settings again. */
export function resetWorker(): void {
  worker?.service.stop();
  worker = undefined;
}

async function toPdpRequest(request: HttpRequest): Promise<PdpHttpRequest> {
  const url = new URL(request.url);
  let body: Buffer | undefined;
  let bodyTooLarge = false;
  const declared = Number(request.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > MAX_BODY_BYTES) bodyTooLarge = true;
  else if (request.body) {
    const bytes = Buffer.from(await request.arrayBuffer());
    if (bytes.length > MAX_BODY_BYTES) bodyTooLarge = true;
    else if (bytes.length > 0) body = bytes;
  }
  return {
    method: request.method,
    url: `${url.pathname}${url.search}`,
    header: (name) => {
      const v = request.headers.get(name);
      if (v === null) return [];
      // Fetch Headers join repeated values with ", ". A bearer token cannot contain a comma
      // (RFC 6750 b64token), so a comma in Authorization means more than one credential.
      return name.toLowerCase() === 'authorization' ? v.split(/,\s*/) : [v];
    },
    ...(body ? { body } : {}),
    ...(bodyTooLarge ? { bodyTooLarge } : {}),
  };
}

function toResponse(answer: PdpHttpResponse): HttpResponseInit {
  return { status: answer.status, headers: { ...answer.headers }, ...(answer.body !== undefined ? { body: answer.body } : {}) };
}

export async function handleHttp(request: HttpRequest, _context: InvocationContext, hostCheckedKey: boolean): Promise<HttpResponseInit> {
  const w = workerService();
  const req = await toPdpRequest(request);
  return toResponse(await route(w.service, req, { keys: w.keys, hostCheckedKey }));
}

export async function handleRefreshTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const w = workerService();
  await w.started.catch(() => undefined);
  const report = await w.service.refresh();
  context.log(JSON.stringify({ type: 'refresh', outcome: report.outcome, revision: report.revision, durationMs: report.durationMs, stored: report.stored, problems: report.problems }));
}
