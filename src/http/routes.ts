/**
 * Routing for every host: /api/decide (three modes), /api/health, /api/smart-configuration
 * (public), /api/refresh (admin), /api/explain (admin), /api/revocations (admin). Keys are checked here, once, for both the
 * standalone host and Azure.
 */
import { REASONS } from '../core/reasons.js';
import type { SmartConfigurationResult } from '../fhir/smart-configuration.js';
import type { HealthReport } from '../state/health.js';
import type { PdpService } from '../app.js';
import { handleAuthzen, isAuthzenPath } from './authzen.js';
import { DECIDE_PREFIX, handleDecide, modeOf } from './decide-api.js';
import { explainHandler, explainPageResponse } from './explain-api.js';
import { handleRevocations, REVOCATIONS_PATH, type RevocationAdmin } from './revocations-api.js';
import type { KeyRefusal } from './key-refusals.js';
import { describePresentedKey, type KeyRing } from './keys.js';
import { json, type PdpHttpRequest, type PdpHttpResponse } from './types.js';

/** The Prometheus text exposition format, version 0.0.4 (what Prometheus scrapes by default). */
const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/**
 * The parts of the running service (src/app.ts's PdpService) that routing calls. Host tests hand
 * in a smaller one: only `pdp`, `health` and `refresh` are required.
 */
export interface RoutedService extends Pick<PdpService, 'pdp' | 'health'>, Partial<Pick<PdpService, 'clock'>> {
  refresh(): Promise<unknown>;
  /** Replaces POST /api/explain's answer (host tests); default: the explain API over `pdp`. */
  explain?(req: PdpHttpRequest): Promise<PdpHttpResponse>;
  /** SMART discovery for the FHIR base; undefined when not configured. */
  smartConfiguration?(): Promise<SmartConfigurationResult | undefined>;
  /** GET /api/metrics: the Prometheus text; absent when metrics are off. */
  metrics?(): Promise<string>;
  /** /api/revocations: the deny-list in the snapshot (src/app.ts); absent, the route is 404. */
  revocations?: RevocationAdmin['revocations'];
  addRevocations?: RevocationAdmin['addRevocations'];
  removeRevocation?: RevocationAdmin['removeRevocation'];
}

export interface RouteOptions {
  readonly keys: KeyRing;
  /**
   * Set by the Azure adapter: the Functions host has already checked a function key for
   * authLevel 'function' routes, so a missing PDP_API_KEYS match is not a reason to refuse.
   */
  readonly hostCheckedKey?: boolean;
  /**
   * Set by the standalone host when it has no keys, and so listens on loopback only: every caller
   * is on this machine, and health shows its details without a key.
   */
  readonly loopbackOnly?: boolean;
  /** Told of every /api/decide request refused for its key (src/http/key-refusals.ts logs it). */
  readonly onKeyRefused?: (refusal: KeyRefusal) => void;
  /** PDP_AUTHZEN_PDP_URL: the AuthZEN policy decision point identifier (src/http/authzen.ts). */
  readonly authzenPdpUrl?: string;
}

const UNAUTHORIZED = json(401, { error: 'unauthorized', message: 'A valid key is required (x-functions-key header or code parameter).' });
/**
 * A gateway mode asked without a recognised key: the gateway's credential for fhir-pdp is wrong
 * (often a key rotated on one side only). A 401 would reach the client as if its token were bad
 * (nginx auth_request and Traefik pass 401 on, Envoy passes every 4xx), so the answer is 503,
 * which every documented gateway configuration turns into 503 for the client: this is an outage,
 * not a denial. No X-Decision-Reason: nothing was decided.
 */
const GATEWAY_KEY_REFUSED = json(503, {
  error: 'gateway_key_refused',
  message: "The gateway's key for fhir-pdp is missing or not recognised; no decision was made.",
});
const NOT_FOUND = json(404, { error: 'not_found' });
/** Where the standalone host and Functions serve `[base]/.well-known/smart-configuration`; gateways route the client's path here. */
export const SMART_CONFIGURATION_PATH = '/api/smart-configuration';

/** What /api/health tells a caller without the admin key. */
export interface PublicHealth {
  readonly ready: boolean;
  readonly status: 'ok' | 'degraded' | 'unavailable';
  /**
   * When not ready: `issuer_keys`, without naming the authority or the error. Readiness is exactly
   * "every authority has usable keys" (the service's health), so that is the only part that can be missing.
   */
  readonly reason?: 'issuer_keys';
}

export function publicHealth(report: HealthReport): PublicHealth {
  const status = report.status === 'ok' || report.status === 'degraded' ? report.status : report.ready ? 'degraded' : 'unavailable';
  if (report.ready) return { ready: true, status };
  return { ready: false, status: 'unavailable', reason: 'issuer_keys' };
}

export function splitUrl(url: string): { path: string; query: string } {
  const q = url.indexOf('?');
  return q < 0 ? { path: url, query: '' } : { path: url.slice(0, q), query: url.slice(q) };
}

/**
 * The answer to a request: a value when it needed no waiting (a decision made from memory), else
 * a promise. Never throws: a failure is a rejected promise, as from an async function.
 */
export function route(service: RoutedService, req: PdpHttpRequest, options: RouteOptions): PdpHttpResponse | Promise<PdpHttpResponse> {
  try {
    const { path, query } = splitUrl(req.url);
    // /api/decide is the hot path: not through an async function (src/http/decide-api.ts).
    if (path === DECIDE_PREFIX || path.startsWith(`${DECIDE_PREFIX}/`)) return routeDecide(service, req, options, path, query);
    return routeOthers(service, req, options, path);
  } catch (err) {
    return Promise.reject(err);
  }
}

function routeDecide(service: RoutedService, req: PdpHttpRequest, options: RouteOptions, path: string, query: string): PdpHttpResponse | Promise<PdpHttpResponse> {
  // In Envoy mode the query string belongs to the original request; a key must come in a header.
  const fromQuery = path === DECIDE_PREFIX;
  const access = options.keys.accessOf(req, fromQuery);
  if (!options.keys.decideIsOpen && access === 'none' && !options.hostCheckedKey) {
    // JSON mode's caller reads the answer itself (API Management treats any non-200 as 503).
    const mode = modeOf(req, path);
    const answer = mode === 'json' ? UNAUTHORIZED : GATEWAY_KEY_REFUSED;
    const key = describePresentedKey(req, fromQuery);
    options.onKeyRefused?.({ mode, status: answer.status, ...(key ? { key } : {}), ...(req.remoteAddress ? { remoteAddress: req.remoteAddress } : {}) });
    return answer;
  }
  return handleDecide(service.pdp, req, path, query, { admin: access === 'admin' });
}

/** Every route but /api/decide: health, SMART discovery, metrics, AuthZEN and the admin APIs. */
async function routeOthers(service: RoutedService, req: PdpHttpRequest, options: RouteOptions, path: string): Promise<PdpHttpResponse> {
  if (path === '/api/health') {
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: 'method_not_allowed' }, { allow: 'GET' });
    const report = service.health();
    // Anonymous, for gateways' probes: ready or not and a coarse reason. Authority URLs, tenant ids,
    // error texts and counters describe the deployment, so only an admin key sees them.
    return json(report.ready ? 200 : 503, options.loopbackOnly || options.keys.accessOf(req) === 'admin' ? report : publicHealth(report));
  }
  if (path === SMART_CONFIGURATION_PATH) {
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: 'method_not_allowed' }, { allow: 'GET, HEAD' });
    const built = service.smartConfiguration ? await service.smartConfiguration() : undefined;
    if (built === undefined) return NOT_FOUND;
    // SMART App Launch: the document is public ("FHIR endpoints requiring authorization SHALL serve
    // a JSON document"), so no key is asked for; it may be cached briefly by clients and gateways.
    if (built.ok) return json(200, built.document, { 'cache-control': 'public, max-age=300' });
    // Never a document without a required field. The hint names the authority, which only an
    // admin (or a loopback-only host's caller) is shown, as for /api/health.
    const admin = options.loopbackOnly || options.keys.accessOf(req) === 'admin';
    return json(503, { error: built.reason, message: REASONS[built.reason].message, ...(admin ? { hint: built.hint } : {}) }, { 'retry-after': '10' });
  }
  if (path === '/api/metrics') {
    // Counts by authority and reason describe the deployment as health's details do: an admin key,
    // or the keyless host, which listens on loopback only.
    if (!service.metrics) return NOT_FOUND;
    if (!options.loopbackOnly && options.keys.accessOf(req) !== 'admin') return UNAUTHORIZED;
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: 'method_not_allowed' }, { allow: 'GET' });
    return { status: 200, headers: { 'content-type': PROMETHEUS_CONTENT_TYPE, 'cache-control': 'no-store' }, body: await service.metrics() };
  }
  if (path === '/api/refresh' || path === '/api/explain') {
    if (options.keys.accessOf(req) !== 'admin') return UNAUTHORIZED;
    if (path === '/api/refresh') {
      if (req.method !== 'POST') return json(405, { error: 'method_not_allowed' }, { allow: 'POST' });
      return json(200, await service.refresh());
    }
    if (req.method === 'GET') return explainPageResponse();
    if (req.method === 'POST') return service.explain ? service.explain(req) : explainHandler(service.pdp, service.clock)(req);
    return json(405, { error: 'method_not_allowed' }, { allow: 'GET, POST' });
  }
  if (path === REVOCATIONS_PATH || path.startsWith(`${REVOCATIONS_PATH}/`)) {
    if (options.keys.accessOf(req) !== 'admin') return UNAUTHORIZED;
    if (!service.revocations || !service.addRevocations || !service.removeRevocation) return NOT_FOUND;
    return handleRevocations(service as RevocationAdmin, req, path);
  }
  if (isAuthzenPath(path)) {
    // Guarded as /api/decide is; the metadata document is public (src/http/authzen.ts).
    const access = options.keys.accessOf(req);
    return await handleAuthzen(service.pdp, req, path, {
      authenticated: options.keys.decideIsOpen || access !== 'none' || options.hostCheckedKey === true,
      admin: access === 'admin',
      ...(options.authzenPdpUrl ? { pdpUrl: options.authzenPdpUrl } : {}),
      ...(service.pdp.config.fhirBaseUrl ? { fhirBaseUrl: service.pdp.config.fhirBaseUrl } : {}),
    });
  }
  return NOT_FOUND;
}
