/**
 * The one way fhir-pdp talks to Microsoft Graph: `@microsoft/microsoft-graph-client` with its
 * default middleware chain (auth, retry, redirect, telemetry) between two handlers of ours: first
 * a circuit breaker (circuit-breaker.ts), last one that sends the request with a timeout, through
 * an injectable `fetch`, reads the answer's body within a size bound, and — when Graph is not at
 * its public origin — rewrites `https://graph.microsoft.com` to that origin.
 *
 * Why rewrite rather than set the client's `baseUrl`: the SDK attaches the bearer only to https
 * Graph hosts (`isGraphURL`) and pages only through the `@odata.nextLink`s Graph gives it, which
 * name `https://graph.microsoft.com`. Rewriting after the auth handler keeps both behaviours real
 * while the bytes go to a loopback fake (tests) or another origin.
 */
import {
  Client,
  GraphError,
  MiddlewareFactory,
  RetryHandlerOptions,
  type Context,
  type Middleware,
  type MiddlewareOptions,
} from '@microsoft/microsoft-graph-client';
import { TokenCredentialAuthenticationProvider } from '@microsoft/microsoft-graph-client/authProviders/azureTokenCredentials/index.js';
import {
  ClientCertificateCredential,
  ClientSecretCredential,
  DefaultAzureCredential,
  type TokenCredential,
} from '@azure/identity';
import { SpanKind, SpanStatusCode, type Tracer } from '@opentelemetry/api';
import { isLoopbackHost } from '../core/loopback.js';
import { CircuitBreaker, DEFAULT_BREAKER, GraphCircuitOpenError, type CircuitBreakerOptions } from './circuit-breaker.js';

export const PUBLIC_GRAPH_ORIGIN = 'https://graph.microsoft.com';

/** National-cloud Graph hosts the SDK itself treats as Graph (its GRAPH_URLS); no rewrite needed. */
const NATIONAL_GRAPH_HOSTS = new Set([
  'graph.microsoft.us',
  'dod-graph.microsoft.us',
  'graph.microsoft.de',
  'microsoftgraph.chinacloudapi.cn',
]);

const DEFAULT_TIMEOUT_MS = 10_000;
/**
 * Largest Graph answer read. The biggest fhir-pdp asks for is a page of 999 directory objects with
 * `$select=id` (about 80 KiB); a larger body is a faulty proxy or an answer gone wrong, and is
 * refused while it streams in rather than buffered and parsed on the event loop.
 */
export const DEFAULT_MAX_GRAPH_RESPONSE_BYTES = 1024 * 1024;

export interface GraphClientOptions {
  readonly credential: TokenCredential;
  /** Origin of Graph; default https://graph.microsoft.com. http is accepted for loopback only. */
  readonly baseUrl?: string;
  readonly fetchImpl?: typeof fetch;
  /** Upper bound on one HTTP exchange (a request signal may cut it shorter). Default 10 s. */
  readonly timeoutMs?: number;
  /** Largest response body read; a larger one fails the call. Default 1 MiB. */
  readonly maxResponseBytes?: number;
  /** The circuit breaker every call of this client goes through (default 5 failures, 30 s open). */
  readonly breaker?: Partial<CircuitBreakerOptions>;
  /** Told of every call's outcome (metrics), and the tracer of its span; src/telemetry. */
  readonly observer?: GraphCallObserver;
}

export interface GraphCallObserver {
  onCall(outcome: 'ok' | 'throttled' | 'failed' | 'short_circuited', retryAfterMs?: number): void;
  readonly tracer?: Tracer | undefined;
}

/** A Graph answer larger than the client's maxResponseBytes: refused, not parsed. */
export class GraphResponseTooLargeError extends Error {
  readonly code = 'graph_response_too_large' as const;
  constructor(message: string) {
    super(message);
    this.name = 'GraphResponseTooLargeError';
  }
}

const breakers = new WeakMap<Client, CircuitBreaker>();

/** The circuit breaker of a client made by createGraphClient (for health). */
export function circuitBreakerOf(client: Client): CircuitBreaker | undefined {
  return breakers.get(client);
}

export class GraphSettingsError extends Error {
  readonly code = 'graph_settings_invalid' as const;
  constructor(message: string) {
    super(message);
    this.name = 'GraphSettingsError';
  }
}

export function createGraphClient(options: GraphClientOptions): Client {
  const origin = graphOrigin(options.baseUrl ?? PUBLIC_GRAPH_ORIGIN);
  const host = new URL(origin).hostname;
  const national = origin.startsWith('https://') && NATIONAL_GRAPH_HOSTS.has(host);
  const rewriteTo = origin === PUBLIC_GRAPH_ORIGIN || national ? undefined : origin;
  // A national cloud issues tokens for its own Graph resource; a rewritten origin stands in for
  // the public one, so it gets a token for the public resource (the fake checks only the bearer).
  const scopes = [`${national ? origin : PUBLIC_GRAPH_ORIGIN}/.default`];
  const authProvider = new TokenCredentialAuthenticationProvider(options.credential, { scopes });
  const chain: Middleware[] = MiddlewareFactory.getDefaultMiddlewareChain(authProvider);
  chain[chain.length - 1] = new FetchHandler(
    options.fetchImpl ?? fetch,
    options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    options.maxResponseBytes ?? DEFAULT_MAX_GRAPH_RESPONSE_BYTES,
    rewriteTo,
  );
  // First in the chain: an open breaker refuses before a token is even asked for.
  const breaker = new CircuitBreaker({ ...DEFAULT_BREAKER, ...options.breaker });
  chain.unshift(new CircuitBreakerHandler(breaker, options.observer));
  // Right before the fetch: every HTTP exchange is counted, each retry of the SDK's included.
  if (options.observer) chain.splice(chain.length - 1, 0, new ObserverHandler(options.observer));
  const client = Client.initWithMiddleware({
    middleware: chain,
    defaultVersion: 'v1.0',
    ...(national ? { baseUrl: `${origin}/` } : {}),
  });
  breakers.set(client, breaker);
  return client;
}

/** Counts each exchange's outcome in the breaker; refuses at once while it is open. */
class CircuitBreakerHandler implements Middleware {
  #next: Middleware | undefined;

  constructor(
    private readonly breaker: CircuitBreaker,
    private readonly observer?: GraphCallObserver,
  ) {}

  setNext(next: Middleware): void {
    this.#next = next;
  }

  async execute(context: Context): Promise<void> {
    try {
      this.breaker.admit();
    } catch (error) {
      if (error instanceof GraphCircuitOpenError) this.observer?.onCall('short_circuited');
      throw error;
    }
    try {
      await this.#next!.execute(context);
    } catch (error) {
      this.breaker.failed();
      throw error;
    }
    const status = context.response?.status ?? 0;
    if (status === 0 || status === 429 || status >= 500) this.breaker.failed();
    else this.breaker.succeeded();
  }
}

/**
 * Counts each call by outcome and the Retry-After Graph asked for, in a span named by method only:
 * the URL holds object ids, never a token, but the span carries none of it.
 */
class ObserverHandler implements Middleware {
  #next: Middleware | undefined;

  constructor(private readonly observer: GraphCallObserver) {}

  setNext(next: Middleware): void {
    this.#next = next;
  }

  async execute(context: Context): Promise<void> {
    const method = (context.options?.method ?? 'GET').toUpperCase();
    const span = this.observer.tracer?.startSpan(`Microsoft Graph ${method}`, { kind: SpanKind.CLIENT, attributes: { 'http.request.method': method } });
    try {
      await this.#next!.execute(context);
    } catch (error) {
      this.observer.onCall('failed');
      span?.setStatus({ code: SpanStatusCode.ERROR, message: 'failed' });
      span?.end();
      throw error;
    }
    const status = context.response?.status ?? 0;
    const outcome = status === 429 ? 'throttled' : status >= 200 && status < 400 ? 'ok' : 'failed';
    const retryAfterMs = parseRetryAfter(context.response?.headers.get('retry-after') ?? undefined, Date.now());
    this.observer.onCall(outcome, retryAfterMs);
    span?.setAttribute('http.response.status_code', status);
    if (outcome !== 'ok') span?.setStatus({ code: SpanStatusCode.ERROR, message: outcome });
    span?.end();
  }
}

/** Misuse fails at start-up: a bearer must not travel in clear text beyond this machine. */
function graphOrigin(baseUrl: string): string {
  let url: URL;
  try {
    url = new URL(baseUrl);
  } catch {
    throw new GraphSettingsError(`graph.baseUrl is not a URL: ${baseUrl}`);
  }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') {
    throw new GraphSettingsError(`graph.baseUrl must be an origin without a path: ${baseUrl}`);
  }
  if (url.protocol === 'https:') return url.origin;
  if (url.protocol === 'http:' && isLoopbackHost(url.hostname)) return url.origin;
  throw new GraphSettingsError(`graph.baseUrl must be https (http only for loopback hosts): ${baseUrl}`);
}

/** Replaces the SDK's HTTPMessageHandler, which has no timeout and always uses global fetch. */
class FetchHandler implements Middleware {
  constructor(
    private readonly fetchImpl: typeof fetch,
    private readonly timeoutMs: number,
    private readonly maxBytes: number,
    private readonly rewriteTo: string | undefined,
  ) {}

  async execute(context: Context): Promise<void> {
    const url = typeof context.request === 'string' ? context.request : context.request.url;
    const target = this.rewrite(url);
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const given = context.options?.signal;
    const signal = given ? AbortSignal.any([given, timeout]) : timeout;
    const init: RequestInit = { ...context.options, signal };
    const response = await this.fetchImpl(
      typeof context.request === 'string' ? target : new Request(target, context.request),
      init,
    );
    context.response = await this.bounded(response);
  }

  /**
   * The response with its body read here, at most maxBytes (a lying or absent Content-Length
   * cannot make us buffer more), so the SDK parses only what was bounded.
   */
  private async bounded(response: Response): Promise<Response> {
    const tooLarge = (detail: string): GraphResponseTooLargeError =>
      new GraphResponseTooLargeError(`Graph answered ${response.status} with ${detail}, more than the limit of ${this.maxBytes} bytes; the answer was refused`);
    const declared = Number(response.headers.get('content-length') ?? NaN);
    if (Number.isFinite(declared) && declared > this.maxBytes) {
      await response.body?.cancel().catch(() => undefined);
      throw tooLarge(`Content-Length ${declared}`);
    }
    if (!response.body) return response;
    const chunks: Uint8Array[] = [];
    let total = 0;
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > this.maxBytes) {
        await reader.cancel().catch(() => undefined);
        throw tooLarge('a body still streaming');
      }
      chunks.push(value);
    }
    const init = { status: response.status, statusText: response.statusText, headers: response.headers };
    // A null-body status (204, 304) may not be given a body, even an empty one.
    return new Response(total === 0 ? null : Buffer.concat(chunks), init);
  }

  private rewrite(url: string): string {
    if (this.rewriteTo === undefined) return url;
    const from = PUBLIC_GRAPH_ORIGIN;
    if (url === from || url.startsWith(`${from}/`) || url.startsWith(`${from}?`)) {
      return this.rewriteTo + url.slice(from.length);
    }
    return url;
  }
}

/**
 * Per-request middleware options that switch the SDK's RetryHandler off. Our callers retry
 * themselves because they must bound the total wait (a decision's budget, a refresh's retry
 * count); the SDK's handler sleeps up to 180 s per Retry-After and cannot be interrupted.
 */
export function withoutSdkRetries(): MiddlewareOptions[] {
  return [new RetryHandlerOptions(0, 0)];
}

/**
 * Whether a link Graph handed back (`@odata.nextLink`) may be followed: https on a Graph host, the only links the SDK authenticates and the only ones the fake rewrites.
 */
export function isGraphLink(link: string): boolean {
  try {
    const url = new URL(link);
    return url.protocol === 'https:' && (url.host === 'graph.microsoft.com' || NATIONAL_GRAPH_HOSTS.has(url.host));
  } catch {
    return false;
  }
}


/** What went wrong with one Graph exchange, as far as callers need to decide what to do next. */
export interface GraphFailure {
  /** HTTP status; absent when no response arrived (connection refused, timeout, no token). */
  readonly status?: number;
  /** Graph's `error.code` (e.g. Request_ResourceNotFound), or the transport error's name. */
  readonly code?: string;
  /** From Retry-After (seconds or HTTP-date), in ms. */
  readonly retryAfterMs?: number;
  readonly message: string;
}

/**
 * Statuses worth retrying (after Retry-After when Graph sends one): throttling and a gateway or
 * service that is briefly unavailable. Graph: "Best practices for handling throttling".
 */
export const GRAPH_RETRYABLE_STATUSES: ReadonlySet<number> = new Set([429, 503, 504]);

/** Errors of this client's own middleware, which the SDK wraps into a GraphError with statusCode -1. */
const OWN_ERRORS = new Set(['GraphCircuitOpenError', 'GraphResponseTooLargeError']);

export function describeGraphFailure(error: unknown, now: number = Date.now()): GraphFailure {
  if (error instanceof GraphError && OWN_ERRORS.has(error.code ?? '')) {
    // The SDK keeps the original error only as `body`: "Name: message".
    const body = typeof error.body === 'string' ? error.body : '';
    const prefix = `${error.code}: `;
    return { code: error.code!, message: body.startsWith(prefix) ? body.slice(prefix.length) : `Graph request failed: ${error.code}` };
  }
  if (error instanceof GraphError) {
    const status = error.statusCode > 0 ? error.statusCode : undefined;
    const retryAfterMs = parseRetryAfter(error.headers?.get('retry-after') ?? undefined, now);
    return {
      ...(status !== undefined ? { status } : {}),
      ...(error.code ? { code: error.code } : {}),
      ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
      message:
        status !== undefined
          ? `Graph answered ${status} ${error.code ?? ''}`.trim()
          : `Graph request failed: ${error.code ?? error.message}`,
    };
  }
  const name = error instanceof Error ? error.name : 'Error';
  return { code: name, message: `Graph request failed: ${name}` };
}

/** RFC 9110 §10.2.3: Retry-After is delay-seconds or an HTTP-date. */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Reads Retry-After from a `$batch` sub-response's header object (names are case-insensitive). */
export function retryAfterFromHeaders(headers: unknown, now: number): number | undefined {
  if (headers === null || typeof headers !== 'object') return undefined;
  for (const [name, value] of Object.entries(headers)) {
    if (name.toLowerCase() === 'retry-after' && typeof value === 'string') return parseRetryAfter(value, now);
  }
  return undefined;
}

/**
 * The credential fhir-pdp uses for Graph, from app settings. Settings (copied into
 * local.settings.sample.json):
 *
 * - PDP_GRAPH_TENANT_ID: the directory (tenant) id of the app registration; needed with a secret
 *   or a certificate; with neither, passed to DefaultAzureCredential as its tenant.
 * - PDP_GRAPH_CLIENT_ID: the application (client) id; needed with a secret or a certificate.
 * - PDP_GRAPH_CLIENT_SECRET: a client secret; selects ClientSecretCredential.
 * - PDP_GRAPH_CLIENT_CERTIFICATE_PATH: a PEM file holding the certificate and its private key;
 *   selects ClientCertificateCredential.
 * - PDP_GRAPH_CLIENT_CERTIFICATE_PASSWORD: the PEM private key's password, if it has one.
 * - PDP_GRAPH_MANAGED_IDENTITY_CLIENT_ID: client id of a user-assigned managed identity (also
 *   used as the workload identity client id) for DefaultAzureCredential.
 *
 * With none of the secret/certificate settings, DefaultAzureCredential is used: environment
 * variables (AZURE_*), workload identity, managed identity in Azure, then Azure CLI and other
 * developer sign-ins locally. The app needs the Graph application permission GroupMember.Read.All
 * (and Application.Read.All for the config checker's object kinds).
 */
export function credentialFromSettings(env: Readonly<Record<string, string | undefined>>): TokenCredential {
  const setting = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value ? value : undefined;
  };
  const tenantId = setting('PDP_GRAPH_TENANT_ID');
  const clientId = setting('PDP_GRAPH_CLIENT_ID');
  const secret = setting('PDP_GRAPH_CLIENT_SECRET');
  const certificatePath = setting('PDP_GRAPH_CLIENT_CERTIFICATE_PATH');
  const certificatePassword = setting('PDP_GRAPH_CLIENT_CERTIFICATE_PASSWORD');
  const managedIdentityClientId = setting('PDP_GRAPH_MANAGED_IDENTITY_CLIENT_ID');

  if (secret !== undefined && certificatePath !== undefined) {
    throw new GraphSettingsError(
      'Set either PDP_GRAPH_CLIENT_SECRET or PDP_GRAPH_CLIENT_CERTIFICATE_PATH, not both.',
    );
  }
  if (secret !== undefined || certificatePath !== undefined) {
    const missing = [
      ...(tenantId === undefined ? ['PDP_GRAPH_TENANT_ID'] : []),
      ...(clientId === undefined ? ['PDP_GRAPH_CLIENT_ID'] : []),
    ];
    if (tenantId === undefined || clientId === undefined) {
      const chosen = secret !== undefined ? 'PDP_GRAPH_CLIENT_SECRET' : 'PDP_GRAPH_CLIENT_CERTIFICATE_PATH';
      throw new GraphSettingsError(`${chosen} needs ${missing.join(' and ')}.`);
    }
    if (secret !== undefined) return new ClientSecretCredential(tenantId, clientId, secret);
    return new ClientCertificateCredential(tenantId, clientId, {
      certificatePath: certificatePath as string,
      ...(certificatePassword !== undefined ? { certificatePassword } : {}),
    });
  }
  return new DefaultAzureCredential({
    ...(tenantId !== undefined ? { tenantId } : {}),
    ...(managedIdentityClientId !== undefined
      ? { managedIdentityClientId, workloadIdentityClientId: managedIdentityClientId }
      : {}),
  });
}
