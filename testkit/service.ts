/**
 * The PdpService in this process behind the standalone node:http server (createPdpServer), with a
 * clock the test can move: wired to a DevIdentityProvider on loopback (`startPdpWithDevIdp`), or to
 * any authority and optionally the fake Graph through the real Graph client, its answers read as
 * the contract's JSON (`startE2ePdp`). Beside it, the ways a caller asks it over HTTP (JSON mode,
 * forward-auth, raw bytes over node:net), a small authority whose private key the test holds (to
 * sign exactly the bytes it wants) and a request counter standing in for a server an attacker names
 * in a token. The standalone host as `npm start` composes it from app settings is testkit/host.ts.
 */
import { generateKeyPairSync, sign as cryptoSign, type KeyObject } from 'node:crypto';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import type { JWK } from 'jose';
import { parseConfig } from '../src/config/load.js';
import type { PdpConfig, PdpConfigInput } from '../src/config/schema.js';
import { createGraphClient } from '../src/directory/graph-client.js';
import { createPdpServer, listen } from '../src/host/server.js';
import { KeyRing } from '../src/http/keys.js';
import type { Decision, DecisionLogger } from '../src/decision/types.js';
import { PdpService } from '../src/app.js';
import type { SnapshotStore } from '../src/state/types.js';
import { DEV_APP_ID, DEV_OBJECT_ID, DevIdentityProvider, type MintOptions } from './dev-idp.js';
import { graphCredential, type FakeGraph } from './fake-graph.js';
import { closeServer } from './loopback.js';

export const FHIR_AUDIENCE = 'https://fhir.example.test';
/** The object id DevIdentityProvider puts in `oid` by default; granted `read` by `configFor`. */
export const READER_OID = DEV_OBJECT_ID;
export const API_KEY = 'api-key-0123456789';
export const ADMIN_KEY = 'admin-key-0123456789';

/** Wall-clock time plus an offset the test moves: cooldowns pass without sleeping. */
export class TestClock {
  offsetMs = 0;
  readonly now = (): number => Date.now() + this.offsetMs;
  advance(seconds: number): void {
    this.offsetMs += seconds * 1000;
  }
}

/** A valid configuration for `authority`, granting READER_OID `read`; overrides merged last. */
export function configFor(authority: string, overrides: Partial<PdpConfigInput> = {}): PdpConfig {
  return parseConfig({
    authority,
    audience: FHIR_AUDIENCE,
    accessPolicies: [{ objectId: READER_OID, dataActions: ['read'] }],
    fetchTimeoutMs: 2000,
    ...overrides,
  });
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
}

export interface AskOptions {
  readonly method?: string;
  readonly path?: string;
  /** Sent as `Authorization: Bearer <token>` inside the JSON question. */
  readonly token?: string;
  /** Authorization values inside the JSON question (overrides `token`). */
  readonly authorization?: string | readonly string[];
  /** x-functions-key of the call to /api/decide. */
  readonly key?: string;
  /** JSON mode: a batch/transaction Bundle sent as the question's `body`. */
  readonly body?: unknown;
}

export async function readAnswer(res: Response): Promise<HttpAnswer> {
  const text = await res.text();
  let body: Record<string, unknown> = {};
  if (text) body = JSON.parse(text) as Record<string, unknown>;
  return { status: res.status, headers: res.headers, body };
}

/** JSON mode: POST /api/decide {method, path, headers}. */
export async function askJson(baseUrl: string, o: AskOptions): Promise<HttpAnswer> {
  const authorization = o.authorization ?? (o.token !== undefined ? `Bearer ${o.token}` : undefined);
  const question = {
    method: o.method ?? 'GET',
    path: o.path ?? '/Patient/123',
    ...(authorization !== undefined ? { headers: { authorization } } : {}),
    ...(o.body !== undefined ? { body: o.body } : {}),
  };
  const res = await fetch(`${baseUrl}/api/decide`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(o.key ? { 'x-functions-key': o.key } : {}) },
    body: JSON.stringify(question),
    signal: AbortSignal.timeout(10_000),
  });
  return readAnswer(res);
}

/** Forward-auth mode (nginx auth_request): the original request in X-Original-Method/URI. */
export async function askForwardAuth(baseUrl: string, o: AskOptions): Promise<HttpAnswer> {
  const res = await fetch(`${baseUrl}/api/decide`, {
    headers: {
      'x-original-method': o.method ?? 'GET',
      'x-original-uri': o.path ?? '/Patient/123',
      ...(o.token !== undefined ? { authorization: `Bearer ${o.token}` } : {}),
      ...(o.key ? { 'x-functions-key': o.key } : {}),
    },
    signal: AbortSignal.timeout(10_000),
  });
  return readAnswer(res);
}

export interface RunningPdp {
  readonly idp: DevIdentityProvider;
  readonly service: PdpService;
  readonly config: PdpConfig;
  readonly clock: TestClock;
  /** `http://127.0.0.1:PORT` of the standalone server. */
  readonly url: string;
  /** A token from the IdP: v2, for FHIR_AUDIENCE, READER_OID, `scp` unless overridden. */
  mint(options?: Partial<MintOptions>): Promise<string>;
  /** pdp.decide in process with one Authorization header. */
  decide(token: string | undefined, method?: string, path?: string): Promise<Decision>;
  ask(o: AskOptions): Promise<HttpAnswer>;
  close(): Promise<void>;
}

export interface StartPdpOptions {
  /** Use this IdP (not closed by close()); default a new one, closed by close(). */
  readonly idp?: DevIdentityProvider;
  readonly apiKeys?: readonly string[];
  readonly adminKeys?: readonly string[];
  /** Run service.start() before returning (default true). */
  readonly start?: boolean;
  /** Called with the IdP before the service starts (to take it down, override a route...). */
  readonly beforeStart?: (idp: DevIdentityProvider) => void;
}

export async function startPdpWithDevIdp(configOverrides: Partial<PdpConfigInput> = {}, options: StartPdpOptions = {}): Promise<RunningPdp> {
  const idp = options.idp ?? (await DevIdentityProvider.start());
  options.beforeStart?.(idp);
  const clock = new TestClock();
  const config = configFor(idp.authority, configOverrides);
  const service = new PdpService({ config, clock: clock.now });
  const server = createPdpServer(service, { keys: new KeyRing(options.apiKeys ?? [], options.adminKeys ?? []) });
  const address = await listen(server, 0, '127.0.0.1');
  const url = `http://127.0.0.1:${address.port}`;
  if (options.start !== false) await service.start();
  return {
    idp,
    service,
    config,
    clock,
    url,
    mint: (o = {}) => idp.mint({ audience: FHIR_AUDIENCE, scp: 'user_impersonation', ...o }),
    decide: (token, method = 'GET', path = '/Patient/123') =>
      service.pdp.decide({ method, target: path, credentials: { authorization: token === undefined ? [] : [`Bearer ${token}`] } }),
    ask: (o) => askJson(url, o),
    close: async () => {
      service.stop();
      await closeServer(server);
      if (!options.idp) await idp.close();
    },
  };
}

/**
 * A server standing in for one an attacker names in a token (jku, x5u, iss, an overage endpoint):
 * it counts every request, so a test can prove nothing was fetched.
 */
export interface RequestCounter {
  readonly url: string;
  count(): number;
  close(): Promise<void>;
}

export async function startRequestCounter(): Promise<RequestCounter> {
  let n = 0;
  const server = createServer((req, res) => {
    n++;
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":[]}');
  });
  const address = await listen(server, 0, '127.0.0.1');
  return {
    url: `http://127.0.0.1:${address.port}`,
    count: () => n,
    close: () => closeServer(server),
  };
}

export interface RawAnswer {
  readonly status: number;
  readonly head: string;
  readonly body: string;
}

/**
 * Sends bytes as they are over node:net (fetch and http.request normalise what a test needs to
 * send: repeated Authorization headers, odd bytes) and reads the answer until the peer closes.
 * The request must carry `Connection: close`; the socket is not half-closed, because node's
 * server aborts a request whose client ended its side before the answer.
 */
export function rawHttp(baseUrl: string, request: string | Buffer): Promise<RawAnswer> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port) }, () => socket.write(request));
    const chunks: Buffer[] = [];
    socket.setTimeout(10_000, () => socket.destroy(new Error('raw HTTP request timed out')));
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const split = text.indexOf('\r\n\r\n');
      const head = split < 0 ? text : text.slice(0, split);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      resolve({ status, head, body: split < 0 ? '' : text.slice(split + 4) });
    });
  });
}

/** Value of a header in a raw answer's head (first occurrence), lower-case name. */
export function rawHeader(answer: RawAnswer, name: string): string | undefined {
  for (const line of answer.head.split('\r\n').slice(1)) {
    const i = line.indexOf(':');
    if (i > 0 && line.slice(0, i).trim().toLowerCase() === name) return line.slice(i + 1).trim();
  }
  return undefined;
}

/** The JSON body of a raw answer, chunked transfer coding or not. */
export function rawJson(answer: RawAnswer): Record<string, unknown> {
  let body = answer.body;
  if (rawHeader(answer, 'transfer-encoding') === 'chunked') {
    let out = '';
    let rest = body;
    for (;;) {
      const eol = rest.indexOf('\r\n');
      const size = parseInt(rest.slice(0, eol), 16);
      if (!size) break;
      out += rest.slice(eol + 2, eol + 2 + size);
      rest = rest.slice(eol + 2 + size + 2);
    }
    body = out;
  }
  return JSON.parse(body) as Record<string, unknown>;
}

// --- an authority whose private key the test holds --------------------------------------------

export function b64url(value: string | Buffer): string {
  return Buffer.from(value).toString('base64url');
}

/** Decoded payload of a compact JWS (no verification). */
export function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

export interface SigningAuthority {
  /** `http://127.0.0.1:PORT`: the authority, the discovery `issuer` and the tokens' `iss`. */
  readonly authority: string;
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicJwk: JWK;
  /** RS256 over exactly `${header}.${payload}` as given (any encoding, canonical or not). */
  signSegments(header: string, payload: string): string;
  /** Header and payload as JSON text (duplicates, 1e400 ... survive), canonically encoded. */
  signJsonText(headerJson: string, payloadJson: string): string;
  /** Claims a primary-authority token needs (iss, aud, oid, scp, iat, nbf, exp), plus `extra`. */
  claims(extra?: Record<string, unknown>): Record<string, unknown>;
  readonly header: string;
  close(): Promise<void>;
}

/**
 * A minimal OpenID authority on loopback (discovery + one RSA-2048 key), for tests that must sign
 * bytes no well-behaved library would produce: padded or whitespace-broken base64url, duplicate
 * members, `exp: 1e400`. Its key is trusted like any configured authority's.
 */
export async function startSigningAuthority(): Promise<SigningAuthority> {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = 'signing-authority-key';
  const publicJwk = { ...(publicKey.export({ format: 'jwk' }) as JWK), kid, use: 'sig' };
  let origin = '';
  const server = createServer((req, res) => {
    const send = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (req.url === '/.well-known/openid-configuration')
      send(200, { issuer: origin, jwks_uri: `${origin}/jwks`, id_token_signing_alg_values_supported: ['RS256'] });
    else if (req.url === '/jwks') send(200, { keys: [publicJwk] });
    else send(404, { error: 'not_found' });
  });
  const address = await listen(server, 0, '127.0.0.1');
  origin = `http://127.0.0.1:${address.port}`;
  const header = JSON.stringify({ alg: 'RS256', typ: 'JWT', kid });
  const signSegments = (h: string, p: string) => `${h}.${p}.${b64url(cryptoSign('sha256', Buffer.from(`${h}.${p}`, 'latin1'), privateKey))}`;
  return {
    authority: origin,
    kid,
    privateKey,
    publicJwk,
    header,
    signSegments,
    signJsonText: (h, p) => signSegments(b64url(h), b64url(p)),
    claims: (extra = {}) => {
      const now = Math.floor(Date.now() / 1000);
      return { iss: origin, aud: FHIR_AUDIENCE, oid: READER_OID, scp: 'user_impersonation', azp: DEV_APP_ID, iat: now, nbf: now, exp: now + 3600, ...extra };
    },
    close: () => closeServer(server),
  };
}

/** Every canonical base64url string of `bytes` with its unused trailing bits set otherwise. */
export function nonCanonicalVariants(segment: string): string[] {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const unusedBits = ({ 2: 4, 3: 2 } as Record<number, number>)[segment.length % 4] ?? 0;
  const last = alphabet.indexOf(segment.at(-1)!);
  const out: string[] = [];
  for (let low = 1; low < 1 << unusedBits; low++) out.push(segment.slice(0, -1) + alphabet[last ^ low]);
  return out;
}

// --- answers as the contract's JSON, optionally with the fake Graph ------------------------------

export const E2E_AUDIENCE = 'https://fhir.example.test';
export const E2E_API_KEY = 'e2e-api-key-0123456789';
/** Admin callers get the operator hint; the suites assert what hints name. */
export const E2E_ADMIN_KEY = 'e2e-admin-key-0123456789';

/** The contract's JSON answer. */
export interface DecisionBody {
  readonly decision: 'allow' | 'deny' | 'indeterminate';
  readonly status: number;
  readonly reason: string;
  readonly message: string;
  readonly hint?: string;
  readonly decisionId: string;
  readonly principal?: Record<string, unknown>;
  readonly dataActions?: readonly string[];
  readonly compartment?: string;
}

export interface E2eAnswer {
  /** HTTP status of the call to /api/decide. */
  readonly httpStatus: number;
  readonly headers: Headers;
  readonly body: DecisionBody;
}

export interface JsonQuestion {
  readonly method?: string;
  readonly path: string;
  readonly token?: string;
  /** A batch/transaction Bundle, sent as the question's `body`. */
  readonly body?: unknown;
  /** Default the admin key (hints included). */
  readonly key?: string;
}

export interface ForwardQuestion {
  readonly method?: string;
  readonly uri: string;
  readonly token?: string;
  readonly key?: string;
}

export interface E2ePdp {
  readonly url: string;
  readonly service: PdpService;
  readonly config: PdpConfig;
  readonly clock: TestClock;
  /** JSON mode: POST /api/decide. */
  ask(q: JsonQuestion): Promise<E2eAnswer>;
  /** Forward-auth (nginx auth_request): X-Original-Method + X-Original-URI. */
  forward(q: ForwardQuestion): Promise<E2eAnswer>;
  close(): Promise<void>;
}

export interface StartE2eOptions {
  /** Point the service's Graph client at this fake (else no Graph, unless config.graph). */
  readonly graph?: FakeGraph;
  readonly logger?: DecisionLogger;
  /** Share another instance's snapshot store (a scaled-out instance that did not refresh itself). */
  readonly store?: SnapshotStore;
}

export async function startE2ePdp(config: PdpConfigInput, options: StartE2eOptions = {}): Promise<E2ePdp> {
  const parsed = parseConfig(config);
  const clock = new TestClock();
  const graphClient = options.graph
    ? createGraphClient({ credential: graphCredential(options.graph.token), baseUrl: options.graph.origin, timeoutMs: 2000 })
    : undefined;
  const service = new PdpService({
    config: parsed,
    clock: clock.now,
    ...(graphClient ? { graphClient } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.store ? { store: options.store } : {}),
  });
  const server = createPdpServer(service, { keys: new KeyRing([E2E_API_KEY], [E2E_ADMIN_KEY]) });
  const address = await listen(server, 0, '127.0.0.1');
  const url = `http://127.0.0.1:${address.port}`;
  await service.start();
  return {
    url,
    service,
    config: parsed,
    clock,
    ask: (q) => askContract(url, q),
    forward: (q) => forwardContract(url, q),
    close: async () => {
      service.stop();
      await closeServer(server);
    },
  };
}

function e2eAnswer(a: HttpAnswer): E2eAnswer {
  return { httpStatus: a.status, headers: a.headers, body: a.body as unknown as DecisionBody };
}

/** JSON mode, with the admin key unless another is given (hints included). */
export async function askContract(url: string, q: JsonQuestion): Promise<E2eAnswer> {
  return e2eAnswer(
    await askJson(url, {
      path: q.path,
      key: q.key ?? E2E_ADMIN_KEY,
      ...(q.method !== undefined ? { method: q.method } : {}),
      ...(q.token !== undefined ? { token: q.token } : {}),
      ...(q.body !== undefined ? { body: q.body } : {}),
    }),
  );
}

/** Forward-auth (nginx auth_request), with the admin key unless another is given. */
export async function forwardContract(url: string, q: ForwardQuestion): Promise<E2eAnswer> {
  return e2eAnswer(
    await askForwardAuth(url, {
      path: q.uri,
      key: q.key ?? E2E_ADMIN_KEY,
      ...(q.method !== undefined ? { method: q.method } : {}),
      ...(q.token !== undefined ? { token: q.token } : {}),
    }),
  );
}

/** `{reason, status}` of an answer, for one toEqual per case. */
export function outcome(a: E2eAnswer): { reason: string; status: number } {
  return { reason: a.body.reason, status: a.body.status };
}

/** A batch Bundle whose entries are `METHOD url` lines. */
export function batchBundle(type: 'batch' | 'transaction', ...entries: string[]): Record<string, unknown> {
  return {
    resourceType: 'Bundle',
    type,
    entry: entries.map((line) => {
      const [method, url] = line.split(' ') as [string, string];
      // A create or update entry carries its resource, of the type its URL names.
      const [type, id] = url.split('?')[0]!.split('/');
      const resource = method === 'POST' || method === 'PUT' ? { resource: { resourceType: type, ...(method === 'PUT' && id ? { id } : {}) } } : {};
      return { request: { method, url }, ...resource };
    }),
  };
}
