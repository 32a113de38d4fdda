import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  decodeSnapshot,
  encodeSnapshot,
  newRevision,
  SNAPSHOT_FORMAT,
  SnapshotDecodeError,
  type SnapshotRejectionReason,
} from '../../../src/state/codec.js';
import { SnapshotRejectedError, type SnapshotData } from '../../../src/state/types.js';

const snapshot: SnapshotData = {
  schemaVersion: 1,
  revision: 'rev-1',
  createdAt: 1_700_000_000_000,
  issuers: [
    {
      authority: 'https://login.example/tenant',
      discoveryUrl: 'https://login.example/tenant/v2.0/.well-known/openid-configuration',
      issuer: 'https://login.example/tenant/v2.0',
      jwksUri: 'https://login.example/tenant/discovery/v2.0/keys',
      algorithms: ['RS256'],
      keys: [{ kty: 'RSA', kid: 'k1', n: 'AQAB', e: 'AQAB', use: 'sig' }],
      fetchedAt: 1_700_000_000_000,
    },
  ],
  groups: {
    'group-a': { members: ['user-1', 'group-b', 'user-ü'], fetchedAt: 1_700_000_000_001 },
    'group-b': { members: [], fetchedAt: 1_700_000_000_002 },
  },
  lastRefresh: { startedAt: 1, finishedAt: 2, outcome: 'partial', problems: ['graph: 429'] },
};

const LIMIT = 1024 * 1024;

function sha256(text: string): string {
  return createHash('sha256').update(Buffer.from(text, 'utf8')).digest('hex');
}

/** An envelope around arbitrary body text, with a correct checksum unless one is given. */
function envelope(body: string, overrides: Record<string, unknown> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({ format: SNAPSHOT_FORMAT, schemaVersion: 1, sha256: sha256(body), body, ...overrides }),
    'utf8',
  );
}

function bodyWith(change: (data: Record<string, unknown>) => void): string {
  const data = structuredClone(snapshot) as unknown as Record<string, unknown>;
  change(data);
  return JSON.stringify(data);
}

function rejectionOf(run: () => unknown): SnapshotDecodeError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(SnapshotRejectedError);
    expect(error).toBeInstanceOf(SnapshotDecodeError);
    expect((error as SnapshotDecodeError).code).toBe('snapshot_rejected');
    return error as SnapshotDecodeError;
  }
  throw new Error('expected a rejection');
}

describe('encodeSnapshot / decodeSnapshot', () => {
  it('round-trips a snapshot', () => {
    expect(decodeSnapshot(encodeSnapshot(snapshot), LIMIT)).toEqual(snapshot);
  });

  it('writes the envelope with the SHA-256 of the body string', () => {
    const stored = JSON.parse(encodeSnapshot(snapshot).toString('utf8')) as Record<string, unknown>;
    expect(stored['format']).toBe('fhir-pdp-snapshot');
    expect(stored['schemaVersion']).toBe(1);
    expect(typeof stored['body']).toBe('string');
    expect(stored['sha256']).toBe(sha256(stored['body'] as string));
    expect(JSON.parse(stored['body'] as string)).toEqual(snapshot);
  });

  it('accepts a snapshot exactly at the size limit', () => {
    const bytes = encodeSnapshot(snapshot);
    expect(decodeSnapshot(bytes, bytes.byteLength).revision).toBe('rev-1');
  });

  it('accepts an upper-case checksum', () => {
    const body = JSON.stringify(snapshot);
    expect(decodeSnapshot(envelope(body, { sha256: sha256(body).toUpperCase() }), LIMIT)).toEqual(snapshot);
  });

  it('drops unknown fields rather than carrying them into the snapshot', () => {
    const body = bodyWith((data) => {
      data['extra'] = 'ignored';
    });
    expect(decodeSnapshot(envelope(body), LIMIT)).not.toHaveProperty('extra');
  });

  const good = encodeSnapshot(snapshot);
  const goodBody = JSON.stringify(snapshot);
  const cases: ReadonlyArray<{ name: string; bytes: Uint8Array; limit?: number; reason: SnapshotRejectionReason }> = [
    { name: 'one byte over the limit', bytes: good, limit: good.byteLength - 1, reason: 'too_large' },
    { name: 'invalid UTF-8', bytes: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), reason: 'not_utf8' },
    { name: 'not JSON', bytes: Buffer.from('snapshot?'), reason: 'not_json' },
    { name: 'empty', bytes: Buffer.alloc(0), reason: 'not_json' },
    { name: 'cut in half', bytes: good.subarray(0, good.byteLength >> 1), reason: 'not_json' },
    { name: 'a JSON array', bytes: Buffer.from('[]'), reason: 'wrong_format' },
    { name: 'JSON null', bytes: Buffer.from('null'), reason: 'wrong_format' },
    { name: 'another format marker', bytes: envelope(goodBody, { format: 'other' }), reason: 'wrong_format' },
    { name: 'no format marker', bytes: envelope(goodBody, { format: undefined }), reason: 'wrong_format' },
    { name: 'body as an object', bytes: envelope(goodBody, { body: snapshot }), reason: 'wrong_format' },
    { name: 'schema version 2', bytes: envelope(goodBody, { schemaVersion: 2 }), reason: 'wrong_schema_version' },
    { name: 'schema version "1"', bytes: envelope(goodBody, { schemaVersion: '1' }), reason: 'wrong_schema_version' },
    { name: 'no schema version', bytes: envelope(goodBody, { schemaVersion: undefined }), reason: 'wrong_schema_version' },
    {
      name: 'a body changed after hashing',
      bytes: envelope(goodBody.replace('user-1', 'user-2'), { sha256: sha256(goodBody) }),
      reason: 'checksum_mismatch',
    },
    { name: 'an empty checksum', bytes: envelope(goodBody, { sha256: '' }), reason: 'checksum_mismatch' },
    { name: 'a body that is not JSON', bytes: envelope('{"schemaVersion":1,'), reason: 'invalid_body' },
    {
      name: 'body schema version 2',
      bytes: envelope(bodyWith((d) => void (d['schemaVersion'] = 2))),
      reason: 'invalid_body',
    },
    { name: 'empty revision', bytes: envelope(bodyWith((d) => void (d['revision'] = ''))), reason: 'invalid_body' },
    {
      name: 'issuer without an issuer string',
      bytes: envelope(bodyWith((d) => void ((d['issuers'] as Array<Record<string, unknown>>)[0]!['issuer'] = 7))),
      reason: 'invalid_body',
    },
    {
      name: 'a key that is a string',
      bytes: envelope(bodyWith((d) => void ((d['issuers'] as Array<Record<string, unknown>>)[0]!['keys'] = ['k']))),
      reason: 'invalid_body',
    },
    {
      name: 'a key without kty',
      bytes: envelope(bodyWith((d) => void ((d['issuers'] as Array<Record<string, unknown>>)[0]!['keys'] = [{ kid: 'k' }]))),
      reason: 'invalid_body',
    },
    {
      name: 'group members that are numbers',
      bytes: envelope(bodyWith((d) => void (d['groups'] = { g: { members: [1], fetchedAt: 1 } }))),
      reason: 'invalid_body',
    },
    {
      name: 'an infinite timestamp (1e999)',
      bytes: envelope(goodBody.replace('"createdAt":1700000000000', '"createdAt":1e999')),
      reason: 'invalid_body',
    },
    {
      name: 'an unknown refresh outcome',
      bytes: envelope(bodyWith((d) => void ((d['lastRefresh'] as Record<string, unknown>)['outcome'] = 'maybe'))),
      reason: 'invalid_body',
    },
    { name: 'groups as an array', bytes: envelope(bodyWith((d) => void (d['groups'] = []))), reason: 'invalid_body' },
  ];

  it.each(cases)('rejects $name as $reason', ({ bytes, limit, reason }) => {
    const error = rejectionOf(() => decodeSnapshot(bytes, limit ?? LIMIT));
    expect(error.reason).toBe(reason);
    expect(error.message).toContain(reason);
  });

  it('names the failing field of an invalid body', () => {
    const body = bodyWith((d) => void ((d['issuers'] as Array<Record<string, unknown>>)[0]!['jwksUri'] = null));
    expect(rejectionOf(() => decodeSnapshot(envelope(body), LIMIT)).message).toContain('issuers.0.jwksUri');
  });

  it.each([
    ['a NaN timestamp', { ...snapshot, createdAt: Number.NaN }],
    ['an empty revision', { ...snapshot, revision: '' }],
  ])('refuses to encode a snapshot with %s, so no reader is ever handed it', (_name, data) => {
    expect(rejectionOf(() => encodeSnapshot(data)).reason).toBe('invalid_body');
  });
});

describe('newRevision', () => {
  it('is a fresh non-empty id each time', () => {
    const revisions = new Set(Array.from({ length: 100 }, () => newRevision()));
    expect(revisions.size).toBe(100);
    for (const revision of revisions) expect(revision).toMatch(/^[0-9a-f-]{36}$/);
  });
});
