/**
 * /api/health for a caller without the admin key: ready or not and a coarse reason, never the
 * deployment's details (authorities, tenants, error texts, counters).
 */
import { describe, expect, it } from 'vitest';
import { KeyRing } from '../../../src/http/keys.js';
import type { HealthReport } from '../../../src/state/health.js';
import { route, type RoutedService } from '../../../src/http/routes.js';
import type { Pdp } from '../../../src/decision/pipeline.js';
import type { Decision } from '../../../src/decision/types.js';
import { REASONS } from '../../../src/core/reasons.js';

const ADMIN = 'admin-key-for-the-health-test';
const SECRETISH = 'https://login.microsoftonline.com/8f6d2c1e-0000-4000-8000-000000000000';

function serviceWith(report: HealthReport): RoutedService {
  return { pdp: undefined as unknown as Pdp, health: () => report, refresh: () => Promise.resolve({}) };
}

async function ask(report: HealthReport, headers: Record<string, string> = {}, loopbackOnly = false) {
  const answer = await route(
    serviceWith(report),
    { method: 'GET', url: '/api/health', header: (name) => (headers[name] === undefined ? [] : [headers[name]!]) },
    { keys: new KeyRing([], [ADMIN]), loopbackOnly },
  );
  return { status: answer.status, body: JSON.parse(answer.body!) as Record<string, unknown>, text: answer.body! };
}

const issuer = (keys: number, stale = false) => ({ authority: SECRETISH, issuer: `${SECRETISH}/v2.0`, keys, stale, lastError: { message: `${SECRETISH}: HTTP 503` } });

describe('GET /api/health without the admin key', () => {
  it.each([
    { name: 'ready', report: { ready: true, status: 'ok', issuers: [issuer(2)], counters: { allowed: 3 } }, status: 200, body: { ready: true, status: 'ok' } },
    { name: 'ready but degraded', report: { ready: true, status: 'degraded', issuers: [issuer(2)] }, status: 200, body: { ready: true, status: 'degraded' } },
    { name: 'an authority without keys', report: { ready: false, status: 'unavailable', issuers: [issuer(2), issuer(0)] }, status: 503, body: { ready: false, status: 'unavailable', reason: 'issuer_keys' } },
    { name: 'stale keys', report: { ready: false, status: 'unavailable', issuers: [issuer(2, true)] }, status: 503, body: { ready: false, status: 'unavailable', reason: 'issuer_keys' } },
  ])('$name: $body', async ({ report, status, body }) => {
    const a = await ask(report);
    expect(a.status).toBe(status);
    expect(a.body).toEqual(body);
    expect(a.text).not.toContain('8f6d2c1e');
  });

  it('with the admin key, or on the keyless loopback host, the full report', async () => {
    const report = { ready: true, status: 'ok', issuers: [issuer(2)], counters: { allowed: 3 } };
    expect((await ask(report, { 'x-functions-key': ADMIN })).body).toEqual(report);
    expect((await ask(report, {}, true)).body).toEqual(report);
    expect((await ask(report, { 'x-functions-key': 'wrong' })).body).toEqual({ ready: true, status: 'ok' });
  });
});

describe('route for /api/decide', () => {
  const question = { method: 'POST', url: '/api/decide', body: Buffer.from(JSON.stringify({ method: 'GET', path: '/Patient/1' })), header: () => [] };
  const withPdp = (decideNow: () => Decision | Promise<Decision>): RoutedService => ({ pdp: { decideNow } as unknown as Pdp, health: () => ({}) as HealthReport, refresh: () => Promise.resolve({}) });
  const allowed: Decision = { ...REASONS.allowed, reason: 'allowed', decisionId: 'd-1', durationMs: 0, cacheHit: true };

  it('answers a decision made from memory as a value, not a promise', () => {
    const answer = route(withPdp(() => allowed), question, { keys: new KeyRing([], []) });
    expect(answer).not.toBeInstanceOf(Promise);
    expect(answer).toMatchObject({ status: 200, headers: { 'x-decision-id': 'd-1' } });
  });

  it('answers a decision that was waited for as a promise of the same answer', async () => {
    const answer = route(withPdp(() => Promise.resolve(allowed)), question, { keys: new KeyRing([], []) });
    expect(answer).toBeInstanceOf(Promise);
    expect(await answer).toMatchObject({ status: 200, headers: { 'x-decision-id': 'd-1' } });
  });

  it('never throws: a decision that throws at once is a rejected promise, as from an async function', async () => {
    const answer = route(
      withPdp(() => {
        throw new Error('boom');
      }),
      question,
      { keys: new KeyRing([], []) },
    );
    await expect(answer).rejects.toThrow('boom');
  });
});
