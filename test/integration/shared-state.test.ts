/**
 * Several PDP instances sharing one snapshot in Blob Storage (Azurite): a refresh in one is
 * visible in the others after they poll, concurrent writers converge on one revision, a
 * corrupted blob is rejected while the last good snapshot stays in use, and a cold instance
 * serves from the stored snapshot without asking the authority.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { BlobServiceClient } from '@azure/storage-blob';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { PdpService, type PdpServiceOptions, type SnapshotAppliedEvent } from '../../src/app.js';
import { DEFAULT_SNAPSHOT_BLOB } from '../../src/state/blob-store.js';
import { startAzurite, type RunningAzurite } from '../../testkit/azurite.js';

const AUDIENCE = 'https://fhir.example.test';
const SIGNING_KEYS = `shared-test:${randomBytes(32).toString('base64')}`;

let azurite: RunningAzurite;
let idp: DevIdentityProvider;
const services: PdpService[] = [];

beforeAll(async () => {
  [azurite, idp] = await Promise.all([startAzurite(), DevIdentityProvider.start()]);
});

afterAll(async () => {
  await Promise.all([azurite?.stop(), idp?.close()]);
});

afterEach(() => {
  for (const s of services.splice(0)) s.stop();
});

/** One PDP instance on the shared container, configured through app settings as in Azure. */
function instance(container: string, options: Partial<PdpServiceOptions> = {}): PdpService {
  const s = new PdpService({
    config: parseConfig({ authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }] }),
    env: { PDP_SNAPSHOT_STORE: 'blob', PDP_SNAPSHOT_CONNECTION: azurite.connectionString, PDP_SNAPSHOT_CONTAINER: container, PDP_SNAPSHOT_SIGNING_KEYS: SIGNING_KEYS },
    ...options,
  });
  services.push(s);
  return s;
}

const newContainer = (): string => `t-${randomUUID()}`;

function revisionOf(s: PdpService): string | null {
  return (s.health().snapshot as { revision: string | null }).revision;
}

async function storedRevision(s: PdpService): Promise<string | undefined> {
  const stored = await s.store.read();
  return stored && stored !== 'not-modified' ? stored.data.revision : undefined;
}

async function decide(s: PdpService, options: { kid?: string } = {}): Promise<{ reason: string; status: number }> {
  const token = await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', ...options });
  const d = await s.pdp.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${token}`] } });
  return { reason: d.reason, status: d.status };
}

function blobOf(container: string) {
  return BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient(container).getBlockBlobClient(DEFAULT_SNAPSHOT_BLOB);
}

/** A fetch that lets requests through only once `parties` refreshes have each made one. */
function barrierFetch(parties: number): typeof fetch {
  let waiting = 0;
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => (open = resolve));
  return async (input, init) => {
    if (++waiting === parties) open();
    await opened;
    return fetch(input, init);
  };
}

describe('two instances on one container', () => {
  it('makes a refresh in one visible in the other when it polls, without the other asking the authority', async () => {
    const container = newContainer();
    const a = instance(container);
    const b = instance(container);
    await a.start();
    expect(a.lastRefresh?.stored).toBe('written');
    await b.start();
    // B found A's snapshot and did not refresh itself.
    expect(b.lastRefresh).toBeUndefined();
    expect(revisionOf(b)).toBe(revisionOf(a));
    expect(b.health()).toMatchObject({ ready: true, snapshot: { store: 'blob' } });

    const kid = idp.rotateKey();
    const report = await a.refresh();
    expect(report.stored).toBe('written');
    expect(revisionOf(b)).not.toBe(report.revision);
    idp.resetRequestCounts();
    expect(await b.pollSnapshot()).toBe('changed');
    expect(revisionOf(b)).toBe(report.revision);
    expect(await b.pollSnapshot()).toBe('not-modified');
    expect(await decide(b, { kid })).toMatchObject({ reason: 'allowed', status: 200 });
    expect(idp.requestCount()).toBe(0);
  });

  it('picks a new snapshot up on its own within snapshotPollMs', async () => {
    const container = newContainer();
    const a = instance(container);
    await a.start();
    let announce: (e: SnapshotAppliedEvent) => void = () => {};
    const b = instance(container, { snapshotPollMs: 50, onSnapshotApplied: (e) => announce(e) });
    await b.start();
    const applied = new Promise<SnapshotAppliedEvent>((resolve) => (announce = resolve));
    const report = await a.refresh();
    await expect(applied).resolves.toEqual({ revision: report.revision, source: 'store' });
    expect(b.health()).toMatchObject({ follower: { revision: report.revision } });
  });

  it('converges on one revision when both refresh at the same time, the second writer adopting the first', async () => {
    const container = newContainer();
    const seed = instance(container);
    await seed.start();
    for (let round = 0; round < 3; round++) {
      const fetchImpl = barrierFetch(2);
      const a = instance(container, { fetch: fetchImpl });
      const b = instance(container, { fetch: fetchImpl });
      await Promise.all([a.pollSnapshot(), b.pollSnapshot()]);
      const [ra, rb] = await Promise.all([a.refresh(), b.refresh()]);
      expect([ra.stored, rb.stored].sort()).toEqual(['adopted', 'written']);
      expect(ra.revision).toBe(rb.revision);
      expect(revisionOf(a)).toBe(revisionOf(b));
      // The stored snapshot is one whole refresh: it decodes (checksum, schema) and is the one served.
      const stored = await a.store.read();
      expect(stored !== undefined && stored !== 'not-modified' && stored.data).toMatchObject({ revision: ra.revision, issuers: [expect.anything(), expect.anything()] });
      expect(await decide(a)).toMatchObject({ reason: 'allowed' });
      expect(await decide(b)).toMatchObject({ reason: 'allowed' });
    }
  });

  it('overwrites an older snapshot it had not polled yet, so a refresh asked for now is never lost', async () => {
    const container = newContainer();
    const a = instance(container);
    const b = instance(container);
    await a.start();
    await b.start();
    await b.refresh();
    // A still holds the first ETag: its write is refused, the stored snapshot is older than A's
    // refresh, so A writes over it (If-Match its ETag) instead of adopting it.
    const report = await a.refresh();
    expect(report.stored).toBe('written');
    expect(await storedRevision(a)).toBe(report.revision);
    await b.pollSnapshot();
    expect(revisionOf(b)).toBe(report.revision);
  });

  it.each([
    ['not JSON', 'not_json', (_envelope: Record<string, unknown>) => '{"format": "fhir-pdp-snapshot", '],
    ['a schema version this build does not read', 'wrong_schema_version', (envelope: Record<string, unknown>) => JSON.stringify({ ...envelope, schemaVersion: 2 })],
    [
      'a body that does not match its checksum',
      'checksum_mismatch',
      (envelope: Record<string, unknown>) => JSON.stringify({ ...envelope, body: String(envelope.body).replace('"createdAt":', '"createdAt":1') }),
    ],
  ])('keeps the last good snapshot on both instances when the blob holds %s, and the next refresh repairs it', async (_name, reason, corrupt) => {
    const container = newContainer();
    const a = instance(container);
    const b = instance(container);
    await a.start();
    await b.start();
    const good = revisionOf(a);
    const blob = blobOf(container);
    const envelope = JSON.parse((await blob.downloadToBuffer()).toString('utf8')) as Record<string, unknown>;
    const bytes = Buffer.from(corrupt(envelope), 'utf8');
    await blob.upload(bytes, bytes.length);

    for (const s of [a, b]) {
      expect(await s.pollSnapshot()).toBe('rejected');
      expect(revisionOf(s)).toBe(good);
      expect(s.health()).toMatchObject({
        ready: true,
        status: 'degraded',
        follower: { lastError: { code: 'snapshot_rejected', message: expect.stringContaining(`Snapshot rejected (${reason})`) } },
      });
      expect(await decide(s)).toMatchObject({ reason: 'allowed' });
      // The same bad bytes are not downloaded again: the follower polls against their ETag.
      expect(await s.pollSnapshot()).toBe('not-modified');
      expect(s.health()).toMatchObject({ follower: { lastError: { code: 'snapshot_rejected' } } });
    }

    const report = await a.refresh();
    expect(report.stored).toBe('written');
    expect(await storedRevision(a)).toBe(report.revision);
    expect(await b.pollSnapshot()).toBe('changed');
    expect(revisionOf(b)).toBe(report.revision);
    expect(b.health()).not.toHaveProperty('follower.lastError');
  });
});

describe('a cold instance', () => {
  it('serves decisions from the snapshot in Blob without contacting the authority', async () => {
    const container = newContainer();
    await instance(container).start();
    idp.resetRequestCounts();
    const cold = instance(container);
    await cold.start();
    expect(cold.health()).toMatchObject({ ready: true });
    expect(await decide(cold)).toMatchObject({ reason: 'allowed', status: 200 });
    expect(cold.lastRefresh).toBeUndefined();
    expect(idp.requestCount()).toBe(0);
  });

  it('without a snapshot, loads the metadata once for many concurrent first decisions', async () => {
    const cold = instance(newContainer());
    idp.resetRequestCounts();
    const answers = await Promise.all(Array.from({ length: 20 }, () => decide(cold)));
    expect(answers.every((a) => a.reason === 'allowed')).toBe(true);
    expect(idp.requestCount(new URL(idp.v1DiscoveryUrl).pathname)).toBe(1);
    expect(idp.requestCount(new URL(idp.v2DiscoveryUrl).pathname)).toBe(1);
    // No snapshot was made by decisions, yet decisions succeed: health follows them, not the store.
    expect(cold.health()).toMatchObject({ ready: true, snapshot: { revision: null } });
    await cold.start();
    expect(cold.health()).toMatchObject({ ready: true, snapshot: { store: 'blob', revision: expect.any(String) } });
  });
});
