/**
 * SMART search narrowing through the standalone host, in every way in: the JSON answer's
 * `queryAppend`, AuthZEN's `context.queryAppend`, nginx's `X-Auth-Query-Append` (forward-auth with
 * X-Original-URI), and never for Traefik (X-Forwarded-Uri) or Envoy; not configured, the same
 * searches are refused as before. Tokens from the dev identity provider; the explain trace shows
 * the narrowing step.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedHost } from '../../src/host/main.js';
import { DevIdentityProvider } from '../../testkit/dev-idp.js';
import { jsonOf, rawRequest, startPdpHost, type RawResponse } from '../../testkit/host.js';

const AUDIENCE = 'https://fhir.example.test';
const API_KEY = `narrowing-${randomUUID()}`;
const ADMIN_KEY = `narrowing-admin-${randomUUID()}`;
const SMART_OID = '3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b9a';
const LAB_SCOPES = 'launch/patient patient/Observation.rs?category=laboratory';
const NARROWED = 'patient=Patient/pa&category=laboratory';

let idp: DevIdentityProvider;
let narrowing: StartedHost;
let plain: StartedHost;

const config = (extra: Record<string, unknown>) => ({
  authority: idp.authority,
  audience: AUDIENCE,
  accessPolicies: [{ objectId: SMART_OID, dataActions: ['read', 'smart'] }],
  fetchTimeoutMs: 5000,
  ...extra,
});

const token = (scp = LAB_SCOPES) => idp.mint({ audience: AUDIENCE, oid: SMART_OID, scp, extraClaims: { patient: 'pa' } });

function decideJson(host: StartedHost, path: string, auth: string, key = API_KEY): Promise<RawResponse> {
  return rawRequest(host.url, {
    method: 'POST',
    path: '/api/decide',
    headers: { 'x-functions-key': key, 'content-type': 'application/json' },
    body: JSON.stringify({ method: 'GET', path, headers: { authorization: `Bearer ${auth}` } }),
  });
}

function forwardAuth(host: StartedHost, family: 'nginx' | 'traefik', path: string, auth: string): Promise<RawResponse> {
  const headers: Record<string, string> =
    family === 'nginx' ? { 'x-original-method': 'GET', 'x-original-uri': path } : { 'x-forwarded-method': 'GET', 'x-forwarded-uri': path, 'x-forwarded-proto': 'https' };
  return rawRequest(host.url, { method: 'GET', path: '/api/decide', headers: { ...headers, authorization: `Bearer ${auth}`, 'x-functions-key': API_KEY } });
}

function envoy(host: StartedHost, path: string, auth: string): Promise<RawResponse> {
  return rawRequest(host.url, { method: 'GET', path: `/api/decide${path}`, headers: { authorization: `Bearer ${auth}`, 'x-functions-key': API_KEY, 'content-length': '0' } });
}

async function authzen(host: StartedHost, path: string, auth: string): Promise<Record<string, any>> {
  const res = await rawRequest(host.url, {
    method: 'POST',
    path: '/api/access/v1/evaluation',
    headers: { 'x-functions-key': API_KEY, 'content-type': 'application/json' },
    body: JSON.stringify({ subject: { type: 'user', id: SMART_OID, properties: { token: auth } }, action: { name: 'GET' }, resource: { type: 'route', id: path } }),
  });
  expect(res.status).toBe(200);
  return jsonOf(res);
}

beforeAll(async () => {
  idp = await DevIdentityProvider.start();
  const settings = { PDP_API_KEYS: API_KEY, PDP_ADMIN_KEYS: ADMIN_KEY };
  narrowing = await startPdpHost({ config: config({ smartNarrowing: { gateways: ['nginx', 'json', 'authzen'] } }), settings });
  plain = await startPdpHost({ config: config({}), settings });
  await Promise.all([narrowing.service.refresh(), plain.service.refresh()]);
});

afterAll(async () => {
  await narrowing?.close();
  await plain?.close();
  await idp?.close();
});

describe('with smartNarrowing listing nginx, json and authzen', () => {
  it('JSON mode: allow with queryAppend beside the principal', async () => {
    const answer = jsonOf(await decideJson(narrowing, '/Observation?_count=10', await token()));
    expect(answer).toMatchObject({ decision: 'allow', status: 200, reason: 'allowed', queryAppend: NARROWED, principal: { objectId: SMART_OID } });
    expect(answer.compartment).toBeUndefined();
  });

  it('JSON mode: a search that already proves both has nothing to append', async () => {
    const answer = jsonOf(await decideJson(narrowing, '/Observation?patient=Patient/pa&category=laboratory', await token()));
    expect(answer).toMatchObject({ decision: 'allow' });
    expect(answer.queryAppend).toBeUndefined();
  });

  it('JSON mode: two category scopes narrow to their OR; values are percent-encoded', async () => {
    const scopes = `launch/patient ${'patient/Observation.rs?category=laboratory'} patient/Observation.rs?category=${encodeURIComponent('http://loinc.org|vital-signs')}`;
    const answer = jsonOf(await decideJson(narrowing, '/Observation', await token(scopes)));
    expect(answer).toMatchObject({ decision: 'allow', queryAppend: 'patient=Patient/pa&category=laboratory,http://loinc.org%7Cvital-signs' });
  });

  it.each([
    ['another patient', '/Observation?patient=Patient/pb'],
    ['another category', '/Observation?category=vital-signs'],
    ['a chain', '/Observation?subject.name=x'],
    ['a read by id', '/Observation/o1'],
    ['a history', '/Observation/_history'],
    ['a system-level search', '/?_type=Observation'],
  ])('JSON mode: %s is still refused (insufficient_scope)', async (_name, path) => {
    const answer = jsonOf(await decideJson(narrowing, path, await token()));
    expect(answer).toMatchObject({ decision: 'deny', status: 403, reason: 'insufficient_scope' });
    expect(answer.queryAppend).toBeUndefined();
  });

  it('AuthZEN: decision true with context.queryAppend', async () => {
    const answer = await authzen(narrowing, '/Observation', await token());
    expect(answer).toMatchObject({ decision: true, context: { id: 'allowed', queryAppend: NARROWED } });
  });

  it('nginx (X-Original-URI): 200 with X-Auth-Query-Append', async () => {
    const res = await forwardAuth(narrowing, 'nginx', '/Observation', await token());
    expect(res.status).toBe(200);
    expect(res.headers['x-auth-query-append']).toBe(NARROWED);
    expect(res.headers['x-decision-reason']).toBe('allowed');
  });

  it('Traefik (X-Forwarded-Uri) is never narrowed: 403, no header', async () => {
    const res = await forwardAuth(narrowing, 'traefik', '/Observation', await token());
    expect(res.status).toBe(403);
    expect(res.headers['x-decision-reason']).toBe('insufficient_scope');
    expect(res.headers['x-auth-query-append']).toBeUndefined();
  });

  it('Envoy (HTTP ext_authz) is never narrowed: 403, no header', async () => {
    const res = await envoy(narrowing, '/Observation', await token());
    expect(res.status).toBe(403);
    expect(res.headers['x-decision-reason']).toBe('insufficient_scope');
    expect(res.headers['x-auth-query-append']).toBeUndefined();
  });

  it('explain shows the narrowing step and the parameters', async () => {
    const res = await rawRequest(narrowing.url, {
      method: 'POST',
      path: '/api/explain',
      headers: { 'x-functions-key': ADMIN_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ token: await token(), method: 'GET', path: '/Observation' }),
    });
    expect(res.status).toBe(200);
    const explanation = jsonOf(res) as { decision: Record<string, unknown>; trace: { id: string; outcome: string; found?: string }[] };
    expect(explanation.decision).toMatchObject({ decision: 'allow', queryAppend: NARROWED });
    expect(explanation.trace.find((s) => s.id === 'narrowing')).toMatchObject({ outcome: 'pass', found: `the gateway appends ${NARROWED} to the query` });
  });
});

describe('without smartNarrowing (the default)', () => {
  it.each([
    ['JSON mode', async () => jsonOf(await decideJson(plain, '/Observation', await token()))],
    ['AuthZEN', async () => (await authzen(plain, '/Observation', await token())).context],
    ['nginx', async () => jsonOf(await forwardAuth(plain, 'nginx', '/Observation', await token()))],
  ])('%s: the search is refused as before (insufficient_scope), with nothing to append', async (_name, ask) => {
    const answer = (await ask()) as Record<string, unknown>;
    expect(answer.reason ?? answer.id).toBe('insufficient_scope');
    expect(answer.status).toBe(403);
    expect(answer.queryAppend).toBeUndefined();
  });

  it('a search that proves compartment and constraint is allowed as before', async () => {
    const answer = jsonOf(await decideJson(plain, '/Observation?patient=pa&category=laboratory', await token()));
    expect(answer).toMatchObject({ decision: 'allow' });
    expect(answer.queryAppend).toBeUndefined();
  });
});

describe('configuration', () => {
  it.each([['traefik'], ['envoy'], ['nginx', 'nginx']])('refuses smartNarrowing.gateways %j at start-up', async (...gateways) => {
    await expect(startPdpHost({ config: config({ smartNarrowing: { gateways } }), settings: { PDP_API_KEYS: API_KEY } })).rejects.toThrow(/smartNarrowing/);
  });
});
