import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@microsoft/microsoft-graph-client';
import { ClientCertificateCredential, ClientSecretCredential, DefaultAzureCredential } from '@azure/identity';
import { credentialFromSettings, createGraphClient, GraphSettingsError } from '../../src/directory/graph-client.js';
import { GraphMembershipResolver, type GraphMembershipResolverOptions } from '../../src/directory/membership.js';
import { getDirectoryObjectKind } from '../../src/directory/object-kind.js';
import { DirectoryUnavailableError, type MembershipAnswer } from '../../src/directory/types.js';
import { graphCredential, startFakeGraph, type FakeGraph } from '../../testkit/fake-graph.js';

const CHECK = { method: 'POST', path: '/checkMemberGroups' } as const;
const BATCH = { method: 'POST', path: '/v1.0/$batch', inBatch: false } as const;

let fake: FakeGraph;
let client: Client;
const dir = {
  alice: '', // direct member of inner
  bob: '', // member of nothing
  robot: '', // service principal, direct member of outer
  nestedRobot: '', // service principal, member of inner
  inner: '', // group, member of outer
  outer: '',
  other: '',
  app: '', // application object (not a member of anything)
};

beforeAll(async () => {
  fake = await startFakeGraph();
  // One client for outage after outage: its circuit breaker would stay open between tests (the
  // breaker's own tests are in graph-breaker.test.ts).
  client = createGraphClient({ credential: graphCredential(fake.token), baseUrl: fake.origin, breaker: { failureThreshold: 1_000 } });
  dir.alice = fake.addUser({ displayName: 'Alice' });
  dir.bob = fake.addUser({ displayName: 'Bob' });
  dir.robot = fake.addServicePrincipal({ displayName: 'robot' });
  dir.nestedRobot = fake.addServicePrincipal({ displayName: 'nested robot' });
  dir.app = fake.addApplication({ displayName: 'robot app registration' });
  dir.inner = fake.addGroup({ displayName: 'inner' });
  dir.outer = fake.addGroup({ displayName: 'outer' });
  dir.other = fake.addGroup({ displayName: 'other' });
  fake.addMember(dir.inner, dir.alice);
  fake.addMember(dir.inner, dir.nestedRobot);
  fake.addMember(dir.outer, dir.inner);
  fake.addMember(dir.outer, dir.robot);
});

afterAll(async () => {
  await fake.close();
});

function resolver(options: Partial<GraphMembershipResolverOptions> = {}): GraphMembershipResolver {
  return new GraphMembershipResolver({ client, ...options });
}

function sorted(answer: MembershipAnswer): string[] {
  return [...answer.memberOf].sort();
}

describe('GraphMembershipResolver over HTTP against the fake Graph', () => {
  it.each([
    ['a user through a nested group', 'alice', ['inner', 'outer']],
    ['a service principal, directly', 'robot', ['outer']],
    ['a service principal through a nested group', 'nestedRobot', ['inner', 'outer']],
    ['a group, as a member of another group', 'inner', ['outer']],
    ['a user in no group', 'bob', []],
  ] as const)('answers transitive membership for %s', async (_, who, expected) => {
    const answer = await resolver().checkMemberGroups({
      objectId: dir[who],
      groupIds: [dir.inner, dir.outer, dir.other],
      budgetMs: 1000,
    });
    expect(answer.source).toBe('graph');
    expect(sorted(answer)).toEqual(expected.map((name) => dir[name]).sort());
  });

  it('answers the groups overage case (no groups claim) with one checkMemberGroups call', async () => {
    fake.clearLog();
    const answer = await resolver().checkMemberGroups({
      objectId: dir.alice.toUpperCase(),
      groupIds: [dir.outer.toUpperCase(), dir.other],
      budgetMs: 1000,
    });
    expect(sorted(answer)).toEqual([dir.outer]);
    expect(fake.count(CHECK)).toBe(1);
    expect(fake.requests[0]?.path).toBe(`/v1.0/directoryObjects/${dir.alice}/checkMemberGroups`);
  });

  it('honours a 429 Retry-After within the budget and then answers', async () => {
    fake.clearLog();
    fake.failNext(1, { status: 429, retryAfterSeconds: 1 });
    const started = performance.now();
    const answer = await resolver().checkMemberGroups({ objectId: dir.alice, groupIds: [dir.outer], budgetMs: 2500 });
    const elapsed = performance.now() - started;
    expect(sorted(answer)).toEqual([dir.outer]);
    expect(elapsed).toBeGreaterThanOrEqual(990);
    expect(elapsed).toBeLessThan(2500);
    expect(fake.count(CHECK)).toBe(2);
  });

  it('gives up at once when Retry-After is longer than the budget, and keeps honouring it', async () => {
    fake.clearLog();
    fake.failNext(1, { status: 429, retryAfterSeconds: 5 });
    const throttled = resolver();
    const started = performance.now();
    const failure = await throttled
      .checkMemberGroups({ objectId: dir.alice, groupIds: [dir.outer], budgetMs: 1000 })
      .catch((error: unknown) => error);
    expect(performance.now() - started).toBeLessThan(900); // not the 5 s of Retry-After, nor the 1 s budget
    expect(failure).toBeInstanceOf(DirectoryUnavailableError);
    expect(failure).toMatchObject({ code: 'directory_unavailable', detail: { status: 429, retryAfterSeconds: 5 } });
    // Another principal during the Retry-After window: no call to Graph, same answer.
    await expect(
      throttled.checkMemberGroups({ objectId: dir.bob, groupIds: [dir.outer], budgetMs: 1000 }),
    ).rejects.toMatchObject({ code: 'directory_unavailable', detail: { status: 429 } });
    expect(fake.count(CHECK)).toBe(1);
  });

  it.each(['refuse', '503'] as const)(
    'when Graph is down (%s) serves a cached answer younger than maxStale, then fails',
    async (mode) => {
      let now = Date.parse('2030-01-01T00:00:00Z');
      const calls: string[] = [];
      const cached = resolver({
        clock: () => now,
        positiveTtlMs: 60_000,
        maxStaleMs: 3_600_000,
        onGraphCall: (outcome) => calls.push(outcome),
      });
      const query = { objectId: dir.alice, groupIds: [dir.outer, dir.other], budgetMs: 500 };
      const first = await cached.checkMemberGroups(query);
      expect(first).toMatchObject({ source: 'graph', fetchedAt: now });

      await fake.down(mode);
      try {
        now += 30_000; // still fresh: no call at all
        expect(await cached.checkMemberGroups(query)).toMatchObject({ source: 'cache', fetchedAt: first.fetchedAt });
        expect(calls).toEqual(['ok']);

        now += 10 * 60_000; // past the TTL: Graph is asked, fails, the stale answer stands in
        const stale = await cached.checkMemberGroups(query);
        expect(stale).toMatchObject({ source: 'cache', fetchedAt: first.fetchedAt });
        expect(sorted(stale)).toEqual([dir.outer]);
        // A refused connection is not retried; a 503 is, within the budget.
        expect(calls[0]).toBe('ok');
        expect(calls.slice(1)).toEqual(Array(calls.length - 1).fill('failed'));
        if (mode === 'refuse') expect(calls).toEqual(['ok', 'failed']);
        else expect(calls.length).toBeGreaterThan(2);

        now += 3_600_000; // past maxStale
        await expect(cached.checkMemberGroups(query)).rejects.toBeInstanceOf(DirectoryUnavailableError);
        // Nothing cached for this principal at all:
        await expect(
          cached.checkMemberGroups({ objectId: dir.bob, groupIds: [dir.outer], budgetMs: 500 }),
        ).rejects.toMatchObject({ code: 'directory_unavailable' });
      } finally {
        await fake.up();
      }
      expect(await cached.checkMemberGroups(query)).toMatchObject({ source: 'graph' });
    },
  );

  it('holds a caller that joins a lookup no longer than its own budget', async () => {
    fake.clearLog();
    fake.failNext(1, { status: 429, retryAfterSeconds: 1 });
    const shared = resolver();
    const query = { objectId: dir.robot, groupIds: [dir.outer], budgetMs: 2500 };
    const patient = shared.checkMemberGroups(query);
    const started = performance.now();
    const hasty = await shared.checkMemberGroups({ ...query, budgetMs: 300 }).catch((error: unknown) => error);
    expect(performance.now() - started).toBeLessThan(900);
    expect(hasty).toBeInstanceOf(DirectoryUnavailableError);
    expect(sorted(await patient)).toEqual([dir.outer]);
    expect(fake.count(CHECK)).toBe(2);
  });

  describe('more than 20 allow-listed groups', () => {
    const many: string[] = [];
    const memberOf: string[] = [];
    beforeAll(() => {
      for (let i = 0; i < 450; i += 1) many.push(fake.addGroup({ displayName: `g${i}` }));
      for (const index of [0, 19, 20, 24, 40, 449]) {
        fake.addMember(many[index] as string, dir.bob);
        memberOf.push(many[index] as string);
      }
    });

    it.each([
      [25, 1, 2],
      [45, 1, 3],
      [450, 2, 23],
    ])('checks %i groups in chunks of 20 through $batch (%i batch calls, %i steps)', async (count, calls, steps) => {
      fake.clearLog();
      const groupIds = many.slice(0, count);
      const answer = await resolver().checkMemberGroups({ objectId: dir.bob, groupIds, budgetMs: 2000 });
      expect(sorted(answer)).toEqual(memberOf.filter((id) => groupIds.includes(id)).sort());
      expect(fake.count(BATCH)).toBe(calls);
      expect(fake.count({ ...CHECK, inBatch: false })).toBe(0);
      expect(fake.count({ ...CHECK, inBatch: true })).toBe(steps);
    });

    it('retries only the throttled step of a $batch, after its Retry-After', async () => {
      fake.clearLog();
      fake.failNext(1, { status: 429, retryAfterSeconds: 1 }, { path: '/checkMemberGroups' });
      const answer = await resolver().checkMemberGroups({ objectId: dir.bob, groupIds: many.slice(0, 25), budgetMs: 2500 });
      expect(sorted(answer)).toEqual(memberOf.filter((id) => many.slice(0, 25).includes(id)).sort());
      expect(fake.count(BATCH)).toBe(2);
      expect(fake.count({ ...CHECK, inBatch: true })).toBe(3);
    });

    it('answers "member of nothing" when the object is unknown, through $batch too', async () => {
      const unknown = '00000000-0000-4000-8000-000000000001';
      const answer = await resolver().checkMemberGroups({ objectId: unknown, groupIds: many.slice(0, 25), budgetMs: 1000 });
      expect(answer).toMatchObject({ source: 'graph' });
      expect(answer.memberOf.size).toBe(0);
    });
  });

  it('coalesces concurrent identical lookups into one Graph call', async () => {
    fake.clearLog();
    const shared = resolver();
    const query = { objectId: dir.alice, groupIds: [dir.inner, dir.outer], budgetMs: 1000 };
    const answers = await Promise.all(Array.from({ length: 8 }, () => shared.checkMemberGroups(query)));
    expect(fake.count(CHECK)).toBe(1);
    for (const answer of answers) expect(sorted(answer)).toEqual([dir.inner, dir.outer].sort());
    // The same question with the ids in another order and case is the same cache entry.
    const again = await shared.checkMemberGroups({ ...query, groupIds: [dir.outer.toUpperCase(), dir.inner] });
    expect(again.source).toBe('cache');
    expect(fake.count(CHECK)).toBe(1);
  });

  it('treats 404 Request_ResourceNotFound as an empty answer, cached with the negative TTL', async () => {
    fake.clearLog();
    let now = 1_000_000;
    const calls: string[] = [];
    const negative = resolver({ clock: () => now, negativeTtlMs: 60_000, onGraphCall: (o) => calls.push(o) });
    const query = { objectId: '00000000-0000-4000-8000-000000000002', groupIds: [dir.outer], budgetMs: 1000 };
    const answer = await negative.checkMemberGroups(query);
    expect(answer).toMatchObject({ source: 'graph' });
    expect(answer.memberOf.size).toBe(0);
    expect(fake.requests.at(-1)?.status).toBe(404);
    expect(calls).toEqual(['ok']);
    now += 59_000;
    expect((await negative.checkMemberGroups(query)).source).toBe('cache');
    now += 2_000;
    expect((await negative.checkMemberGroups(query)).source).toBe('graph');
    expect(fake.count(CHECK)).toBe(2);
  });

  it('keeps positive answers for positiveTtl and at most maxEntries answers', async () => {
    fake.clearLog();
    let now = 0;
    const bounded = resolver({ clock: () => now, positiveTtlMs: 300_000, maxEntries: 2 });
    const ask = (objectId: string) => bounded.checkMemberGroups({ objectId, groupIds: [dir.outer], budgetMs: 1000 });
    await ask(dir.alice);
    await ask(dir.robot);
    now += 299_000;
    expect((await ask(dir.alice)).source).toBe('cache'); // alice is now the most recently used
    await ask(dir.inner); // evicts robot
    expect(fake.count(CHECK)).toBe(3);
    expect((await ask(dir.alice)).source).toBe('cache');
    expect((await ask(dir.robot)).source).toBe('graph');
    expect(fake.count(CHECK)).toBe(4);
  });

  it('never puts a non-GUID object id in a URL', async () => {
    fake.clearLog();
    const answer = await resolver().checkMemberGroups({
      objectId: '../groups/delta',
      groupIds: [dir.outer],
      budgetMs: 1000,
    });
    expect(answer.memberOf.size).toBe(0);
    expect(fake.requests).toHaveLength(0);
  });

  it('is refused with a wrong bearer, and says so as directory_unavailable', async () => {
    const calls: string[] = [];
    const wrong = new GraphMembershipResolver({
      client: createGraphClient({ credential: graphCredential('not-the-token'), baseUrl: fake.origin }),
      onGraphCall: (outcome) => calls.push(outcome),
    });
    await expect(
      wrong.checkMemberGroups({ objectId: dir.alice, groupIds: [dir.outer], budgetMs: 1000 }),
    ).rejects.toMatchObject({ code: 'directory_unavailable', detail: { status: 401 } });
    expect(calls).toEqual(['failed']);

    const raw = await fetch(`${fake.origin}/v1.0/directoryObjects/${dir.alice}/checkMemberGroups`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ groupIds: [dir.outer] }),
    });
    expect(raw.status).toBe(401);
    expect(((await raw.json()) as { error: { code: string } }).error.code).toBe('InvalidAuthenticationToken');
  });
});

describe('getDirectoryObjectKind', () => {
  it.each([
    ['alice', 'user'],
    ['outer', 'group'],
    ['robot', 'servicePrincipal'],
    ['app', 'application'],
  ] as const)('tells what %s is', async (who, kind) => {
    expect(await getDirectoryObjectKind(client, dir[who])).toBe(kind);
  });

  it.each([
    ['an unknown GUID', '00000000-0000-4000-8000-000000000003'],
    ['a non-GUID', 'me'],
  ])('answers not-found for %s', async (_, id) => {
    expect(await getDirectoryObjectKind(client, id)).toBe('not-found');
  });
});

describe('graph client settings', () => {
  it.each([
    ['nothing set', {}, DefaultAzureCredential],
    ['a managed identity client id', { PDP_GRAPH_MANAGED_IDENTITY_CLIENT_ID: 'mi' }, DefaultAzureCredential],
    [
      'a client secret',
      { PDP_GRAPH_TENANT_ID: 'contoso.example', PDP_GRAPH_CLIENT_ID: 'c1', PDP_GRAPH_CLIENT_SECRET: 's' },
      ClientSecretCredential,
    ],
    [
      'a client certificate',
      { PDP_GRAPH_TENANT_ID: 'contoso.example', PDP_GRAPH_CLIENT_ID: 'c1', PDP_GRAPH_CLIENT_CERTIFICATE_PATH: '/x.pem' },
      ClientCertificateCredential,
    ],
  ])('chooses the credential for %s', (_, env, kind) => {
    expect(credentialFromSettings(env)).toBeInstanceOf(kind);
  });

  it.each([
    ['a secret without tenant and client', { PDP_GRAPH_CLIENT_SECRET: 's' }],
    ['a certificate without client', { PDP_GRAPH_TENANT_ID: 't', PDP_GRAPH_CLIENT_CERTIFICATE_PATH: '/x.pem' }],
    [
      'both a secret and a certificate',
      { PDP_GRAPH_TENANT_ID: 't', PDP_GRAPH_CLIENT_ID: 'c', PDP_GRAPH_CLIENT_SECRET: 's', PDP_GRAPH_CLIENT_CERTIFICATE_PATH: '/x.pem' },
    ],
  ])('refuses %s at start-up', (_, env) => {
    expect(() => credentialFromSettings(env)).toThrow(GraphSettingsError);
  });

  it.each(['http://graph.example', 'https://graph.example/v1.0', 'not a url'])(
    'refuses baseUrl %s',
    (baseUrl) => {
      expect(() => createGraphClient({ credential: graphCredential('t'), baseUrl })).toThrow(GraphSettingsError);
    },
  );
});
