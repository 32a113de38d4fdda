/**
 * The standalone host's limits, keys and decision log, over real HTTP: oversized input is refused
 * with the contract's reason (never a crash), a slow decision ends at decisionBudgetMs as a 503,
 * more than one credential is refused whatever the order, every route but health needs a key, and
 * each decision writes exactly one JSON line to stdout that never holds a token or a key.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest';
import { ConfigError } from '../../src/config/load.js';
import { DEV_APP_ID, DEV_OBJECT_ID, DEV_TENANT_ID, DevIdentityProvider, type MintOptions } from '../../testkit/dev-idp.js';
import { startHost, type StartedHost } from '../../src/host/main.js';
import { DEFAULT_MAX_BODY_BYTES, MAX_HEADER_BYTES } from '../../src/host/server.js';
import { jsonOf, rawRequest, startPdpHost, type RawRequest, type RawResponse } from '../../testkit/host.js';

const AUDIENCE = 'https://fhir.example.test';
const API_KEY = `limits-api-${randomUUID()}`;
const ADMIN_KEY = `limits-admin-${randomUUID()}`;
const STRANGER_OID = '0b7c6d5e-4f3a-4b2c-9d1e-8f7a6b5c4d3e';
const BUDGET_MS = 400;

interface LogLine {
  readonly type: string;
  readonly decisionId: string;
  readonly [field: string]: unknown;
}

describe('limits, keys and decision logs of the standalone host', () => {
  let idp: DevIdentityProvider;
  let host: StartedHost;
  let stdoutSpy: MockInstance<typeof process.stdout.write>;
  let stdout = '';
  const minted: string[] = [];

  const mint = async (options: Partial<MintOptions> = {}) => {
    const token = await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', ...options });
    minted.push(token);
    return token;
  };
  const ask = (req: RawRequest): Promise<RawResponse> => rawRequest(host.url, req);
  const forwardAuth = (method: string, uri: string, authorization?: string | string[], key = API_KEY): RawRequest => ({
    method: 'GET',
    path: '/api/decide',
    headers: { 'x-functions-key': key, 'x-original-method': method, 'x-original-uri': uri, ...(authorization !== undefined ? { authorization } : {}) },
  });
  const postJson = (body: string | Buffer, key = API_KEY, extra: Record<string, string> = {}): RawRequest => ({
    method: 'POST',
    path: '/api/decide',
    headers: { 'x-functions-key': key, 'content-type': 'application/json', ...extra },
    body,
  });
  /** Decision lines are written in batches (every LOG_FLUSH_MS); write the waiting ones now. */
  const logFlushed = async (): Promise<void> => host.flushDecisionLog();
  /** Every decision line so far, the waiting ones written first. */
  const decisionLines = (): LogLine[] => {
    host.flushDecisionLog();
    return stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as LogLine)
      .filter((l) => l.type === 'decision');
  };

  beforeAll(async () => {
    const write = process.stdout.write.bind(process.stdout);
    stdoutSpy = vi.spyOn(process.stdout, 'write').mockImplementation(((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      stdout += text;
      // Decision lines are asserted here, not shown; anything else still reaches the terminal.
      if (text.startsWith('{"type":"decision"')) return true;
      return (write as (...args: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stdout.write);
    idp = await DevIdentityProvider.start();
    host = await startPdpHost({
      config: {
        authority: idp.authority,
        audience: AUDIENCE,
        accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }],
        decisionBudgetMs: BUDGET_MS,
        fetchTimeoutMs: 5000,
      },
      settings: { PDP_API_KEYS: API_KEY, PDP_ADMIN_KEYS: ADMIN_KEY, PDP_LOG_DECISIONS: 'true' },
    });
    await host.service.refresh();
  });

  afterAll(async () => {
    stdoutSpy?.mockRestore();
    await host?.close();
    await idp?.close();
  });

  describe('JSON mode body size (default 256 KiB)', () => {
    async function questionOfSize(bytes: number): Promise<string> {
      const question = JSON.stringify({ method: 'GET', path: '/Patient/1', headers: { authorization: `Bearer ${await mint()}` } });
      // JSON allows whitespace before the closing brace: a valid question of exactly `bytes` bytes.
      return `${question.slice(0, -1)}${' '.repeat(bytes - Buffer.byteLength(question))}}`;
    }

    it('decides a question of exactly the limit', async () => {
      expect(DEFAULT_MAX_BODY_BYTES).toBe(256 * 1024);
      const res = await ask(postJson(await questionOfSize(DEFAULT_MAX_BODY_BYTES)));
      expect(res.status).toBe(200);
      expect(jsonOf(res)).toMatchObject({ decision: 'allow', reason: 'allowed' });
    });

    it.each([
      { name: 'declared by Content-Length', chunked: false },
      { name: 'sent chunked', chunked: true },
    ])('refuses one byte more with 400 invalid_request ($name), then keeps serving', async ({ chunked }) => {
      const linesBefore = decisionLines().length;
      const body = await questionOfSize(DEFAULT_MAX_BODY_BYTES + 1);
      const res = await ask(postJson(body, ADMIN_KEY, chunked ? { 'transfer-encoding': 'chunked' } : {}));
      expect(res.status).toBe(400);
      expect(jsonOf(res)).toMatchObject({ decision: 'deny', status: 400, reason: 'invalid_request' });
      expect(String(jsonOf(res).hint)).toMatch(/size limit/);
      // A refused question is not a decision.
      await logFlushed();
      expect(decisionLines()).toHaveLength(linesBefore);
      const health = await ask({ path: '/api/health' });
      expect(health.status).toBe(200);
    });

    it('refuses a transaction-sized body of a few MiB without reading it into a decision', async () => {
      const bundle = JSON.stringify({ method: 'POST', path: '/', headers: {}, body: { resourceType: 'Bundle', entry: 'x'.repeat(4 * 1024 * 1024) } });
      const res = await ask(postJson(bundle));
      expect(res.status).toBe(400);
      expect(jsonOf(res)).toMatchObject({ reason: 'invalid_request' });
    });
  });

  describe('public SMART discovery', () => {
    it.each([
      { name: 'GET /metadata (forward-auth)', req: () => forwardAuth('GET', '/metadata') },
      { name: 'HEAD /metadata?_format=json (forward-auth)', req: () => forwardAuth('HEAD', '/metadata?_format=json') },
      { name: 'GET /.well-known/smart-configuration (Envoy)', req: () => ({ method: 'GET', path: '/api/decide/.well-known/smart-configuration', headers: { 'x-functions-key': API_KEY } }) },
      { name: 'GET /metadata with an expired token', req: async () => forwardAuth('GET', '/metadata', `Bearer ${await mint({ expiresInSeconds: -3600 })}`) },
    ] as { name: string; req: () => RawRequest | Promise<RawRequest> }[])('allows $name without reading a token, and sets no identity', async ({ req }) => {
      const res = await ask(await req());
      expect(res.status).toBe(200);
      expect(res.headers['x-decision-reason']).toBe('allowed');
      for (const h of ['x-auth-principal', 'x-auth-tenant', 'x-auth-application', 'x-auth-scopes']) expect(res.headers[h]).toBeUndefined();
      const line = decisionLines().find((l) => l.decisionId === res.headers['x-decision-id']);
      expect(line).toMatchObject({ decision: 'allow', reason: 'allowed' });
      expect(line).not.toHaveProperty('objectId');
    });

    it('allows it in JSON mode too', async () => {
      const res = await ask(postJson(JSON.stringify({ method: 'GET', path: '/.well-known/smart-configuration' })));
      expect(jsonOf(res)).toMatchObject({ decision: 'allow', status: 200, reason: 'allowed', dataActions: [] });
    });

    it.each([
      ['POST', '/metadata'],
      ['DELETE', '/metadata'],
      ['GET', '/Patient/metadata'],
      ['GET', '/metadata/x'],
      ['GET', '/.well-known/openid-configuration'],
      ['GET', '/x/../metadata'],
    ])('still needs a token for %s %s', async (method, uri) => {
      const res = await ask(forwardAuth(method, uri));
      expect(res.status).toBe(401);
      expect(res.headers['x-decision-reason']).toBe('missing_token');
    });
  });

  describe('header size', () => {
    it('answers a 60 KiB Authorization header with malformed_token, not 431', async () => {
      const huge = `Bearer ${'a'.repeat(60 * 1024)}.b.c`;
      const res = await ask(forwardAuth('GET', '/Patient/1', huge));
      expect(res.status).toBe(401);
      expect(res.headers['x-decision-reason']).toBe('malformed_token');
      expect(res.headers['www-authenticate']).toMatch(/error="invalid_token"/);
    });

    it('answers a 60 KiB token field in JSON mode with malformed_token', async () => {
      const res = await ask(postJson(JSON.stringify({ method: 'GET', path: '/Patient/1', token: `${'a'.repeat(60 * 1024)}.b.c` })));
      expect(res.status).toBe(200);
      expect(jsonOf(res)).toMatchObject({ status: 401, reason: 'malformed_token' });
    });

    it('refuses headers beyond 64 KiB with 431 and keeps serving', async () => {
      expect(MAX_HEADER_BYTES).toBe(64 * 1024);
      const res = await ask(forwardAuth('GET', '/Patient/1', `Bearer ${'a'.repeat(70 * 1024)}`));
      expect(res.status).toBe(431);
      const next = await ask(forwardAuth('GET', '/Patient/1', `Bearer ${await mint()}`));
      expect(next.status).toBe(200);
    });
  });

  describe('more than one credential', () => {
    it.each([
      { mode: 'forward-auth', validFirst: true },
      { mode: 'forward-auth', validFirst: false },
      { mode: 'envoy', validFirst: true },
      { mode: 'envoy', validFirst: false },
      { mode: 'json', validFirst: true },
      { mode: 'json', validFirst: false },
    ])('refuses two Authorization headers in $mode mode (valid first: $validFirst)', async ({ mode, validFirst }) => {
      const valid = `Bearer ${await mint()}`;
      const other = `Bearer ${await mint({ oid: STRANGER_OID })}`;
      const authorization = validFirst ? [valid, other] : [other, valid];
      if (mode === 'json') {
        const res = await ask(postJson(JSON.stringify({ method: 'GET', path: '/Patient/1', headers: { authorization } })));
        expect(jsonOf(res)).toMatchObject({ status: 401, reason: 'malformed_token' });
        return;
      }
      const req: RawRequest =
        mode === 'envoy'
          ? { method: 'GET', path: '/api/decide/Patient/1', headers: { 'x-functions-key': API_KEY, authorization } }
          : forwardAuth('GET', '/Patient/1', authorization);
      const res = await ask(req);
      expect(res.status).toBe(401);
      expect(res.headers['x-decision-reason']).toBe('malformed_token');
    });

    it('refuses a header together with a token field, whichever is valid', async () => {
      const valid = await mint();
      for (const body of [
        { method: 'GET', path: '/Patient/1', token: valid, headers: { authorization: 'Bearer abc.def.ghi' } },
        { method: 'GET', path: '/Patient/1', token: 'abc.def.ghi', headers: { authorization: `Bearer ${valid}` } },
      ]) {
        const res = await ask(postJson(JSON.stringify(body)));
        expect(jsonOf(res)).toMatchObject({ status: 401, reason: 'malformed_token' });
      }
    });
  });

  describe('decision time budget', () => {
    it('ends a decision that waits on an unresponsive issuer at decisionBudgetMs with 503 issuer_unavailable', async () => {
      const kid = idp.rotateKey();
      const token = await mint({ kid });
      idp.down('hang');
      try {
        const started = performance.now();
        const [gateway, json] = await Promise.all([
          ask(forwardAuth('GET', '/Patient/1', `Bearer ${token}`)),
          ask(postJson(JSON.stringify({ method: 'GET', path: '/Patient/1', token }), ADMIN_KEY)),
        ]);
        const elapsed = performance.now() - started;
        expect(gateway.status).toBe(503);
        expect(gateway.headers['x-decision-reason']).toBe('issuer_unavailable');
        expect(gateway.headers['www-authenticate']).toBeUndefined();
        expect(jsonOf(json)).toMatchObject({ decision: 'indeterminate', status: 503, reason: 'issuer_unavailable' });
        expect(String(jsonOf(json).hint)).toContain('decisionBudgetMs');
        expect(elapsed).toBeGreaterThanOrEqual(BUDGET_MS - 50);
        // The identity provider's fetch timeout is 5 s: the budget, not the fetch, ended the wait.
        expect(elapsed).toBeLessThan(4000);
        await logFlushed();
        const logged = decisionLines().find((l) => l.decisionId === gateway.headers['x-decision-id']);
        expect(logged).toMatchObject({ reason: 'issuer_unavailable', status: 503, decision: 'indeterminate' });
        expect(Number(logged!.durationMs)).toBeGreaterThanOrEqual(BUDGET_MS - 50);
      } finally {
        idp.up();
      }
    });
  });

  describe('keys', () => {
    it.each([
      { name: 'health without a key', req: { path: '/api/health' }, status: 200 },
      // A gateway without a recognised key is an outage of its credential: 503, never a 401 the
      // gateway would pass on as if the client's token were bad.
      { name: 'decide without a key', req: { path: '/api/decide', headers: { 'x-original-method': 'GET', 'x-original-uri': '/Patient/1' } }, status: 503 },
      { name: 'decide with a wrong key', req: { path: '/api/decide', headers: { 'x-functions-key': 'nope', 'x-original-method': 'GET', 'x-original-uri': '/Patient/1' } }, status: 503 },
      { name: 'decide (JSON) with a wrong key', req: { method: 'POST', path: '/api/decide', headers: { 'x-functions-key': 'nope' }, body: '{}' }, status: 401 },
      { name: 'decide with the key as code', req: { path: `/api/decide?code=${API_KEY}`, headers: { 'x-original-method': 'GET', 'x-original-uri': '/Patient/1' } }, status: 401, reason: 'missing_token' },
      { name: 'refresh with an API key', req: { method: 'POST', path: '/api/refresh', headers: { 'x-functions-key': API_KEY } }, status: 401 },
      { name: 'explain with an API key', req: { method: 'GET', path: '/api/explain', headers: { 'x-functions-key': API_KEY } }, status: 401 },
      { name: 'refresh with the admin key', req: { method: 'POST', path: '/api/refresh', headers: { 'x-functions-key': ADMIN_KEY } }, status: 200 },
    ] as { name: string; req: RawRequest; status: number; reason?: string }[])('$name → $status', async ({ req, status, reason }) => {
      const res = await ask(req);
      expect(res.status).toBe(status);
      if (reason) expect(res.headers['x-decision-reason']).toBe(reason);
      else if (status === 401) expect(jsonOf(res)).toMatchObject({ error: 'unauthorized' });
      else if (status === 503) {
        expect(jsonOf(res)).toMatchObject({ error: 'gateway_key_refused' });
        expect(res.headers['x-decision-reason']).toBeUndefined();
      }
    });

    it('binds loopback only without keys, and says so at start', async () => {
      const lines: string[] = [];
      const open = await startHost({ PORT: '0', PDP_LOG_DECISIONS: 'false', PDP_CONFIG: JSON.stringify({ authority: idp.authority, audience: AUDIENCE }) }, (l) => lines.push(l));
      try {
        expect(new URL(open.url).hostname).toBe('127.0.0.1');
        expect(lines.join('\n')).toMatch(/loopback only/);
      } finally {
        await open.close();
      }
    });

    it('refuses to bind another address without keys', async () => {
      await expect(
        startHost({ PORT: '0', PDP_HOST: '0.0.0.0', PDP_CONFIG: JSON.stringify({ authority: idp.authority, audience: AUDIENCE }) }, () => undefined),
      ).rejects.toBeInstanceOf(ConfigError);
    });
  });

  describe('decision log', () => {
    it('writes one JSON line per decision with the listed fields and no query string', async () => {
      const before = decisionLines().length;
      const allowed = await ask(forwardAuth('GET', '/Patient/1?identifier=urn:ssn|123-45-6789', `Bearer ${await mint()}`));
      const denied = await ask({ method: 'DELETE', path: '/api/decide/Patient/1?_cascade=delete', headers: { 'x-functions-key': API_KEY, authorization: `Bearer ${await mint()}` } });
      const anonymous = await ask(postJson(JSON.stringify({ method: 'GET', path: '/Observation?patient=Patient/1' })));
      const ids = [allowed.headers['x-decision-id'], denied.headers['x-decision-id'], anonymous.headers['x-decision-id']];
      await logFlushed();
      const lines = decisionLines().slice(before);
      expect(lines.map((l) => l.decisionId)).toEqual(ids);

      const [a, d, n] = lines as [LogLine, LogLine, LogLine];
      expect(a).toMatchObject({
        type: 'decision',
        decision: 'allow',
        reason: 'allowed',
        status: 200,
        mode: 'forward-auth',
        issuer: idp.v2Issuer,
        tenantId: DEV_TENANT_ID,
        objectId: DEV_OBJECT_ID,
        applicationId: DEV_APP_ID,
        method: 'GET',
        path: '/Patient/1',
        cacheHit: false,
      });
      expect(d).toMatchObject({ decision: 'deny', reason: 'action_not_permitted', status: 403, mode: 'envoy', method: 'DELETE', path: '/Patient/1', objectId: DEV_OBJECT_ID });
      expect(n).toMatchObject({ decision: 'deny', reason: 'missing_token', status: 401, mode: 'json', method: 'GET', path: '/Observation' });
      expect(n.objectId).toBeUndefined();
      for (const line of lines) {
        expect(new Date(String(line.time)).toISOString()).toBe(line.time);
        expect(typeof line.durationMs).toBe('number');
        expect(typeof line.cacheHit).toBe('boolean');
      }
      expect(stdout).not.toContain('123-45-6789');
      expect(stdout).not.toContain('_cascade');
    });

    it('marks a cached verification as a cache hit', async () => {
      const token = `Bearer ${await mint()}`;
      const first = await ask(forwardAuth('GET', '/Patient/1', token));
      const second = await ask(forwardAuth('GET', '/Patient/2', token));
      await logFlushed();
      const byId = new Map(decisionLines().map((l) => [l.decisionId, l]));
      expect(byId.get(String(first.headers['x-decision-id']))?.cacheHit).toBe(false);
      expect(byId.get(String(second.headers['x-decision-id']))?.cacheHit).toBe(true);
    });

    it('never writes a token, a part of one, or a key to stdout', () => {
      expect(minted.length).toBeGreaterThan(10);
      expect(decisionLines().length).toBeGreaterThan(10);
      for (const token of minted) {
        const [header, payload, signature] = token.split('.');
        expect(stdout).not.toContain(payload);
        expect(stdout).not.toContain(signature);
        expect(header).toBeDefined();
      }
      expect(stdout).not.toContain(API_KEY);
      expect(stdout).not.toContain(ADMIN_KEY);
      expect(stdout).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.eyJ/);
    });
  });
});
