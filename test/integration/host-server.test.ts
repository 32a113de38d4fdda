/**
 * The standalone host's shell (src/host/server.ts) around the router: every answer carries
 * Content-Length (never chunked), HEAD states the length without a body, and a failure inside a
 * request (a rejected route, an answer node refuses to write) is a 500 for that request while the
 * host keeps serving.
 */
import { request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPdpServer, headerList, listen } from '../../src/host/server.js';
import { KeyRing } from '../../src/http/keys.js';
import type { RoutedService } from '../../src/http/routes.js';
import { json, type PdpHttpRequest } from '../../src/http/types.js';
import type { Pdp } from '../../src/decision/pipeline.js';
import type { Decision, DecisionInput } from '../../src/decision/types.js';
import { REASONS } from '../../src/core/reasons.js';

const ADMIN = 'admin-key-for-the-host-server-test';

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

describe('the standalone host server', () => {
  let server: Server;
  let port: number;
  let explainAnswer: (req: PdpHttpRequest) => ReturnType<NonNullable<RoutedService['explain']>>;
  let decideNow: (input: DecisionInput) => Decision | Promise<Decision>;

  beforeAll(async () => {
    const service: RoutedService = {
      // /api/decide asks Pdp.decideNow: a Decision when it was made from memory, else a promise.
      pdp: { decideNow: (input: DecisionInput) => decideNow(input) } as unknown as Pdp,
      health: () => ({ ready: true, note: 'é and ☃' }),
      refresh: () => Promise.reject(new Error('refresh failed')),
      explain: (req) => explainAnswer(req),
    };
    server = createPdpServer(service, { keys: new KeyRing([], [ADMIN]) });
    port = ((await listen(server, 0, '127.0.0.1')) as AddressInfo).port;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  function ask(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (t: string) => (body += t));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  it('answers with Content-Length in bytes, not chunked', async () => {
    const a = await ask('GET', '/api/health', { 'x-functions-key': ADMIN });
    expect(a.status).toBe(200);
    expect(a.headers['transfer-encoding']).toBeUndefined();
    expect(Number(a.headers['content-length'])).toBe(Buffer.byteLength(a.body));
    expect(Buffer.byteLength(a.body)).toBeGreaterThan(a.body.length);
    expect(a.headers['content-type']).toBe('application/json; charset=utf-8');
  });

  it('answers HEAD with the length of its GET and no body', async () => {
    const get = await ask('GET', '/api/health', { 'x-functions-key': ADMIN });
    const head = await ask('HEAD', '/api/health', { 'x-functions-key': ADMIN });
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    expect(head.headers['content-length']).toBe(get.headers['content-length']);
  });

  it('answers each of many requests in flight together with its own answer (answers of one turn are written as a batch)', async () => {
    // Some answers are ready at once, some a microtask or a turn later: batches mix them.
    explainAnswer = async (req) => {
      const n = Number(req.body?.toString('utf8'));
      if (n % 3 === 1) await Promise.resolve();
      if (n % 3 === 2) await new Promise((resolve) => setImmediate(resolve));
      return json(200, { n }, { 'x-n': String(n) });
    };
    const answers = await Promise.all(Array.from({ length: 60 }, (_, n) => ask('POST', '/api/explain', { 'x-functions-key': ADMIN }, String(n))));
    answers.forEach((a, n) => {
      expect(a.status).toBe(200);
      expect(JSON.parse(a.body)).toEqual({ n });
      expect(a.headers['x-n']).toBe(String(n));
    });
  });

  it('answers each of many decisions in flight together, made at once, a microtask or a turn later, with its own answer', async () => {
    const decision = (n: number): Decision => ({ ...REASONS.allowed, reason: 'allowed', decisionId: `decision-${n}`, durationMs: 0, cacheHit: true });
    decideNow = (input) => {
      const n = Number(input.target.slice('/Patient/'.length));
      if (n % 3 === 0) return decision(n);
      if (n % 3 === 1) return Promise.resolve().then(() => decision(n));
      return new Promise((resolve) => setImmediate(() => resolve(decision(n))));
    };
    const question = (n: number) => JSON.stringify({ method: 'GET', path: `/Patient/${n}`, headers: { authorization: 'Bearer x' } });
    const answers = await Promise.all(Array.from({ length: 60 }, (_, n) => ask('POST', '/api/decide', { 'content-type': 'application/json', 'x-functions-key': ADMIN }, question(n))));
    answers.forEach((a, n) => {
      expect(a.status).toBe(200);
      expect(JSON.parse(a.body)).toMatchObject({ decision: 'allow', decisionId: `decision-${n}` });
      expect(a.headers['x-decision-id']).toBe(`decision-${n}`);
    });
  });

  it('turns a decision that throws at once into a 500 and keeps serving', async () => {
    decideNow = () => {
      throw new Error('a logger that throws');
    };
    const a = await ask('POST', '/api/decide', { 'content-type': 'application/json', 'x-functions-key': ADMIN }, JSON.stringify({ method: 'GET', path: '/Patient/1' }));
    expect(a.status).toBe(500);
    expect(JSON.parse(a.body)).toEqual({ error: 'internal_error' });
    expect((await ask('GET', '/api/health')).status).toBe(200);
  });

  it('turns a rejected route into a 500 and keeps serving', async () => {
    const a = await ask('POST', '/api/refresh', { 'x-functions-key': ADMIN });
    expect(a.status).toBe(500);
    expect(JSON.parse(a.body)).toEqual({ error: 'internal_error' });
    expect((await ask('GET', '/api/health')).status).toBe(200);
  });

  it('turns an answer node cannot write (a header with a line break) into a 500 and keeps serving', async () => {
    explainAnswer = () => Promise.resolve({ status: 200, headers: { 'x-bad': 'a\r\nset-cookie: injected=1' }, body: '{}' });
    const a = await ask('POST', '/api/explain', { 'x-functions-key': ADMIN });
    expect(a.status).toBe(500);
    expect(a.headers['set-cookie']).toBeUndefined();
    expect(a.headers['x-bad']).toBeUndefined();
    expect((await ask('GET', '/api/health')).status).toBe(200);
  });

  it('turns an explain that throws into a 500', async () => {
    explainAnswer = () => Promise.reject(new Error('boom'));
    expect((await ask('POST', '/api/explain', { 'x-functions-key': ADMIN })).status).toBe(500);
  });
});

describe('headerList', () => {
  it('lists every header once, name then value, with the body length in bytes last', () => {
    expect(headerList({ status: 200, headers: { 'content-type': 'text/plain', 'x-a': '1' }, body: 'é' })).toEqual(['content-type', 'text/plain', 'x-a', '1', 'content-length', '2']);
    expect(headerList({ status: 204, headers: { 'x-a': '1' } })).toEqual(['x-a', '1']);
  });
});
