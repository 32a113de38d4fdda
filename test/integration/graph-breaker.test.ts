/**
 * The Graph circuit breaker in the running service, against the fake Graph's faults: a brownout
 * costs a few calls and then one probe per interval, not several calls per decision; while it is
 * open, decisions that need Graph are `directory_unavailable` at once with a hint that says so,
 * refresh reports it, and /api/health shows it. Time moves through the service's clock.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { createGraphClient } from '../../src/directory/graph-client.js';
import { DevIdentityProvider } from '../../testkit/dev-idp.js';
import { PdpService } from '../../src/app.js';
import { graphCredential, startFakeGraph, type FakeGraph } from '../../testkit/fake-graph.js';

const AUDIENCE = 'https://fhir.example.test';
const CHECKS = { method: 'POST', path: '/checkMemberGroups' } as const;

let idp: DevIdentityProvider;
let fake: FakeGraph;
let group: string;
let member: string;

beforeAll(async () => {
  idp = await DevIdentityProvider.start();
  fake = await startFakeGraph();
  group = fake.addGroup({ displayName: 'fhir readers' });
  member = fake.addUser();
  fake.addMember(group, member);
});

afterAll(async () => {
  await fake.close();
  await idp.close();
});

afterEach(async () => {
  await fake.up();
});

function setup(): { s: PdpService; advance: (ms: number) => void; now: () => number } {
  let t = Date.now();
  const now = (): number => t;
  const graphClient = createGraphClient({ credential: graphCredential(fake.token), baseUrl: fake.origin, breaker: { failureThreshold: 3, openMs: 30_000, now } });
  const config = parseConfig({ authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: group, dataActions: ['read'] }], directoryBudgetMs: 2000 });
  // Not started: no group index, so every decision below needs Graph.
  return { s: new PdpService({ config, clock: now, graphClient }), advance: (ms) => void (t += ms), now };
}

async function decide(s: PdpService, now: () => number, oid: string): Promise<{ reason: string; status: number; hint?: string; durationMs: number }> {
  const token = await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', oid, now: new Date(now()) });
  const d = await s.pdp.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${token}`] } });
  return { reason: d.reason, status: d.status, durationMs: d.durationMs, ...(d.hint !== undefined ? { hint: d.hint } : {}) };
}

interface BreakerView {
  state: string;
  openedAt?: string;
  nextProbeAt?: string;
  opened: number;
  shortCircuited: number;
}

const breakerOf = (s: PdpService): BreakerView => (s.health() as unknown as { graph: { breaker: BreakerView } }).graph.breaker;

describe('the Graph circuit breaker', () => {
  it('opens after 3 failed calls; then decisions fail at once without calling Graph, one probe per interval, closed on success', async () => {
    const { s, advance, now } = setup();
    expect(await decide(s, now, member)).toMatchObject({ reason: 'allowed' });
    expect(breakerOf(s)).toMatchObject({ state: 'closed', opened: 0 });

    await fake.down('503');
    fake.clearLog();
    // The first decision's retries are the 3 failures that open it; its 4th attempt is refused.
    expect(await decide(s, now, fake.addUser())).toMatchObject({ reason: 'directory_unavailable', status: 503 });
    expect(fake.count(CHECKS)).toBe(3);
    const openedAt = new Date(now()).toISOString();
    expect(breakerOf(s)).toMatchObject({ state: 'open', opened: 1, openedAt });
    expect(s.health()).toMatchObject({ ready: true, status: 'degraded' });

    // Ten more uncached decisions: not one call, each answered without waiting for Graph.
    for (let i = 0; i < 10; i++) {
      const d = await decide(s, now, fake.addUser());
      expect(d).toMatchObject({ reason: 'directory_unavailable', status: 503 });
      expect(d.hint).toContain(`the Graph circuit breaker is open since ${openedAt}`);
      expect(d.durationMs).toBeLessThan(500);
    }
    expect(fake.count(CHECKS)).toBe(3);
    expect(breakerOf(s).shortCircuited).toBeGreaterThanOrEqual(10);

    // Refresh reports it (and does not call Graph either).
    const report = await s.refresh();
    expect(report.problems.join('\n')).toMatch(new RegExp(`group ${group}: the Graph circuit breaker is open since ${openedAt}`));
    expect(fake.requests).toHaveLength(3);

    // After the interval one probe goes out; Graph is still down: open again, for another interval.
    advance(30_001);
    expect(await decide(s, now, fake.addUser())).toMatchObject({ reason: 'directory_unavailable' });
    expect(fake.count(CHECKS)).toBe(4);
    expect(await decide(s, now, fake.addUser())).toMatchObject({ reason: 'directory_unavailable' });
    expect(fake.count(CHECKS)).toBe(4);
    expect(breakerOf(s)).toMatchObject({ state: 'open', openedAt: new Date(now()).toISOString() });

    // Graph is back: the next probe succeeds and closes it.
    await fake.up();
    advance(30_001);
    const newcomer = fake.addUser();
    fake.addMember(group, newcomer);
    expect(await decide(s, now, newcomer)).toMatchObject({ reason: 'allowed' });
    expect(breakerOf(s)).toMatchObject({ state: 'closed', opened: 1 });
    expect(await decide(s, now, fake.addUser())).toMatchObject({ reason: 'principal_not_allowed', status: 403 });
    expect(s.health()).toMatchObject({ ready: true });
  });

  it('counts 429s as failures too: a throttled Graph is not asked again until the probe', async () => {
    const { s, now } = setup();
    fake.clearLog();
    fake.failNext(3, { status: 429, retryAfterSeconds: 0 }, CHECKS);
    expect(await decide(s, now, fake.addUser())).toMatchObject({ reason: 'directory_unavailable', status: 503 });
    expect(await decide(s, now, fake.addUser())).toMatchObject({ reason: 'directory_unavailable', status: 503 });
    expect(fake.count(CHECKS)).toBe(3);
    expect(breakerOf(s)).toMatchObject({ state: 'open' });
  });
});
