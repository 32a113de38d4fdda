/**
 * A small Microsoft Entra ID look-alike on loopback, for `npm run dev` and for tests.
 *
 * It publishes what a relying party reads from Entra (v1 and v2 discovery documents and their key
 * sets) and mints Entra-shaped access tokens in process. It never issues tokens over HTTP, so a
 * token only exists where the code holding this object asked for one; the HTTP side serves public
 * metadata only. It binds loopback addresses only, because the contract accepts `http` authorities
 * on loopback and nowhere else.
 */

import {
  KeyObject,
  constants as cryptoConstants,
  createHash,
  createHmac,
  createSecretKey,
  generateKeyPairSync,
  randomBytes,
  sign as cryptoSign,
} from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { generateKeyPair, type CryptoKey, type JWK } from 'jose';

export const DEV_TENANT_ID = '8f6d2c1e-4b7a-4e39-9c5d-2a1b3c4d5e6f';
export const DEV_APP_ID = '3b9e7c2a-1d4f-4a6b-8e5c-7f0a1b2c3d4e';
export const DEV_OBJECT_ID = 'c5a1e9d7-2b3f-4c8a-9d6e-0f1a2b3c4d5e';

/** Published keys plus private keys held for minting; rotation beyond this is a test bug. */
const MAX_KEYS = 32;
const MAX_EXTRA_JWKS = 64;
/** Distinct request paths counted separately; the rest only add to the total. */
const MAX_COUNTED_PATHS = 1024;
const MAX_CONNECTIONS = 128;
const MAX_TOKEN_LIFETIME_SECONDS = 24 * 60 * 60;

export type DevIdentityProviderErrorCode =
  | 'invalid_option'
  | 'unknown_kid'
  | 'no_signing_key'
  | 'too_many_keys'
  | 'unsupported_alg'
  | 'closed';

export class DevIdentityProviderError extends Error {
  override readonly name = 'DevIdentityProviderError';
  constructor(
    readonly code: DevIdentityProviderErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** The HTTP routes this provider serves, named so tests can override or count them. */
export type DevIdpRoute = 'v1-discovery' | 'v2-discovery' | 'v1-jwks' | 'v2-jwks';

/**
 * How the provider behaves while down: `unavailable` answers 503, `reset` destroys the socket
 * (the client sees a network error), `hang` never answers (for timeout tests; close() ends it).
 */
export type OutageMode = 'unavailable' | 'reset' | 'hang';

export interface ResponseOverride {
  readonly status?: number;
  /** A string is sent as is (for malformed JSON); anything else is JSON-encoded. */
  readonly body: unknown;
  readonly headers?: Readonly<Record<string, string>>;
}

export interface DevIdentityProviderOptions {
  /** A loopback address or `localhost`. Default 127.0.0.1. */
  readonly host?: string;
  /** Default 0: any free port. */
  readonly port?: number;
  /** Default DEV_TENANT_ID. */
  readonly tenantId?: string;
}

export interface MintOptions {
  /** Entra access token version. Default 2. v1: `appid`, `ver: "1.0"`, the v1 issuer; v2: `azp`, `ver: "2.0"`, the v2 issuer. */
  readonly version?: 1 | 2;
  readonly audience: string | readonly string[];
  /** Default DEV_OBJECT_ID. */
  readonly oid?: string;
  /** The `tid` claim. Default the provider's tenant. `iss` stays the provider's issuer either way. */
  readonly tid?: string;
  /** `appid` (v1) or `azp` (v2). Default DEV_APP_ID. */
  readonly appId?: string;
  /** Default `oid`, as Entra does for application tokens. */
  readonly sub?: string;
  readonly roles?: readonly string[];
  /** Space-separated delegated scopes, as Entra writes them. */
  readonly scp?: string;
  readonly groups?: readonly string[];
  readonly idtyp?: string;
  readonly fhirUser?: string;
  /** Merged last: may override any claim; a key set to `undefined` removes that claim. */
  readonly extraClaims?: Readonly<Record<string, unknown>>;
  /** Merged over the protected header (`alg`, `typ`, `kid`, ...); `undefined` removes a field. */
  readonly header?: Readonly<Record<string, unknown>>;
  /** Default 3600; negative for an expired token. Relative to `now`. */
  readonly expiresInSeconds?: number;
  /** `nbf` relative to `now`. Default: equal to `iat`. */
  readonly notBeforeSeconds?: number;
  /** `iat` relative to `now`. Default 0. */
  readonly issuedAtOffsetSeconds?: number;
  /** Default the wall clock. */
  readonly now?: Date;
  /** Sign with this key (published or removed). Default `signingKid`. */
  readonly kid?: string;
  /** Default RS256. Any RSA JWS algorithm: RS256/384/512, PS256/384/512. */
  readonly alg?: string;
}

/** Key material `signJwt` accepts: asymmetric private keys, or raw bytes / a secret key for HS*. */
export type JwtSigningKey = KeyObject | CryptoKey | Uint8Array;

/**
 * Signs a compact JWS over exactly the header and payload given, with no validation, so tests
 * can build what an attacker would: unknown `crit`, `alg: none` (pass `key` null), HMAC keyed with
 * the public key's bytes, duplicate JSON members (pass the JSON text as a string).
 */
export function signJwt(
  key: JwtSigningKey | null,
  header: Readonly<Record<string, unknown>> | string,
  payload: Readonly<Record<string, unknown>> | string,
  options: { readonly alg?: string } = {},
): string {
  const headerJson = typeof header === 'string' ? header : JSON.stringify(header);
  const payloadJson = typeof payload === 'string' ? payload : JSON.stringify(payload);
  const alg = options.alg ?? algOf(header);
  const signingInput = `${base64url(headerJson)}.${base64url(payloadJson)}`;
  return `${signingInput}.${base64url(createSignature(alg, key, signingInput))}`;
}

interface HeldKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicJwk: JWK;
  published: boolean;
}

export class DevIdentityProvider {
  readonly tenantId: string;
  /** `http://127.0.0.1:PORT`. */
  readonly origin: string;
  /** What a configuration puts in `authority`: `{origin}/{tenantId}`. */
  readonly authority: string;
  /** Entra's is `https://sts.windows.net/{tid}/`. */
  readonly v1Issuer: string;
  /** Entra's is `https://login.microsoftonline.com/{tid}/v2.0`. */
  readonly v2Issuer: string;
  readonly v1DiscoveryUrl: string;
  readonly v2DiscoveryUrl: string;
  readonly v1JwksUri: string;
  readonly v2JwksUri: string;

  readonly #server: Server;
  readonly #keys = new Map<string, HeldKey>();
  readonly #extraJwks: JWK[] = [];
  readonly #routes: ReadonlyMap<string, DevIdpRoute>;
  readonly #overrides = new Map<DevIdpRoute, ResponseOverride>();
  readonly #pathCounts = new Map<string, number>();
  #totalRequests = 0;
  #outage: OutageMode | undefined;
  #closed = false;

  private constructor(server: Server, origin: string, tenantId: string, firstKey: HeldKey) {
    this.#server = server;
    this.tenantId = tenantId;
    this.origin = origin;
    this.authority = `${origin}/${tenantId}`;
    this.v1Issuer = `${origin}/sts/${tenantId}/`;
    this.v2Issuer = `${origin}/${tenantId}/v2.0`;
    this.v1DiscoveryUrl = `${this.authority}/.well-known/openid-configuration`;
    this.v2DiscoveryUrl = `${this.authority}/v2.0/.well-known/openid-configuration`;
    this.v1JwksUri = `${this.authority}/discovery/keys`;
    this.v2JwksUri = `${this.authority}/discovery/v2.0/keys`;
    this.#routes = new Map<string, DevIdpRoute>([
      [new URL(this.v1DiscoveryUrl).pathname, 'v1-discovery'],
      [new URL(this.v2DiscoveryUrl).pathname, 'v2-discovery'],
      [new URL(this.v1JwksUri).pathname, 'v1-jwks'],
      [new URL(this.v2JwksUri).pathname, 'v2-jwks'],
    ]);
    this.#keys.set(firstKey.kid, firstKey);
  }

  static async start(options: DevIdentityProviderOptions = {}): Promise<DevIdentityProvider> {
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? 0;
    const tenantId = options.tenantId ?? DEV_TENANT_ID;
    if (!isLoopbackHost(host)) {
      throw new DevIdentityProviderError('invalid_option', `host must be a loopback address, got ${host}`);
    }
    if (!Number.isInteger(port) || port < 0 || port > 65_535) {
      throw new DevIdentityProviderError('invalid_option', `port must be an integer in 0..65535, got ${port}`);
    }
    if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,63}$/.test(tenantId)) {
      throw new DevIdentityProviderError('invalid_option', 'tenantId must be a GUID or a domain-like path segment');
    }

    const { privateKey } = await generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
    const firstKey = holdRsaKey(KeyObject.from(privateKey as Parameters<typeof KeyObject.from>[0]));

    const server = createServer();
    server.maxConnections = MAX_CONNECTIONS;
    server.headersTimeout = 5_000;
    server.requestTimeout = 10_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const { port: boundPort } = server.address() as AddressInfo;
    const origin = `http://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
    const idp = new DevIdentityProvider(server, origin, tenantId, firstKey);
    server.on('request', (req, res) => idp.#handle(req, res));
    return idp;
  }

  /** The newest published key: what `mint` signs with when no `kid` is given. */
  get signingKid(): string {
    const published = [...this.#keys.values()].filter((key) => key.published);
    const newest = published.at(-1);
    if (newest === undefined) {
      throw new DevIdentityProviderError('no_signing_key', 'no published key; rotateKey() or mint with an explicit kid');
    }
    return newest.kid;
  }

  /** Adds and publishes a new RSA-2048 key that becomes `signingKid`; older keys stay published. */
  rotateKey(): string {
    this.#assertOpen();
    if (this.#keys.size >= MAX_KEYS) {
      throw new DevIdentityProviderError('too_many_keys', `at most ${MAX_KEYS} keys`);
    }
    // Synchronous so rotation is one call in a test; RSA-2048 generation takes tens of ms.
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const key = holdRsaKey(privateKey);
    this.#keys.set(key.kid, key);
    return key.kid;
  }

  /**
   * Stops publishing a key (or an extra JWK) with this kid. A removed signing key is still held,
   * so `mint({ kid })` can produce a token whose key the JWKS no longer carries.
   */
  removeKey(kid: string): boolean {
    let removed = false;
    const held = this.#keys.get(kid);
    if (held?.published === true) {
      held.published = false;
      removed = true;
    }
    for (let i = this.#extraJwks.length - 1; i >= 0; i--) {
      if (this.#extraJwks[i]?.kid === kid) {
        this.#extraJwks.splice(i, 1);
        removed = true;
      }
    }
    return removed;
  }

  /** Publishes a JWK as given (oct, `use: enc`, RSA-1024, ...) beside the signing keys. */
  publishExtraJwk(jwk: JWK): void {
    if (this.#extraJwks.length >= MAX_EXTRA_JWKS) {
      throw new DevIdentityProviderError('too_many_keys', `at most ${MAX_EXTRA_JWKS} extra JWKs`);
    }
    this.#extraJwks.push(structuredClone(jwk));
  }

  /** The key set both JWKS endpoints serve right now. */
  jwks(): { keys: JWK[] } {
    const keys = [...this.#keys.values()].filter((key) => key.published).map((key) => ({ ...key.publicJwk }));
    return { keys: [...keys, ...this.#extraJwks.map((jwk) => structuredClone(jwk))] };
  }

  /** The public JWK of a held key, published or not (e.g. for HMAC key-confusion tests). */
  publicJwk(kid: string): JWK {
    const held = this.#keys.get(kid);
    if (held === undefined) throw new DevIdentityProviderError('unknown_kid', `no key ${kid}`);
    return { ...held.publicJwk };
  }

  discovery(version: 1 | 2): Record<string, unknown> {
    return version === 1 ? this.#v1Discovery() : this.#v2Discovery();
  }

  async mint(options: MintOptions): Promise<string> {
    const version = options.version ?? 2;
    const kid = options.kid ?? this.signingKid;
    const key = this.#keys.get(kid);
    if (key === undefined) throw new DevIdentityProviderError('unknown_kid', `no key ${kid}`);

    const expiresIn = options.expiresInSeconds ?? 3600;
    if (expiresIn > MAX_TOKEN_LIFETIME_SECONDS) {
      throw new DevIdentityProviderError('invalid_option', `expiresInSeconds is at most ${MAX_TOKEN_LIFETIME_SECONDS}`);
    }
    const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
    const iat = now + (options.issuedAtOffsetSeconds ?? 0);
    const oid = options.oid ?? DEV_OBJECT_ID;
    const appId = options.appId ?? DEV_APP_ID;

    // Claim names and order follow Entra's access token reference
    // (learn.microsoft.com/entra/identity-platform/access-token-claims-reference).
    const claims: Record<string, unknown> = {
      aud: typeof options.audience === 'string' ? options.audience : [...options.audience],
      iss: version === 1 ? this.v1Issuer : this.v2Issuer,
      iat,
      nbf: options.notBeforeSeconds === undefined ? iat : now + options.notBeforeSeconds,
      exp: now + expiresIn,
      ...(version === 1 ? { appid: appId, appidacr: '1' } : { azp: appId, azpacr: '1' }),
      ...(options.groups === undefined ? {} : { groups: [...options.groups] }),
      ...(options.idtyp === undefined ? {} : { idtyp: options.idtyp }),
      oid,
      ...(options.roles === undefined ? {} : { roles: [...options.roles] }),
      ...(options.scp === undefined ? {} : { scp: options.scp }),
      sub: options.sub ?? oid,
      tid: options.tid ?? this.tenantId,
      uti: randomBytes(16).toString('base64url'),
      ver: version === 1 ? '1.0' : '2.0',
      ...(options.fhirUser === undefined ? {} : { fhirUser: options.fhirUser }),
    };
    const alg = options.alg ?? 'RS256';
    // Entra's v1 tokens carry the key id twice, as `x5t` and `kid`; v2 tokens only as `kid`.
    const header: Record<string, unknown> = {
      typ: 'JWT',
      alg,
      ...(version === 1 ? { x5t: kid } : {}),
      kid,
    };
    return signJwt(key.privateKey, mergeDefined(header, options.header), mergeDefined(claims, options.extraClaims), { alg });
  }

  /** Makes discovery and JWKS fail until `up()`. */
  down(mode: OutageMode = 'unavailable'): void {
    this.#outage = mode;
  }

  up(): void {
    this.#outage = undefined;
  }

  /** Replaces a route's answer until called again without a response. */
  overrideResponse(route: DevIdpRoute, response?: ResponseOverride): void {
    if (response === undefined) this.#overrides.delete(route);
    else this.#overrides.set(route, response);
  }

  /** Requests received (including failed ones while down) whose path starts with the prefix; all without one. */
  requestCount(pathPrefix?: string): number {
    if (pathPrefix === undefined) return this.#totalRequests;
    let count = 0;
    for (const [path, n] of this.#pathCounts) {
      if (path.startsWith(pathPrefix)) count += n;
    }
    return count;
  }

  resetRequestCounts(): void {
    this.#pathCounts.clear();
    this.#totalRequests = 0;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
  }

  #assertOpen(): void {
    if (this.#closed) throw new DevIdentityProviderError('closed', 'the provider is closed');
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
    this.#count(path);

    const outage = this.#outage;
    if (outage !== undefined) {
      if (outage === 'reset') req.socket.destroy();
      else if (outage === 'unavailable') sendJson(res, 503, { error: 'temporarily_unavailable' });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, { error: 'method_not_allowed' }, { allow: 'GET, HEAD' });
      return;
    }
    const route = this.#routes.get(path);
    if (route === undefined) {
      sendJson(res, 404, { error: 'not_found' });
      return;
    }
    const override = this.#overrides.get(route);
    if (override !== undefined) {
      sendJson(res, override.status ?? 200, override.body, override.headers);
      return;
    }
    // Entra answers metadata and keys with `Cache-Control: max-age=86400, private`.
    const cacheHeaders = { 'cache-control': 'max-age=86400, private' };
    switch (route) {
      case 'v1-discovery':
        sendJson(res, 200, this.#v1Discovery(), cacheHeaders);
        return;
      case 'v2-discovery':
        sendJson(res, 200, this.#v2Discovery(), cacheHeaders);
        return;
      case 'v1-jwks':
      case 'v2-jwks':
        sendJson(res, 200, this.jwks(), cacheHeaders);
        return;
    }
  }

  #count(path: string): void {
    this.#totalRequests++;
    const seen = this.#pathCounts.get(path);
    if (seen !== undefined) this.#pathCounts.set(path, seen + 1);
    else if (this.#pathCounts.size < MAX_COUNTED_PATHS) this.#pathCounts.set(path, 1);
  }

  #v1Discovery(): Record<string, unknown> {
    const endpoints = `${this.authority}/oauth2`;
    return {
      token_endpoint: `${endpoints}/token`,
      token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
      jwks_uri: this.v1JwksUri,
      response_modes_supported: ['query', 'fragment', 'form_post'],
      subject_types_supported: ['pairwise'],
      id_token_signing_alg_values_supported: ['RS256'],
      response_types_supported: ['code', 'id_token', 'code id_token', 'token id_token', 'token'],
      scopes_supported: ['openid'],
      issuer: this.v1Issuer,
      microsoft_multi_refresh_token: true,
      authorization_endpoint: `${endpoints}/authorize`,
      device_authorization_endpoint: `${endpoints}/devicecode`,
      http_logout_supported: true,
      frontchannel_logout_supported: true,
      end_session_endpoint: `${endpoints}/logout`,
      claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'auth_time', 'acr', 'amr', 'nonce', 'email', 'given_name', 'family_name', 'nickname'],
      userinfo_endpoint: `${this.authority}/openid/userinfo`,
      tenant_region_scope: 'NA',
      cloud_instance_name: 'microsoftonline.com',
    };
  }

  #v2Discovery(): Record<string, unknown> {
    const endpoints = `${this.authority}/oauth2/v2.0`;
    return {
      token_endpoint: `${endpoints}/token`,
      token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
      jwks_uri: this.v2JwksUri,
      response_modes_supported: ['query', 'fragment', 'form_post'],
      subject_types_supported: ['pairwise'],
      id_token_signing_alg_values_supported: ['RS256'],
      response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
      scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
      issuer: this.v2Issuer,
      request_uri_parameter_supported: false,
      userinfo_endpoint: `${this.authority}/oidc/userinfo`,
      authorization_endpoint: `${endpoints}/authorize`,
      device_authorization_endpoint: `${endpoints}/devicecode`,
      http_logout_supported: true,
      frontchannel_logout_supported: true,
      end_session_endpoint: `${endpoints}/logout`,
      claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'auth_time', 'acr', 'nonce', 'preferred_username', 'name', 'tid', 'ver', 'at_hash', 'c_hash', 'email'],
      tenant_region_scope: 'NA',
      cloud_instance_name: 'microsoftonline.com',
    };
  }
}

function holdRsaKey(privateKey: KeyObject): HeldKey {
  const { n, e } = privateKey.export({ format: 'jwk' });
  if (typeof n !== 'string' || typeof e !== 'string') throw new TypeError('not an RSA key');
  // RFC 7638 §3.2: the thumbprint input holds the required members only, in lexicographic order.
  const kid = createHash('sha256').update(JSON.stringify({ e, kty: 'RSA', n })).digest('base64url');
  // Like Entra's key sets: `use: sig`, no `alg` member.
  return { kid, privateKey, publicJwk: { kty: 'RSA', use: 'sig', kid, n, e }, published: true };
}

function mergeDefined(
  base: Record<string, unknown>,
  overrides: Readonly<Record<string, unknown>> | undefined,
): Record<string, unknown> {
  const merged = { ...base };
  for (const [name, value] of Object.entries(overrides ?? {})) {
    if (value === undefined) delete merged[name];
    else merged[name] = value;
  }
  return merged;
}

function algOf(header: Readonly<Record<string, unknown>> | string): string {
  const parsed: unknown = typeof header === 'string' ? JSON.parse(header) : header;
  const alg = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>)['alg'] : undefined;
  if (typeof alg !== 'string') throw new DevIdentityProviderError('unsupported_alg', 'the header has no alg; pass options.alg');
  return alg;
}

function createSignature(alg: string, key: JwtSigningKey | null, signingInput: string): Buffer {
  const data = Buffer.from(signingInput, 'ascii');
  if (alg === 'none') return Buffer.alloc(0);
  if (key === null) throw new DevIdentityProviderError('unsupported_alg', `${alg} needs a key`);
  const keyObject =
    key instanceof KeyObject ? key : key instanceof Uint8Array ? createSecretKey(key) : KeyObject.from(key as Parameters<typeof KeyObject.from>[0]);
  if (alg === 'EdDSA' || alg === 'Ed25519') return cryptoSign(null, data, keyObject);

  const match = /^(HS|RS|PS|ES)(256|384|512)$/.exec(alg);
  if (match === null) throw new DevIdentityProviderError('unsupported_alg', `unsupported alg ${alg}`);
  const digest = `sha${match[2]}`;
  switch (match[1]) {
    case 'HS':
      return createHmac(digest, keyObject).update(data).digest();
    case 'RS':
      return cryptoSign(digest, data, keyObject);
    case 'PS':
      return cryptoSign(digest, data, {
        key: keyObject,
        padding: cryptoConstants.RSA_PKCS1_PSS_PADDING,
        saltLength: cryptoConstants.RSA_PSS_SALTLEN_DIGEST,
      });
    default:
      // RFC 7518 §3.4: the signature is R || S, not DER.
      return cryptoSign(digest, data, { key: keyObject, dsaEncoding: 'ieee-p1363' });
  }
}

function base64url(text: string | Buffer): string {
  return Buffer.from(text).toString('base64url');
}

function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : text);
}
