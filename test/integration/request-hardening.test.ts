/**
 * What the gateway cannot show fhir-pdp is not allowed: a Bundle whose entries were not seen, a
 * forward-auth question without the client's method or URI, method overrides, Bundle entries whose
 * resource disagrees with their URL, JSON questions with repeated members, identity values that
 * cannot travel unchanged in a header, and health details without the admin key. Each case is
 * asked over HTTP of the standalone host's server, with tokens of the development identity provider.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_OBJECT_ID } from '../../testkit/dev-idp.js';
import { REASONS, type ReasonCode } from '../../src/core/reasons.js';
import {
  ADMIN_KEY,
  askForwardAuth,
  readAnswer,
  startPdpWithDevIdp,
  type HttpAnswer,
  type RunningPdp,
} from '../../testkit/service.js';

const WRITER_OID = DEV_OBJECT_ID;
const OWNER_OID = '3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f';
const UNLISTED_OID = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';

function expectReason(a: HttpAnswer, reason: ReasonCode): void {
  expect({ reason: a.body.reason, status: a.body.status }).toEqual({ reason, status: REASONS[reason].status });
}

/** A request to /api/decide with exactly these headers (no defaults), as a gateway would send it. */
async function askRaw(url: string, headers: Record<string, string>, init: { method?: string; path?: string; body?: string } = {}): Promise<HttpAnswer> {
  const res = await fetch(`${url}${init.path ?? '/api/decide'}`, {
    method: init.method ?? 'GET',
    headers: { 'x-functions-key': ADMIN_KEY, ...headers },
    ...(init.body !== undefined ? { body: init.body } : {}),
    signal: AbortSignal.timeout(10_000),
  });
  return readAnswer(res);
}

/** JSON mode with the question given as text, so it can repeat a member. */
function askJsonText(url: string, text: string): Promise<HttpAnswer> {
  return askRaw(url, { 'content-type': 'application/json' }, { method: 'POST', body: text });
}

const bundle = (entry: unknown[], type = 'transaction') => ({ resourceType: 'Bundle', type, entry });

describe('request hardening', () => {
  let pdp: RunningPdp;
  let every: RunningPdp;

  beforeAll(async () => {
    const accessPolicies = [
      { objectId: WRITER_OID, dataActions: ['read', 'write', 'delete'] },
      { objectId: OWNER_OID, dataActions: ['*'] },
    ];
    pdp = await startPdpWithDevIdp({ accessPolicies }, { adminKeys: [ADMIN_KEY] });
    every = await startPdpWithDevIdp({ accessPolicies, unseenBundles: 'requireEveryAction' }, { adminKeys: [ADMIN_KEY], idp: pdp.idp });
  });

  afterAll(async () => {
    await every?.close();
    await pdp?.close();
  });

  describe('a batch or transaction whose entries fhir-pdp did not see', () => {
    it('is refused in forward-auth mode to a principal granted read, write and delete (it could hold a hard delete)', async () => {
      const a = await askForwardAuth(pdp.url, { method: 'POST', path: '/', token: await pdp.mint(), key: ADMIN_KEY });
      expect(a.status).toBe(403);
      expectReason(a, 'action_not_permitted');
      expect(String(a.body.hint)).toMatch(/entries were not seen.*do not send the request body/);
      expect(String(a.body.hint)).toMatch(/unseenBundles/);
    });

    it('is refused in Envoy mode and in JSON mode without `body`, each hint saying how to send it', async () => {
      const token = await pdp.mint();
      const envoy = await askRaw(pdp.url, { authorization: `Bearer ${token}` }, { method: 'POST', path: '/api/decide/' });
      expect(envoy.status).toBe(403);
      expectReason(envoy, 'action_not_permitted');
      expect(String(envoy.body.hint)).toMatch(/with_request_body/);
      const json = await pdp.ask({ method: 'POST', path: '/', token, key: ADMIN_KEY });
      expect(json.status).toBe(200);
      expectReason(json, 'action_not_permitted');
      expect(String(json.body.hint)).toMatch(/send the Bundle as `body`/);
    });

    it('is refused even to a principal granted everything, by default', async () => {
      const a = await askForwardAuth(pdp.url, { method: 'POST', path: '/', token: await pdp.mint({ oid: OWNER_OID }), key: ADMIN_KEY });
      expectReason(a, 'action_not_permitted');
    });

    it('with unseenBundles "requireEveryAction", is allowed only to a principal holding every data action', async () => {
      const writer = await askForwardAuth(every.url, { method: 'POST', path: '/', token: await every.mint(), key: ADMIN_KEY });
      expectReason(writer, 'action_not_permitted');
      expect(String(writer.body.hint)).toMatch(/hardDelete/);
      const owner = await askForwardAuth(every.url, { method: 'POST', path: '/', token: await every.mint({ oid: OWNER_OID }), key: ADMIN_KEY });
      expectReason(owner, 'allowed');
    });
  });

  describe('a Bundle fhir-pdp sees', () => {
    it('an empty Bundle is still refused to a principal granted nothing', async () => {
      const a = await pdp.ask({ method: 'POST', path: '/', token: await pdp.mint({ oid: UNLISTED_OID }), body: bundle([]), key: ADMIN_KEY });
      expectReason(a, 'principal_not_allowed');
      const granted = await pdp.ask({ method: 'POST', path: '/', token: await pdp.mint(), body: bundle([]), key: ADMIN_KEY });
      expectReason(granted, 'allowed');
    });

    it.each([
      { name: 'a create whose resource is another type than its URL', entry: { request: { method: 'POST', url: 'Patient' }, resource: { resourceType: 'SearchParameter' } } },
      { name: 'an update whose resource is another type than its URL', entry: { request: { method: 'PUT', url: 'Patient/1' }, resource: { resourceType: 'StructureDefinition', id: '1' } } },
      { name: 'a create without a resource type', entry: { request: { method: 'POST', url: 'Patient' }, resource: { name: 'x' } } },
    ])('refuses $name', async ({ entry }) => {
      const a = await pdp.ask({ method: 'POST', path: '/', token: await pdp.mint(), body: bundle([entry]), key: ADMIN_KEY });
      expectReason(a, 'action_not_permitted');
      expect(String(a.body.hint)).toMatch(/bundle entry 0 .*the resource type and the URL must agree/);
    });

    it('allows entries whose resource agrees with the URL (control)', async () => {
      const a = await pdp.ask({
        method: 'POST',
        path: '/',
        token: await pdp.mint(),
        body: bundle([
          { request: { method: 'POST', url: 'Patient' }, resource: { resourceType: 'Patient' } },
          { request: { method: 'PUT', url: 'Patient/1' }, resource: { resourceType: 'Patient', id: '1' } },
          { request: { method: 'GET', url: 'Patient/1' } },
        ]),
        key: ADMIN_KEY,
      });
      expectReason(a, 'allowed');
    });
  });

  describe('a Bundle Envoy sends (with_request_body)', () => {
    const envoy = async (body: string, headers: Record<string, string> = {}) =>
      askRaw(pdp.url, { authorization: `Bearer ${await pdp.mint()}`, 'content-type': 'application/fhir+json', ...headers }, { method: 'POST', path: '/api/decide/', body });

    it('is decided entry by entry: allowed when every entry is, refused at the first hard delete', async () => {
      const fine = await envoy(JSON.stringify(bundle([{ request: { method: 'GET', url: 'Patient/1' } }, { request: { method: 'PUT', url: 'Patient/1' }, resource: { resourceType: 'Patient', id: '1' } }])));
      expect(fine.status).toBe(200);
      expectReason(fine, 'allowed');
      const hard = await envoy(JSON.stringify(bundle([{ request: { method: 'DELETE', url: 'Patient/1?_hardDelete=true' } }])));
      expect(hard.status).toBe(403);
      expectReason(hard, 'action_not_permitted');
      expect(String(hard.body.hint)).toMatch(/bundle entry 0 .*hardDelete/);
    });

    it('is refused when Envoy marks the body partial, when it repeats a member, and when it is not JSON', async () => {
      const entries = JSON.stringify(bundle([{ request: { method: 'GET', url: 'Patient/1' } }]));
      const partial = await envoy(entries, { 'x-envoy-auth-partial-body': 'true' });
      expectReason(partial, 'action_not_permitted');
      expect(String(partial.body.hint)).toMatch(/entries were not seen/);
      const repeated = await envoy('{"resourceType":"Bundle","type":"batch","type":"transaction","entry":[]}');
      expectReason(repeated, 'action_not_permitted');
      expect(String(repeated.body.hint)).toMatch(/repeats a member name/);
      const xml = await envoy('<Bundle xmlns="http://hl7.org/fhir"/>');
      expectReason(xml, 'action_not_permitted');
      expect(String(xml.body.hint)).toMatch(/not JSON/);
    });
  });

  describe('a forward-auth question without the original method or URI', () => {
    it("refuses nginx's documented URI-only configuration: a DELETE is never decided as the auth request's GET", async () => {
      const a = await askRaw(pdp.url, { authorization: `Bearer ${await pdp.mint()}`, 'x-original-uri': '/Patient/1' });
      expect(a.status).toBe(400);
      expectReason(a, 'invalid_request');
      expect(String(a.body.hint)).toMatch(/no X-Original-Method header.*proxy_set_header X-Original-Method \$request_method;/);
    });

    it.each<{ name: string; headers: Record<string, string>; hint: RegExp }>([
      { name: 'X-Original-Method without X-Original-URI', headers: { 'x-original-method': 'GET' }, hint: /X-Original-Method but no X-Original-URI/ },
      { name: 'X-Forwarded-Uri without X-Forwarded-Method', headers: { 'x-forwarded-uri': '/Patient/1' }, hint: /no X-Forwarded-Method header/ },
      { name: 'X-Forwarded-Method without X-Forwarded-Uri', headers: { 'x-forwarded-method': 'GET' }, hint: /X-Forwarded-Method but no X-Forwarded-Uri/ },
      { name: 'an empty X-Original-Method', headers: { 'x-original-method': '', 'x-original-uri': '/Patient/1' }, hint: /no X-Original-Method header/ },
    ])('refuses $name as invalid_request', async ({ headers, hint }) => {
      const a = await askRaw(pdp.url, { authorization: `Bearer ${await pdp.mint()}`, ...headers });
      expect(a.status).toBe(400);
      expectReason(a, 'invalid_request');
      expect(String(a.body.hint)).toMatch(hint);
    });
  });

  describe('method overrides', () => {
    it.each(['X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override'])('refuses a forward-auth question carrying %s', async (header) => {
      const a = await askRaw(pdp.url, { authorization: `Bearer ${await pdp.mint()}`, 'x-original-method': 'GET', 'x-original-uri': '/Patient/1', [header]: 'DELETE' });
      expect(a.status).toBe(403);
      expectReason(a, 'action_not_permitted');
      expect(String(a.body.hint)).toContain(header.toLowerCase());
    });

    it('refuses `_method` in the URI (forward-auth), an override header in Envoy mode, and both in JSON mode', async () => {
      const token = await pdp.mint();
      const param = await askForwardAuth(pdp.url, { method: 'POST', path: '/Patient?_method=DELETE', token, key: ADMIN_KEY });
      expectReason(param, 'action_not_permitted');
      expect(String(param.body.hint)).toMatch(/_method, a method override/);
      const envoy = await askRaw(pdp.url, { authorization: `Bearer ${token}`, 'x-http-method-override': 'DELETE' }, { path: '/api/decide/Patient/1' });
      expect(envoy.status).toBe(403);
      expectReason(envoy, 'action_not_permitted');
      const json = await askJsonText(pdp.url, JSON.stringify({ method: 'GET', path: '/Patient/1', headers: { authorization: `Bearer ${token}`, 'X-HTTP-Method-Override': 'DELETE' } }));
      expectReason(json, 'action_not_permitted');
      const jsonParam = await askJsonText(pdp.url, JSON.stringify({ method: 'GET', path: '/Patient/1?_method=DELETE', token }));
      expectReason(jsonParam, 'action_not_permitted');
    });

    it('refuses `_method` in a Bundle entry and in an explain question too', async () => {
      const token = await pdp.mint();
      const entry = await pdp.ask({ method: 'POST', path: '/', token, body: bundle([{ request: { method: 'GET', url: 'Patient/1?_method=DELETE' } }]), key: ADMIN_KEY });
      expectReason(entry, 'action_not_permitted');
      const explained = await askRaw(pdp.url, { 'content-type': 'application/json' }, { method: 'POST', path: '/api/explain', body: JSON.stringify({ token, method: 'GET', path: '/Patient/1?_method=DELETE' }) });
      expect(explained.status).toBe(200);
      expect(explained.body.decision).toMatchObject({ reason: 'action_not_permitted' });
      const repeated = await askRaw(pdp.url, { 'content-type': 'application/json' }, { method: 'POST', path: '/api/explain', body: `{"token":"${token}","method":"DELETE","method":"GET","path":"/Patient/1"}` });
      expect(repeated.status).toBe(400);
      expectReason(repeated, 'invalid_request');
    });

    it('allows the same questions without the override (control)', async () => {
      const a = await askRaw(pdp.url, { authorization: `Bearer ${await pdp.mint()}`, 'x-original-method': 'GET', 'x-original-uri': '/Patient/1' });
      expectReason(a, 'allowed');
    });
  });

  describe('a JSON question with a repeated member', () => {
    it.each([
      { name: 'method', text: (t: string) => `{"method":"DELETE","method":"GET","path":"/Patient/1","token":"${t}"}` },
      { name: 'path', text: (t: string) => `{"method":"GET","path":"/Patient/1","path":"/Patient/2","token":"${t}"}` },
      { name: 'a header name', text: (t: string) => `{"method":"GET","path":"/Patient/1","headers":{"authorization":"Bearer ${t}","authorization":"Bearer x"}}` },
      { name: 'an escaped spelling of the same name', text: (t: string) => `{"method":"GET","\\u006dethod":"DELETE","path":"/Patient/1","token":"${t}"}` },
      { name: 'a member inside the Bundle', text: (t: string) => `{"method":"POST","path":"/","token":"${t}","body":{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/1","method":"DELETE"}}]}}` },
    ])('is invalid_request: $name', async ({ text }) => {
      const a = await askJsonText(pdp.url, text(await pdp.mint()));
      expect(a.status).toBe(400);
      expectReason(a, 'invalid_request');
      expect(String(a.body.hint)).toMatch(/repeats a member name/);
    });
  });

  describe('identity values for the upstream', () => {
    it.each([
      { name: 'a non-ASCII fhirUser', claims: { fhirUser: 'Practitioner/é1' } },
      { name: 'a fhirUser with a control character', claims: { fhirUser: 'Practitioner/1\u0007' } },
      { name: 'a non-ASCII scope', claims: { scp: 'user_impersonation scöpe' } },
    ])('refuses $name rather than stripping it into another value', async ({ claims }) => {
      const a = await askForwardAuth(pdp.url, { token: await pdp.mint({ extraClaims: claims }), key: ADMIN_KEY });
      expect(a.status).toBe(401);
      expectReason(a, 'missing_claim');
      expect(String(a.body.hint)).toMatch(/printable ASCII/);
      expect(a.headers.get('x-auth-fhir-user')).toBeNull();
    });

    it('passes a printable ASCII fhirUser unchanged (control)', async () => {
      const a = await askForwardAuth(pdp.url, { token: await pdp.mint({ fhirUser: 'Practitioner/a-1' }), key: ADMIN_KEY });
      expectReason(a, 'allowed');
      expect(a.headers.get('x-auth-fhir-user')).toBe('Practitioner/a-1');
    });
  });

  describe('GET /api/health', () => {
    it('without the admin key: ready and status only, no authority, tenant, error text or counters', async () => {
      const res = await fetch(`${pdp.url}/api/health`);
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(JSON.parse(text)).toEqual({ ready: true, status: expect.stringMatching(/^(ok|degraded)$/) });
      expect(text).not.toContain(pdp.idp.authority);
    });

    it('with the admin key: the full report', async () => {
      const a = await readAnswer(await fetch(`${pdp.url}/api/health`, { headers: { 'x-functions-key': ADMIN_KEY } }));
      expect(a.status).toBe(200);
      expect(a.body).toMatchObject({ ready: true, issuers: expect.any(Array), counters: expect.any(Object) });
      expect(JSON.stringify(a.body)).toContain(pdp.idp.authority);
    });

    it('not ready, without the admin key: 503 with a coarse reason only', async () => {
      const down = await startPdpWithDevIdp({}, { adminKeys: [ADMIN_KEY], beforeStart: (idp) => idp.down('unavailable') });
      try {
        const res = await fetch(`${down.url}/api/health`);
        expect(res.status).toBe(503);
        expect(await res.json()).toEqual({ ready: false, status: 'unavailable', reason: 'issuer_keys' });
      } finally {
        down.idp.up();
        await down.close();
      }
    });
  });
});
