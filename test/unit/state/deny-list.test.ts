import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { addRevocations, DenyList, liveEntries, removeRevocation, revocationId, type RevocationEntry } from '../../../src/state/deny-list.js';
import { decodeSignedSnapshot, decodeSnapshot, encodeSignedSnapshot, encodeSnapshot, SnapshotDecodeError } from '../../../src/state/codec.js';
import { SnapshotSignature } from '../../../src/state/snapshot-signature.js';
import type { SnapshotData } from '../../../src/state/types.js';

const ISS = 'https://login.example/tenant/v2.0';
const OID = 'c5a1e9d7-2b3f-4c8a-9d6e-0f1a2b3c4d5e';
const NOW = 1_800_000_000_000;
const HOUR = 3_600_000;
const opts = { now: NOW, defaultLifetimeMs: 28 * HOUR, maxEntries: 3 };

function list(...additions: Parameters<typeof addRevocations>[1]): RevocationEntry[] {
  const r = addRevocations([], additions, opts);
  if (!r.ok) throw new Error(r.message);
  return [...r.entries];
}

describe('DenyList.match', () => {
  const entries = list(
    { kind: 'jti', issuer: ISS, jti: 'token-1' },
    { kind: 'sid', issuer: ISS, sid: 'session-1' },
    { kind: 'oid', oid: OID.toUpperCase(), issuedBefore: NOW / 1000 },
  );
  const deny = new DenyList(entries);

  it('matches a jti (or Entra uti) and a sid of the same issuer only', () => {
    expect(deny.match(ISS, { jti: 'token-1' }, NOW)).toMatchObject({ claim: 'jti', entry: { kind: 'jti' } });
    expect(deny.match(ISS, { uti: 'token-1' }, NOW)).toMatchObject({ claim: 'uti' });
    expect(deny.match('https://other.example', { jti: 'token-1' }, NOW)).toBeUndefined();
    expect(deny.match(ISS, { jti: 'token-2' }, NOW)).toBeUndefined();
    expect(deny.match(ISS, { sid: 'session-1' }, NOW)).toMatchObject({ claim: 'sid' });
    expect(deny.match('https://other.example', { sid: 'session-1' }, NOW)).toBeUndefined();
  });

  it('matches an object id case-insensitively for tokens issued before the instant, or without iat', () => {
    const iatBefore = NOW / 1000 - 1;
    expect(deny.match(ISS, { oid: OID, iat: iatBefore }, NOW)).toMatchObject({ claim: 'oid' });
    expect(deny.match('https://any.example', { oid: OID.toUpperCase(), iat: iatBefore }, NOW)).toMatchObject({ claim: 'oid' });
    expect(deny.match(ISS, { oid: OID }, NOW)).toMatchObject({ claim: 'oid' });
    expect(deny.match(ISS, { oid: OID, iat: NOW / 1000 }, NOW)).toBeUndefined();
    expect(deny.match(ISS, { oid: 'another', iat: iatBefore }, NOW)).toBeUndefined();
  });

  it('stops matching at expiresAt, before any write drops the entry', () => {
    const expiry = entries[0]!.expiresAt;
    expect(expiry).toBe(NOW + 28 * HOUR);
    expect(deny.match(ISS, { jti: 'token-1' }, expiry - 1)).toBeDefined();
    expect(deny.match(ISS, { jti: 'token-1' }, expiry)).toBeUndefined();
    expect(liveEntries(entries, expiry)).toEqual([]);
  });

  it('ignores claims of other types', () => {
    expect(deny.match(ISS, { jti: 1, sid: ['session-1'], oid: 7 }, NOW)).toBeUndefined();
  });
});

describe('addRevocations and removeRevocation', () => {
  it('gives a target one stable id, and widens an entry added again, never narrows it', () => {
    const first = list({ kind: 'oid', oid: OID, issuedBefore: 100, expiresAt: NOW + 2 * HOUR });
    expect(first[0]!.id).toBe(revocationId({ kind: 'oid', oid: OID.toUpperCase(), issuedBefore: 5 }));
    const again = addRevocations(first, [{ kind: 'oid', oid: OID, issuedBefore: 50, expiresAt: NOW + HOUR }], { ...opts, now: NOW + 10 });
    expect(again.ok && again.entries).toEqual([{ ...first[0], issuedBefore: 100, expiresAt: NOW + 2 * HOUR }]);
    const wider = addRevocations(first, [{ kind: 'oid', oid: OID, issuedBefore: 200 }], { ...opts, now: NOW + 10 });
    expect(wider.ok && wider.entries[0]).toMatchObject({ issuedBefore: 200, expiresAt: NOW + 10 + 28 * HOUR, addedAt: NOW });
    expect(revocationId({ kind: 'jti', issuer: ISS, jti: 'a' })).not.toBe(revocationId({ kind: 'sid', issuer: ISS, sid: 'a' }));
  });

  it('refuses additions beyond maxEntries whole, and never drops a live entry to make room', () => {
    const full = list({ kind: 'jti', issuer: ISS, jti: '1' }, { kind: 'jti', issuer: ISS, jti: '2' }, { kind: 'jti', issuer: ISS, jti: '3' });
    const over = addRevocations(full, [{ kind: 'jti', issuer: ISS, jti: '4' }], opts);
    expect(over).toMatchObject({ ok: false, code: 'deny_list_full', message: expect.stringContaining('revocation.maxEntries (3)') });
    // Re-adding a listed target is no new entry, so it fits.
    expect(addRevocations(full, [{ kind: 'jti', issuer: ISS, jti: '3' }], opts).ok).toBe(true);
    // An expired entry no longer counts: its room is free.
    const later = { ...opts, now: full[0]!.expiresAt };
    expect(addRevocations(full, [{ kind: 'jti', issuer: ISS, jti: '4' }], later)).toMatchObject({ ok: true, entries: [expect.objectContaining({ jti: '4' })] });
  });

  it('removes one entry by id and says when there is none', () => {
    const two = list({ kind: 'jti', issuer: ISS, jti: '1' }, { kind: 'sid', issuer: ISS, sid: 's' });
    const removed = removeRevocation(two, two[0]!.id, NOW);
    expect(removed).toMatchObject({ ok: true, entries: [two[1]], changed: [two[0]] });
    expect(removeRevocation(two, 'jti-AAAAAAAAAAAAAAAAAAAAAA', NOW)).toMatchObject({ ok: false, code: 'not_found' });
  });
});

describe('the deny-list in the snapshot', () => {
  const snapshot: SnapshotData = {
    schemaVersion: 1,
    revision: 'rev-1',
    createdAt: NOW,
    issuers: [],
    groups: {},
    revocations: list({ kind: 'jti', issuer: ISS, jti: 'token-1', note: 'laptop stolen' }, { kind: 'oid', oid: OID, issuedBefore: 1_700_000_000 }),
  };
  const signature = SnapshotSignature.fromHmacKeys([{ kid: 'k1', secret: randomBytes(32) }]);

  it('round-trips through the codec, signed and unsigned', async () => {
    expect(decodeSnapshot(encodeSnapshot(snapshot), 1 << 20)).toEqual(snapshot);
    expect(await decodeSignedSnapshot(await encodeSignedSnapshot(snapshot, signature), 1 << 20, signature)).toEqual(snapshot);
  });

  it('is covered by the signature: a list emptied or changed by a writer without the key is rejected', async () => {
    const envelope = JSON.parse((await encodeSignedSnapshot(snapshot, signature)).toString('utf8')) as Record<string, string>;
    const { revocations: _dropped, ...withoutList } = snapshot;
    for (const forged of [withoutList, { ...snapshot, revocations: snapshot.revocations!.slice(1) }]) {
      const body = JSON.stringify(forged);
      const sha256 = createHash('sha256').update(body, 'utf8').digest('hex');
      const bytes = Buffer.from(JSON.stringify({ ...envelope, body, sha256 }));
      const error = await decodeSignedSnapshot(bytes, 1 << 20, signature).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SnapshotDecodeError);
      expect(error).toMatchObject({ reason: 'signature_invalid' });
    }
  });

  it('rejects a stored entry that is not one of the three kinds, or holds extra members', () => {
    for (const bad of [
      { ...snapshot.revocations![0], kind: 'sub' },
      { ...snapshot.revocations![0], token: 'eyJ...' },
      { ...snapshot.revocations![0], id: 'not-an-id' },
    ]) {
      const error = (() => {
        try {
          return decodeSnapshot(encodeSnapshotUnchecked({ ...snapshot, revocations: [bad] }), 1 << 20);
        } catch (e) {
          return e;
        }
      })();
      expect(error).toMatchObject({ reason: 'invalid_body', message: expect.stringContaining('revocations.0') });
    }
  });
});

/** An envelope around any body, as a writer that skipped validation would store it. */
function encodeSnapshotUnchecked(body: unknown): Buffer {
  const text = JSON.stringify(body);
  const sha256 = createHash('sha256').update(text, 'utf8').digest('hex');
  return Buffer.from(JSON.stringify({ format: 'fhir-pdp-snapshot', schemaVersion: 1, sha256, body: text }));
}
