/**
 * The standalone host as `npm start` runs it (startHost with app settings): a token from a real
 * OpenID provider (npm oidc-provider, client credentials, RFC 9068 JWT access token for a resource
 * indicator, Entra claims `oid` and `roles` added) is allowed over HTTP; Entra-shaped tokens from
 * the development IdP; health; JSON mode's 400s; forward-auth and Envoy status semantics; keys.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/load.js';
import { DEV_APP_ID, DEV_TENANT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { startHost, type StartedHost } from '../../src/host/main.js';
import { startOidcProvider, type RunningOidcProvider } from '../../testkit/oidc-provider.js';
import {
  ADMIN_KEY,
  API_KEY,
  FHIR_AUDIENCE,
  READER_OID,
  askForwardAuth,
  askJson,
  rawHeader,
  rawHttp,
  readAnswer,
  type HttpAnswer,
} from '../../testkit/service.js';

const BACKEND_OID = '6f5e4d3c-2b1a-4098-8f7e-6d5c4b3a2f1e';
const quiet = { PORT: '0', PDP_LOG_DECISIONS: 'false' };

async function hostWith(config: Record<string, unknown>, env: Record<string, string> = {}, log: string[] = []): Promise<StartedHost> {
  return startHost({ ...quiet, PDP_CONFIG: JSON.stringify(config), ...env }, (line) => log.push(line));
}

async function post(url: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<HttpAnswer> {
  return readAnswer(await fetch(`${url}/api/decide`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : new Uint8Array(body) }));
}

describe('a token from oidc-provider (client credentials, JWT access token, Entra claims) over HTTP', () => {
  let op: RunningOidcProvider;
  let host: StartedHost;
  beforeAll(async () => {
    op = await startOidcProvider({
      clients: [{ client_id: 'backend', client_secret: 'backend-secret' }],
      resource: FHIR_AUDIENCE,
      scopes: ['system/Patient.rs'],
      extraTokenClaims: (_ctx, token) => (token.clientId === 'backend' ? { oid: BACKEND_OID, roles: ['globalReader'] } : undefined),
    });
    host = await hostWith({ authority: op.issuer, audience: FHIR_AUDIENCE, roles: [{ name: 'globalReader', dataActions: ['read'] }] });
  });
  afterAll(async () => {
    await host?.close();
    await op?.close();
  });

  it('is allowed in JSON mode and in forward-auth mode, with the identity headers', async () => {
    const token = await op.getToken('backend', 'backend-secret', 'system/Patient.rs');
    const json = await askJson(host.url, { token });
    expect(json.status).toBe(200);
    expect(json.body).toMatchObject({
      decision: 'allow',
      status: 200,
      reason: 'allowed',
      principal: { issuer: op.issuer, objectId: BACKEND_OID, applicationId: 'backend' },
      dataActions: ['read'],
    });
    const fa = await askForwardAuth(host.url, { token });
    expect(fa.status).toBe(200);
    expect(fa.headers.get('x-auth-principal')).toBe(BACKEND_OID);
    expect(fa.headers.get('x-auth-application')).toBe('backend');
    expect(fa.headers.get('x-auth-scopes')).toBe('system/Patient.rs');
    expect(fa.headers.get('x-decision-id')).toBe(fa.body.decisionId);
  });

  it('is refused what its role does not grant', async () => {
    const token = await op.getToken('backend', 'backend-secret', 'system/Patient.rs');
    const fa = await askForwardAuth(host.url, { token, method: 'DELETE' });
    expect(fa.status).toBe(403);
    expect(fa.headers.get('x-decision-reason')).toBe('action_not_permitted');
  });

  // The issue's own scenario: oidc-provider's token carries `oid` and `roles` and, with no scope
  // requested, no `scope` claim. The contract needs oid and one of scp/roles.
  it('is allowed without any scope claim (oid + roles only)', async () => {
    const token = await op.getToken('backend', 'backend-secret');
    const json = await askJson(host.url, { token });
    expect(json.body).toMatchObject({ reason: 'allowed', status: 200 });
  });
});

describe('the open host (no keys): modes, health, JSON 400s', () => {
  let idp: DevIdentityProvider;
  let host: StartedHost;
  const log: string[] = [];
  beforeAll(async () => {
    idp = await DevIdentityProvider.start();
    host = await hostWith(
      { authority: idp.authority, audience: FHIR_AUDIENCE, audiences: [DEV_APP_ID, `api://${DEV_APP_ID}`], accessPolicies: [{ objectId: READER_OID, dataActions: ['read'] }] },
      {},
      log,
    );
  });
  afterAll(async () => {
    await host?.close();
    await idp?.close();
  });
  const mint = (o: Parameters<DevIdentityProvider['mint']>[0] | object = {}) => idp.mint({ audience: FHIR_AUDIENCE, scp: 'user_impersonation', ...o });

  it('listens on 127.0.0.1 only and says so', () => {
    expect(new URL(host.url).hostname).toBe('127.0.0.1');
    expect(log.join('\n')).toMatch(/loopback only/);
  });

  it.each<[string, 1 | 2, string]>([
    ['v1, aud = client id', 1, DEV_APP_ID],
    ['v2, aud = App ID URI', 2, `api://${DEV_APP_ID}`],
  ])('allows an Entra-shaped token over HTTP: %s', async (_what, version, audience) => {
    const answer = await askJson(host.url, { token: await mint({ version, audience }) });
    expect(answer.body).toMatchObject({ reason: 'allowed', status: 200, principal: { objectId: READER_OID, tenantId: DEV_TENANT_ID } });
  });

  describe('GET /api/health', () => {
    it('answers 200 with the freshness of each issuer and the snapshot', async () => {
      await askJson(host.url, { token: await mint() });
      const h = await readAnswer(await fetch(`${host.url}/api/health`));
      expect(h.status).toBe(200);
      expect(h.body).toMatchObject({ ready: true, status: expect.stringMatching(/^(ok|degraded)$/) });
      const issuers = h.body.issuers as Array<Record<string, unknown>>;
      expect(issuers.map((i) => i.issuer).sort()).toEqual([idp.v1Issuer, idp.v2Issuer].sort());
      for (const i of issuers) expect(i).toMatchObject({ keys: 1, stale: false, keysFetchedAt: expect.any(String) });
      expect(h.body.snapshot).toMatchObject({ store: 'memory', revision: expect.any(String) });
    });

    it('answers HEAD without a body and refuses POST with 405', async () => {
      const head = await fetch(`${host.url}/api/health`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(await head.text()).toBe('');
      const postRes = await fetch(`${host.url}/api/health`, { method: 'POST' });
      expect(postRes.status).toBe(405);
    });
  });

  describe('JSON mode', () => {
    it('answers 200 with the decision for a well-formed question, whatever the decision', async () => {
      for (const [token, reason] of [
        [await mint(), 'allowed'],
        [undefined, 'missing_token'],
        ['garbage', 'malformed_token'],
      ] as const) {
        const a = await askJson(host.url, { ...(token ? { token } : {}) });
        expect(a.status).toBe(200);
        expect(a.body.reason).toBe(reason);
        expect(a.body).not.toHaveProperty('hint');
      }
    });

    it('accepts `url` instead of `path` and `token` instead of the header', async () => {
      const a = await post(host.url, JSON.stringify({ method: 'get', url: 'https://fhir.example.test/Patient/1', token: await mint() }));
      expect(a.body).toMatchObject({ reason: 'allowed' });
    });

    it('refuses two Authorization values in the question as malformed_token', async () => {
      const t = await mint();
      const a = await post(host.url, JSON.stringify({ method: 'GET', path: '/Patient/1', headers: { authorization: [`Bearer ${t}`, `Bearer ${t}`] } }));
      expect(a.body).toMatchObject({ reason: 'malformed_token', status: 401 });
      const b = await post(host.url, JSON.stringify({ method: 'GET', path: '/Patient/1', headers: { authorization: `Bearer ${t}`, Authorization: `Bearer ${t}` } }));
      expect(b.body).toMatchObject({ reason: 'malformed_token', status: 401 });
    });

    it.each<[string, string | Buffer]>([
      ['an empty body', ''],
      ['a body that is not JSON', '{"method":"GET",'],
      ['a JSON array', '[]'],
      ['a JSON string', '"GET /Patient/1"'],
      ['no method', '{"path":"/Patient/1"}'],
      ['neither path nor url', '{"method":"GET"}'],
      ['both path and url', '{"method":"GET","path":"/a","url":"/b"}'],
      ['an unknown member', '{"method":"GET","path":"/a","principal":"admin"}'],
      ['a method with digits', '{"method":"G3T","path":"/a"}'],
      ['an empty path', '{"method":"GET","path":""}'],
      ['a path of 8 KiB + 1', JSON.stringify({ method: 'GET', path: `/${'a'.repeat(8192)}` })],
      ['a numeric header value', '{"method":"GET","path":"/a","headers":{"authorization":5}}'],
      ['nine Authorization values', JSON.stringify({ method: 'GET', path: '/a', headers: { authorization: Array(9).fill('Bearer x') } })],
      ['a token of 64 KiB + 1', JSON.stringify({ method: 'GET', path: '/a', token: 'a'.repeat(65537) })],
      ['a body over 256 KiB', JSON.stringify({ method: 'GET', path: '/a', pad: 'x'.repeat(300 * 1024) })],
      ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0x7d])],
    ])('400 invalid_request: %s', async (_what, body) => {
      const a = await post(host.url, body);
      expect(a.status).toBe(400);
      expect(a.body).toMatchObject({ decision: 'deny', status: 400, reason: 'invalid_request' });
      expect(a.body).not.toHaveProperty('hint');
    });

    it('400 invalid_request: GET without gateway headers', async () => {
      const a = await readAnswer(await fetch(`${host.url}/api/decide`));
      expect(a.status).toBe(400);
      expect(a.body.reason).toBe('invalid_request');
    });
  });

  describe('forward-auth mode: the HTTP status is the decision status', () => {
    it('nginx (X-Original-Method/URI): allow carries the identity headers and no challenge', async () => {
      const a = await askForwardAuth(host.url, { token: await mint() });
      expect(a.status).toBe(200);
      expect(a.headers.get('x-decision-reason')).toBe('allowed');
      expect(a.headers.get('x-auth-principal')).toBe(READER_OID);
      expect(a.headers.get('x-auth-tenant')).toBe(DEV_TENANT_ID);
      expect(a.headers.get('x-auth-application')).toBe(DEV_APP_ID);
      expect(a.headers.get('x-auth-scopes')).toBe('user_impersonation');
      expect(a.headers.get('www-authenticate')).toBeNull();
    });

    it.each<[string, () => Promise<{ token?: string; method?: string }>, number, string, string]>([
      ['no token', async () => ({}), 401, 'missing_token', 'Bearer realm="fhir-pdp"'],
      ['a bad token', async () => ({ token: 'garbage' }), 401, 'malformed_token', 'error="invalid_token"'],
      ['an expired token', async () => ({ token: await mint({ expiresInSeconds: -1000, issuedAtOffsetSeconds: -3600, notBeforeSeconds: -3600 }) }), 401, 'token_expired', 'error="invalid_token"'],
      ['an action not granted', async () => ({ token: await mint(), method: 'DELETE' }), 403, 'action_not_permitted', 'error="insufficient_scope"'],
    ])('nginx: %s -> %s with a challenge', async (_what, make, status, reason, challenge) => {
      const a = await askForwardAuth(host.url, await make());
      expect(a.status).toBe(status);
      expect(a.headers.get('x-decision-reason')).toBe(reason);
      expect(a.headers.get('www-authenticate')).toContain(challenge);
      expect(a.headers.get('x-auth-principal')).toBeNull();
      expect(a.body).toMatchObject({ reason, status });
    });

    it('Traefik (X-Forwarded-Method/Uri)', async () => {
      const token = await mint();
      const ask = (method: string) =>
        fetch(`${host.url}/api/decide`, { headers: { authorization: `Bearer ${token}`, 'x-forwarded-method': method, 'x-forwarded-uri': '/Patient/123' } });
      expect((await ask('GET')).status).toBe(200);
      expect((await ask('DELETE')).status).toBe(403);
    });

    it('X-Original-URI decides the mode whatever the method or body; without X-Original-Method it is invalid_request, never the request method', async () => {
      const token = await mint();
      const ask = (headers: Record<string, string>) =>
        fetch(`${host.url}/api/decide`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'x-original-uri': '/Patient/123', 'content-type': 'application/json', ...headers },
          body: JSON.stringify({ method: 'GET', path: '/Patient/123' }),
        });
      // A POST to /Patient/123 is an update-like write a reader may not do: forward-auth, not JSON.
      const post = await ask({ 'x-original-method': 'POST' });
      expect(post.status).toBe(403);
      expect(post.headers.get('x-decision-reason')).toBe('action_not_permitted');
      const unknown = await ask({});
      expect(unknown.status).toBe(400);
      expect(unknown.headers.get('x-decision-reason')).toBe('invalid_request');
    });

    it('two Authorization headers over raw HTTP: 401 malformed_token', async () => {
      const token = await mint();
      const answer = await rawHttp(
        host.url,
        `GET /api/decide HTTP/1.1\r\nHost: x\r\nX-Original-Method: GET\r\nX-Original-URI: /Patient/123\r\nAuthorization: Bearer ${token}\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
      );
      expect(answer.status).toBe(401);
      expect(rawHeader(answer, 'x-decision-reason')).toBe('malformed_token');
    });
  });

  describe('Envoy ext_authz mode (/api/decide/<original path>)', () => {
    it('allows and denies with the decision status', async () => {
      const token = await mint();
      const get = await fetch(`${host.url}/api/decide/Patient/123`, { headers: { authorization: `Bearer ${token}` } });
      expect(get.status).toBe(200);
      expect(get.headers.get('x-auth-principal')).toBe(READER_OID);
      const del = await fetch(`${host.url}/api/decide/Patient/123`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
      expect(del.status).toBe(403);
      expect(del.headers.get('www-authenticate')).toContain('insufficient_scope');
      const none = await fetch(`${host.url}/api/decide/Patient/123`);
      expect(none.status).toBe(401);
    });

    it('the original query is the FHIR request: an access_token there is a second credential', async () => {
      const token = await mint();
      const res = await fetch(`${host.url}/api/decide/Patient/123?access_token=${token}`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(401);
      expect(res.headers.get('x-decision-reason')).toBe('malformed_token');
    });
  });

  it('answers 404 for an unknown route and 401 for admin routes', async () => {
    expect((await fetch(`${host.url}/api/nothing`)).status).toBe(404);
    expect((await fetch(`${host.url}/api/refresh`, { method: 'POST' })).status).toBe(401);
  });
});

describe('the keyed host (PDP_API_KEYS, PDP_ADMIN_KEYS)', () => {
  let idp: DevIdentityProvider;
  let host: StartedHost;
  beforeAll(async () => {
    idp = await DevIdentityProvider.start();
    host = await hostWith(
      { authority: idp.authority, audience: FHIR_AUDIENCE, accessPolicies: [{ objectId: READER_OID, dataActions: ['read'] }] },
      { PDP_API_KEYS: `other-key, ${API_KEY}`, PDP_ADMIN_KEYS: ADMIN_KEY, PDP_HOST: '127.0.0.1' },
    );
  });
  afterAll(async () => {
    await host?.close();
    await idp?.close();
  });
  const mint = () => idp.mint({ audience: FHIR_AUDIENCE, scp: 'user_impersonation' });

  it('refuses /api/decide without a valid key', async () => {
    const token = await mint();
    for (const key of [undefined, 'wrong-key', `${API_KEY}x`, API_KEY.slice(0, -1)]) {
      const a = await askJson(host.url, { token, ...(key ? { key } : {}) });
      expect(a.status).toBe(401);
      expect(a.body).toEqual({ error: 'unauthorized', message: expect.any(String) });
      expect(a.body).not.toHaveProperty('reason');
    }
  });

  it('accepts the API key as x-functions-key or as the code parameter, and the admin key', async () => {
    const token = await mint();
    expect((await askJson(host.url, { token, key: API_KEY })).body.reason).toBe('allowed');
    expect((await askJson(host.url, { token, key: 'other-key' })).body.reason).toBe('allowed');
    expect((await askJson(host.url, { token, key: ADMIN_KEY })).body.reason).toBe('allowed');
    const viaCode = await readAnswer(
      await fetch(`${host.url}/api/decide?code=${encodeURIComponent(API_KEY)}`, { method: 'POST', body: JSON.stringify({ method: 'GET', path: '/Patient/1', token }) }),
    );
    expect(viaCode.body.reason).toBe('allowed');
  });

  it('does not read `code` in Envoy mode: the query belongs to the original request', async () => {
    const token = await mint();
    const res = await fetch(`${host.url}/api/decide/Patient/1?code=${encodeURIComponent(API_KEY)}`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(503);
    expect(((await res.json()) as Record<string, unknown>).error).toBe('gateway_key_refused');
    const withHeader = await fetch(`${host.url}/api/decide/Patient/1`, { headers: { authorization: `Bearer ${token}`, 'x-functions-key': API_KEY } });
    expect(withHeader.status).toBe(200);
  });

  it('returns the operator hint to the admin key only', async () => {
    const token = await idp.mint({ audience: 'https://other.example.test', scp: 'x' });
    const api = await askJson(host.url, { token, key: API_KEY });
    expect(api.body).toMatchObject({ reason: 'audience_mismatch' });
    expect(api.body).not.toHaveProperty('hint');
    const admin = await askJson(host.url, { token, key: ADMIN_KEY });
    expect(admin.body).toMatchObject({ reason: 'audience_mismatch', hint: expect.stringContaining('https://other.example.test') });
    expect(admin.body.hint).toContain(FHIR_AUDIENCE);
    const fa = await askForwardAuth(host.url, { token, key: API_KEY });
    expect(fa.body).not.toHaveProperty('hint');
    const faAdmin = await askForwardAuth(host.url, { token, key: ADMIN_KEY });
    expect(faAdmin.body).toHaveProperty('hint');
  });

  it('guards the admin routes with the admin key; health stays open', async () => {
    expect((await fetch(`${host.url}/api/refresh`, { method: 'POST', headers: { 'x-functions-key': API_KEY } })).status).toBe(401);
    const refresh = await readAnswer(await fetch(`${host.url}/api/refresh`, { method: 'POST', headers: { 'x-functions-key': ADMIN_KEY } }));
    expect(refresh.status).toBe(200);
    expect(refresh.body).toMatchObject({ outcome: 'ok', revision: expect.any(String) });
    expect((await fetch(`${host.url}/api/refresh`, { headers: { 'x-functions-key': ADMIN_KEY } })).status).toBe(405);
    expect((await fetch(`${host.url}/api/explain`, { method: 'POST', headers: { 'x-functions-key': API_KEY } })).status).toBe(401);
    expect((await fetch(`${host.url}/api/health`)).status).toBe(200);
  });
});

describe('start-up refusals', () => {
  const config = { authority: 'https://login.microsoftonline.com/8f6d2c1e-4b7a-4e39-9c5d-2a1b3c4d5e6f', audience: FHIR_AUDIENCE };

  it('refuses to bind a non-loopback address without keys', async () => {
    await expect(hostWith(config, { PDP_HOST: '0.0.0.0' })).rejects.toMatchObject({ code: 'invalid_config', problems: [expect.objectContaining({ path: 'PDP_HOST' })] });
  });

  it('refuses an invalid configuration with every problem listed', async () => {
    const err = await hostWith({ authority: 'http://idp.example.test', accessPolicies: [{ objectId: 'x' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems.map((p) => p.path)).toEqual(expect.arrayContaining(['authority', 'audience', 'accessPolicies[0].objectId']));
  });

  it('refuses invalid app settings', async () => {
    await expect(hostWith(config, { PORT: 'eighty' })).rejects.toBeInstanceOf(ConfigError);
  });
});
