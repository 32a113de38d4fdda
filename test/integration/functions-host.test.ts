/**
 * The Functions app as the Node.js worker runs it: the real @azure/functions library loaded through
 * the worker's `@azure/functions-core` module, the app imported from package.json's `main` glob,
 * the appStart hook run, and every request an RPC-shaped invocation through the library's own
 * invocation model (testkit/functions-host.ts). The authority is a DevIdentityProvider on
 * loopback, so the test can take it down after start-up; a SMART identity provider is a real
 * OpenID provider (npm oidc-provider), stopped after start-up.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_APP_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { FunctionsTestHost, type HostHttpRequest } from '../../testkit/functions-host.js';
import { startOidcProvider, type RunningOidcProvider } from '../../testkit/oidc-provider.js';
import { ADMIN_KEY, API_KEY, FHIR_AUDIENCE, READER_OID } from '../../testkit/service.js';

const APP_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SETTINGS = ['PDP_CONFIG', 'PDP_CONFIG_FILE', 'PDP_API_KEYS', 'PDP_ADMIN_KEYS', 'PDP_LOG_DECISIONS', 'PDP_SNAPSHOT_STORE', 'PDP_REFRESH_SCHEDULE'] as const;
const saved = Object.fromEntries(SETTINGS.map((k) => [k, process.env[k]]));

const SECRET = 'portal-secret-0123456789';
const USER_SCOPE = 'user/Patient.read';

let idp: DevIdentityProvider;
let smartProvider: RunningOidcProvider | undefined;
let smartToken: string;
let host: FunctionsTestHost;
let requestsAtStart: number;

const mint = (o: Partial<Parameters<DevIdentityProvider['mint']>[0]> = {}) => idp.mint({ audience: FHIR_AUDIENCE, scp: 'user_impersonation', ...o });

function decideJson(question: Record<string, unknown>, headers: Record<string, string> = { 'x-functions-key': API_KEY }): HostHttpRequest {
  return { method: 'POST', path: '/api/decide', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(question) };
}

beforeAll(async () => {
  idp = await DevIdentityProvider.start();
  smartProvider = await startOidcProvider({ clients: [{ client_id: 'portal', client_secret: SECRET }], resource: FHIR_AUDIENCE, scopes: [USER_SCOPE], extraTokenClaims: () => ({ fhirUser: 'Practitioner/pr1' }) });
  smartToken = await smartProvider.getToken('portal', SECRET, USER_SCOPE);
  for (const k of SETTINGS) delete process.env[k];
  Object.assign(process.env, {
    PDP_LOG_DECISIONS: 'false',
    PDP_ADMIN_KEYS: ADMIN_KEY,
    PDP_CONFIG: JSON.stringify({
      authority: idp.authority,
      audience: FHIR_AUDIENCE,
      accessPolicies: [{ objectId: READER_OID, dataActions: ['read'] }],
      smartIdentityProviders: [{ authority: smartProvider.issuer, applications: [{ clientId: 'portal', audience: FHIR_AUDIENCE, allowedDataActions: ['read'] }] }],
      fetchTimeoutMs: 2000,
    }),
  });
  // In Azure the admin key is a host key as well, so that the host lets it through to decide.
  host = await FunctionsTestHost.start({ appRoot: APP_ROOT, functionKeys: [API_KEY, ADMIN_KEY] });
  requestsAtStart = idp.requestCount();
});

afterAll(async () => {
  await host?.stop();
  for (const k of SETTINGS) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  await Promise.all([idp?.close(), smartProvider?.close()]);
});

describe('start-up (app.hook.appStart)', () => {
  it('loads discovery and keys before the first request: the first decision needs no network', async () => {
    expect(requestsAtStart).toBeGreaterThan(0);
    idp.down('reset');
    try {
      const res = await host.http(decideJson({ method: 'GET', path: '/Patient/123', token: await mint() }));
      expect(res.functionName).toBe('decide');
      expect(res.json()).toMatchObject({ decision: 'allow', reason: 'allowed', principal: { objectId: READER_OID } });
      expect(idp.requestCount()).toBe(requestsAtStart);
    } finally {
      idp.up();
    }
  });

  it('registers every function with its route, methods, auth level and trigger, and the start and terminate hooks', () => {
    const methods = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];
    expect(host.registrations).toEqual(
      expect.arrayContaining([
        { name: 'decide', trigger: 'httpTrigger', route: 'decide', methods, authLevel: 'function' },
        { name: 'decide-envoy', trigger: 'httpTrigger', route: 'decide/{*path}', methods, authLevel: 'function' },
        { name: 'explain', trigger: 'httpTrigger', route: 'explain', methods: ['GET', 'POST'], authLevel: 'anonymous' },
        { name: 'health', trigger: 'httpTrigger', route: 'health', methods: ['GET', 'HEAD'], authLevel: 'anonymous' },
        { name: 'refresh', trigger: 'httpTrigger', route: 'refresh', methods: ['POST'], authLevel: 'anonymous' },
        { name: 'revocations', trigger: 'httpTrigger', route: 'revocations', methods: ['GET', 'POST'], authLevel: 'anonymous' },
        { name: 'revocation', trigger: 'httpTrigger', route: 'revocations/{id}', methods: ['DELETE'], authLevel: 'anonymous' },
        { name: 'smart-configuration', trigger: 'httpTrigger', route: 'smart-configuration', methods: ['GET', 'HEAD'], authLevel: 'anonymous' },
        { name: 'refreshTimer', trigger: 'timerTrigger', schedule: '0 */5 * * * *', runOnStartup: false },
        { name: 'authzen-evaluation', trigger: 'httpTrigger', route: 'access/v1/evaluation', methods: ['POST'], authLevel: 'function' },
        { name: 'authzen-evaluations', trigger: 'httpTrigger', route: 'access/v1/evaluations', methods: ['POST'], authLevel: 'function' },
        { name: 'authzen-configuration', trigger: 'httpTrigger', route: '.well-known/authzen-configuration', methods: ['GET'], authLevel: 'anonymous' },
      ]),
    );
    expect(host.registrations).toHaveLength(12);
    expect(host.routePrefix).toBe('api');
    expect(host.hookCounts()).toEqual({ appStart: 1, appTerminate: 1 });
  });
});

describe('AuthZEN through the host', () => {
  const evaluation = (body: unknown, headers: Record<string, string> = { 'x-functions-key': API_KEY }): HostHttpRequest => ({
    method: 'POST',
    path: '/api/access/v1/evaluation',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });

  it('POST /api/access/v1/evaluation: decision and context, the request id echoed; the host refuses a missing key', async () => {
    const q = { subject: { type: 'user', id: READER_OID, properties: { token: await mint() } }, action: { name: 'read' }, resource: { type: 'Patient', id: '1' } };
    const res = await host.http(evaluation(q, { 'x-functions-key': API_KEY, 'x-request-id': 'req-7' }));
    expect(res.functionName).toBe('authzen-evaluation');
    expect(res.status).toBe(200);
    expect(res.headers['x-request-id']).toBe('req-7');
    expect(res.json()).toMatchObject({ decision: true, context: { id: 'allowed', principal: { objectId: READER_OID } } });
    expect((await host.http(evaluation(q, {}))).status).toBe(401);
    const bad = await host.http({ ...evaluation(q), body: '{"subject":' });
    expect(bad.status).toBe(400);
    expect(bad.body.toString()).toMatch(/not JSON/);
  });

  it('POST /api/access/v1/evaluations with a SMART token from oidc-provider, in request order', async () => {
    const res = await host.http({
      ...evaluation({
        subject: { type: 'user', id: 'Practitioner/pr1', properties: { token: smartToken } },
        action: { name: 'read' },
        evaluations: [{ resource: { type: 'Patient', id: '1' } }, { resource: { type: 'Observation', id: '1' } }, { action: { name: 'GET' }, resource: { type: 'route', id: '/Patient/2' } }],
      }),
      path: '/api/access/v1/evaluations',
    });
    expect(res.functionName).toBe('authzen-evaluations');
    expect((res.json().evaluations as Array<{ decision: boolean; context: { id: string } }>).map((e) => [e.decision, e.context.id])).toEqual([
      [true, 'allowed'],
      [false, 'insufficient_scope'],
      [true, 'allowed'],
    ]);
  });

  it('GET /api/.well-known/authzen-configuration: anonymous, the URLs of this app', async () => {
    const res = await host.http({ method: 'GET', path: '/api/.well-known/authzen-configuration' });
    expect(res.functionName).toBe('authzen-configuration');
    expect(res.json()).toEqual({
      policy_decision_point: 'http://localhost:7071/api',
      access_evaluation_endpoint: 'http://localhost:7071/api/access/v1/evaluation',
      access_evaluations_endpoint: 'http://localhost:7071/api/access/v1/evaluations',
    });
  });
});

describe('decide through the host (authLevel function)', () => {
  it('JSON mode: 200 with the decision and its id header', async () => {
    const res = await host.http(decideJson({ method: 'GET', path: '/Patient/123', headers: { authorization: `Bearer ${await mint()}` } }));
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toContain('application/json');
    expect(res.json()).toMatchObject({ decision: 'allow', status: 200, reason: 'allowed' });
    expect(res.headers['x-decision-id']).toBe(res.json().decisionId);
  });

  it('the host refuses a call without a valid function key before the function runs; the code parameter is a key too', async () => {
    const q = { method: 'GET', path: '/Patient/1', token: await mint() };
    const none = await host.http(decideJson(q, {}));
    expect(none).toMatchObject({ status: 401 });
    expect(none.functionName).toBeUndefined();
    expect((await host.http(decideJson(q, { 'x-functions-key': 'wrong-key' }))).status).toBe(401);
    const viaCode = await host.http({ ...decideJson(q, {}), path: `/api/decide?code=${API_KEY}` });
    expect(viaCode.json()).toMatchObject({ reason: 'allowed' });
  });

  it('forward-auth mode: the decision as the status, identity headers on allow, a challenge on deny', async () => {
    const token = await mint();
    const ask = (method: string) =>
      host.http({ method: 'GET', path: '/api/decide', headers: { 'x-functions-key': API_KEY, authorization: `Bearer ${token}`, 'x-original-method': method, 'x-original-uri': '/Patient/123' } });
    const allow = await ask('GET');
    expect(allow.status).toBe(200);
    expect(allow.headers['x-auth-principal']).toBe(READER_OID);
    expect(allow.headers['x-auth-application']).toBe(DEV_APP_ID);
    const deny = await ask('DELETE');
    expect(deny.status).toBe(403);
    expect(deny.headers['x-decision-reason']).toBe('action_not_permitted');
    expect(deny.headers['www-authenticate']).toContain('error="insufficient_scope"');
  });

  it('two Authorization headers, joined by the host into one value: 401 malformed_token', async () => {
    const token = await mint();
    const res = await host.http({
      method: 'GET',
      path: '/api/decide',
      headers: { 'x-functions-key': API_KEY, authorization: [`Bearer ${token}`, `Bearer ${token}`], 'x-original-method': 'GET', 'x-original-uri': '/Patient/123' },
    });
    expect(res.status).toBe(401);
    expect(res.headers['x-decision-reason']).toBe('malformed_token');
  });

  it('Envoy prefix: /api/decide/{*path} is the original request', async () => {
    const token = await mint();
    const get = await host.http({ method: 'GET', path: '/api/decide/Patient/123?_elements=id', headers: { 'x-functions-key': API_KEY, authorization: `Bearer ${token}` } });
    expect(get.functionName).toBe('decide-envoy');
    expect(get.status).toBe(200);
    const del = await host.http({ method: 'DELETE', path: '/api/decide/Patient/123', headers: { 'x-functions-key': API_KEY, authorization: `Bearer ${token}` } });
    expect(del.status).toBe(403);
    const none = await host.http({ method: 'GET', path: '/api/decide/Patient/123', headers: { 'x-functions-key': API_KEY } });
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Bearer realm="fhir-pdp"');
  });

  it('a body over 256 KiB arrives as bytes and is refused: 400 invalid_request', async () => {
    const res = await host.http(decideJson({ method: 'GET', path: '/a', pad: 'x'.repeat(300 * 1024) }));
    expect(res.status).toBe(400);
    expect(res.json()).toMatchObject({ reason: 'invalid_request' });
  });

  it('the operator hint only with the admin key', async () => {
    const q = { method: 'GET', path: '/Patient/1', token: await mint({ audience: 'https://other.example.test' }) };
    const plain = (await host.http(decideJson(q))).json();
    expect(plain).toMatchObject({ reason: 'audience_mismatch', status: 401 });
    expect(plain).not.toHaveProperty('hint');
    const admin = (await host.http(decideJson(q, { 'x-functions-key': ADMIN_KEY }))).json();
    expect(admin).toMatchObject({ reason: 'audience_mismatch', hint: expect.stringContaining('https://other.example.test') });
  });
});

describe('health, refresh, explain, timer through the host', () => {
  it('GET /api/health: 200 ready, issuer freshness with the admin key only; POST is not a method of the route (405 from the host)', async () => {
    const anonymous = await host.http({ method: 'GET', path: '/api/health' });
    expect(anonymous.status).toBe(200);
    expect(anonymous.json()).toEqual({ ready: true, status: expect.stringMatching(/^(ok|degraded)$/) });
    const res = await host.http({ method: 'GET', path: '/api/health', headers: { 'x-functions-key': ADMIN_KEY } });
    expect(res.status).toBe(200);
    expect(res.json()).toMatchObject({ ready: true });
    expect((res.json().issuers as Array<{ issuer: string }>).map((i) => i.issuer).sort()).toEqual([idp.v1Issuer, idp.v2Issuer, smartProvider!.issuer].sort());
    expect((await host.http({ method: 'POST', path: '/api/health' })).status).toBe(405);
  });

  it('POST /api/refresh needs the admin key', async () => {
    expect((await host.http({ method: 'POST', path: '/api/refresh' })).status).toBe(401);
    const ok = await host.http({ method: 'POST', path: '/api/refresh', headers: { 'x-functions-key': ADMIN_KEY } });
    expect(ok.status).toBe(200);
    expect(ok.json()).toMatchObject({ outcome: 'ok', revision: expect.any(String) });
  });

  it('/api/revocations: add, list and remove an entry with the admin key; without it, 401', async () => {
    expect((await host.http({ method: 'GET', path: '/api/revocations' })).status).toBe(401);
    const admin = { 'x-functions-key': ADMIN_KEY, 'content-type': 'application/json' };
    const added = await host.http({ method: 'POST', path: '/api/revocations', headers: admin, body: JSON.stringify({ kind: 'sid', issuer: idp.v2Issuer, sid: 'functions-session' }) });
    expect(added.status).toBe(200);
    const id = (added.json().added as Array<{ id: string }>)[0]!.id;
    const listed = await host.http({ method: 'GET', path: '/api/revocations', headers: admin });
    expect(listed.json()).toMatchObject({ entries: [expect.objectContaining({ id, kind: 'sid' })] });
    const removed = await host.http({ method: 'DELETE', path: `/api/revocations/${id}`, headers: admin });
    expect(removed.functionName).toBe('revocation');
    expect(removed.status).toBe(200);
    expect((await host.http({ method: 'GET', path: '/api/revocations', headers: admin })).json()).toMatchObject({ count: 0 });
  });

  it('POST /api/explain with the admin key explains a decision; without it, 401', async () => {
    const q = JSON.stringify({ token: await mint(), method: 'DELETE', path: '/Patient/1' });
    expect((await host.http({ method: 'POST', path: '/api/explain', body: q })).status).toBe(401);
    const res = await host.http({ method: 'POST', path: '/api/explain', headers: { 'x-functions-key': ADMIN_KEY, 'content-type': 'application/json' }, body: q });
    expect(res.status).toBe(200);
    expect(res.text()).toContain('action_not_permitted');
    const page = await host.http({ method: 'GET', path: '/api/explain', headers: { 'x-functions-key': ADMIN_KEY } });
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toContain('text/html');
  });

  it('the refresh timer refreshes from the authority and logs one refresh line through the invocation context', async () => {
    const before = idp.requestCount();
    const logged = host.logs.length;
    await host.timer('refreshTimer');
    expect(idp.requestCount()).toBeGreaterThan(before);
    const lines = host.logs.slice(logged).filter((l) => l.category === 'user' && l.functionName === 'refreshTimer' && l.message.includes('"type":"refresh"'));
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!.message)).toMatchObject({ type: 'refresh', outcome: 'ok', problems: [] });
    expect(lines[0]!.message).not.toContain(ADMIN_KEY);
  });

  it('a route the app does not have: 404 from the host', async () => {
    expect((await host.http({ method: 'GET', path: '/api/nothing-here' })).status).toBe(404);
    expect((await host.http({ method: 'GET', path: '/decide' })).status).toBe(404);
  });
});

describe('a SMART identity provider (oidc-provider) after start-up', () => {
  it('its keys were loaded at start-up: with the provider stopped, its token is still decided (the first decision with it)', async () => {
    await smartProvider!.close();
    smartProvider = undefined;
    const res = await host.http(decideJson({ method: 'GET', path: '/Patient/123', token: smartToken }, { 'x-functions-key': ADMIN_KEY }));
    expect(res.json()).toMatchObject({ decision: 'allow', reason: 'allowed' });
  });
});
