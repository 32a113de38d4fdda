/**
 * The @azure/functions v4 handlers, called directly: an HttpRequest and an InvocationContext built
 * with the package's test constructors, app settings in process.env, and resetFunctionsApp() between
 * tests so each reads its settings afresh. The app as the worker runs it (registration, hooks, the
 * library's invocation model) is tested in functions-host.test.ts.
 */
import { HttpRequest, InvocationContext, type HttpResponseInit, type Timer } from '@azure/functions';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { decide } from '../../functions/decide.js';
import { health } from '../../functions/health.js';
import { refreshNow } from '../../functions/refresh.js';
import { smartConfiguration } from '../../functions/smart-configuration.js';
import { ConfigError } from '../../src/config/load.js';
import { DEV_APP_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { handleRefreshTimer, resetFunctionsApp, startWorker, functionsAppOf } from '../../src/http/azure.js';
import { ADMIN_KEY, API_KEY, FHIR_AUDIENCE, READER_OID } from '../../testkit/service.js';

const BASE = 'http://localhost:7071';
const APP_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SETTINGS = ['PDP_CONFIG', 'PDP_CONFIG_FILE', 'PDP_API_KEYS', 'PDP_ADMIN_KEYS', 'PDP_LOG_DECISIONS', 'PDP_SNAPSHOT_STORE', 'PDP_SNAPSHOT_CONNECTION'] as const;
const saved = Object.fromEntries(SETTINGS.map((k) => [k, process.env[k]]));

let idp: DevIdentityProvider;

function configure(config: Record<string, unknown> = {}, env: Record<string, string> = {}): void {
  for (const k of SETTINGS) delete process.env[k];
  Object.assign(process.env, {
    PDP_LOG_DECISIONS: 'false',
    PDP_ADMIN_KEYS: ADMIN_KEY,
    PDP_CONFIG: JSON.stringify({ authority: idp.authority, audience: FHIR_AUDIENCE, accessPolicies: [{ objectId: READER_OID, dataActions: ['read'] }], ...config }),
    ...env,
  });
}

function context(log: unknown[][] = []): InvocationContext {
  return new InvocationContext({ functionName: 'test', logHandler: (_level, ...args) => void log.push(args) });
}

function header(res: HttpResponseInit, name: string): string | undefined {
  return (res.headers as Record<string, string> | undefined)?.[name];
}

function bodyOf(res: HttpResponseInit): Record<string, unknown> {
  return JSON.parse(String(res.body)) as Record<string, unknown>;
}

const mint = (o: Partial<Parameters<DevIdentityProvider['mint']>[0]> = {}) => idp.mint({ audience: FHIR_AUDIENCE, scp: 'user_impersonation', ...o });

function jsonQuestion(question: Record<string, unknown>, headers: Record<string, string> = {}): HttpRequest {
  return new HttpRequest({ method: 'POST', url: `${BASE}/api/decide`, headers: { 'content-type': 'application/json', ...headers }, body: { string: JSON.stringify(question) } });
}

beforeAll(async () => {
  idp = await DevIdentityProvider.start();
});
beforeEach(() => configure());
afterEach(() => resetFunctionsApp());
afterAll(async () => {
  for (const k of SETTINGS) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  await idp?.close();
});

describe('decide (functions/decide.ts)', () => {
  it('JSON mode: 200 with the decision in the body', async () => {
    const res = await decide(jsonQuestion({ method: 'GET', path: '/Patient/123', headers: { authorization: `Bearer ${await mint()}` } }), context());
    expect(res.status).toBe(200);
    expect(bodyOf(res)).toMatchObject({ decision: 'allow', status: 200, reason: 'allowed', principal: { objectId: READER_OID } });
    expect(header(res, 'x-decision-id')).toBe(bodyOf(res).decisionId);
  });

  it('with PDP_LOG_DECISIONS=true writes one decision line per decision, in the standalone host\'s format, never the token', async () => {
    configure({}, { PDP_LOG_DECISIONS: 'true' });
    const lines: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((line: unknown) => void lines.push(String(line)));
    try {
      const token = await mint();
      const res = await decide(jsonQuestion({ method: 'GET', path: '/Patient/123?identifier=secret', headers: { authorization: `Bearer ${token}` } }), context());
      const again = await decide(jsonQuestion({ method: 'GET', path: '/Patient/124', headers: { authorization: `Bearer ${token}` } }), context());
      const decisions = lines.filter((l) => l.startsWith('{"type":"decision"')).map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(decisions).toHaveLength(2);
      expect(decisions[0]).toMatchObject({ type: 'decision', decisionId: bodyOf(res).decisionId, decision: 'allow', reason: 'allowed', objectId: READER_OID, path: '/Patient/123', cacheHit: false });
      expect(decisions[1]).toMatchObject({ decisionId: bodyOf(again).decisionId, objectId: READER_OID, path: '/Patient/124', cacheHit: true });
      expect(lines.join('\n')).not.toContain(token);
      expect(lines.join('\n')).not.toContain('secret');
    } finally {
      spy.mockRestore();
    }
  });

  it('forward-auth mode: the decision status, identity headers on allow, a challenge on deny', async () => {
    const token = await mint();
    const ask = (method: string) =>
      decide(new HttpRequest({ method: 'GET', url: `${BASE}/api/decide`, headers: { authorization: `Bearer ${token}`, 'x-original-method': method, 'x-original-uri': '/Patient/123' } }), context());
    const allow = await ask('GET');
    expect(allow.status).toBe(200);
    expect(header(allow, 'x-auth-principal')).toBe(READER_OID);
    expect(header(allow, 'x-auth-application')).toBe(DEV_APP_ID);
    const deny = await ask('DELETE');
    expect(deny.status).toBe(403);
    expect(header(deny, 'x-decision-reason')).toBe('action_not_permitted');
    expect(header(deny, 'www-authenticate')).toContain('error="insufficient_scope"');
  });

  it('Envoy mode: /api/decide/<path> is the original request', async () => {
    const token = await mint();
    const get = await decide(new HttpRequest({ method: 'GET', url: `${BASE}/api/decide/Patient/123`, headers: { authorization: `Bearer ${token}` } }), context());
    expect(get.status).toBe(200);
    const del = await decide(new HttpRequest({ method: 'DELETE', url: `${BASE}/api/decide/Patient/123`, headers: { authorization: `Bearer ${token}` } }), context());
    expect(del.status).toBe(403);
    const none = await decide(new HttpRequest({ method: 'GET', url: `${BASE}/api/decide/Patient/123` }), context());
    expect(none.status).toBe(401);
    expect(header(none, 'www-authenticate')).toBe('Bearer realm="fhir-pdp"');
  });

  it('two Authorization headers (the host joins them with ", "): 401 malformed_token', async () => {
    const token = await mint();
    const res = await decide(
      new HttpRequest({ method: 'GET', url: `${BASE}/api/decide`, headers: { authorization: `Bearer ${token}, Bearer ${token}`, 'x-original-method': 'GET', 'x-original-uri': '/Patient/123' } }),
      context(),
    );
    expect(res.status).toBe(401);
    expect(header(res, 'x-decision-reason')).toBe('malformed_token');
  });

  it('the operator hint only with the admin key', async () => {
    const token = await mint({ audience: 'https://other.example.test' });
    const q = { method: 'GET', path: '/Patient/1', token };
    const plain = bodyOf(await decide(jsonQuestion(q), context()));
    expect(plain).toMatchObject({ reason: 'audience_mismatch', status: 401 });
    expect(plain).not.toHaveProperty('hint');
    const admin = bodyOf(await decide(jsonQuestion(q, { 'x-functions-key': ADMIN_KEY }), context()));
    expect(admin).toMatchObject({ reason: 'audience_mismatch', hint: expect.stringContaining('https://other.example.test') });
    const viaCode = bodyOf(
      await decide(new HttpRequest({ method: 'POST', url: `${BASE}/api/decide?code=${ADMIN_KEY}`, body: { string: JSON.stringify(q) } }), context()),
    );
    expect(viaCode).toHaveProperty('hint');
  });

  it('with PDP_API_KEYS set, a call without a key still decides: the host checked the function key (authLevel function)', async () => {
    configure({}, { PDP_API_KEYS: API_KEY });
    const res = await decide(jsonQuestion({ method: 'GET', path: '/Patient/1', token: await mint() }), context());
    expect(res.status).toBe(200);
    expect(bodyOf(res).reason).toBe('allowed');
  });

  it.each<[string, () => HttpRequest]>([
    ['GET without gateway headers', () => new HttpRequest({ method: 'GET', url: `${BASE}/api/decide` })],
    ['an empty body', () => new HttpRequest({ method: 'POST', url: `${BASE}/api/decide`, body: { string: '' } })],
    ['a body that is not JSON', () => new HttpRequest({ method: 'POST', url: `${BASE}/api/decide`, body: { string: '{"method"' } })],
    ['a body over 256 KiB', () => new HttpRequest({ method: 'POST', url: `${BASE}/api/decide`, body: { string: JSON.stringify({ method: 'GET', path: '/a', pad: 'x'.repeat(300 * 1024) }) } })],
    ['a declared Content-Length over 256 KiB', () => new HttpRequest({ method: 'POST', url: `${BASE}/api/decide`, headers: { 'content-length': String(1024 * 1024) }, body: { string: '{}' } })],
    ['an unknown member', () => jsonQuestion({ method: 'GET', path: '/a', as: 'admin' })],
  ])('400 invalid_request: %s', async (_what, make) => {
    const res = await decide(make(), context());
    expect(res.status).toBe(400);
    expect(bodyOf(res)).toMatchObject({ reason: 'invalid_request', status: 400 });
  });

  it('reads the settings again after resetFunctionsApp()', async () => {
    const token = await mint();
    expect(bodyOf(await decide(jsonQuestion({ method: 'GET', path: '/Patient/1', token }), context())).reason).toBe('allowed');
    resetFunctionsApp();
    configure({ audience: 'https://another.example.test' });
    expect(bodyOf(await decide(jsonQuestion({ method: 'GET', path: '/Patient/1', token }), context())).reason).toBe('audience_mismatch');
  });

  it('an invalid configuration surfaces on first use with every problem listed', async () => {
    process.env.PDP_CONFIG = JSON.stringify({ authority: 'http://idp.example.test', accessPolicies: [{ objectId: 'x' }] });
    const err = await decide(jsonQuestion({ method: 'GET', path: '/a' }), context()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems.map((p) => p.path)).toEqual(expect.arrayContaining(['authority', 'audience', 'accessPolicies[0].objectId']));
  });
});

describe('startWorker (the appStart hook)', () => {
  it('loads keys before the first request: with the authority down afterwards, the first decision is allowed', async () => {
    await startWorker();
    idp.down('reset');
    try {
      expect(bodyOf(await decide(jsonQuestion({ method: 'GET', path: '/Patient/1', token: await mint() }), context()))).toMatchObject({ reason: 'allowed' });
    } finally {
      idp.up();
    }
  });

  it('a snapshot store that cannot be built fails start-up, and nothing half-started remains', async () => {
    configure({}, { PDP_SNAPSHOT_STORE: 'blob', PDP_SNAPSHOT_CONNECTION: 'not-a-connection-string' });
    await expect(startWorker()).rejects.toThrow();
    configure();
    await startWorker();
    expect((await health(new HttpRequest({ method: 'GET', url: `${BASE}/api/health` }), context())).status).toBe(200);
  });

  it('an invalid configuration fails start-up with every problem listed', async () => {
    process.env.PDP_CONFIG = JSON.stringify({ authority: 'http://idp.example.test' });
    const err = await startWorker().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems.map((p) => p.path)).toEqual(expect.arrayContaining(['authority', 'audience']));
  });
});

describe('PDP_CONFIG_FILE', () => {
  it('a relative path is read from the function app root (where host.json is), not the working directory', async () => {
    const dir = join(APP_ROOT, 'test-output');
    const name = `functions-config-${process.pid}.json`;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, name), JSON.stringify({ authority: idp.authority, audience: FHIR_AUDIENCE, accessPolicies: [{ objectId: READER_OID, dataActions: ['read'] }] }));
    const cwd = process.cwd();
    process.chdir(tmpdir());
    try {
      configure();
      delete process.env.PDP_CONFIG;
      process.env.PDP_CONFIG_FILE = `test-output/${name}`;
      expect(bodyOf(await decide(jsonQuestion({ method: 'GET', path: '/Patient/1', token: await mint() }), context())).reason).toBe('allowed');
      resetFunctionsApp();
      process.env.PDP_CONFIG_FILE = 'test-output/no-such-config.json';
      const err = (() => {
        try {
          functionsAppOf();
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).message).toContain(join(APP_ROOT, 'test-output/no-such-config.json'));
    } finally {
      process.chdir(cwd);
      rmSync(join(dir, name), { force: true });
    }
  });
});

describe('health (functions/health.ts)', () => {
  it('answers 200 with issuer freshness once started', async () => {
    await functionsAppOf().started;
    const res = await health(new HttpRequest({ method: 'GET', url: `${BASE}/api/health`, headers: { 'x-functions-key': ADMIN_KEY } }), context());
    expect(res.status).toBe(200);
    const body = bodyOf(res);
    expect(body).toMatchObject({ ready: true });
    expect((body.issuers as Array<{ issuer: string }>).map((i) => i.issuer).sort()).toEqual([idp.v1Issuer, idp.v2Issuer].sort());
  });

  it('answers 503 when the authority is down and nothing is cached', async () => {
    idp.down('unavailable');
    try {
      await functionsAppOf().started;
      const res = await health(new HttpRequest({ method: 'GET', url: `${BASE}/api/health` }), context());
      expect(res.status).toBe(503);
      expect(bodyOf(res)).toMatchObject({ ready: false });
      const d = await decide(jsonQuestion({ method: 'GET', path: '/Patient/1', token: await mint() }), context());
      expect(bodyOf(d)).toMatchObject({ reason: 'issuer_unavailable', status: 503, decision: 'indeterminate' });
    } finally {
      idp.up();
    }
  });
});

describe('smart-configuration (functions/smart-configuration.ts)', () => {
  it('serves SMART discovery anonymously when smartConfiguration is set, and 404 otherwise', async () => {
    const ask = () => smartConfiguration(new HttpRequest({ method: 'GET', url: `${BASE}/api/smart-configuration` }), context());
    expect((await ask()).status).toBe(404);
    resetFunctionsApp();
    configure({ smartConfiguration: {} });
    const res = await ask();
    expect(res.status).toBe(200);
    const v2 = (await (await fetch(idp.v2DiscoveryUrl)).json()) as Record<string, string>;
    expect(bodyOf(res)).toMatchObject({ token_endpoint: v2.token_endpoint, authorization_endpoint: v2.authorization_endpoint, code_challenge_methods_supported: ['S256'] });
  });
});

describe('refresh (functions/refresh.ts)', () => {
  it('POST /api/refresh needs the admin key', async () => {
    const denied = await refreshNow(new HttpRequest({ method: 'POST', url: `${BASE}/api/refresh` }), context());
    expect(denied.status).toBe(401);
    const ok = await refreshNow(new HttpRequest({ method: 'POST', url: `${BASE}/api/refresh`, headers: { 'x-functions-key': ADMIN_KEY } }), context());
    expect(ok.status).toBe(200);
    expect(bodyOf(ok)).toMatchObject({ outcome: 'ok', revision: expect.any(String) });
  });

  it('the timer handler refreshes and logs one JSON line without secrets', async () => {
    const log: unknown[][] = [];
    const now = new Date();
    const timer: Timer = {
      isPastDue: false,
      schedule: { adjustForDST: false },
      scheduleStatus: { last: new Date(now.getTime() - 300_000).toISOString(), next: new Date(now.getTime() + 300_000).toISOString(), lastUpdated: now.toISOString() },
    };
    const before = idp.requestCount();
    await handleRefreshTimer(timer, context(log));
    // The start-up refresh and the timer's own: discovery and keys were fetched again.
    expect(idp.requestCount()).toBeGreaterThan(before);
    const lines = log.flat().filter((x): x is string => typeof x === 'string' && x.includes('"type":"refresh"'));
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ type: 'refresh', outcome: 'ok', revision: expect.any(String), problems: [] });
    expect(lines[0]).not.toContain(ADMIN_KEY);
  });

  it('the timer reports a failed refresh without throwing', async () => {
    const log: unknown[][] = [];
    await functionsAppOf().started;
    idp.down('unavailable');
    try {
      await expect(
        handleRefreshTimer({ isPastDue: true, schedule: { adjustForDST: false }, scheduleStatus: { last: '', next: '', lastUpdated: '' } }, context(log)),
      ).resolves.toBeUndefined();
    } finally {
      idp.up();
    }
    const line = log.flat().find((x): x is string => typeof x === 'string' && x.includes('"type":"refresh"'));
    expect(JSON.parse(line!).outcome).not.toBe('ok');
  });
});
