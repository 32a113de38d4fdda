/**
 * The Azure Functions adapter: the only module that imports @azure/functions. It turns an
 * HttpRequest into a PdpHttpRequest, routes it like the standalone host, and owns the one
 * PdpService of this worker, created and warmed in the app's start-up hook (functions/lifecycle.ts).
 */
import type { HttpRequest, HttpResponseInit, InvocationContext, Timer } from '@azure/functions';
import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfigFromEnv } from '../config/load.js';
import { keyList, readSetting, readSettings } from '../config/settings.js';
import { decisionLine } from './answer.js';
import { buildApp, type PdpService } from '../app.js';
import { startTelemetry, type TelemetrySetup } from '../telemetry/start.js';
import { KeyRing } from './keys.js';
import { route } from './routes.js';
import type { PdpHttpRequest, PdpHttpResponse } from './types.js';

const MAX_BODY_BYTES = 256 * 1024;

/** The PdpService this worker process serves, with what the adapter reads from app settings once. */
interface FunctionsApp {
  readonly service: PdpService;
  readonly keys: KeyRing;
  readonly started: Promise<void>;
  readonly authzenPdpUrl?: string;
}

let functionsApp: FunctionsApp | undefined;
/** Azure Monitor, when APPLICATIONINSIGHTS_CONNECTION_STRING is set; started once per worker process. */
let telemetry: TelemetrySetup | undefined;

/**
 * The function app's root: the nearest directory above this module that holds host.json, which is
 * where the Functions host runs the app from. The worker's working directory is not that directory
 * in Azure, so a relative PDP_CONFIG_FILE is read from here.
 */
function functionAppRoot(from: string = dirname(fileURLToPath(import.meta.url))): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'host.json'))) return dir;
    if (dirname(dir) === dir) return undefined;
  }
}

/** The refresh timer's NCRONTAB schedule (app setting PDP_REFRESH_SCHEDULE). */
export function refreshSchedule(env: Record<string, string | undefined> = process.env): string {
  return readSetting(env, 'PDP_REFRESH_SCHEDULE');
}

/** App settings with a relative PDP_CONFIG_FILE made absolute against the function app's root. */
function withConfigFileResolved(env: Record<string, string | undefined>): Record<string, string | undefined> {
  const file = readSetting(env, 'PDP_CONFIG_FILE');
  if (!file || isAbsolute(file)) return env;
  const root = functionAppRoot();
  if (!root)
    throw new ConfigError([{ path: '$', message: `PDP_CONFIG_FILE "${file}" is relative and no host.json was found above ${dirname(fileURLToPath(import.meta.url))}; give an absolute path` }], 'app settings');
  return { ...env, PDP_CONFIG_FILE: resolve(root, file) };
}

/**
 * The worker's app, created on first use from app settings; start-up (startWorker) is that
 * first use. Configuration errors are thrown with every problem listed.
 */
export function functionsAppOf(env: Record<string, string | undefined> = process.env): FunctionsApp {
  if (!functionsApp) {
    const settings = readSettings(env);
    const service = buildApp(env, loadConfigFromEnv(withConfigFileResolved(env)), {
      ...(telemetry ? { telemetry } : {}),
      // Function output goes to the host's logs and Application Insights; one JSON line per decision.
      ...(settings.PDP_LOG_DECISIONS === 'true' ? { logger: (event, decision) => console.log(decisionLine(event, decision.principal)) } : {}),
    });
    const started = service.start(settings.PDP_SNAPSHOT_STORE === 'memory' ? { refreshIntervalMs: settings.PDP_REFRESH_INTERVAL_SECONDS * 1000 } : {});
    started.catch(() => undefined);
    functionsApp = {
      service,
      keys: new KeyRing(keyList(settings.PDP_API_KEYS), keyList(settings.PDP_ADMIN_KEYS)),
      started,
      ...(settings.PDP_AUTHZEN_PDP_URL ? { authzenPdpUrl: settings.PDP_AUTHZEN_PDP_URL } : {}),
    };
  }
  return functionsApp;
}

/**
 * Start-up (`app.hook.appStart`): reads settings and configuration, builds the Azure SDK edges and
 * loads the stored snapshot or refreshes one (issuer metadata and keys, groups) before the host
 * sends the first request, so that request needs no network. A misconfiguration rejects, and the
 * worker reports the start-up as failed with the error's message (every problem listed) instead
 * of every request failing. An authority that is down is not a misconfiguration: start-up completes,
 * health answers 503 and refreshes retry.
 */
export async function startWorker(env: Record<string, string | undefined> = process.env): Promise<void> {
  try {
    // Functions serves no /api/metrics: metrics and spans go to Application Insights, or nowhere.
    telemetry ??= await startTelemetry(env, { prometheus: false });
    await functionsAppOf(env).started;
  } catch (err) {
    // Nothing half-started stays behind: the next start (the worker's restart) begins afresh.
    resetFunctionsApp();
    throw err;
  }
}

/** Termination (`app.hook.appTerminate`): stops the refresh interval and the snapshot follower. */
export function stopWorker(): void {
  resetFunctionsApp();
}

/** For tests: forget the app so the next call reads settings again. */
export function resetFunctionsApp(): void {
  functionsApp?.service.stop();
  functionsApp = undefined;
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
      // The .NET host builds the URL from the Host header; a worker request without one still has it there.
      if (v === null) return name.toLowerCase() === 'host' ? [url.host] : [];
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
  const w = functionsAppOf();
  const req = await toPdpRequest(request);
  return toResponse(await route(w.service, req, { keys: w.keys, hostCheckedKey, ...(w.authzenPdpUrl ? { authzenPdpUrl: w.authzenPdpUrl } : {}) }));
}

export async function handleRefreshTimer(_timer: Timer, context: InvocationContext): Promise<void> {
  const w = functionsAppOf();
  await w.started.catch(() => undefined);
  const report = await w.service.refresh();
  context.log(JSON.stringify({ type: 'refresh', outcome: report.outcome, revision: report.revision, durationMs: report.durationMs, stored: report.stored, problems: report.problems }));
}
