/**
 * The serialisable state the hot path reads: per-issuer metadata and keys, and the expanded group
 * index. A refresh produces a new SnapshotData; stores persist it; applying it turns it into
 * lookup structures once (IssuerRegistry.load imports the keys, GroupIndex maps group -> members), so a decision only looks up.
 */
import type { GroupRecord, IssuerRecord } from '../core/records.js';
import type { RevocationEntry } from '../core/revocations.js';

export type { GroupRecord, IssuerRecord };

export const SNAPSHOT_SCHEMA_VERSION = 1;

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
  /**
   * The deny-list (src/state/deny-list.ts): revoked tokens, sessions and object ids. Absent means
   * empty. Covered by the snapshot's checksum and signature like everything else in the body.
   */
  readonly revocations?: readonly RevocationEntry[];
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
