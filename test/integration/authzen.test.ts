/**
 * The OpenID AuthZEN Authorization API 1.0 through the standalone host (startHost, as `npm start`):
 * Entra-shaped tokens from the development IdP, SMART tokens from a real OpenID provider
 * (oidc-provider); single and batched evaluations, the metadata document, the request id, the
 * spec's error statuses; and the AuthZEN interop harness's payload checks on FHIR vectors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_EVALUATIONS } from '../../src/authzen/request.js';
import { Pdp } from '../../src/decision/pipeline.js';
import type { DecisionEvent } from '../../src/decision/types.js';
import { startHost, type StartedHost } from '../../src/host/main.js';
import { EVALUATIONS_PATH, handleAuthzen } from '../../src/http/authzen.js';
import { DevIdentityProvider } from '../../testkit/dev-idp.js';
import { startOidcProvider, type RunningOidcProvider } from '../../testkit/oidc-provider.js';
import { ADMIN_KEY, API_KEY, configFor, FHIR_AUDIENCE, READER_OID, startPdpWithDevIdp } from '../../testkit/service.js';

const SECRET = 'portal-secret-0123456789';
const USER_SCOPE = 'user/Patient.read';

let idp: DevIdentityProvider;
let op: RunningOidcProvider;
let host: StartedHost;
let smartToken: string;

const mint = (o: Partial<Parameters<DevIdentityProvider['mint']>[0]> = {}) => idp.mint({ audience: FHIR_AUDIENCE, scp: 'user_impersonation', ...o });
const user = async (o: Partial<Parameters<DevIdentityProvider['mint']>[0]> = {}) => ({ type: 'user', id: o.oid ?? READER_OID, properties: { token: await mint(o) } });

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly body: any;
}

async function call(path: string, body: unknown, headers: Record<string, string> = { 'x-functions-key': API_KEY }, method = 'POST'): Promise<Answer> {
  const res = await fetch(`${host.url}${path}`, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    ...(method === 'POST' ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: parsed };
}

const evaluation = (body: unknown, headers?: Record<string, string>) => call('/api/access/v1/evaluation', body, headers);
const evaluations = (body: unknown, headers?: Record<string, string>) => call('/api/access/v1/evaluations', body, headers);

beforeAll(async () => {
  idp = await DevIdentityProvider.start();
  op = await startOidcProvider({
    clients: [{ client_id: 'portal', client_secret: SECRET }],
    resource: FHIR_AUDIENCE,
    scopes: [USER_SCOPE],
    extraTokenClaims: () => ({ fhirUser: 'Practitioner/pr1' }),
  });
  smartToken = await op.getToken('portal', SECRET, USER_SCOPE);
  host = await startHost(
    {
      PORT: '0',
      PDP_LOG_DECISIONS: 'false',
      PDP_API_KEYS: API_KEY,
      PDP_ADMIN_KEYS: ADMIN_KEY,
      PDP_HOST: '127.0.0.1',
      PDP_CONFIG: JSON.stringify({
        authority: idp.authority,
        audience: FHIR_AUDIENCE,
        accessPolicies: [{ objectId: READER_OID, dataActions: ['read'] }],
        smartIdentityProviders: [{ authority: op.issuer, applications: [{ clientId: 'portal', audience: FHIR_AUDIENCE, allowedDataActions: ['read'] }] }],
      }),
    },
    () => undefined,
  );
});

afterAll(async () => {
  await host?.close();
  await Promise.all([idp?.close(), op?.close()]);
});

describe('POST /api/access/v1/evaluation', () => {
  it('allows a read the token grants: decision true, with the reason and decision id in context', async () => {
    const res = await evaluation(
      { subject: await user(), action: { name: 'read' }, resource: { type: 'Patient', id: '123' } },
      { 'x-functions-key': API_KEY, 'x-request-id': 'bfe9eb29-ab87-4ca3-be83-a1d5d8305716' },
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.headers.get('x-request-id')).toBe('bfe9eb29-ab87-4ca3-be83-a1d5d8305716');
    expect(res.body).toMatchObject({ decision: true, context: { id: 'allowed', status: 200, reason_user: { en: 'The request is allowed.' }, principal: { objectId: READER_OID } } });
    expect(res.body.context.decision_id).toMatch(/\S/);
    expect(res.body.context.reason_admin).toBeUndefined();
  });

  it('accepts the HTTP method and the request path (the API-gateway profile) as the same question', async () => {
    const res = await evaluation({ subject: await user(), action: { name: 'GET' }, resource: { type: 'route', id: '/Patient/123?_elements=id' } });
    expect(res.body).toMatchObject({ decision: true, context: { id: 'allowed' } });
  });

  it('denies what the token does not grant, with the reason, and the hint only for an admin key', async () => {
    const q = { subject: await user(), action: { name: 'delete' }, resource: { type: 'Patient', id: '123' } };
    const res = await evaluation(q);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ decision: false, context: { id: 'action_not_permitted', status: 403 } });
    expect(res.body.context.reason_admin).toBeUndefined();
    const admin = await evaluation(q, { 'x-functions-key': ADMIN_KEY });
    expect(admin.body.context.reason_admin.en).toMatch(/delete/);
  });

  it('a subject id that is not the token\'s principal is a denial (principal_not_allowed), counted as such', async () => {
    const before = host.service.pdp.counters.snapshot();
    const res = await evaluation(
      { subject: { type: 'user', id: '00000000-0000-4000-8000-00000000beef', properties: { token: await mint() } }, action: { name: 'read' }, resource: { type: 'Patient', id: '123' } },
      { 'x-functions-key': ADMIN_KEY },
    );
    expect(res.body).toMatchObject({ decision: false, context: { id: 'principal_not_allowed', status: 403, principal: { objectId: READER_OID } } });
    expect(res.body.context.reason_admin.en).toMatch(/subject\.id/);
    const after = host.service.pdp.counters.snapshot();
    expect([after.allowed - before.allowed, after.denied - before.denied]).toEqual([0, 1]);
    // The fhirUser-less Entra token's oid in upper case is the same GUID.
    const upper = await evaluation({ subject: { type: 'user', id: READER_OID.toUpperCase(), properties: { token: await mint() } }, action: { name: 'read' }, resource: { type: 'Patient', id: '123' } });
    expect(upper.body).toMatchObject({ decision: true });
  });

  it('a SMART token from oidc-provider: the fhirUser is the subject id; its scopes decide', async () => {
    const subject = { type: 'user', id: 'Practitioner/pr1', properties: { token: smartToken } };
    expect((await evaluation({ subject, action: { name: 'read' }, resource: { type: 'Patient', id: '1' } })).body).toMatchObject({ decision: true });
    expect((await evaluation({ subject, action: { name: 'read' }, resource: { type: 'Observation', id: '1' } })).body).toMatchObject({
      decision: false,
      context: { id: 'insufficient_scope' },
    });
  });

  it('no token in subject.properties is the end user\'s 401 reason inside a 200 answer, not an HTTP 401', async () => {
    const res = await evaluation({ subject: { type: 'user', id: READER_OID }, action: { name: 'read' }, resource: { type: 'Patient', id: '1' } });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ decision: false, context: { id: 'missing_token', status: 401 } });
  });

  it('the PEP without a key gets 401 with an error message string; a wrong key too', async () => {
    const q = { subject: await user(), action: { name: 'read' }, resource: { type: 'Patient', id: '1' } };
    for (const headers of [{}, { 'x-functions-key': 'wrong' }] as Array<Record<string, string>>) {
      const res = await evaluation(q, { ...headers, 'x-request-id': 'r-1' });
      expect(res.status).toBe(401);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      expect(res.text).toMatch(/key/);
      expect(res.headers.get('x-request-id')).toBe('r-1');
    }
  });

  it.each([
    ['not JSON', '{', /not JSON/],
    ['a repeated member', '{"subject":{"type":"user","id":"a"},"subject":{"type":"user","id":"b"},"action":{"name":"read"},"resource":{"type":"Patient","id":"1"}}', /repeats/],
    ['no resource', { subject: { type: 'user', id: 'a' }, action: { name: 'read' } }, /resource/],
    ['an unknown member of subject', { subject: { type: 'user', id: 'a', token: 'x' }, action: { name: 'read' }, resource: { type: 'Patient', id: '1' } }, /subject/],
    ['an unknown action', { subject: { type: 'user', id: 'a' }, action: { name: 'can_read' }, resource: { type: 'Patient', id: '1' } }, /can_read/],
    ['a lower-case method', { subject: { type: 'user', id: 'a' }, action: { name: 'get' }, resource: { type: 'Patient', id: '1' } }, /upper case/],
    ['an id that is not a FHIR id', { subject: { type: 'user', id: 'a' }, action: { name: 'read' }, resource: { type: 'Patient', id: '../x' } }, /FHIR id/],
    ['evaluations on the single endpoint', { evaluations: [] }, /evaluations/],
  ])('%s is 400 with an error message string, and nothing is decided', async (_name, body, problem) => {
    const before = host.service.pdp.counters.snapshot();
    const res = await evaluation(body);
    expect(res.status).toBe(400);
    expect(res.text).toMatch(problem);
    const after = host.service.pdp.counters.snapshot();
    expect(after.allowed + after.denied + after.indeterminate).toBe(before.allowed + before.denied + before.indeterminate);
  });

  it('an X-Request-ID that cannot be echoed is 400', async () => {
    const res = await evaluation({}, { 'x-functions-key': API_KEY, 'x-request-id': 'x'.repeat(300) });
    expect(res.status).toBe(400);
    expect(res.headers.get('x-request-id')).toBeNull();
  });

  it('GET is 405', async () => {
    const res = await call('/api/access/v1/evaluation', undefined, { 'x-functions-key': API_KEY }, 'GET');
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST');
  });
});

describe('POST /api/access/v1/evaluations', () => {
  it('applies top-level defaults, lets an evaluation override them, and answers in request order', async () => {
    const res = await evaluations({
      subject: await user(),
      action: { name: 'read' },
      evaluations: [
        { resource: { type: 'Patient', id: '1' } },
        { action: { name: 'update' }, resource: { type: 'Patient', id: '2' } },
        { resource: { type: 'Observation', id: '3' } },
      ],
    });
    expect(res.status).toBe(200);
    expect(res.body.decision).toBeUndefined();
    expect(res.body.evaluations.map((e: any) => [e.decision, e.context.id])).toEqual([
      [true, 'allowed'],
      [false, 'action_not_permitted'],
      [true, 'allowed'],
    ]);
  });

  it('deny_on_first_deny stops after the first false; permit_on_first_permit after the first true', async () => {
    const items = [{ resource: { type: 'Patient', id: '1' } }, { action: { name: 'delete' }, resource: { type: 'Patient', id: '2' } }, { resource: { type: 'Patient', id: '3' } }];
    const base = { subject: await user(), action: { name: 'read' }, evaluations: items };
    const all = await evaluations({ ...base, options: { evaluations_semantic: 'execute_all' } });
    expect(all.body.evaluations.map((e: any) => e.decision)).toEqual([true, false, true]);
    const deny = await evaluations({ ...base, options: { evaluations_semantic: 'deny_on_first_deny' } });
    expect(deny.body.evaluations.map((e: any) => e.decision)).toEqual([true, false]);
    const permit = await evaluations({ ...base, options: { evaluations_semantic: 'permit_on_first_permit' } });
    expect(permit.body.evaluations.map((e: any) => e.decision)).toEqual([true]);
  });

  it('an unknown semantic is 400', async () => {
    const res = await evaluations({ subject: await user(), action: { name: 'read' }, evaluations: [{ resource: { type: 'Patient', id: '1' } }], options: { evaluations_semantic: 'first_match' } });
    expect(res.status).toBe(400);
    expect(res.text).toMatch(/evaluations_semantic/);
  });

  it('a 50-item batch with one token verifies it once and decides each item from the cache', async () => {
    const subject = await user({ oid: READER_OID, sub: 'batch-once' });
    const before = host.service.pdp.counters.snapshot();
    const res = await evaluations({ subject, action: { name: 'read' }, evaluations: Array.from({ length: 50 }, (_, i) => ({ resource: { type: 'Patient', id: `p${i}` } })) });
    expect(res.body.evaluations).toHaveLength(50);
    expect(res.body.evaluations.every((e: any) => e.decision === true)).toBe(true);
    const after = host.service.pdp.counters.snapshot();
    expect(after.token_cache_miss - before.token_cache_miss).toBe(1);
    expect(after.token_cache_hit - before.token_cache_hit).toBe(49);
  });

  it('an evaluation that cannot be read as a FHIR question is false with an error; the others are decided', async () => {
    const res = await evaluations({ subject: await user(), evaluations: [{ action: { name: 'read' }, resource: { type: 'Patient', id: '1' } }, { action: { name: 'fly' }, resource: { type: 'Patient', id: '1' } }] });
    expect(res.status).toBe(200);
    expect(res.body.evaluations[0]).toMatchObject({ decision: true });
    expect(res.body.evaluations[1]).toMatchObject({ decision: false, context: { id: 'invalid_request', error: { status: 400 } } });
    expect(res.body.evaluations[1].context.error.message).toMatch(/fly/);
  });

  it(`more than ${MAX_EVALUATIONS} evaluations, or an evaluation without subject, is 400`, async () => {
    const tooMany = await evaluations({ subject: { type: 'user', id: 'a' }, action: { name: 'read' }, evaluations: Array.from({ length: MAX_EVALUATIONS + 1 }, () => ({ resource: { type: 'Patient', id: '1' } })) });
    expect(tooMany.status).toBe(400);
    expect(tooMany.text).toMatch(String(MAX_EVALUATIONS));
    const noSubject = await evaluations({ action: { name: 'read' }, evaluations: [{ resource: { type: 'Patient', id: '1' } }] });
    expect(noSubject.status).toBe(400);
    expect(noSubject.text).toMatch(/subject/);
  });

  it('without an evaluations array it answers as a single evaluation', async () => {
    const res = await evaluations({ subject: await user(), action: { name: 'read' }, resource: { type: 'Patient', id: '1' } });
    expect(res.body).toMatchObject({ decision: true, context: { id: 'allowed' } });
  });
});

describe('the PDP metadata (GET /.well-known/authzen-configuration/api)', () => {
  it('advertises the URLs this host answers on, at the spec location and below /api, without a key', async () => {
    const origin = host.url.replace(/\/+$/, '');
    for (const path of ['/.well-known/authzen-configuration/api', '/api/.well-known/authzen-configuration']) {
      const res = await call(path, undefined, {}, 'GET');
      expect(res.status).toBe(200);
      expect(res.body).toEqual({
        policy_decision_point: `${origin}/api`,
        access_evaluation_endpoint: `${origin}/api/access/v1/evaluation`,
        access_evaluations_endpoint: `${origin}/api/access/v1/evaluations`,
      });
    }
    // The advertised endpoint is the one that answers.
    const meta = (await call('/.well-known/authzen-configuration/api', undefined, {}, 'GET')).body;
    const res = await fetch(meta.access_evaluation_endpoint, {
      method: 'POST',
      headers: { 'x-functions-key': API_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ subject: await user(), action: { name: 'read' }, resource: { type: 'Patient', id: '1' } }),
    });
    expect(((await res.json()) as any).decision).toBe(true);
  });

  it('with PDP_AUTHZEN_PDP_URL it names that URL; a URL that is not https is refused at start-up', async () => {
    const env = { PORT: '0', PDP_LOG_DECISIONS: 'false', PDP_CONFIG: JSON.stringify({ authority: idp.authority, audience: FHIR_AUDIENCE }) };
    const other = await startHost({ ...env, PDP_AUTHZEN_PDP_URL: 'https://pdp.contoso.example/api' }, () => undefined);
    try {
      const res = await fetch(`${other.url}/.well-known/authzen-configuration/api`);
      expect(await res.json()).toMatchObject({ policy_decision_point: 'https://pdp.contoso.example/api', access_evaluations_endpoint: 'https://pdp.contoso.example/api/access/v1/evaluations' });
    } finally {
      await other.close();
    }
    await expect(startHost({ ...env, PDP_AUTHZEN_PDP_URL: 'http://pdp.contoso.example/api?x=1' }, () => undefined)).rejects.toThrow(/PDP_AUTHZEN_PDP_URL/);
  });
});

/**
 * A faithful copy of the payload checks of openid/authzen's interop harnesses
 * (interop/authzen-todo-backend/test/runner.ts, interop/authzen-api-gateways/test-harness/test/runner.ts):
 * POST `${pdp}/access/v1/${endpoint}` with the vector's request; for `evaluation` the answer is
 * `data.decision || false` compared with the expected boolean; for `evaluations` `data.evaluations`
 * compared with the expected array. Their vectors are the to-do application's users and policy,
 * which do not apply to FHIR (docs/authzen.md); these are FHIR vectors of the same shapes. One
 * difference, said in docs/authzen.md: fhir-pdp adds a `context` to every evaluation, so the
 * evaluations comparison is on each evaluation's `decision`.
 */
describe('the AuthZEN interop payload checks, on FHIR vectors', () => {
  it('evaluation and evaluations vectors pass', async () => {
    const subject = await user();
    const vectors = {
      evaluation: [
        { request: { subject, action: { name: 'GET' }, resource: { type: 'route', id: '/Patient/123' } }, expected: true },
        { request: { subject, action: { name: 'POST' }, resource: { type: 'route', id: '/Patient' } }, expected: false },
        { request: { subject, action: { name: 'PUT' }, resource: { type: 'route', id: '/Patient/123' } }, expected: false },
        { request: { subject, action: { name: 'DELETE' }, resource: { type: 'route', id: '/Patient/123' } }, expected: false },
        { request: { subject, action: { name: 'search-type' }, resource: { type: 'Observation', id: '' } }, expected: true },
        { request: { subject, action: { name: 'capabilities' }, resource: { type: 'system', id: '' } }, expected: true },
      ],
      evaluations: [
        {
          request: { subject, action: { name: 'read' }, evaluations: [{ resource: { type: 'Patient', id: '1' } }, { action: { name: 'create' }, resource: { type: 'Patient', id: '' } }] },
          expected: [{ decision: true }, { decision: false }],
        },
        {
          request: { subject, options: { evaluations_semantic: 'deny_on_first_deny' }, evaluations: [{ action: { name: 'delete' }, resource: { type: 'Patient', id: '1' } }, { action: { name: 'read' }, resource: { type: 'Patient', id: '1' } }] },
          expected: [{ decision: false }],
        },
        {
          request: { subject, options: { evaluations_semantic: 'permit_on_first_permit' }, evaluations: [{ action: { name: 'delete' }, resource: { type: 'Patient', id: '1' } }, { action: { name: 'read' }, resource: { type: 'Patient', id: '1' } }, { action: { name: 'read' }, resource: { type: 'Patient', id: '2' } }] },
          expected: [{ decision: false }, { decision: true }],
        },
      ],
    };
    const pdp = `${host.url.replace(/\/+$/, '')}/api`;
    const results: string[] = [];
    for (const [endpoint, list] of Object.entries(vectors)) {
      for (const v of list) {
        const response = await fetch(`${pdp}/access/v1/${endpoint}`, {
          method: 'POST',
          headers: { 'x-functions-key': API_KEY, 'Content-Type': 'application/json' },
          body: JSON.stringify(v.request),
        });
        const data = (await response.json()) as any;
        const RSP = endpoint === 'evaluation' ? data.decision || false : (data.evaluations || []).map((e: any) => ({ decision: e.decision }));
        results.push(JSON.stringify(v.expected) === JSON.stringify(RSP) ? 'PASS' : `FAIL ${JSON.stringify(v.request)} ${JSON.stringify(data)}`);
      }
    }
    expect(results).toEqual(results.map(() => 'PASS'));
  });
});

describe('POST /api/explain with an AuthZEN evaluation request', () => {
  it('explains it through the same mapping, with the trace; a malformed one is 400', async () => {
    const q = { subject: { type: 'user', id: READER_OID, properties: { token: await mint() } }, action: { name: 'update' }, resource: { type: 'Patient', id: '9' } };
    const res = await call('/api/explain', q, { 'x-functions-key': ADMIN_KEY });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ request: { method: 'PUT', path: '/Patient/9' }, decision: { reason: 'action_not_permitted' }, failedStep: 'dataAction' });
    const bad = await call('/api/explain', { subject: { type: 'user', id: 'a' }, action: { name: 'read' } }, { 'x-functions-key': ADMIN_KEY });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ reason: 'invalid_request' });
    expect(bad.body.hint).toMatch(/AuthZEN/);
    // Only for admin callers, as every explain.
    expect((await call('/api/explain', q, { 'x-functions-key': API_KEY })).status).toBe(401);
  });
});

describe('indeterminate through AuthZEN', () => {
  it('the authority down: decision false with context.error 503, never true; the batch answers every item so', async () => {
    const p = await startPdpWithDevIdp({ metadataRetrySeconds: 10, fetchTimeoutMs: 2000 }, { beforeStart: (i) => i.down('unavailable') });
    try {
      const subject = { type: 'user', id: READER_OID, properties: { token: await p.mint() } };
      const post = async (path: string, body: unknown) =>
        (await (await fetch(`${p.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })).json()) as any;
      const one = await post('/api/access/v1/evaluation', { subject, action: { name: 'read' }, resource: { type: 'Patient', id: '1' } });
      expect(one).toMatchObject({ decision: false, context: { id: 'issuer_unavailable', status: 503, error: { status: 503 } } });
      const many = await post('/api/access/v1/evaluations', { subject, action: { name: 'read' }, evaluations: [{ resource: { type: 'Patient', id: '1' } }, { resource: { type: 'Patient', id: '2' } }] });
      expect(many.evaluations.map((e: any) => [e.decision, e.context.id, e.context.error?.status])).toEqual([
        [false, 'issuer_unavailable', 503],
        [false, 'issuer_unavailable', 503],
      ]);
    } finally {
      await p.close();
    }
  });
});

describe('the decision log and the unseen-Bundle hint', () => {
  it('logs each evaluation with mode "authzen"; a batch Bundle not sent is refused with a hint naming resource.properties.body', async () => {
    const events: DecisionEvent[] = [];
    const pdp = new Pdp(configFor(idp.authority), { logger: (e) => events.push(e) });
    await pdp.refreshIssuers();
    const body = {
      subject: await user(),
      evaluations: [
        { action: { name: 'read' }, resource: { type: 'Patient', id: '1' } },
        { action: { name: 'batch' }, resource: { type: 'system', id: '' } },
      ],
    };
    const res = await handleAuthzen(pdp, { method: 'POST', url: EVALUATIONS_PATH, header: () => [], body: Buffer.from(JSON.stringify(body)) }, EVALUATIONS_PATH, { authenticated: true, admin: true });
    const answers = (JSON.parse(res.body!) as { evaluations: Array<{ decision: boolean; context: { id: string; reason_admin?: { en: string } } }> }).evaluations;
    expect(answers.map((a) => [a.decision, a.context.id])).toEqual([
      [true, 'allowed'],
      [false, 'action_not_permitted'],
    ]);
    expect(answers[1]!.context.reason_admin!.en).toMatch(/entries were not seen: send the Bundle as `resource\.properties\.body` in the AuthZEN evaluation/);
    expect(events.map((e) => [e.mode, e.method, e.path])).toEqual([
      ['authzen', 'GET', '/Patient/1'],
      ['authzen', 'POST', '/'],
    ]);
  });
});
