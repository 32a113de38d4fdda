/**
 * Revocation end to end: the deny-list changed through /api/revocations on the standalone host,
 * a cached token refused on its very next decision (401 token_expired, invalid_token), by jti, by
 * sid and by "every token of this object id issued before T"; maxTokenAgeSeconds on cache hits; a
 * token of a real OpenID provider (oidc-provider) revoked by its jti;
 * and two instances on one Azurite container, where a revocation made on one is honoured by the
 * other after its poll, and concurrent writers keep each other's entries.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PdpService, type SnapshotAppliedEvent } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import type { StartedHost } from '../../src/host/main.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { startAzurite, type RunningAzurite } from '../../testkit/azurite.js';
import { rawRequest, startPdpHost, type RawResponse } from '../../testkit/host.js';
import { startOidcProvider } from '../../testkit/oidc-provider.js';
import { decodeJwt } from 'jose';

const AUDIENCE = 'https://fhir.example.test';
const API_KEY = `api-${randomUUID()}`;
const ADMIN_KEY = `admin-${randomUUID()}`;
const OTHER_OID = '0b4c7d2e-9a1f-4e3b-8c6d-5f4e3d2c1b0a';

let idp: DevIdentityProvider;

beforeAll(async () => {
  idp = await DevIdentityProvider.start();
});

afterAll(async () => {
  await idp?.close();
});

const policy = {
  authority: '',
  audience: AUDIENCE,
  accessPolicies: [
    { objectId: DEV_OBJECT_ID, dataActions: ['read'] },
    { objectId: OTHER_OID, dataActions: ['read'] },
  ],
};

function mint(claims: Record<string, unknown> = {}, options: { oid?: string; issuedAtOffsetSeconds?: number } = {}): Promise<string> {
  return idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', extraClaims: claims, ...options });
}

describe('the admin route on the standalone host (memory store)', () => {
  let host: StartedHost;

  beforeAll(async () => {
    host = await startPdpHost({
      config: { ...policy, authority: idp.authority, revocation: { maxEntries: 6 } },
      settings: { PDP_API_KEYS: API_KEY, PDP_ADMIN_KEYS: ADMIN_KEY },
    });
  });
  afterAll(async () => {
    await host?.close();
  });

  /** A forward-auth question, as nginx asks it. */
  const decide = (token: string): Promise<RawResponse> =>
    rawRequest(host.url, {
      path: '/api/decide',
      headers: { 'x-functions-key': API_KEY, 'x-original-method': 'GET', 'x-original-uri': '/Patient/1', authorization: `Bearer ${token}` },
    });
  const admin = (method: string, path: string, body?: unknown): Promise<RawResponse> =>
    rawRequest(host.url, {
      method,
      path,
      headers: { 'x-functions-key': ADMIN_KEY, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
  const reasonOf = (r: RawResponse) => ({ status: r.status, reason: r.headers['x-decision-reason'] });
  const cacheHits = () => (host.service.health().counters as Record<string, number>).token_cache_hit ?? 0;
  const entries = async () => (JSON.parse((await admin('GET', '/api/revocations')).body) as { entries: { id: string; kind: string }[] }).entries;

  it('refuses a cached token on its next decision once its jti is revoked, and allows it again once the entry is removed', async () => {
    const token = await mint({ jti: 'jti-one' });
    const other = await mint({ jti: 'jti-two' });
    expect(reasonOf(await decide(token))).toEqual({ status: 200, reason: 'allowed' });

    const added = await admin('POST', '/api/revocations', { kind: 'jti', issuer: idp.v2Issuer, jti: 'jti-one', note: 'device lost' });
    expect(added.status).toBe(200);
    const body = JSON.parse(added.body) as { revision: string; added: { id: string; expiresAt: string }[] };
    const id = body.added[0]!.id;
    // Without maxTokenAgeSeconds an entry lives revocation.maxTokenLifetimeSeconds (28 h) plus the skew.
    expect(Date.parse(body.added[0]!.expiresAt) - Date.now()).toBeGreaterThan(28 * 3600_000);
    expect(host.service.health().snapshot).toMatchObject({ revision: body.revision, revocations: 1 });

    const hitsBefore = cacheHits();
    const refused = await decide(token);
    expect(reasonOf(refused)).toEqual({ status: 401, reason: 'token_expired' });
    expect(cacheHits()).toBe(hitsBefore + 1);
    expect(refused.headers['www-authenticate']).toBe('Bearer realm="fhir-pdp", error="invalid_token", error_description="The token has been revoked."');
    expect(JSON.parse(refused.body)).toMatchObject({ message: 'The token has been revoked.' });
    expect(reasonOf(await decide(other))).toEqual({ status: 200, reason: 'allowed' });

    // JSON mode with the admin key: the hint names the entry, never the token.
    const explained = await rawRequest(host.url, {
      method: 'POST',
      path: '/api/decide',
      headers: { 'x-functions-key': ADMIN_KEY },
      body: JSON.stringify({ method: 'GET', path: '/Patient/1', token }),
    });
    const answer = JSON.parse(explained.body) as { reason: string; hint: string };
    expect(answer.reason).toBe('token_expired');
    expect(answer.hint).toContain(`deny-list entry ${id}`);
    expect(answer.hint).toContain('device lost');
    expect(answer.hint).not.toContain(token.split('.')[2]!);

    expect((await admin('DELETE', `/api/revocations/${id}`)).status).toBe(200);
    expect((await admin('DELETE', `/api/revocations/${id}`)).status).toBe(404);
    expect(reasonOf(await decide(token))).toEqual({ status: 200, reason: 'allowed' });
  });

  it('revokes a session by sid, and every token of an object id issued before an instant', async () => {
    const inSession = await mint({ sid: 'session-a' });
    const otherSession = await mint({ sid: 'session-b' });
    expect(reasonOf(await decide(inSession))).toEqual({ status: 200, reason: 'allowed' });
    expect((await admin('POST', '/api/revocations', { kind: 'sid', issuer: idp.v2Issuer, sid: 'session-a' })).status).toBe(200);
    expect(reasonOf(await decide(inSession))).toEqual({ status: 401, reason: 'token_expired' });
    expect(reasonOf(await decide(otherSession))).toEqual({ status: 200, reason: 'allowed' });

    const old = await mint({}, { oid: OTHER_OID, issuedAtOffsetSeconds: -120 });
    expect(reasonOf(await decide(old))).toEqual({ status: 200, reason: 'allowed' });
    const cutoff = new Date(Date.now() - 60_000).toISOString();
    expect((await admin('POST', '/api/revocations', { entries: [{ kind: 'oid', oid: OTHER_OID.toUpperCase(), issuedBefore: cutoff }] })).status).toBe(200);
    expect(reasonOf(await decide(old))).toEqual({ status: 401, reason: 'token_expired' });
    // A token issued after the instant (the user signed in again) works.
    const fresh = await mint({}, { oid: OTHER_OID });
    expect(reasonOf(await decide(fresh))).toEqual({ status: 200, reason: 'allowed' });
    // Another object id is untouched.
    expect(reasonOf(await decide(await mint({}, { issuedAtOffsetSeconds: -120 })))).toEqual({ status: 200, reason: 'allowed' });
  });

  it('answers bad input with 400 and changes nothing, and needs the admin key', async () => {
    const before = await entries();
    const bad: unknown[] = [
      'not json',
      '{"kind":"jti","kind":"sid","issuer":"x","jti":"y"}',
      { kind: 'sub', sub: 'x' },
      { kind: 'jti', jti: 'no-issuer' },
      { kind: 'jti', issuer: idp.v2Issuer, jti: 'x', token: 'eyJ' },
      { kind: 'jti', issuer: idp.v2Issuer, jti: 'x'.repeat(257) },
      { kind: 'jti', issuer: idp.v2Issuer, jti: 'x', expiresAt: '2001-01-01T00:00:00Z' },
      { kind: 'oid', oid: OTHER_OID, issuedBefore: new Date(Date.now() + 86_400_000).toISOString() },
      // One bad entry among good ones: none of them is added.
      { entries: [{ kind: 'jti', issuer: idp.v2Issuer, jti: 'good' }, { kind: 'jti', issuer: idp.v2Issuer, jti: '' }] },
    ];
    for (const body of bad) {
      const r = await admin('POST', '/api/revocations', body);
      expect(r.status, String(JSON.stringify(body))).toBe(400);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'invalid_revocation', message: expect.stringContaining('not applied') });
    }
    expect((await admin('DELETE', '/api/revocations/../../etc')).status).toBe(400);
    expect((await admin('PUT', '/api/revocations')).status).toBe(405);
    expect(await entries()).toEqual(before);
    for (const key of [undefined, API_KEY]) {
      const r = await rawRequest(host.url, { path: '/api/revocations', headers: key ? { 'x-functions-key': key } : {} });
      expect(r.status).toBe(401);
    }
  });

  it('refuses additions beyond revocation.maxEntries whole, keeping every live entry', async () => {
    const before = await entries();
    const room = 6 - before.length;
    const fill = Array.from({ length: room + 1 }, (_, i) => ({ kind: 'jti', issuer: idp.v2Issuer, jti: `fill-${i}` }));
    const full = await admin('POST', '/api/revocations', { entries: fill });
    expect(full.status).toBe(409);
    expect(JSON.parse(full.body)).toMatchObject({ error: 'deny_list_full' });
    expect(await entries()).toEqual(before);
    expect((await admin('POST', '/api/revocations', { entries: fill.slice(0, room) })).status).toBe(200);
    expect(await entries()).toHaveLength(6);
  });
});

describe('maxTokenAgeSeconds', () => {
  it('refuses a token older than the maximum age on a cache hit, and a token without iat; explain shows the revocation step', async () => {
    let now = Date.now();
    const service = new PdpService({
      config: parseConfig({ ...policy, authority: idp.authority, maxTokenAgeSeconds: 600, clockSkewSeconds: 60 }),
      clock: () => now,
    });
    await service.start();
    try {
      const token = await mint();
      const ask = (t: string) => service.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${t}`] } });
      expect(await ask(token)).toMatchObject({ reason: 'allowed' });
      now += 600_000;
      expect(await ask(token)).toMatchObject({ reason: 'allowed', cacheHit: true });
      now += 61_000;
      expect(await ask(token)).toMatchObject({ reason: 'token_expired', status: 401, cacheHit: true, message: 'The token is older than the maximum token age.', hint: expect.stringContaining('maxTokenAgeSeconds (600 s)') });
      now = Date.now();
      expect(await ask(await mint({ iat: undefined }))).toMatchObject({ reason: 'token_expired', hint: expect.stringContaining('no `iat`') });

      const traced = await service.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [], token } }, { trace: true });
      expect(traced.trace?.find((s) => s.id === 'revocation')).toMatchObject({ outcome: 'pass', found: expect.stringContaining('within maxTokenAgeSeconds') });
      now += 700_000;
      const failed = await service.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [], token } }, { trace: true });
      expect(failed.trace?.find((s) => s.id === 'revocation')).toMatchObject({ outcome: 'fail', reason: 'token_expired' });
    } finally {
      service.stop();
    }
  });
});

describe('a token of a real OpenID provider (oidc-provider, RFC 9068)', () => {
  it('is refused by its jti once revoked, cached or not', async () => {
    const provider = await startOidcProvider({
      clients: [{ client_id: 'portal', client_secret: 'secret-of-the-portal' }],
      resource: AUDIENCE,
      scopes: ['user/*.rs'],
      extraTokenClaims: () => ({ fhirUser: 'Practitioner/dr1' }),
    });
    const service = new PdpService({
      config: parseConfig({
        ...policy,
        authority: idp.authority,
        smartIdentityProviders: [{ authority: provider.issuer, applications: [{ clientId: 'portal', audience: AUDIENCE, allowedDataActions: ['read'] }] }],
      }),
    });
    try {
      await service.start();
      const token = await provider.getToken('portal', 'secret-of-the-portal', 'user/*.rs');
      const { jti, iss } = decodeJwt(token);
      expect(typeof jti).toBe('string');
      const ask = () => service.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${token}`] } });
      expect(await ask()).toMatchObject({ reason: 'allowed' });
      expect(await service.addRevocations([{ kind: 'jti', issuer: iss!, jti: jti! }])).toMatchObject({ ok: true });
      expect(await ask()).toMatchObject({ reason: 'token_expired', status: 401, cacheHit: true });
    } finally {
      service.stop();
      await provider.close();
    }
  });
});

describe('two instances on one Azurite container', () => {
  let azurite: RunningAzurite;
  const services: PdpService[] = [];
  const signingKeys = `revocation-test:${randomBytes(32).toString('base64')}`;

  beforeAll(async () => {
    azurite = await startAzurite();
  });
  afterAll(async () => {
    await azurite?.stop();
  });
  afterEach(() => {
    for (const s of services.splice(0)) s.stop();
  });

  function instance(container: string, options: { snapshotPollMs?: number; onSnapshotApplied?: (e: SnapshotAppliedEvent) => void } = {}): PdpService {
    const s = new PdpService({
      config: parseConfig({ ...policy, authority: idp.authority }),
      env: { PDP_SNAPSHOT_STORE: 'blob', PDP_SNAPSHOT_CONNECTION: azurite.connectionString, PDP_SNAPSHOT_CONTAINER: container, PDP_SNAPSHOT_SIGNING_KEYS: signingKeys },
      ...options,
    });
    services.push(s);
    return s;
  }
  const ask = (s: PdpService, token: string) => s.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${token}`] } });
  const storedJtis = async (s: PdpService) => {
    const stored = await s.store.read();
    return stored && stored !== 'not-modified' ? (stored.data.revocations ?? []).map((e) => (e.kind === 'jti' ? e.jti : e.kind)).sort() : [];
  };

  it('a revocation made on one instance is honoured by the other after its poll, cached tokens included', async () => {
    const container = `rev-${randomUUID()}`;
    const a = instance(container);
    await a.start();
    let announce: (e: SnapshotAppliedEvent) => void = () => {};
    const b = instance(container, { snapshotPollMs: 50, onSnapshotApplied: (e) => announce(e) });
    await b.start();
    const token = await mint({ jti: 'shared-jti' });
    expect(await ask(b, token)).toMatchObject({ reason: 'allowed' });

    const applied = new Promise<SnapshotAppliedEvent>((resolve) => (announce = resolve));
    const change = await a.addRevocations([{ kind: 'jti', issuer: idp.v2Issuer, jti: 'shared-jti' }]);
    expect(change.ok).toBe(true);
    await expect(applied).resolves.toEqual({ revision: change.ok ? change.revision : '', source: 'store' });
    expect(await ask(b, token)).toMatchObject({ reason: 'token_expired', cacheHit: true });
    expect(await ask(a, token)).toMatchObject({ reason: 'token_expired' });
  });

  it('concurrent writers keep each other\'s entries, and a refresh by an instance that had not polled keeps them too', async () => {
    const container = `rev-${randomUUID()}`;
    const a = instance(container);
    await a.start();
    const b = instance(container);
    const c = instance(container);
    await Promise.all([b.loadStored(), c.loadStored()]);
    const results = await Promise.all([
      a.addRevocations([{ kind: 'jti', issuer: idp.v2Issuer, jti: 'from-a' }]),
      b.addRevocations([{ kind: 'jti', issuer: idp.v2Issuer, jti: 'from-b' }]),
      a.addRevocations([{ kind: 'jti', issuer: idp.v2Issuer, jti: 'from-a-2' }]),
    ]);
    expect(results.map((r) => r.ok)).toEqual([true, true, true]);
    expect(await storedJtis(a)).toEqual(['from-a', 'from-a-2', 'from-b']);

    // c still serves the snapshot from before the revocations; its refresh conflicts, finds the
    // stored one older than its refresh, and writes its keys with the stored deny-list.
    const report = await c.refresh();
    expect(report.stored).toBe('written');
    expect(await storedJtis(a)).toEqual(['from-a', 'from-a-2', 'from-b']);
    expect(await ask(c, await mint({ jti: 'from-b' }))).toMatchObject({ reason: 'token_expired' });

    // A removal is not undone by a refresh based on a snapshot that still had the entry.
    await a.pollSnapshot();
    const listed = a.revocations().entries;
    expect(listed).toHaveLength(3);
    const removed = await b.removeRevocation(listed.find((e) => e.kind === 'jti' && e.jti === 'from-b')!.id);
    expect(removed.ok).toBe(true);
    // a has not polled the removal: its refresh is based on a deny-list that still lists from-b.
    expect(a.revocations().entries).toHaveLength(3);
    expect((await a.refresh()).stored).toBe('written');
    expect(await storedJtis(a)).toEqual(['from-a', 'from-a-2']);
  });
});
