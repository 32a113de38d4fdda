import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Client } from '@microsoft/microsoft-graph-client';
import { createGraphClient } from '../../src/directory/graph-client.js';
import {
  createGroupExpander as createDefaultExpander,
  GraphGroupExpander,
  type GroupExpanderOptions,
} from '../../src/directory/expand.js';
import type { GroupExpander, GroupExpansion } from '../../src/directory/types.js';
import { graphCredential, startFakeGraph, type FakeGraph } from '../../testkit/fake-graph.js';

const TRANSITIVE = { method: 'GET', path: /\/transitiveMembers$/ } as const;

let fake: FakeGraph;
let client: Client;

beforeAll(async () => {
  fake = await startFakeGraph();
  client = createGraphClient({ credential: graphCredential(fake.token), baseUrl: fake.origin });
});

afterAll(async () => {
  await fake.close();
});

function expander(options: Partial<GroupExpanderOptions> = {}): GraphGroupExpander {
  return new GraphGroupExpander({ client, defaultRetryMs: 10, ...options });
}

function membersOf(expansion: GroupExpansion, groupId: string): string[] {
  return [...(expansion.members.get(groupId) ?? [])].sort();
}

describe('group expansion over HTTP against the fake Graph', () => {
  const g = { big: '', nested: '', deeper: '', empty: '' };
  const bigUsers: string[] = [];
  let robot = '';
  let deepUser = '';
  const nestedUsers: string[] = [];

  beforeAll(() => {
    g.big = fake.addGroup({ displayName: 'big' });
    g.nested = fake.addGroup({ displayName: 'nested' });
    g.deeper = fake.addGroup({ displayName: 'deeper' });
    g.empty = fake.addGroup({ displayName: 'empty' });
    for (let i = 0; i < 2_500; i += 1) {
      const user = fake.addUser();
      bigUsers.push(user);
      fake.addMember(g.big, user);
    }
    for (let i = 0; i < 10; i += 1) {
      const user = fake.addUser();
      nestedUsers.push(user);
      fake.addMember(g.nested, user);
    }
    robot = fake.addServicePrincipal();
    deepUser = fake.addUser();
    fake.addMember(g.nested, robot);
    fake.addMember(g.deeper, deepUser);
    fake.addMember(g.nested, g.deeper);
    fake.addMember(g.big, g.nested);
    fake.addMember(g.big, nestedUsers[0] as string); // also reached through nesting: listed once
  });

  it('follows @odata.nextLink pages and includes nested groups, their members and service principals', async () => {
    fake.clearLog();
    const expansion = await expander().expandGroups([g.big, g.nested.toUpperCase(), g.empty]);
    expect(expansion.failed.size).toBe(0);
    const expectedNested = [...nestedUsers, robot, g.deeper, deepUser].sort();
    expect(membersOf(expansion, g.nested)).toEqual(expectedNested);
    expect(membersOf(expansion, g.big)).toEqual([...bigUsers, g.nested, ...expectedNested].sort());
    expect(membersOf(expansion, g.empty)).toEqual([]);
    // 2 515 members at $top=999: three pages for the big group, one each for the others.
    expect(fake.count({ ...TRANSITIVE, path: `/groups/${g.big}/transitiveMembers` })).toBe(3);
    expect(fake.count(TRANSITIVE)).toBe(5);
    expect(fake.requests.find((r) => r.path.endsWith(`${g.big}/transitiveMembers`))?.query).toBe('?$select=id&$top=999');
  });

  it('keeps going when one group fails, and reports that group in failed', async () => {
    // maxRetries 2: three attempts, all refused.
    fake.failNext(3, { status: 503 }, { path: `/groups/${g.nested}/transitiveMembers` });
    const expansion = await expander({ maxRetries: 2 }).expandGroups([g.big, g.nested, g.deeper]);
    expect([...expansion.failed.keys()]).toEqual([g.nested]);
    expect(expansion.failed.get(g.nested)).toContain('503');
    expect(expansion.members.has(g.nested)).toBe(false);
    expect(membersOf(expansion, g.deeper)).toEqual([deepUser]);
    expect(expansion.members.get(g.big)).toHaveLength(2_500 + 1 + 13);
  });

  it('honours a 429 Retry-After and then carries on', async () => {
    fake.clearLog();
    fake.failNext(1, { status: 429, retryAfterSeconds: 1 }, { path: `/groups/${g.deeper}/transitiveMembers` });
    const started = performance.now();
    const expansion = await expander().expandGroups([g.deeper]);
    expect(performance.now() - started).toBeGreaterThanOrEqual(990);
    expect(membersOf(expansion, g.deeper)).toEqual([deepUser]);
    expect(fake.count(TRANSITIVE)).toBe(2);
  });

  it('fails a group at once when Retry-After is longer than it may wait, or retries run out', async () => {
    fake.failNext(1, { status: 429, retryAfterSeconds: 120 }, { path: `/groups/${g.deeper}/transitiveMembers` });
    const started = performance.now();
    const expansion = await expander({ maxRetryAfterMs: 60_000 }).expandGroups([g.deeper, g.empty]);
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(expansion.failed.get(g.deeper)).toContain('429');
    expect(membersOf(expansion, g.empty)).toEqual([]);
  });

  it('fails a group with more members than the bound', async () => {
    const expansion = await expander({ maxMembersPerGroup: 1_000 }).expandGroups([g.big, g.nested]);
    expect(expansion.failed.get(g.big)).toMatch(/more than 1000/);
    expect(membersOf(expansion, g.nested)).toHaveLength(13);
  });

  it.each([
    ['a deleted group (404) has no members', '00000000-0000-4000-8000-0000000000aa', 'members'],
    ['a non-GUID id is never sent and fails', 'groups/delta', 'failed'],
  ] as const)('%s', async (_, groupId, where) => {
    fake.clearLog();
    const expansion = await expander().expandGroups([groupId]);
    if (where === 'members') expect(expansion.members.get(groupId)).toEqual([]);
    else expect(expansion.failed.has(groupId)).toBe(true);
    // The 404, then what the id names (nothing: it is asked again next time).
    expect(fake.requests).toHaveLength(where === 'members' ? 2 : 0);
  });

  it.each([
    ['self', 1],
    ['first', 2],
  ] as const)('stops at a repeated @odata.nextLink (%s) and fails that group only', async (loop, pagesRead) => {
    fake.clearLog();
    // 'self': the first page names itself as the next one; 'first': the second page names the first.
    const bigPages = { method: 'GET', path: `/groups/${g.big}/transitiveMembers` };
    fake.tamperNext(1, { nextLink: loop }, bigPages);
    const looped = await expander().expandGroups([g.big, g.deeper]);
    expect(looped.failed.get(g.big)).toMatch(/@odata\.nextLink repeats a page already read/);
    expect(looped.members.has(g.big)).toBe(false);
    expect(membersOf(looped, g.deeper)).toEqual([deepUser]);
    // The repeated link is never requested again: no page is read twice, let alone a thousand times.
    expect(fake.count(bigPages)).toBe(pagesRead);
  });

  it('asks what a listed id is once, and never expands a user or service principal as a group', async () => {
    const user = fake.addUser();
    const sp = fake.addServicePrincipal();
    const e = expander();
    fake.clearLog();
    const first = await e.expandGroups([user, sp, g.deeper]);
    expect(first.failed.size).toBe(0);
    expect(membersOf(first, user)).toEqual([]);
    expect(membersOf(first, sp)).toEqual([]);
    expect(fake.count({ method: 'GET', path: `/directoryObjects/${user}` })).toBe(1);
    expect(fake.count({ method: 'GET', path: `/directoryObjects/${sp}` })).toBe(1);
    fake.clearLog();
    const second = await e.expandGroups([user, sp, g.deeper]);
    expect(membersOf(second, user)).toEqual([]);
    expect(membersOf(second, sp)).toEqual([]);
    expect(membersOf(second, g.deeper)).toEqual([deepUser]);
    // Only the group is asked for: the user and the service principal cost nothing any more.
    expect(fake.requests.map((r) => r.path)).toEqual([`/v1.0/groups/${g.deeper}/transitiveMembers`]);
  });

  it('refuses an answer larger than the client\'s bound while it streams in, and fails that group only', async () => {
    fake.tamperNext(1, { padBytes: 2 * 1024 * 1024 }, { method: 'GET', path: `/groups/${g.nested}/transitiveMembers` });
    const expansion = await expander().expandGroups([g.nested, g.deeper]);
    expect(expansion.failed.get(g.nested)).toMatch(/more than the limit of 1048576 bytes; the answer was refused/);
    expect(membersOf(expansion, g.deeper)).toEqual([deepUser]);
    const small = createGraphClient({ credential: graphCredential(fake.token), baseUrl: fake.origin, maxResponseBytes: 4096 });
    const bounded = await new GraphGroupExpander({ client: small }).expandGroups([g.big]);
    expect(bounded.failed.get(g.big)).toMatch(/more than the limit of 4096 bytes/);
  });

  it('the default expander is the transitiveMembers one', async () => {
    const chosen: GroupExpander = createDefaultExpander({ client });
    expect(chosen).toBeInstanceOf(GraphGroupExpander);
  });
});

/**
 * The transitiveMembers half of the measurement in bench/PROFILE.md ("Group expansion"): 50
 * groups of 2 000 transitive members (1 800 direct users and a nested group of 200), a second
 * refresh after one change, then the same allow-list in a larger tenant. Its own fake Graph, so
 * the tenant holds only these groups.
 */
describe('measures the expander (50 groups × 2 000 members, nested)', () => {
  let tenant: FakeGraph;
  let tenantClient: Client;
  const top: string[] = [];
  const subs: string[] = [];
  const users: string[] = [];

  beforeAll(async () => {
    tenant = await startFakeGraph();
    tenantClient = createGraphClient({ credential: graphCredential(tenant.token), baseUrl: tenant.origin });
    for (let i = 0; i < 20_000; i += 1) users.push(tenant.addUser());
    for (let i = 0; i < 50; i += 1) {
      const group = tenant.addGroup({ displayName: `allow-listed ${i}` });
      const sub = tenant.addGroup({ displayName: `nested ${i}` });
      top.push(group);
      subs.push(sub);
      for (let k = 0; k < 1_800; k += 1) tenant.addMember(group, users[(i * 400 + k) % users.length] as string);
      for (let k = 0; k < 200; k += 1) tenant.addMember(sub, users[(i * 400 + 1_800 + k) % users.length] as string);
      tenant.addMember(group, sub);
    }
  });

  afterAll(async () => {
    await tenant.close();
  });

  it('records requests and time for a first and a second refresh; the cost follows the allow-list, not the tenant', async () => {
    const measure = async (label: string, run: () => Promise<GroupExpansion>) => {
      tenant.clearLog();
      const started = performance.now();
      const expansion = await run();
      const ms = Math.round(performance.now() - started);
      const requests = tenant.count(TRANSITIVE);
      console.log(`[expand measurement] ${label}: ${requests} requests, ${ms} ms`);
      return { expansion, requests };
    };
    const transitive = new GraphGroupExpander({ client: tenantClient });

    const t1 = await measure('transitiveMembers, first refresh', () => transitive.expandGroups(top));
    expect(t1.expansion.failed.size).toBe(0);
    for (const id of top) expect(t1.expansion.members.get(id)).toHaveLength(2_001);
    expect(t1.requests).toBe(150);

    const added = users[0] as string;
    expect(t1.expansion.members.get(top[7] as string)).not.toContain(added);
    tenant.addMember(subs[7] as string, added);
    const t2 = await measure('transitiveMembers, second refresh', () => transitive.expandGroups(top));
    expect(t2.requests).toBe(150);
    expect(t2.expansion.members.get(top[7] as string)).toContain(added);

    // The same allow-list in a tenant with 450 more groups of 200 members that nobody asked for.
    for (let i = 0; i < 450; i += 1) {
      const unrelated = tenant.addGroup({ displayName: `unrelated ${i}` });
      for (let k = 0; k < 200; k += 1) tenant.addMember(unrelated, users[(i * 37 + k) % users.length] as string);
    }
    const t3 = await measure('transitiveMembers, first refresh, larger tenant', () => new GraphGroupExpander({ client: tenantClient }).expandGroups(top));
    expect(t3.requests).toBe(150);
    for (const id of top) expect(membersOf(t3.expansion, id)).toEqual(membersOf(t2.expansion, id));
  });
});
