/**
 * The stored form of a snapshot: a JSON envelope whose `body` is the snapshot serialised as a JSON
 * string, with the SHA-256 of that string's UTF-8 bytes beside it. Keeping the body as a string
 * means the checksum is checked over the exact bytes the writer hashed, with no canonical
 * re-serialisation to agree on.
 *
 *   { "format": "fhir-pdp-snapshot", "schemaVersion": 1, "sha256": "<hex>", "signature": "<JWS>", "body": "<json>" }
 *
 * `signature` (snapshot-signature.ts) is a JWS over that SHA-256 by a configured key. Readers with
 * signing configured verify it after the checksum and before the body is parsed or installed;
 * readers without it ignore it, so signing can be switched on without a format change.
 */
import { createHash, randomUUID } from 'node:crypto';
import { z } from 'zod';
import { SNAPSHOT_SCHEMA_VERSION, SnapshotRejectedError } from './types.js';
import type { SnapshotData, StoredSnapshot } from './types.js';
import { revocationListSchema } from './deny-list.js';
import { SnapshotSignatureError, type SnapshotSignature, type SnapshotSignatureFailure } from './snapshot-signature.js';

export const SNAPSHOT_FORMAT = 'fhir-pdp-snapshot';

/** Largest stored snapshot a store writes or reads unless configured otherwise. */
export const DEFAULT_SNAPSHOT_MAX_BYTES = 256 * 1024 * 1024;

/** Why stored bytes were not accepted as a snapshot. */
export type SnapshotRejectionReason =
  | 'too_large'
  | 'truncated'
  | 'not_utf8'
  | 'not_json'
  | 'wrong_format'
  | 'wrong_schema_version'
  | 'checksum_mismatch'
  | SnapshotSignatureFailure
  | 'invalid_body';

/**
 * A SnapshotRejectedError that says which check failed and, when a store knows it, the version
 * tag of the rejected bytes (so a follower can poll conditionally instead of downloading the same
 * bad bytes again).
 */
export class SnapshotDecodeError extends SnapshotRejectedError {
  readonly reason: SnapshotRejectionReason;
  etag: string | undefined;
  constructor(reason: SnapshotRejectionReason, detail: string, etag?: string) {
    super(`Snapshot rejected (${reason}): ${detail}`);
    this.name = 'SnapshotDecodeError';
    this.reason = reason;
    this.etag = etag;
  }
}

const issuerRecordSchema = z.object({
  authority: z.string(),
  discoveryUrl: z.string(),
  issuer: z.string(),
  jwksUri: z.string(),
  authorizationEndpoint: z.string().optional(),
  tokenEndpoint: z.string().optional(),
  algorithms: z.array(z.string()),
  // RFC 7517 section 4.1: "The "kty" (key type) parameter ... MUST be present in a JWK."
  keys: z.array(z.looseObject({ kty: z.string() })),
  fetchedAt: z.number(),
});

const groupRecordSchema = z.object({
  members: z.array(z.string()),
  fetchedAt: z.number(),
});

const refreshOutcomeSchema = z.object({
  startedAt: z.number(),
  finishedAt: z.number(),
  outcome: z.enum(['ok', 'partial', 'failed']),
  problems: z.array(z.string()),
});

// zod 4's z.number() rejects NaN and ±Infinity, and JSON.parse turns 1e999 into Infinity.
const snapshotDataSchema = z.object({
  schemaVersion: z.literal(SNAPSHOT_SCHEMA_VERSION),
  revision: z.string().min(1),
  createdAt: z.number(),
  issuers: z.array(issuerRecordSchema),
  groups: z.record(z.string(), groupRecordSchema),
  lastRefresh: refreshOutcomeSchema.optional(),
  revocations: revocationListSchema.optional(),
});

const markerSchema = z.object({ format: z.unknown().optional(), schemaVersion: z.unknown().optional() });

const envelopeSchema = z.object({ sha256: z.string(), signature: z.unknown().optional(), body: z.string() });

export function newRevision(): string {
  return randomUUID();
}

/**
 * Serialises a snapshot for storage. Validates it first with the schema readers apply, so a bad
 * snapshot fails here, at the one writer, rather than at every reader after it was stored.
 */
export function encodeSnapshot(data: SnapshotData): Buffer {
  const { body, sha256 } = serialise(data);
  return envelopeBytes(sha256, undefined, body);
}

/** encodeSnapshot with a signature over the body's SHA-256 in the envelope. */
export async function encodeSignedSnapshot(data: SnapshotData, signature: SnapshotSignature): Promise<Buffer> {
  const { body, sha256 } = serialise(data);
  return envelopeBytes(sha256, await signature.sign(sha256), body);
}

function serialise(data: SnapshotData): { body: string; sha256: string } {
  validateBody(data);
  const body = JSON.stringify(data);
  return { body, sha256: sha256Hex(Buffer.from(body, 'utf8')) };
}

function envelopeBytes(sha256: string, signature: string | undefined, body: string): Buffer {
  const envelope = {
    format: SNAPSHOT_FORMAT,
    schemaVersion: SNAPSHOT_SCHEMA_VERSION,
    sha256,
    ...(signature === undefined ? {} : { signature }),
    body,
  };
  return Buffer.from(JSON.stringify(envelope), 'utf8');
}

/**
 * Parses and checks stored bytes without looking at a signature (the memory store, and tools);
 * throws SnapshotDecodeError naming the first failed check.
 */
export function decodeSnapshot(bytes: Uint8Array, maxBytes: number): SnapshotData {
  return parseBody(openEnvelope(bytes, maxBytes).body);
}

/**
 * decodeSnapshot that also requires a valid signature by one of `signature`'s keys, checked
 * before the body is parsed: unsigned or forged bytes never reach the schema, let alone install.
 */
export async function decodeSignedSnapshot(bytes: Uint8Array, maxBytes: number, signature: SnapshotSignature): Promise<SnapshotData> {
  const envelope = openEnvelope(bytes, maxBytes);
  try {
    await signature.verify(envelope.signature, envelope.sha256);
  } catch (error) {
    if (error instanceof SnapshotSignatureError) throw new SnapshotDecodeError(error.reason, error.message);
    throw error;
  }
  return parseBody(envelope.body);
}

/**
 * What a store writes: the snapshot encoded, signed when the store signs, and refused when it is
 * larger than the store's limit (a reader would refuse it anyway).
 */
export async function encodeForStore(data: SnapshotData, maxBytes: number, signature: SnapshotSignature | undefined): Promise<Buffer> {
  const bytes = signature ? await encodeSignedSnapshot(data, signature) : encodeSnapshot(data);
  if (bytes.byteLength > maxBytes) throw new SnapshotDecodeError('too_large', `${bytes.byteLength} bytes exceed the limit of ${maxBytes}`);
  return bytes;
}

/**
 * What a store read, decoded: the signature required when the store signs. A rejection carries
 * the ETag the bytes were read at, so the follower does not read the same bad bytes again.
 */
export async function decodeFromStore(bytes: Uint8Array, etag: string, maxBytes: number, signature: SnapshotSignature | undefined): Promise<StoredSnapshot> {
  try {
    const data = signature ? await decodeSignedSnapshot(bytes, maxBytes, signature) : decodeSnapshot(bytes, maxBytes);
    return { data, etag };
  } catch (error) {
    if (error instanceof SnapshotDecodeError) error.etag = etag;
    throw error;
  }
}

/** The envelope checks up to and including the checksum; `sha256` is the one computed here. */
function openEnvelope(bytes: Uint8Array, maxBytes: number): { sha256: string; signature: unknown; body: string } {
  if (bytes.byteLength > maxBytes) {
    throw new SnapshotDecodeError('too_large', `${bytes.byteLength} bytes exceed the limit of ${maxBytes}`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new SnapshotDecodeError('not_utf8', 'the bytes are not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new SnapshotDecodeError('not_json', `the envelope is not JSON (${firstLine(error)})`);
  }
  // Format and version first: a later schema version may lay out the envelope differently.
  const marker = markerSchema.safeParse(parsed);
  if (!marker.success || marker.data.format !== SNAPSHOT_FORMAT) {
    throw new SnapshotDecodeError('wrong_format', `expected an object with format "${SNAPSHOT_FORMAT}"`);
  }
  if (marker.data.schemaVersion !== SNAPSHOT_SCHEMA_VERSION) {
    throw new SnapshotDecodeError(
      'wrong_schema_version',
      `schema version ${JSON.stringify(marker.data.schemaVersion)?.slice(0, 40) ?? 'missing'} is not the supported ${SNAPSHOT_SCHEMA_VERSION}`,
    );
  }
  const envelope = envelopeSchema.safeParse(parsed);
  if (!envelope.success) {
    throw new SnapshotDecodeError('wrong_format', 'the envelope needs sha256 and body strings');
  }
  const { sha256, signature, body } = envelope.data;
  const actual = sha256Hex(Buffer.from(body, 'utf8'));
  if (actual !== sha256.toLowerCase()) {
    throw new SnapshotDecodeError('checksum_mismatch', `body sha256 is ${actual}, the envelope says ${sha256.slice(0, 64)}`);
  }
  return { sha256: actual, signature, body };
}

function parseBody(body: string): SnapshotData {
  let bodyValue: unknown;
  try {
    bodyValue = JSON.parse(body);
  } catch (error) {
    throw new SnapshotDecodeError('invalid_body', `the body is not JSON (${firstLine(error)})`);
  }
  return validateBody(bodyValue);
}

function validateBody(value: unknown): SnapshotData {
  const result = snapshotDataSchema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : '(root)';
    throw new SnapshotDecodeError('invalid_body', `${where}: ${issue?.message ?? 'invalid'}`);
  }
  return result.data as SnapshotData;
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n', 1)[0]!.slice(0, 200);
}
