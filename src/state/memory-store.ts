/**
 * An in-process SnapshotStore. It keeps the encoded bytes and decodes them on every full read, so
 * validation, size limits and If-Match / If-None-Match behave as they do against Blob Storage.
 */
import { decodeFromStore, DEFAULT_SNAPSHOT_MAX_BYTES, encodeForStore } from './codec.js';
import type { SnapshotSignature } from './snapshot-signature.js';
import { SnapshotConflictError } from './types.js';
import type { SnapshotData, SnapshotStore, StoredSnapshot } from './types.js';

export interface MemorySnapshotStoreOptions {
  /** Largest snapshot accepted on write and on read (default 256 MiB). */
  readonly maxBytes?: number;
  /** Signs what is written and requires a valid signature on what is read, as the Blob store can. */
  readonly signature?: SnapshotSignature;
}

export class MemorySnapshotStore implements SnapshotStore {
  readonly kind = 'memory' as const;
  readonly #maxBytes: number;
  readonly #signature: SnapshotSignature | undefined;
  #version = 0;
  #current: { readonly bytes: Buffer; readonly etag: string } | undefined;

  constructor(options: MemorySnapshotStoreOptions = {}) {
    this.#maxBytes = options.maxBytes ?? DEFAULT_SNAPSHOT_MAX_BYTES;
    this.#signature = options.signature;
  }

  async read(ifNoneMatch?: string): Promise<StoredSnapshot | 'not-modified' | undefined> {
    const current = this.#current;
    if (current === undefined) return undefined;
    if (ifNoneMatch !== undefined && ifNoneMatch === current.etag) return 'not-modified';
    return decodeFromStore(current.bytes, current.etag, this.#maxBytes, this.#signature);
  }

  async write(data: SnapshotData, ifMatch: string | null): Promise<{ etag: string }> {
    const bytes = await encodeForStore(data, this.#maxBytes, this.#signature);
    // Same preconditions as Put Blob: If-None-Match: * fails when the blob exists, If-Match fails
    // when it is missing or has another ETag.
    const current = this.#current;
    if (ifMatch === null ? current !== undefined : current?.etag !== ifMatch) {
      throw new SnapshotConflictError();
    }
    return this.#put(bytes);
  }

  /**
   * Stores bytes as they are, unconditionally and unvalidated, as a raw upload to the blob would:
   * for tests of what readers do with corrupted state.
   */
  writeRawBytes(bytes: Uint8Array): { etag: string } {
    return this.#put(Buffer.from(bytes));
  }

  #put(bytes: Buffer): { etag: string } {
    this.#version += 1;
    const etag = `"${this.#version}"`;
    this.#current = { bytes, etag };
    return { etag };
  }
}
