/**
 * refresh() under faults, with the memory store and an injected clock: the authority down during
 * a refresh and past maxStale, key rotation and removal, the unknown-kid refetch, and Microsoft
 * Graph (the fake) changing, throttling and failing while the group index is refreshed.
 */
import type { Server } from 'node:http';
import { performance } from 'node:perf_hooks';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@microsoft/microsoft-graph-client';
import { parseConfig } from '../../src/config/load.js';
import { createGraphClient } from '../../src/directory/graph-client.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { createPdpServer, listen } from '../../src/host/server.js';
import { KeyRing } from '../../src/http/keys.js';
import { route } from '../../src/http/routes.js';
import { PdpService } from '../../src/app.js';
import { graphCredential, startFakeGraph, type FakeGraph } from '../../testkit/fake-graph.js';

const AUDIENCE = 'https://fhir.example.test';
const HOUR = 3_600_000;
const ADMIN_KEY = 'refresh-faults-admin-key';

let idp: DevIdentityProvider;
const services: PdpService[] = [];

beforeAll(async () => {
  idp = await DevIdentityProvider.start();
});

afterAll(async () => {
  await idp.close();
});

afterEach(() => {
  for (const s of services.splice(0)) s.stop();
  idp.up();
});

/** A clock the test moves; every part of the service reads time from it. */
function testClock(): { now: () => number; advance: (ms: number) => void } {
  let t = Date.now();
  return { now: () => t, advance: (ms) => void (t += ms) };
}

function service(options: { clock: () => number; accessPolicies?: object[]; graphClient?: Client; maxStaleSeconds?: number }): PdpService {
  const config = parseConfig({
    authority: idp.authority,
    audience: AUDIENCE,
    accessPolicies: options.accessPolicies ?? [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }],
    ...(options.maxStaleSeconds !== undefined ? { maxStaleSeconds: options.maxStaleSeconds } : {}),
  });
  const s = new PdpService({ config, clock: options.clock, ...(options.graphClient ? { graphClient: options.graphClient } : {}) });
  services.push(s);
  return s;
}

function mint(clock: () => number, options: { kid?: string; oid?: string } = {}): Promise<string> {
  return idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', now: new Date(clock()), ...options });
}

async function decide(s: PdpService, token: string): Promise<{ reason: string; status: number; cacheHit: boolean; hint?: string }> {
  const d = await s.pdp.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${token}`] } });
  return { reason: d.reason, status: d.status, cacheHit: d.cacheHit, ...(d.hint !== undefined ? { hint: d.hint } : {}) };
}

async function healthStatus(s: PdpService): Promise<number> {
  const answer = await route(s, { method: 'GET', url: '/api/health', header: () => [] }, { keys: new KeyRing([], []) });
  return answer.status;
}

interface IssuerHealthView {
  issuer?: string;
  keys: number;
  keysFetchedAt?: string;
  stale: boolean;
  lastError?: { at: string; message: string };
}

function issuersOf(s: PdpService): IssuerHealthView[] {
  return s.health().issuers as IssuerHealthView[];
}

const JWKS_PATH = (): string => new URL(idp.v2JwksUri).pathname;
const jwksFetches = (): number => idp.requestCount(new URL(idp.v1JwksUri).pathname) + idp.requestCount(JWKS_PATH());

describe('the authority during refresh', () => {
  it('keeps the old keys when the authority is down, says so in health, and refuses 503 once they pass maxStale', async () => {
    const clock = testClock();
    const s = service({ clock: clock.now });
    await s.start();
    const fetchedAt = issuersOf(s).map((i) => i.keysFetchedAt);
    expect(await decide(s, await mint(clock.now))).toMatchObject({ reason: 'allowed', status: 200 });
    const revision = (s.health().snapshot as { revision: string }).revision;

    idp.down();
    clock.advance(HOUR);
    const report = await s.refresh();
    expect(report.outcome).toBe('partial');
    expect(report.problems.length).toBeGreaterThan(0);
    // Within maxStale an outage changes no decision.
    expect(await decide(s, await mint(clock.now))).toMatchObject({ reason: 'allowed', status: 200 });
    const health = s.health();
    expect(health).toMatchObject({ ready: true, status: 'degraded' });
    expect((health.snapshot as { revision: string }).revision).not.toBe(revision);
    expect((health.snapshot as { lastRefresh: { outcome: string } }).lastRefresh.outcome).toBe('partial');
    for (const issuer of issuersOf(s)) {
      expect(issuer.lastError?.message).toBeTruthy();
      expect(issuer.stale).toBe(false);
    }
    expect(issuersOf(s).map((i) => i.keysFetchedAt)).toEqual(fetchedAt);
    expect(await healthStatus(s)).toBe(200);

    // Past maxStale (default 24 h) the keys are not used any more: indeterminate, not a deny.
    clock.advance(24 * HOUR);
    expect(await decide(s, await mint(clock.now))).toMatchObject({ reason: 'issuer_unavailable', status: 503 });
    expect(s.health()).toMatchObject({ ready: false, status: 'unavailable' });
    expect(issuersOf(s).every((i) => i.stale)).toBe(true);
    expect(await healthStatus(s)).toBe(503);

    idp.up();
    expect((await s.refresh()).outcome).toBe('ok');
    expect(await decide(s, await mint(clock.now))).toMatchObject({ reason: 'allowed', status: 200 });
    expect(s.health()).toMatchObject({ ready: true, status: 'ok' });
    expect(issuersOf(s).every((i) => i.lastError === undefined && !i.stale)).toBe(true);
    expect(await healthStatus(s)).toBe(200);
  });

  it('is not ready, and writes no snapshot, when the first refresh finds the authority down', async () => {
    const clock = testClock();
    const s = service({ clock: clock.now });
    idp.down('reset');
    await s.start();
    expect(s.lastRefresh).toMatchObject({ outcome: 'failed', stored: 'skipped' });
    expect(await s.store.read()).toBeUndefined();
    const health = s.health();
    expect(health).toMatchObject({ ready: false, status: 'unavailable', snapshot: { revision: null }, refresh: { outcome: 'failed' } });
    expect(await healthStatus(s)).toBe(503);

    idp.up();
    // metadataRetrySeconds (10 s) bounds how often a decision may try the authority again.
    clock.advance(11_000);
    expect(await decide(s, await mint(clock.now))).toMatchObject({ reason: 'allowed', status: 200 });
    await s.refresh();
    expect(s.health()).toMatchObject({ ready: true, status: 'ok' });
  });
});

describe('readiness after an outage at start-up', () => {
  it('retries the failed first refresh every metadataRetrySeconds: health turns 200 with no decision and long before the timer', async () => {
    const config = parseConfig({ authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }], metadataRetrySeconds: 1 });
    let applied: (revision: string) => void = () => undefined;
    const firstSnapshot = new Promise<string>((resolve) => (applied = resolve));
    const s = new PdpService({ config, onSnapshotApplied: (e) => applied(e.revision) });
    services.push(s);
    idp.down('reset');
    await s.start({ refreshIntervalMs: 300_000 });
    expect(s.lastRefresh).toMatchObject({ outcome: 'failed', stored: 'skipped' });
    expect(await healthStatus(s)).toBe(503);

    idp.up();
    // The event of the first snapshot, not a sleep; the 5-minute timer is far away.
    const revision = await firstSnapshot;
    expect(await healthStatus(s)).toBe(200);
    expect(s.health()).toMatchObject({ ready: true, snapshot: { revision } });
    // The retry that made it (joined if still running) went through the authority like any refresh.
    expect(await s.refresh()).toMatchObject({ outcome: 'ok', stored: 'written' });
  });
});

describe('the verified-token cache and stale keys', () => {
  it('does not serve a cached token once its issuer\'s keys are past maxStale', async () => {
    const clock = testClock();
    const s = service({ clock: clock.now, maxStaleSeconds: 3600 });
    await s.start();
    const token = await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', now: new Date(clock.now()), expiresInSeconds: 6 * 3600 });
    expect(await decide(s, token)).toMatchObject({ reason: 'allowed', cacheHit: false });
    expect(await decide(s, token)).toMatchObject({ reason: 'allowed', cacheHit: true });
    idp.down();
    try {
      clock.advance(2 * HOUR);
      await s.refresh();
      expect(await decide(s, token)).toMatchObject({ reason: 'issuer_unavailable', status: 503, cacheHit: false });
    } finally {
      idp.up();
    }
  });
});

describe('keys', () => {
  it('accepts a rotated key after the next refresh without fetching on the hot path', async () => {
    const clock = testClock();
    const s = service({ clock: clock.now });
    await s.start();
    const kid = idp.rotateKey();
    await s.refresh();
    const before = idp.requestCount();
    expect(await decide(s, await mint(clock.now, { kid }))).toMatchObject({ reason: 'allowed', status: 200 });
    expect(idp.requestCount()).toBe(before);
  });

  it('refuses a removed key after the next refresh, a token in the verified-token cache included', async () => {
    const clock = testClock();
    const s = service({ clock: clock.now });
    await s.start();
    const oldKid = idp.signingKid;
    const newKid = idp.rotateKey();
    await s.refresh();
    const cached = await mint(clock.now, { kid: oldKid });
    expect(await decide(s, cached)).toMatchObject({ reason: 'allowed', cacheHit: false });
    expect(await decide(s, cached)).toMatchObject({ reason: 'allowed', cacheHit: true });

    idp.removeKey(oldKid);
    // Revocation takes effect at the refresh, not before.
    expect(await decide(s, cached)).toMatchObject({ reason: 'allowed', cacheHit: true });
    await s.refresh();
    expect(await decide(s, cached)).toMatchObject({ reason: 'unknown_key', status: 401, cacheHit: false });
    expect(await decide(s, await mint(clock.now, { kid: oldKid }))).toMatchObject({ reason: 'unknown_key', status: 401 });
    expect(await decide(s, await mint(clock.now, { kid: newKid }))).toMatchObject({ reason: 'allowed', status: 200 });
    const snapshot = await s.store.read();
    const kids = snapshot && snapshot !== 'not-modified' ? snapshot.data.issuers.flatMap((i) => i.keys.map((k) => k.kid)) : [];
    expect(kids).toContain(newKid);
    expect(kids).not.toContain(oldKid);
  });

  it('answers 503, not unknown_key, when a new kid cannot be refetched because the authority is down', async () => {
    const clock = testClock();
    const s = service({ clock: clock.now });
    await s.start();
    const kid = idp.rotateKey();
    idp.down();
    try {
      expect(await decide(s, await mint(clock.now, { kid }))).toMatchObject({ reason: 'issuer_unavailable', status: 503 });
      // Within the cooldown nothing is fetched, and the answer stays indeterminate.
      expect(await decide(s, await mint(clock.now, { kid }))).toMatchObject({ reason: 'issuer_unavailable', status: 503 });
    } finally {
      idp.up();
    }
    clock.advance(31_000);
    expect(await decide(s, await mint(clock.now, { kid }))).toMatchObject({ reason: 'allowed', status: 200 });
  });

  it('fetches an unknown kid at once (rate-limited) and keeps the fetched key until the next snapshot', async () => {
    const clock = testClock();
    const s = service({ clock: clock.now });
    await s.start();
    const revision = (s.health().snapshot as { revision: string }).revision;
    const discoveries = idp.requestCount(new URL(idp.v1DiscoveryUrl).pathname) + idp.requestCount(new URL(idp.v2DiscoveryUrl).pathname);

    const kid = idp.rotateKey();
    const jwksBefore = jwksFetches();
    expect(await decide(s, await mint(clock.now, { kid }))).toMatchObject({ reason: 'allowed', status: 200 });
    // One JWKS fetch of that issuer, no discovery, and no new snapshot.
    expect(jwksFetches()).toBe(jwksBefore + 1);
    expect(idp.requestCount(new URL(idp.v1DiscoveryUrl).pathname) + idp.requestCount(new URL(idp.v2DiscoveryUrl).pathname)).toBe(discoveries);
    expect((s.health().snapshot as { revision: string }).revision).toBe(revision);
    // The fetched key stays: another token with it needs no fetch.
    expect(await decide(s, await mint(clock.now, { kid }))).toMatchObject({ reason: 'allowed', status: 200 });
    expect(jwksFetches()).toBe(jwksBefore + 1);

    // Within the cooldown (jwksRefetchCooldownSeconds, 30 s) a second unknown kid is not fetched.
    const third = idp.rotateKey();
    expect(await decide(s, await mint(clock.now, { kid: third }))).toMatchObject({ reason: 'unknown_key', status: 401 });
    expect(jwksFetches()).toBe(jwksBefore + 1);
    clock.advance(31_000);
    expect(await decide(s, await mint(clock.now, { kid: third }))).toMatchObject({ reason: 'allowed', status: 200 });

    // The next snapshot carries what the refetch found, from the issuer's own JWKS.
    await s.refresh();
    const snapshot = await s.store.read();
    const kids = snapshot && snapshot !== 'not-modified' ? snapshot.data.issuers.flatMap((i) => i.keys.map((k) => k.kid)) : [];
    expect(kids).toEqual(expect.arrayContaining([kid, third]));
  });
});

describe('the group index and Microsoft Graph', () => {
  let fake: FakeGraph;
  let graphClient: Client;

  beforeAll(async () => {
    fake = await startFakeGraph();
    graphClient = createGraphClient({ credential: graphCredential(fake.token), baseUrl: fake.origin });
  });

  afterAll(async () => {
    await fake.close();
  });

  afterEach(async () => {
    await fake.up();
  });

  function groupService(clock: () => number, groups: string[]): PdpService {
    return service({ clock, graphClient, accessPolicies: groups.map((objectId) => ({ objectId, dataActions: ['read'] })) });
  }

  function groupsOf(s: PdpService): { indexed: number; memberships: number; stale?: boolean } {
    return s.health().groups as { indexed: number; memberships: number; stale?: boolean };
  }

  it('makes a membership change visible after POST /api/refresh on the standalone host', async () => {
    const clock = testClock();
    const group = fake.addGroup({ displayName: 'fhir readers' });
    const user = fake.addUser();
    const s = groupService(clock.now, [group]);
    await s.start();
    const server: Server = createPdpServer(s, { keys: new KeyRing([], [ADMIN_KEY]) });
    const address = await listen(server, 0, '127.0.0.1');
    const base = `http://127.0.0.1:${address.port}`;
    const ask = async (token: string): Promise<{ reason: string; status: number }> => {
      const res = await fetch(`${base}/api/decide`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-functions-key': ADMIN_KEY },
        body: JSON.stringify({ method: 'GET', path: '/Patient/1', token }),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as { reason: string; status: number };
    };
    const refreshNow = async (): Promise<{ outcome: string }> => {
      const res = await fetch(`${base}/api/refresh`, { method: 'POST', headers: { 'x-functions-key': ADMIN_KEY } });
      expect(res.status).toBe(200);
      return (await res.json()) as { outcome: string };
    };
    try {
      const token = await mint(clock.now, { oid: user });
      expect(await ask(token)).toMatchObject({ status: 403 });

      fake.addMember(group, user);
      // Graph's answer of a moment ago (not a member) is cached; the index is what changes it.
      expect(await ask(token)).toMatchObject({ status: 403 });
      const refused = await fetch(`${base}/api/refresh`, { method: 'POST' });
      expect(refused.status).toBe(401);
      expect(await refreshNow()).toMatchObject({ outcome: 'ok' });
      expect(await ask(token)).toMatchObject({ reason: 'allowed', status: 200 });
      expect(groupsOf(s)).toMatchObject({ indexed: 1, memberships: 1 });

      fake.removeMember(group, user);
      expect(await ask(token)).toMatchObject({ reason: 'allowed', status: 200 });
      await refreshNow();
      expect(await ask(token)).toMatchObject({ status: 403 });
      expect(groupsOf(s)).toMatchObject({ indexed: 1, memberships: 0 });
    } finally {
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    }
  });

  it('keeps the previous members of a group Graph throttles past the longest Retry-After it waits for', async () => {
    const clock = testClock();
    const throttled = fake.addGroup();
    const other = fake.addGroup();
    const user = fake.addUser();
    const newcomer = fake.addUser();
    fake.addMember(throttled, user);
    const s = groupService(clock.now, [throttled, other]);
    await s.start();
    expect(await decide(s, await mint(clock.now, { oid: user }))).toMatchObject({ reason: 'allowed' });

    fake.removeMember(throttled, user);
    fake.addMember(other, newcomer);
    // Retry-After 120 s is beyond the expander's 60 s bound: the group fails at once.
    fake.failNext(1, { status: 429, retryAfterSeconds: 120 }, { path: `/groups/${throttled}/transitiveMembers` });
    const report = await s.refresh();
    expect(report.outcome).toBe('partial');
    expect(report.problems).toEqual([expect.stringMatching(new RegExp(`^group ${throttled}: .*429`))]);
    expect((s.health().snapshot as { lastRefresh: { problems: string[] } }).lastRefresh.problems).toEqual(report.problems);
    expect(s.health()).toMatchObject({ ready: true, status: 'degraded', refresh: { outcome: 'partial' } });
    // The throttled group keeps its previous members; the other one moved on.
    expect(await decide(s, await mint(clock.now, { oid: user }))).toMatchObject({ reason: 'allowed' });
    expect(await decide(s, await mint(clock.now, { oid: newcomer }))).toMatchObject({ reason: 'allowed' });

    expect((await s.refresh()).outcome).toBe('ok');
    expect(await decide(s, await mint(clock.now, { oid: user }))).toMatchObject({ status: 403 });
  });

  it('waits for a Retry-After it can honour and then succeeds', async () => {
    const clock = testClock();
    const group = fake.addGroup();
    const user = fake.addUser();
    fake.addMember(group, user);
    const s = groupService(clock.now, [group]);
    await s.start();
    fake.clearLog();
    fake.failNext(1, { status: 429, retryAfterSeconds: 1 }, { path: `/groups/${group}/transitiveMembers` });
    const started = performance.now();
    const report = await s.refresh();
    expect(performance.now() - started).toBeGreaterThanOrEqual(950);
    expect(report.outcome).toBe('ok');
    expect(fake.count({ method: 'GET', path: `/groups/${group}/transitiveMembers` })).toBe(2);
    expect(groupsOf(s)).toMatchObject({ indexed: 1, memberships: 1 });
  });

  it.each([
    ['repeated 503s on one group', (g: string) => fake.failNext(4, { status: 503, retryAfterSeconds: 0 }, { path: `/groups/${g}/transitiveMembers` }), /503/],
    ['Graph answering 503 to everything', async () => fake.down('503'), /503/],
    ['Graph refusing connections', async () => fake.down('refuse'), /Graph request failed/],
    ['an answer over the size bound', (g: string) => fake.tamperNext(1, { padBytes: 2 * 1024 * 1024 }, { path: `/groups/${g}/transitiveMembers` }), /more than the limit of 1048576 bytes/],
    ['a nextLink naming the page itself (a paging loop)', (g: string) => fake.tamperNext(1, { nextLink: 'self' }, { path: `/groups/${g}/transitiveMembers` }), /paging loop/],
  ])('keeps the previous group values on %s', async (_name, breakGraph, problem) => {
    const clock = testClock();
    const group = fake.addGroup();
    const user = fake.addUser();
    fake.addMember(group, user);
    const s = groupService(clock.now, [group]);
    await s.start();
    fake.removeMember(group, user);
    await breakGraph(group);
    const report = await s.refresh();
    await fake.up();
    expect(report.outcome).toBe('partial');
    expect(report.problems.join('\n')).toMatch(problem);
    expect(groupsOf(s)).toMatchObject({ indexed: 1, memberships: 1, stale: false });
    expect(s.health()).toMatchObject({ ready: true, status: 'degraded' });
    expect(await decide(s, await mint(clock.now, { oid: user }))).toMatchObject({ reason: 'allowed' });
  });

  it('keeps answering 403 for a principal the fresh index proves is in no listed group while Graph is down', async () => {
    const clock = testClock();
    const group = fake.addGroup();
    const member = fake.addUser();
    const outsider = fake.addUser();
    fake.addMember(group, member);
    const s = groupService(clock.now, [group]);
    await s.start();
    expect(await decide(s, await mint(clock.now, { oid: outsider }))).toMatchObject({ reason: 'principal_not_allowed', status: 403 });
    await fake.down('refuse');
    // A different principal, so no cached Graph answer can stand in: the index alone decides.
    const other = fake.addUser();
    expect(await decide(s, await mint(clock.now, { oid: other }))).toMatchObject({ reason: 'principal_not_allowed', status: 403 });
    expect(await decide(s, await mint(clock.now, { oid: member }))).toMatchObject({ reason: 'allowed', status: 200 });
  });

  it('refuses 503 directory_unavailable once the group index is past maxStale and Graph is down', async () => {
    const clock = testClock();
    const group = fake.addGroup();
    const user = fake.addUser();
    fake.addMember(group, user);
    const s = groupService(clock.now, [group]);
    await s.start();
    expect(await decide(s, await mint(clock.now, { oid: user }))).toMatchObject({ reason: 'allowed' });

    await fake.down('refuse');
    clock.advance(23 * HOUR);
    expect((await s.refresh()).outcome).toBe('partial');
    // Within maxStale a Graph outage changes no decision.
    expect(await decide(s, await mint(clock.now, { oid: user }))).toMatchObject({ reason: 'allowed' });

    clock.advance(2 * HOUR);
    await s.refresh();
    expect(groupsOf(s)).toMatchObject({ indexed: 1, stale: true });
    expect(s.health()).toMatchObject({ status: 'degraded' });
    expect(await decide(s, await mint(clock.now, { oid: user }))).toMatchObject({ reason: 'directory_unavailable', status: 503 });

    await fake.up();
    expect((await s.refresh()).outcome).toBe('ok');
    expect(groupsOf(s)).toMatchObject({ indexed: 1, stale: false });
    expect(await decide(s, await mint(clock.now, { oid: user }))).toMatchObject({ reason: 'allowed' });
  });
});
