/**
 * /api/health for a caller without the admin key: ready or not and a coarse reason, never the
 * deployment's details (authorities, tenants, error texts, counters).
 */
import { describe, expect, it } from 'vitest';
import { KeyRing } from '../../../src/http/keys.js';
import type { HealthReport } from '../../../src/state/health.js';
import { route, type RoutedService } from '../../../src/http/routes.js';
import type { Pdp } from '../../../src/decision/pipeline.js';

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
