/**
 * A real, standards-following OpenID provider for tests: npm `oidc-provider` (v9) on loopback,
 * issuing RFC 9068 JWT access tokens for one resource through the client credentials grant.
 * It stands in for the non-Entra "SMART identity providers" (Keycloak, Okta, ...).
 */

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { exportJWK, generateKeyPair } from 'jose';
import { closeServer, listenOnLoopback } from './loopback.js';

export interface OidcProviderClient {
  readonly client_id: string;
  readonly client_secret: string;
}

/** The parts of oidc-provider's token model a claims callback needs (it passes the whole model). */
export interface OidcTokenView {
  readonly kind: string;
  readonly clientId?: string;
  readonly scope?: string;
  readonly accountId?: string;
}

export type ExtraTokenClaims = (
  ctx: unknown,
  token: OidcTokenView,
) => Record<string, unknown> | undefined | Promise<Record<string, unknown> | undefined>;

export interface StartOidcProviderOptions {
  readonly clients: readonly OidcProviderClient[];
  /** The resource indicator (RFC 8707) every token is for; it becomes `aud`. */
  readonly resource: string;
  /** Added to every access token; cannot override the RFC 9068 claims oidc-provider sets. */
  readonly extraTokenClaims?: ExtraTokenClaims;
  /** Scopes the resource server accepts; requested scopes outside this list are dropped. */
  readonly scopes?: readonly string[];
  /**
   * A path for the issuer, e.g. `/{tenant}/v2.0` to make it Entra-shaped (the primary authority's
   * `tid` must be the tenant its issuer names). Default none: `http://127.0.0.1:PORT`.
   */
  readonly issuerPath?: string;
}

export interface RunningOidcProvider {
  /** `http://127.0.0.1:PORT` plus `issuerPath`, equal to discovery's `issuer` and the tokens' `iss`. */
  readonly issuer: string;
  readonly discoveryUrl: string;
  readonly tokenEndpoint: string;
  /** Client credentials grant over HTTP (client_secret_basic); resolves to the JWT access token. */
  getToken(clientId: string, clientSecret: string, scope?: string): Promise<string>;
  close(): Promise<void>;
}

export class OidcProviderHarnessError extends Error {
  override readonly name = 'OidcProviderHarnessError';
  constructor(
    readonly code: 'token_request_failed',
    message: string,
  ) {
    super(message);
  }
}

interface ProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
}
type ProviderConstructor = new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;

const TOKEN_TTL_SECONDS = 600;

export async function startOidcProvider(options: StartOidcProviderOptions): Promise<RunningOidcProvider> {
  const Provider = await loadProvider();

  const { privateKey } = await generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
  const signingJwk = { ...(await exportJWK(privateKey)), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

  // The issuer must carry the real port, so the port is bound before the provider exists.
  const server = createServer();
  const port = await listenOnLoopback(server);
  const mountPath = options.issuerPath?.replace(/\/+$/, '') ?? '';
  const issuer = `http://127.0.0.1:${port}${mountPath}`;

  const resourceScope = (options.scopes ?? []).join(' ');
  const extraTokenClaims = options.extraTokenClaims;
  const provider = await withoutExpectedWarnings(() => new Provider(issuer, {
    clients: options.clients.map((client) => ({
      client_id: client.client_id,
      client_secret: client.client_secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    jwks: { keys: [signingJwk] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => options.resource,
        getResourceServerInfo: () => ({
          scope: resourceScope,
          audience: options.resource,
          accessTokenTTL: TOKEN_TTL_SECONDS,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
        useGrantedResource: () => true,
      },
    },
    ttl: { ClientCredentials: TOKEN_TTL_SECONDS },
    ...(extraTokenClaims === undefined
      ? {}
      : { extraTokenClaims: async (ctx: unknown, token: OidcTokenView) => extraTokenClaims(ctx, token) }),
  }));
  const callback = provider.callback();
  // oidc-provider mounted under a path: it reads the route from `url` and the mount path from
  // `originalUrl`, as when an app framework mounts it.
  server.on('request', (req: IncomingMessage & { originalUrl?: string }, res: ServerResponse) => {
    const url = req.url ?? '/';
    if (mountPath !== '') {
      if (url !== mountPath && !url.startsWith(`${mountPath}/`) && !url.startsWith(`${mountPath}?`)) {
        res.writeHead(404).end();
        return;
      }
      req.originalUrl = url;
      req.url = url.slice(mountPath.length) || '/';
    }
    callback(req, res);
  });

  const tokenEndpoint = `${issuer}/token`;
  return {
    issuer,
    discoveryUrl: `${issuer}/.well-known/openid-configuration`,
    tokenEndpoint,
    async getToken(clientId, clientSecret, scope) {
      // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
      const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64');
      const form = new URLSearchParams({ grant_type: 'client_credentials', resource: options.resource });
      if (scope !== undefined) form.set('scope', scope);
      const response = await fetch(tokenEndpoint, {
        method: 'POST',
        headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: form,
        signal: AbortSignal.timeout(5_000),
      });
      const body = (await response.json()) as { access_token?: unknown; error?: unknown };
      if (!response.ok || typeof body.access_token !== 'string') {
        throw new OidcProviderHarnessError(
          'token_request_failed',
          `token endpoint answered ${response.status} ${typeof body.error === 'string' ? body.error : ''}`.trim(),
        );
      }
      return body.access_token;
    },
    close: () => closeServer(server),
  };
}

let providerConstructor: Promise<ProviderConstructor> | undefined;

/**
 * oidc-provider ships no type declarations, so it is imported through a non-literal specifier
 * and typed by the few members used here.
 */
function loadProvider(): Promise<ProviderConstructor> {
  providerConstructor ??= withoutExpectedWarnings(async () => {
    const specifier: string = 'oidc-provider';
    const module = (await import(specifier)) as { default: ProviderConstructor };
    return module.default;
  });
  return providerConstructor;
}

/**
 * Warnings that do not apply to a test harness: the runtime check wants Node 22 (Node 20 is this
 * project's floor and the features used work on it), and the in-memory adapter is what a
 * short-lived test provider should use. Every other warning still reaches the console.
 */
const EXPECTED_WARNINGS = ['Unsupported runtime', 'in-memory adapter is used'];

async function withoutExpectedWarnings<T>(action: () => T | Promise<T>): Promise<T> {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    const first = args[0];
    if (typeof first === 'string' && EXPECTED_WARNINGS.some((expected) => first.includes(expected))) return;
    warn(...args);
  };
  try {
    return await action();
  } finally {
    console.warn = warn;
  }
}
