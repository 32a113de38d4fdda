import { afterEach, describe, expect, it, vi } from 'vitest';
import { encodeSnapshot, SnapshotDecodeError } from '../../../src/state/codec.js';
import { MemorySnapshotStore } from '../../../src/state/memory-store.js';
import { SnapshotFollower } from '../../../src/state/snapshot-follower.js';
import {
  SnapshotConflictError,
  SnapshotRejectedError,
  type SnapshotData,
  type SnapshotStore,
} from '../../../src/state/types.js';

function snapshot(revision: string, members: string[] = ['user-1']): SnapshotData {
  return {
    schemaVersion: 1,
    revision,
    createdAt: 1_000,
    issuers: [],
    groups: { 'group-a': { members, fetchedAt: 1_000 } },
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

describe('MemorySnapshotStore', () => {
  it('reads undefined before anything is written', async () => {
    expect(await new MemorySnapshotStore().read()).toBeUndefined();
    expect(await new MemorySnapshotStore().read('"1"')).toBeUndefined();
  });

  it('round-trips a snapshot with a new etag on every write', async () => {
    const store = new MemorySnapshotStore();
    const first = await store.write(snapshot('r1'), null);
    expect(await store.read()).toEqual({ data: snapshot('r1'), etag: first.etag });
    const second = await store.write(snapshot('r2'), first.etag);
    expect(second.etag).not.toBe(first.etag);
    expect(await store.read()).toEqual({ data: snapshot('r2'), etag: second.etag });
  });

  it('answers a conditional read with the current etag as not-modified, any other etag in full', async () => {
    const store = new MemorySnapshotStore();
    const { etag } = await store.write(snapshot('r1'), null);
    expect(await store.read(etag)).toBe('not-modified');
    expect(await store.read('"stale"')).toEqual({ data: snapshot('r1'), etag });
  });

  const conflicts: ReadonlyArray<[string, (store: MemorySnapshotStore) => Promise<string | null>]> = [
    ['create-only (null) when a snapshot exists', async (store) => {
      await store.write(snapshot('a'), null);
      return null;
    }],
    ['a stale etag', async (store) => {
      const { etag } = await store.write(snapshot('a'), null);
      await store.write(snapshot('b'), etag);
      return etag;
    }],
    ['an etag when nothing is stored', async () => '"1"'],
  ];
  it.each(conflicts)('rejects a write with %s as a conflict and keeps the stored snapshot', async (_name, arrange) => {
    const store = new MemorySnapshotStore();
    const ifMatch = await arrange(store);
    const before = await store.read();
    expect(await rejection(store.write(snapshot('loser'), ifMatch))).toBeInstanceOf(SnapshotConflictError);
    expect(await store.read()).toEqual(before);
  });

  it('lets exactly one of two concurrent writers with the same etag win', async () => {
    const store = new MemorySnapshotStore();
    const { etag } = await store.write(snapshot('base'), null);
    const results = await Promise.allSettled([store.write(snapshot('x'), etag), store.write(snapshot('y'), etag)]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const lost = results.find((r) => r.status === 'rejected');
    expect(lost?.reason).toBeInstanceOf(SnapshotConflictError);
    const winner = results.findIndex((r) => r.status === 'fulfilled') === 0 ? 'x' : 'y';
    expect((await store.read())).toMatchObject({ data: { revision: winner } });
  });

  it('rejects stored bytes that fail validation, naming the reason and their etag', async () => {
    const store = new MemorySnapshotStore();
    const bytes = encodeSnapshot(snapshot('r1'));
    const { etag } = store.writeRawBytes(Buffer.from(bytes.toString('utf8').replace('user-1', 'user-9')));
    const error = await rejection(store.read());
    expect(error).toBeInstanceOf(SnapshotRejectedError);
    expect(error).toMatchObject({ code: 'snapshot_rejected', reason: 'checksum_mismatch', etag });
    expect(await store.read(etag)).toBe('not-modified');
  });

  it('enforces maxBytes on write and on read', async () => {
    const limit = encodeSnapshot(snapshot('r1')).byteLength;
    const store = new MemorySnapshotStore({ maxBytes: limit });
    await store.write(snapshot('r1'), null);
    const current = await store.read();
    const tooBig = snapshot('r2', Array.from({ length: 50 }, (_, i) => `user-${i}`));
    expect(await rejection(store.write(tooBig, null))).toMatchObject({ reason: 'too_large' });
    expect(await store.read()).toEqual(current);

    store.writeRawBytes(encodeSnapshot(tooBig));
    expect(await rejection(store.read())).toMatchObject({ reason: 'too_large' });
  });

  it('refuses to store an invalid snapshot', async () => {
    const store = new MemorySnapshotStore();
    const invalid = { ...snapshot('r1'), createdAt: Number.POSITIVE_INFINITY };
    expect(await rejection(store.write(invalid, null))).toMatchObject({ reason: 'invalid_body' });
    expect(await store.read()).toBeUndefined();
  });
});

describe('SnapshotFollower', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function setUp(store: SnapshotStore = new MemorySnapshotStore()) {
    let time = 10_000;
    const applied: Array<{ revision: string; etag: string }> = [];
    const follower = new SnapshotFollower({
      store,
      pollMs: 1_000,
      now: () => time,
      onSnapshot: (data, etag) => {
        applied.push({ revision: data.revision, etag });
      },
    });
    return { follower, applied, advance: (ms: number) => (time += ms) };
  }

  it('reports an empty store without an error', async () => {
    const { follower, applied } = setUp();
    expect(await follower.pollNow()).toBe('empty');
    expect(applied).toEqual([]);
    expect(follower.status()).toEqual({ etag: undefined, revision: undefined, lastPollAt: 10_000 });
  });

  it('applies a new snapshot once and then polls conditionally', async () => {
    const store = new MemorySnapshotStore();
    const read = vi.spyOn(store, 'read');
    const { follower, applied, advance } = setUp(store);
    const { etag } = await store.write(snapshot('r1'), null);

    expect(await follower.pollNow()).toBe('changed');
    advance(500);
    expect(await follower.pollNow()).toBe('not-modified');
    expect(applied).toEqual([{ revision: 'r1', etag }]);
    expect(read.mock.calls).toEqual([[undefined], [etag]]);
    expect(follower.status()).toEqual({ etag, revision: 'r1', lastPollAt: 10_500 });

    const next = await store.write(snapshot('r2'), etag);
    expect(await follower.pollNow()).toBe('changed');
    expect(applied.at(-1)).toEqual({ revision: 'r2', etag: next.etag });
  });

  it('keeps the last good snapshot when the stored one is corrupted, reports it, and recovers', async () => {
    const store = new MemorySnapshotStore();
    const read = vi.spyOn(store, 'read');
    const { follower, applied, advance } = setUp(store);
    const good = await store.write(snapshot('good'), null);
    await follower.pollNow();

    advance(1_000);
    const bad = store.writeRawBytes(Buffer.from('{"format":"fhir-pdp-snapshot","schemaVersion":2}'));
    expect(await follower.pollNow()).toBe('rejected');
    expect(follower.status()).toMatchObject({ etag: good.etag, revision: 'good', lastPollAt: 11_000 });
    expect(follower.status().lastError).toMatchObject({ code: 'snapshot_rejected', at: 11_000 });
    expect(follower.status().lastError?.message).toContain('wrong_schema_version');

    // The same bad bytes are not downloaded again, and the error stays until they are replaced.
    advance(1_000);
    expect(await follower.pollNow()).toBe('not-modified');
    expect(read.mock.calls.at(-1)).toEqual([bad.etag]);
    expect(follower.status().lastError).toMatchObject({ code: 'snapshot_rejected', at: 11_000 });

    const fixed = await store.write(snapshot('fixed'), bad.etag);
    expect(await follower.pollNow()).toBe('changed');
    expect(follower.status()).toEqual({ etag: fixed.etag, revision: 'fixed', lastPollAt: 12_000 });
    expect(applied.map((a) => a.revision)).toEqual(['good', 'fixed']);
  });

  it('reports a failing store with its error code and clears it once the store answers', async () => {
    const memory = new MemorySnapshotStore();
    let down = false;
    const store: SnapshotStore = {
      kind: 'blob',
      read: (ifNoneMatch) =>
        down ? Promise.reject(Object.assign(new Error('HTTP 503'), { code: 'snapshot_store_unavailable' })) : memory.read(ifNoneMatch),
      write: (data, ifMatch) => memory.write(data, ifMatch),
    };
    const { follower } = setUp(store);
    const { etag } = await memory.write(snapshot('r1'), null);
    await follower.pollNow();

    down = true;
    expect(await follower.pollNow()).toBe('failed');
    expect(follower.status()).toMatchObject({
      etag,
      revision: 'r1',
      lastError: { code: 'snapshot_store_unavailable', message: 'HTTP 503', at: 10_000 },
    });
    down = false;
    expect(await follower.pollNow()).toBe('not-modified');
    expect(follower.status().lastError).toBeUndefined();
  });

  it('keeps the last snapshot and reports it when the stored one disappears', async () => {
    let stored: { data: SnapshotData; etag: string } | undefined = { data: snapshot('r1'), etag: '"1"' };
    const store: SnapshotStore = {
      kind: 'blob',
      read: async (ifNoneMatch) => (stored && ifNoneMatch === stored.etag ? 'not-modified' : stored),
      write: () => Promise.reject(new Error('unused')),
    };
    const { follower } = setUp(store);
    await follower.pollNow();
    stored = undefined;
    expect(await follower.pollNow()).toBe('empty');
    expect(follower.status()).toMatchObject({ etag: '"1"', revision: 'r1', lastError: { code: 'snapshot_missing' } });
  });

  it('treats a snapshot that onSnapshot throws on as rejected and does not apply it again', async () => {
    const store = new MemorySnapshotStore();
    let calls = 0;
    const follower = new SnapshotFollower({
      store,
      pollMs: 1_000,
      now: () => 5,
      onSnapshot: () => {
        calls += 1;
        throw new Error('key import failed');
      },
    });
    await store.write(snapshot('r1'), null);
    expect(await follower.pollNow()).toBe('rejected');
    expect(await follower.pollNow()).toBe('not-modified');
    expect(calls).toBe(1);
    expect(follower.status()).toEqual({
      etag: undefined,
      revision: undefined,
      lastPollAt: 5,
      lastError: { code: 'snapshot_apply_failed', message: 'key import failed', at: 5 },
    });
  });

  it('joins concurrent pollNow calls into one read', async () => {
    const store = new MemorySnapshotStore();
    const read = vi.spyOn(store, 'read');
    const { follower } = setUp(store);
    await store.write(snapshot('r1'), null);
    const [a, b] = [follower.pollNow(), follower.pollNow()];
    expect(a).toBe(b);
    expect(await a).toBe('changed');
    expect(read).toHaveBeenCalledTimes(1);
  });

  it('polls every pollMs after start() and not after stop()', async () => {
    vi.useFakeTimers();
    const store = new MemorySnapshotStore();
    const read = vi.spyOn(store, 'read');
    const { follower, applied } = setUp(store);
    await store.write(snapshot('r1'), null);

    follower.start();
    follower.start();
    await vi.advanceTimersByTimeAsync(999);
    expect(read).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(read).toHaveBeenCalledTimes(1);
    expect(applied.map((a) => a.revision)).toEqual(['r1']);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(read).toHaveBeenCalledTimes(3);

    follower.stop();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(read).toHaveBeenCalledTimes(3);
  });

  it.each([0, -1, Number.NaN])('refuses pollMs %s', (pollMs) => {
    expect(() => new SnapshotFollower({ store: new MemorySnapshotStore(), pollMs, onSnapshot: () => {} })).toThrow(TypeError);
  });
});

// SnapshotDecodeError is what stores throw for rejected bytes; keep it a SnapshotRejectedError.
it('SnapshotDecodeError is a SnapshotRejectedError', () => {
  expect(new SnapshotDecodeError('not_json', 'x')).toBeInstanceOf(SnapshotRejectedError);
});
