import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { BlobServiceClient } from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BlobSnapshotStore,
  blobStoreSettingsFrom,
  SnapshotStoreUnavailableError,
} from '../../src/state/blob-store.js';
import { encodeSnapshot } from '../../src/state/codec.js';
import { SnapshotFollower } from '../../src/state/snapshot-follower.js';
import { SnapshotConflictError, SnapshotRejectedError, type SnapshotData } from '../../src/state/types.js';
import { startAzurite, type RunningAzurite } from '../../testkit/azurite.js';

function snapshot(revision: string, members: string[] = ['user-1', 'user-2']): SnapshotData {
  return {
    schemaVersion: 1,
    revision,
    createdAt: 1_700_000_000_000,
    issuers: [
      {
        authority: 'https://login.example/t',
        discoveryUrl: 'https://login.example/t/.well-known/openid-configuration',
        issuer: 'https://login.example/t/',
        jwksUri: 'https://login.example/t/keys',
        algorithms: ['RS256'],
        keys: [{ kty: 'RSA', kid: 'k1', n: 'AQAB', e: 'AQAB' }],
        fetchedAt: 1_700_000_000_000,
      },
    ],
    groups: { 'group-a': { members, fetchedAt: 1_700_000_000_000 } },
  };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: unknown) => error,
  );
}

let azurite: RunningAzurite;
let service: BlobServiceClient;

beforeAll(async () => {
  azurite = await startAzurite();
  service = BlobServiceClient.fromConnectionString(azurite.connectionString);
});

afterAll(async () => {
  await azurite?.stop();
});

/** Two stores (two PDP instances) on a container of their own. */
function instances(options: { maxBytes?: number } = {}) {
  const container = `t-${randomUUID()}`;
  const make = () =>
    new BlobSnapshotStore({ connectionString: azurite.connectionString, container, timeoutMs: 10_000, ...options });
  const raw = service.getContainerClient(container).getBlockBlobClient('snapshot.json');
  return { a: make(), b: make(), raw };
}

describe('BlobSnapshotStore on Azurite', () => {
  it('reads undefined while the container and blob do not exist', async () => {
    const { a } = instances();
    expect(await a.read()).toBeUndefined();
    expect(await a.read('"0x1"')).toBeUndefined();
  });

  it('creates the container on first write and round-trips the snapshot', async () => {
    const { a, raw } = instances();
    const { etag } = await a.write(snapshot('r1'), null);
    expect(etag).toMatch(/^".+"$/);
    expect(await a.read()).toEqual({ data: snapshot('r1'), etag });
    const properties = await raw.getProperties();
    expect(properties.etag).toBe(etag);
    expect(properties.contentType).toBe('application/json');
  });

  it('answers a read conditional on the current ETag with not-modified (HTTP 304)', async () => {
    const { a } = instances();
    const { etag } = await a.write(snapshot('r1'), null);
    expect(await a.read(etag)).toBe('not-modified');
    expect(await a.read('"0xstale"')).toEqual({ data: snapshot('r1'), etag });
  });

  it("lets two instances on one container see each other's writes", async () => {
    const { a, b } = instances();
    const first = await a.write(snapshot('from-a'), null);
    expect(await b.read()).toEqual({ data: snapshot('from-a'), etag: first.etag });
    const second = await b.write(snapshot('from-b'), first.etag);
    expect(await a.read(first.etag)).toEqual({ data: snapshot('from-b'), etag: second.etag });
  });

  it('makes a refresh on one instance visible to the follower of the other', async () => {
    const { a, b } = instances();
    const seen: string[] = [];
    const follower = new SnapshotFollower({ store: b, pollMs: 30_000, onSnapshot: (data) => seen.push(data.revision) });
    expect(await follower.pollNow()).toBe('empty');
    const { etag } = await a.write(snapshot('r1'), null);
    expect(await follower.pollNow()).toBe('changed');
    expect(await follower.pollNow()).toBe('not-modified');
    expect(seen).toEqual(['r1']);
    expect(follower.status()).toMatchObject({ etag, revision: 'r1' });
    expect(follower.status().lastError).toBeUndefined();
  });

  it.each([
    ['the same ETag', true],
    ['create-only (null) on an empty container', false],
  ])('lets exactly one of two concurrent writers with %s win', async (_name, existing) => {
    const { a, b } = instances();
    const base = existing ? (await a.write(snapshot('base'), null)).etag : null;
    const results = await Promise.allSettled([a.write(snapshot('from-a'), base), b.write(snapshot('from-b'), base)]);
    const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [{ i, etag: r.value.etag }] : []));
    expect(won).toHaveLength(1);
    const lost = results.find((r) => r.status === 'rejected');
    expect(lost?.reason).toBeInstanceOf(SnapshotConflictError);
    expect(await a.read()).toEqual({ data: snapshot(won[0]!.i === 0 ? 'from-a' : 'from-b'), etag: won[0]!.etag });
  });

  it('rejects create-only (ifMatch null) and a stale ETag on an existing blob as conflicts', async () => {
    const { a, b } = instances();
    const first = await a.write(snapshot('r1'), null);
    expect(await rejection(b.write(snapshot('r2'), null))).toBeInstanceOf(SnapshotConflictError);
    const second = await a.write(snapshot('r2'), first.etag);
    expect(await rejection(b.write(snapshot('r3'), first.etag))).toBeInstanceOf(SnapshotConflictError);
    expect(await b.read()).toEqual({ data: snapshot('r2'), etag: second.etag });
  });

  it('rejects an ETag when nothing is stored as a conflict', async () => {
    const { a } = instances();
    await a.write(snapshot('r1'), null);
    const { b } = instances();
    expect(await rejection(b.write(snapshot('r1'), '"0x8D0000000000000"'))).toBeInstanceOf(SnapshotConflictError);
  });

  const good = encodeSnapshot(snapshot('r1'));
  it.each([
    ['not JSON', Buffer.from('not a snapshot'), 'not_json'],
    ['cut short', good.subarray(0, 40), 'not_json'],
    ['edited after hashing', Buffer.from(good.toString('utf8').replace('user-2', 'user-3')), 'checksum_mismatch'],
    ['another schema version', Buffer.from(good.toString('utf8').replace('"schemaVersion":1', '"schemaVersion":9')), 'wrong_schema_version'],
  ])('rejects a corrupted blob (%s) with the reason and its ETag', async (_name, bytes, reason) => {
    const { a, raw } = instances();
    await a.write(snapshot('r1'), null);
    const { etag } = await raw.uploadData(bytes);
    const error = await rejection(a.read());
    expect(error).toBeInstanceOf(SnapshotRejectedError);
    expect(error).toMatchObject({ code: 'snapshot_rejected', reason, etag });
    expect(await a.read(etag)).toBe('not-modified');
  });

  it('enforces maxBytes on write, and on read before downloading', async () => {
    const limit = encodeSnapshot(snapshot('r1')).byteLength;
    const { a: unlimited, raw } = instances();
    const limited = new BlobSnapshotStore({
      connectionString: azurite.connectionString,
      container: raw.containerName,
      maxBytes: limit,
    });
    const big = snapshot('r2', Array.from({ length: 100 }, (_, i) => `user-${i}`));
    expect(await rejection(limited.write(big, null))).toMatchObject({ reason: 'too_large' });
    expect(await limited.read()).toBeUndefined();

    await limited.write(snapshot('r1'), null);
    expect(await limited.read()).toMatchObject({ data: { revision: 'r1' } });
    const { etag } = await unlimited.write(big, (await unlimited.read() as { etag: string }).etag);
    expect(await rejection(limited.read())).toMatchObject({ code: 'snapshot_rejected', reason: 'too_large', etag });
  });

  it('keeps the last good snapshot in the follower after corruption, reports it, and recovers', async () => {
    const { a, b, raw } = instances();
    const seen: string[] = [];
    let time = 1_000;
    const follower = new SnapshotFollower({
      store: b,
      pollMs: 30_000,
      now: () => time,
      onSnapshot: (data) => seen.push(data.revision),
    });
    const good = await a.write(snapshot('good'), null);
    await follower.pollNow();

    time = 2_000;
    const corrupted = await raw.uploadData(Buffer.from('{"format":"fhir-pdp-snapshot"'));
    expect(await follower.pollNow()).toBe('rejected');
    expect(follower.status()).toMatchObject({
      etag: good.etag,
      revision: 'good',
      lastPollAt: 2_000,
      lastError: { code: 'snapshot_rejected', at: 2_000 },
    });
    expect(follower.status().lastError?.message).toContain('not_json');

    time = 3_000;
    expect(await follower.pollNow()).toBe('not-modified');
    expect(follower.status().lastError).toMatchObject({ code: 'snapshot_rejected', at: 2_000 });

    const fixed = await a.write(snapshot('fixed'), corrupted.etag!);
    expect(await follower.pollNow()).toBe('changed');
    expect(follower.status()).toEqual({ etag: fixed.etag, revision: 'fixed', lastPollAt: 3_000 });
    expect(seen).toEqual(['good', 'fixed']);
  });

  it('reports an unreachable account as unavailable without quoting the key', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as { port: number };
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const connectionString = azurite.connectionString.replace(/127\.0\.0\.1:\d+/, `127.0.0.1:${port}`);
    const store = new BlobSnapshotStore({ connectionString, timeoutMs: 5_000 });
    for (const attempt of [store.read(), store.write(snapshot('r1'), null)]) {
      const error = await rejection(attempt);
      expect(error).toBeInstanceOf(SnapshotStoreUnavailableError);
      expect(error).toMatchObject({ code: 'snapshot_store_unavailable' });
      expect((error as Error).message).not.toContain('Eby8vdM02');
    }
  });
});

describe('BlobSnapshotStore settings', () => {
  it.each([
    [{}, undefined],
    [{ AzureWebJobsStorage: '  ' }, undefined],
    [{ AzureWebJobsStorage: 'UseDevelopmentStorage=true' }, { connectionString: 'UseDevelopmentStorage=true' }],
    [
      { AzureWebJobsStorage: 'UseDevelopmentStorage=true', PDP_SNAPSHOT_CONNECTION: 'DefaultEndpointsProtocol=https;AccountName=x' },
      { connectionString: 'DefaultEndpointsProtocol=https;AccountName=x' },
    ],
    [
      { AzureWebJobsStorage: 'c', PDP_SNAPSHOT_CONTAINER: 'pdp-state', PDP_SNAPSHOT_BLOB: 'prod/snapshot.json' },
      { connectionString: 'c', container: 'pdp-state', blobName: 'prod/snapshot.json' },
    ],
    [{ PDP_SNAPSHOT_CONTAINER: 'pdp-state' }, undefined],
  ])('blobStoreSettingsFrom(%j) is %j', (env, expected) => {
    expect(blobStoreSettingsFrom(env)).toEqual(expected);
  });

  it('accepts the development storage shortcut', () => {
    expect(new BlobSnapshotStore({ connectionString: 'UseDevelopmentStorage=true' }).kind).toBe('blob');
  });

  it.each([
    ['a container name with capitals', { container: 'FhirPdp' }],
    ['a container name with a double hyphen', { container: 'fhir--pdp' }],
    ['a two-letter container name', { container: 'ab' }],
    ['an empty blob name', { blobName: '' }],
    ['a zero maxBytes', { maxBytes: 0 }],
    ['a negative timeout', { timeoutMs: -1 }],
  ])('refuses %s at construction', (_name, options) => {
    expect(() => new BlobSnapshotStore({ connectionString: 'UseDevelopmentStorage=true', ...options })).toThrow(TypeError);
  });

  it('refuses a malformed connection string without echoing it', () => {
    const secret = 'AccountKey=c2VjcmV0';
    expect(() => new BlobSnapshotStore({ connectionString: `nonsense;${secret}` })).toThrow(
      expect.objectContaining({ message: expect.not.stringContaining(secret) }),
    );
  });
});
