/**
 * Issue #3 end to end: access policies, Entra groups through Microsoft Graph, app roles and data
 * actions, through the standalone host (createPdpServer + PdpService) with tokens from a real
 * OpenID provider (npm oidc-provider, Entra-shaped claims added: oid, scp/roles, groups, hasgroups,
 * _claim_names) and group membership from the fake Graph through the real Graph client.
 *
 * Membership is looked up in the order the issue gives: the token's groups claim, the snapshot's
 * group index, then Graph checkMemberGroups on a miss or an overage token. Graph calls are counted
 * on the fake, so each test proves which of the three answered.
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PdpConfigInput } from '../../src/config/schema.js';
import { startFakeGraph, type FakeGraph } from '../../testkit/fake-graph.js';
import { startOidcProvider, type RunningOidcProvider } from '../../testkit/oidc-provider.js';
import { E2E_API_KEY, E2E_AUDIENCE, outcome, startE2ePdp, type E2ePdp } from '../../testkit/service.js';

const CHECK = { method: 'POST', path: '/checkMemberGroups' } as const;
const BATCH = { method: 'POST', path: '/v1.0/$batch', inBatch: false } as const;

const TENANT = '0b7c6a5d-4e3f-4a2b-9c1d-0e9f8a7b6c5d';
/** The client that delegated (user) tokens come from. */
const USER_APP = { client_id: 'e2e-user-app', client_secret: 'user-app-secret' };
/** An application whose client id (a GUID, as Entra's are) an operator listed by mistake. */
const LISTED_APP = { client_id: '6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f', client_secret: 'listed-app-secret' };
const APP_SCOPE = 'fhir.api';

let op: RunningOidcProvider;
let fake: FakeGraph;
/** Claims the next token carries; set right before each (sequential) token request. */
let pendingClaims: Record<string, unknown> | undefined;

const dir = {
  readers: '', // group, listed: read
  nestedReaders: '', // group, member of readers
  writers: '', // group, listed: read + write
  alice: '', // user, member of readers when the service refreshed (group index)
  dave: '', // user, listed directly: read
  erin: '', // user, member of nothing
  robot: '', // service principal, listed directly: read, write, delete
  nestedRobot: '', // service principal, member of nestedReaders
  listedAppSp: '', // service principal of LISTED_APP (not listed itself)
};

async function tokenWith(claims: Record<string, unknown>, client = USER_APP, scope?: string): Promise<string> {
  pendingClaims = claims;
  try {
    return await op.getToken(client.client_id, client.client_secret, scope);
  } finally {
    pendingClaims = undefined;
  }
}

/** A delegated (user) token: `scp`, no roles. */
function userToken(oid: string, extra: Record<string, unknown> = {}): Promise<string> {
  return tokenWith({ oid, tid: TENANT, scp: 'user_impersonation', ...extra });
}

/**
 * An application (client credentials) token: Entra's `roles` and `idtyp: app`, plus the RFC 9068
 * `scope` the provider writes for the requested APP_SCOPE. (Entra's own app tokens carry no scope
 * claim at all; that shape has its own test below.)
 */
function appToken(oid: string, extra: Record<string, unknown> = {}, client = USER_APP): Promise<string> {
  return tokenWith({ oid, tid: TENANT, idtyp: 'app', roles: ['Fhir.Caller'], ...extra }, client, APP_SCOPE);
}

function baseConfig(overrides: Partial<PdpConfigInput> = {}): PdpConfigInput {
  return {
    authority: op.issuer,
    audience: E2E_AUDIENCE,
    accessPolicies: [
      { objectId: dir.readers, dataActions: ['read'] },
      { objectId: dir.writers, dataActions: ['read', 'write'] },
      { objectId: dir.dave, dataActions: ['read'] },
      { objectId: dir.robot, dataActions: ['read', 'write', 'delete'] },
      { objectId: LISTED_APP.client_id, dataActions: ['read'] },
    ],
    roles: [
      { name: 'globalReader', dataActions: ['read'] },
      { name: 'writerNoDelete', dataActions: ['*'], notDataActions: ['delete', 'hardDelete'] },
      { name: 'deleter', dataActions: ['delete'] },
    ],
    fetchTimeoutMs: 2000,
    // Room for a Retry-After of 1 s (Graph's smallest) inside one decision.
    directoryBudgetMs: 2500,
    ...overrides,
  };
}

/** Object ids a principal's membership is checked against: every listed id but its own. */
const LISTED_COUNT = 5;

beforeAll(async () => {
  fake = await startFakeGraph();
  op = await startOidcProvider({
    clients: [USER_APP, LISTED_APP],
    resource: E2E_AUDIENCE,
    scopes: [APP_SCOPE],
    extraTokenClaims: () => pendingClaims,
    // Entra-shaped issuer: the tokens' `tid` must be the tenant `iss` names.
    issuerPath: `/${TENANT}/v2.0`,
  });
  dir.readers = fake.addGroup({ displayName: 'FHIR readers' });
  dir.nestedReaders = fake.addGroup({ displayName: 'Ward 3 (nested in FHIR readers)' });
  dir.writers = fake.addGroup({ displayName: 'FHIR writers' });
  dir.alice = fake.addUser({ displayName: 'Alice' });
  dir.dave = fake.addUser({ displayName: 'Dave' });
  dir.erin = fake.addUser({ displayName: 'Erin' });
  dir.robot = fake.addServicePrincipal({ displayName: 'ingest robot' });
  dir.nestedRobot = fake.addServicePrincipal({ displayName: 'ward robot' });
  dir.listedAppSp = fake.addServicePrincipal({ displayName: 'listed app', appId: LISTED_APP.client_id });
  fake.addMember(dir.readers, dir.nestedReaders);
  fake.addMember(dir.readers, dir.alice);
});

afterAll(async () => {
  await op?.close();
  await fake?.close();
});

describe('access policies, groups and roles through the standalone host', () => {
  let pdp: E2ePdp;
  beforeAll(async () => {
    pdp = await startE2ePdp(baseConfig(), { graph: fake });
  });
  afterAll(async () => {
    await pdp.close();
  });

  it('allows a member found in the group index without asking Graph', async () => {
    fake.clearLog();
    const answer = await pdp.ask({ path: '/Patient/1', token: await userToken(dir.alice) });
    expect(outcome(answer)).toEqual({ reason: 'allowed', status: 200 });
    expect(answer.body.dataActions).toEqual(['read']);
    expect(answer.body.principal).toMatchObject({ objectId: dir.alice, applicationId: USER_APP.client_id, tenantId: TENANT });
    expect(fake.count(CHECK)).toBe(0);
  });

  it('takes the groups claim as the answer: a listed group allows, an unlisted one refuses, Graph is not asked', async () => {
    fake.clearLog();
    const listed = await pdp.ask({ path: '/Patient/1', token: await userToken(dir.erin, { groups: [dir.readers.toUpperCase()] }) });
    expect(outcome(listed)).toEqual({ reason: 'allowed', status: 200 });

    const unlisted = await pdp.ask({ path: '/Patient/1', token: await userToken(dir.erin, { groups: [dir.nestedReaders] }) });
    expect(outcome(unlisted)).toEqual({ reason: 'principal_not_allowed', status: 403 });
    expect(unlisted.body.hint).toContain(`oid ${dir.erin} is not listed`);
    expect(unlisted.body.hint).toContain(`none of the ${LISTED_COUNT} listed object id(s) checked as groups (via claim)`);
    expect(fake.count(CHECK)).toBe(0);
  });

  it.each([
    ['directly', () => dir.readers],
    ['through a nested group', () => dir.nestedReaders],
  ])('allows a user added %s to an allow-listed group after the refresh, through Graph, with the configuration untouched', async (_, group) => {
    const newcomer = fake.addUser({ displayName: 'newcomer' });
    const before = await pdp.ask({ path: '/Patient/1', token: await userToken(newcomer) });
    expect(outcome(before)).toEqual({ reason: 'principal_not_allowed', status: 403 });
    expect(before.body.hint).toContain('(via graph)');

    fake.addMember(group(), newcomer);
    // A refusal is remembered for the resolver's negative TTL (60 s); let it pass.
    pdp.clock.advance(61);
    fake.clearLog();
    const after = await pdp.ask({ path: '/Patient/1', token: await userToken(newcomer) });
    expect(outcome(after)).toEqual({ reason: 'allowed', status: 200 });
    expect(fake.count(CHECK)).toBe(1);
    expect(fake.requests[0]?.path).toBe(`/v1.0/directoryObjects/${newcomer}/checkMemberGroups`);
  });

  it.each([
    ['hasgroups: true', { hasgroups: true }],
    ['_claim_names.groups', { _claim_names: { groups: 'src1' }, _claim_sources: { src1: { endpoint: 'http://127.0.0.1:1/overage' } } }],
  ])('asks Graph for an overage token (%s) whose user the index does not hold', async (_, overage) => {
    const user = fake.addUser({ displayName: 'member of many groups' });
    fake.addMember(dir.writers, user);
    fake.clearLog();
    const answer = await pdp.ask({ method: 'PUT', path: '/Patient/1', token: await userToken(user, overage) });
    expect(outcome(answer)).toEqual({ reason: 'allowed', status: 200 });
    expect(answer.body.dataActions).toEqual(['read', 'write']);
    expect(fake.count(CHECK)).toBe(1);
  });

  it('allows a listed service principal by its object id, with what it is granted', async () => {
    fake.clearLog();
    const token = await appToken(dir.robot);
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const answer = await pdp.ask({ method, path: '/Observation/7', token });
      expect(outcome(answer)).toEqual({ reason: 'allowed', status: 200 });
    }
    const hard = await pdp.ask({ method: 'DELETE', path: '/Observation/7?_hardDelete=true', token });
    expect(outcome(hard)).toEqual({ reason: 'action_not_permitted', status: 403 });
    expect(hard.body.hint).toContain('hardDelete');
  });

  // Contract: the primary authority needs `oid` "and one of `scp`/`roles`". Entra's client
  // credentials tokens carry `roles` and no scope claim at all; src/identity/principal.ts:138
  // refuses them (missing_claim: "the token lacks scopes (the token has none of the claims
  // raw_scope, scp, scope)") because readScopeClaims' "no claim" result is taken as a problem.
  it('allows an Entra-shaped app-only token (roles, no scope claim)', async () => {
    const token = await tokenWith({ oid: dir.robot, tid: TENANT, idtyp: 'app', roles: ['Fhir.Caller'] });
    const answer = await pdp.ask({ path: '/Observation/7', token });
    expect(outcome(answer)).toEqual({ reason: 'allowed', status: 200 });
  });

  it('allows a service principal through a nested group and refuses the action its group does not grant', async () => {
    fake.addMember(dir.nestedReaders, dir.nestedRobot);
    fake.clearLog();
    const token = await appToken(dir.nestedRobot);
    const read = await pdp.ask({ path: '/Observation?code=1234-5', token });
    expect(outcome(read)).toEqual({ reason: 'allowed', status: 200 });
    const remove = await pdp.ask({ method: 'DELETE', path: '/Observation/7', token });
    expect(outcome(remove)).toEqual({ reason: 'action_not_permitted', status: 403 });
    expect(remove.body.hint).toContain('needs delete');
    expect(remove.body.hint).toContain(`group ${dir.readers}`);
    // One lookup per decision that needed it, and the second one came from the resolver's cache.
    expect(fake.count(CHECK)).toBe(1);
  });

  it.each([
    { roles: ['globalReader'], method: 'GET', expected: 'allowed' },
    { roles: ['globalReader'], method: 'PUT', expected: 'action_not_permitted' },
    { roles: ['writerNoDelete'], method: 'PUT', expected: 'allowed' },
    // notDataActions subtract inside their own role only...
    { roles: ['writerNoDelete'], method: 'DELETE', expected: 'action_not_permitted' },
    // ...so another role's grant still counts: effective rights are the union.
    { roles: ['writerNoDelete', 'deleter'], method: 'DELETE', expected: 'allowed' },
    { roles: ['Unknown.Role'], method: 'GET', expected: 'principal_not_allowed' },
  ])('app roles $roles: $method is $expected', async ({ roles, method, expected }) => {
    const answer = await pdp.ask({ method, path: '/Patient/1', token: await appToken(dir.erin, { roles }) });
    expect(answer.body.reason).toBe(expected);
    expect(answer.body.status).toBe(expected === 'allowed' ? 200 : 403);
    if (expected === 'action_not_permitted') expect(answer.body.hint).toContain(`role ${roles[0]}`);
    if (expected === 'principal_not_allowed') expect(answer.body.hint).toContain(`none of its roles [${roles.join(', ')}] is defined`);
  });

  it('unions an access policy with a role', async () => {
    const token = await userToken(dir.dave, { roles: ['deleter'] });
    for (const method of ['GET', 'DELETE']) expect(outcome(await pdp.ask({ method, path: '/Patient/1', token }))).toEqual({ reason: 'allowed', status: 200 });
    const write = await pdp.ask({ method: 'PUT', path: '/Patient/1', token });
    expect(outcome(write)).toEqual({ reason: 'action_not_permitted', status: 403 });
    expect(write.body.hint).toContain(`oid ${dir.dave}`);
    expect(write.body.hint).toContain('role deleter');
  });

  it('refuses a principal with no grant at all, saying which groups were checked and how', async () => {
    const stranger = fake.addUser({ displayName: 'stranger' });
    fake.clearLog();
    const answer = await pdp.ask({ path: '/Patient/1', token: await userToken(stranger) });
    expect(outcome(answer)).toEqual({ reason: 'principal_not_allowed', status: 403 });
    expect(answer.body.hint).toContain(`oid ${stranger} is not listed in accessPolicies`);
    expect(answer.body.hint).toContain('the token has no roles');
    expect(answer.body.hint).toContain(`none of the ${LISTED_COUNT} listed object id(s) checked as groups (via graph)`);
    expect(fake.count(CHECK)).toBe(1);
  });

  it.each(['appid', 'azp', 'client_id'])(
    'says the application (client) id was listed instead of the service principal object id (%s)',
    async (claim) => {
      const token =
        claim === 'client_id'
          ? await appToken(dir.listedAppSp, {}, LISTED_APP)
          : await appToken(dir.listedAppSp, { [claim]: LISTED_APP.client_id }, LISTED_APP);
      const answer = await pdp.ask({ path: '/Patient/1', token });
      expect(outcome(answer)).toEqual({ reason: 'principal_not_allowed', status: 403 });
      expect(answer.body.hint).toContain(`application (client) id ${LISTED_APP.client_id} is listed`);
      expect(answer.body.hint).toContain(`replace it with ${dir.listedAppSp}`);
    },
  );

  it('gives the hint to admin callers only', async () => {
    const token = await userToken(dir.erin);
    const asApi = await pdp.ask({ path: '/Patient/1', token, key: E2E_API_KEY });
    expect(outcome(asApi)).toEqual({ reason: 'principal_not_allowed', status: 403 });
    expect(asApi.body).not.toHaveProperty('hint');
  });

  it('answers a gateway (forward-auth) with the status and the identity headers', async () => {
    const allowed = await pdp.forward({ uri: '/Patient/1', token: await userToken(dir.alice) });
    expect(allowed.httpStatus).toBe(200);
    expect(allowed.headers.get('x-auth-principal')).toBe(dir.alice);
    expect(allowed.headers.get('x-auth-tenant')).toBe(TENANT);
    expect(allowed.headers.get('x-auth-application')).toBe(USER_APP.client_id);

    const refused = await pdp.forward({ method: 'DELETE', uri: '/Patient/1', token: await userToken(dir.alice) });
    expect(refused.httpStatus).toBe(403);
    expect(refused.headers.get('x-decision-reason')).toBe('action_not_permitted');
    expect(refused.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
  });
});

describe('membership hints without Graph', () => {
  let withIndex: E2ePdp;
  let bare: E2ePdp;
  let refresher: E2ePdp;
  beforeAll(async () => {
    // One instance refreshes with Graph; a second serves its snapshot (group index) without Graph,
    // as a scaled-out instance does; a third has neither.
    refresher = await startE2ePdp(baseConfig(), { graph: fake });
    withIndex = await startE2ePdp(baseConfig(), { store: refresher.service.store });
    bare = await startE2ePdp(baseConfig());
  });
  afterAll(async () => {
    await Promise.all([refresher.close(), withIndex.close(), bare.close()]);
  });

  it('allows from the shared group index alone', async () => {
    fake.clearLog();
    expect(withIndex.service.health()).toMatchObject({ groups: { indexed: expect.any(Number) } });
    const answer = await withIndex.ask({ path: '/Patient/1', token: await userToken(dir.alice) });
    expect(outcome(answer)).toEqual({ reason: 'allowed', status: 200 });
    expect(fake.count()).toBe(0);
  });

  it.each([
    ['index only', () => withIndex, {}, /member of none of the \d+ listed object id\(s\) checked as groups \(via index: group index covers \d+ of them; Graph is not configured\)/],
    ['nothing', () => bare, {}, /group membership could not be checked \(no groups claim, no group index, Graph not configured\)/],
    ['an overage token', () => bare, { hasgroups: true }, /group membership could not be checked \(the token signals group overage and Microsoft Graph is not configured\)/],
  ])('with %s, says how membership was (not) established', async (_, service, extra, hint) => {
    const answer = await service().ask({ path: '/Patient/1', token: await userToken(dir.erin, extra) });
    expect(outcome(answer)).toEqual({ reason: 'principal_not_allowed', status: 403 });
    expect(answer.body.hint).toMatch(hint);
  });
});

describe('Graph throttling and outages', () => {
  it('honours a 429 Retry-After within the directory budget, then allows', async () => {
    const pdp = await startE2ePdp(baseConfig(), { graph: fake });
    try {
      const user = fake.addUser();
      fake.addMember(dir.readers, user);
      const token = await userToken(user);
      fake.clearLog();
      fake.failNext(1, { status: 429, retryAfterSeconds: 1 }, CHECK);
      const started = performance.now();
      const answer = await pdp.ask({ path: '/Patient/1', token });
      const elapsed = performance.now() - started;
      expect(outcome(answer)).toEqual({ reason: 'allowed', status: 200 });
      expect(elapsed).toBeGreaterThanOrEqual(990);
      expect(elapsed).toBeLessThan(2500);
      expect(fake.count(CHECK)).toBe(2);
    } finally {
      await pdp.close();
    }
  });

  it('answers directory_unavailable at once when Retry-After does not fit in the budget (default 1 s)', async () => {
    // The group index must not already answer: the readers group's expansion fails at start-up
    // (a Retry-After beyond what the expander waits for), so membership has to come from Graph.
    fake.failNext(1, { status: 429, retryAfterSeconds: 600 }, { path: `/groups/${dir.readers}/transitiveMembers` });
    const pdp = await startE2ePdp(baseConfig({ directoryBudgetMs: undefined }), { graph: fake });
    try {
      const user = fake.addUser();
      fake.addMember(dir.readers, user);
      const token = await userToken(user);
      fake.clearLog();
      fake.failNext(1, { status: 429, retryAfterSeconds: 1 }, CHECK);
      const started = performance.now();
      const answer = await pdp.ask({ path: '/Patient/1', token });
      expect(performance.now() - started).toBeLessThan(900);
      expect(outcome(answer)).toEqual({ reason: 'directory_unavailable', status: 503 });
      expect(answer.body.decision).toBe('indeterminate');
      expect(answer.body.hint).toContain('Microsoft Graph did not answer');
      expect(answer.body.hint).toContain('429');
      expect(fake.count(CHECK)).toBe(1);
    } finally {
      await pdp.close();
    }
  });

  it('coalesces concurrent identical lookups into one Graph lookup', async () => {
    const pdp = await startE2ePdp(baseConfig(), { graph: fake });
    try {
      const user = fake.addUser();
      fake.addMember(dir.nestedReaders, user);
      const tokens: string[] = [];
      for (let i = 0; i < 8; i += 1) tokens.push(await userToken(user));
      fake.clearLog();
      // The first lookup is held 1 s by a Retry-After, so every other decision arrives while it runs.
      fake.failNext(1, { status: 429, retryAfterSeconds: 1 }, CHECK);
      const answers = await Promise.all(tokens.map((token) => pdp.ask({ path: '/Patient/1', token })));
      for (const answer of answers) expect(outcome(answer)).toEqual({ reason: 'allowed', status: 200 });
      expect(fake.count(CHECK)).toBe(2); // the throttled attempt and its retry, for all eight
    } finally {
      await pdp.close();
    }
  });

  it('serves a cached answer younger than maxStale while Graph is down, and only that', async () => {
    const pdp = await startE2ePdp(baseConfig({ maxStaleSeconds: 420 }), { graph: fake });
    const known = fake.addUser();
    const unknown = fake.addUser();
    fake.addMember(dir.readers, known);
    fake.addMember(dir.readers, unknown);
    try {
      expect(outcome(await pdp.ask({ path: '/Patient/1', token: await userToken(known) }))).toEqual({ reason: 'allowed', status: 200 });
      await fake.down('refuse');
      // Past the resolver's 5-minute freshness, inside maxStaleSeconds: Graph is tried, fails, the cached answer stands in.
      pdp.clock.advance(360);
      expect(outcome(await pdp.ask({ path: '/Patient/1', token: await userToken(known) }))).toEqual({ reason: 'allowed', status: 200 });

      // Never looked up: the group index (fresh, covering every listed group) answers, as it would
      // with Graph up to a non-member; an outage within maxStale changes no decision (issue #5).
      const never = await pdp.ask({ path: '/Patient/1', token: await userToken(unknown) });
      expect(outcome(never)).toEqual({ reason: 'principal_not_allowed', status: 403 });
      expect(never.body.hint).toContain('Graph unavailable');

      pdp.clock.advance(120); // the cached answer and the group index are now older than maxStaleSeconds
      const stale = await pdp.ask({ path: '/Patient/1', token: await userToken(known) });
      expect(outcome(stale)).toEqual({ reason: 'directory_unavailable', status: 503 });

      // Direct grants need no directory: an outage does not touch them.
      expect(outcome(await pdp.ask({ path: '/Patient/1', token: await userToken(dir.dave) }))).toEqual({ reason: 'allowed', status: 200 });
    } finally {
      await fake.up();
      await pdp.close();
    }
  });

  it('checks more than 20 allow-listed groups in chunks of 20 through one $batch', async () => {
    const groups = Array.from({ length: 25 }, (_, i) => fake.addGroup({ displayName: `ward ${i}` }));
    const pdp = await startE2ePdp(baseConfig({ accessPolicies: groups.map((objectId) => ({ objectId, dataActions: ['read'] })) }), { graph: fake });
    try {
      const member = fake.addUser();
      fake.addMember(groups[22]!, member);
      fake.clearLog();
      const allowed = await pdp.ask({ path: '/Patient/1', token: await userToken(member) });
      expect(outcome(allowed)).toEqual({ reason: 'allowed', status: 200 });
      expect(fake.count(BATCH)).toBe(1);
      expect(fake.count({ ...CHECK, inBatch: true })).toBe(2);
      expect(fake.count({ ...CHECK, inBatch: false })).toBe(0);

      const outsider = await pdp.ask({ path: '/Patient/1', token: await userToken(dir.erin) });
      expect(outcome(outsider)).toEqual({ reason: 'principal_not_allowed', status: 403 });
      expect(outsider.body.hint).toContain('none of the 25 listed object id(s) checked as groups (via graph)');
    } finally {
      await pdp.close();
    }
  });
});
