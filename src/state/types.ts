/**
 * The serialisable state the hot path reads: per-issuer metadata and keys, and the expanded group
 * index. A refresh produces a new SnapshotData; stores persist it; src/state/compile.ts turns it into
 * lookup structures (imported keys, Map<group, Set<member>>) once, so a decision only looks up.
 */
import type { JWK } from 'jose';

export const SNAPSHOT_SCHEMA_VERSION = 1;

/** One issuer as published by one discovery document of a configured authority. */
export interface IssuerRecord {
  /** The configured authority this issuer belongs to (normalised, no trailing slash). */
  readonly authority: string;
  /** Which discovery document produced it: the authority's own or its `/v2.0` one. */
  readonly discoveryUrl: string;
  /** The `issuer` of the discovery document; a token's `iss` must equal it exactly. */
  readonly issuer: string;
  readonly jwksUri: string;
  /** The document's `authorization_endpoint` and `token_endpoint`, for SMART discovery; absent when not https. */
  readonly authorizationEndpoint?: string;
  readonly tokenEndpoint?: string;
  /** Asymmetric algorithms from `id_token_signing_alg_values_supported` (never `none`, never HS*). */
  readonly algorithms: readonly string[];
  /** Usable verification keys only (oct, use=enc and RSA < 2048 bits already dropped). */
  readonly keys: readonly JWK[];
  /** When these keys were fetched (ms since epoch). Keys older than maxStale are not used. */
  readonly fetchedAt: number;
}

export interface GroupRecord {
  /** Transitive member object ids (users, service principals, nested groups). */
  readonly members: readonly string[];
  readonly fetchedAt: number;
}

export interface RefreshOutcome {
  readonly startedAt: number;
  readonly finishedAt: number;
  readonly outcome: 'ok' | 'partial' | 'failed';
  /** What failed and was kept from the previous snapshot, one line each; never a secret. */
  readonly problems: readonly string[];
}

export interface SnapshotData {
  readonly schemaVersion: typeof SNAPSHOT_SCHEMA_VERSION;
  /** Opaque id of this snapshot (changes on every write). */
  readonly revision: string;
  readonly createdAt: number;
  readonly issuers: readonly IssuerRecord[];
  /** Allow-listed group id -> expansion. */
  readonly groups: Readonly<Record<string, GroupRecord>>;
  readonly lastRefresh?: RefreshOutcome;
}

/** A stored snapshot with the store's version tag (an ETag for Blob, a counter in memory). */
export interface StoredSnapshot {
  readonly data: SnapshotData;
  readonly etag: string;
}

export interface SnapshotStore {
  readonly kind: 'memory' | 'blob';
  /**
   * Reads the current snapshot. With `ifNoneMatch` equal to the stored etag, resolves
   * 'not-modified' without transferring it. Resolves undefined when nothing is stored yet.
   * Rejects with SnapshotRejectedError when the stored bytes fail validation (bad JSON, wrong
   * schema version, checksum mismatch): the caller keeps its last good snapshot.
   */
  read(ifNoneMatch?: string): Promise<StoredSnapshot | 'not-modified' | undefined>;
  /**
   * Writes a snapshot with optimistic concurrency: `ifMatch` is the etag the writer based its work
   * on, or null to create only when nothing exists. Rejects with SnapshotConflictError when another
   * writer got there first; nothing is half-written in either case.
   */
  write(data: SnapshotData, ifMatch: string | null): Promise<{ etag: string }>;
}

export class SnapshotConflictError extends Error {
  readonly code = 'snapshot_conflict' as const;
  constructor(message = 'The snapshot was changed by another writer.') {
    super(message);
    this.name = 'SnapshotConflictError';
  }
}

export class SnapshotRejectedError extends Error {
  readonly code = 'snapshot_rejected' as const;
  constructor(message: string) {
    super(message);
    this.name = 'SnapshotRejectedError';
  }
}
