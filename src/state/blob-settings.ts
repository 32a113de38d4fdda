/**
 * Blob snapshot store settings, read from app settings. Kept apart from blob-store.ts so the runtime
 * can tell whether a Blob store is configured without loading @azure/storage-blob.
 */
import type { SnapshotSignature } from './snapshot-signature.js';

export interface BlobSnapshotStoreOptions {
  /** An Azure Storage connection string; `UseDevelopmentStorage=true` means Azurite on its default ports. */
  readonly connectionString: string;
  /** Container holding the snapshot (default `fhir-pdp`); created on first write when missing. */
  readonly container?: string;
  /** Blob name of the snapshot (default `snapshot.json`). */
  readonly blobName?: string;
  /** Largest snapshot written or read (default 256 MiB); a larger blob is rejected unread. */
  readonly maxBytes?: number;
  /** Deadline for one read or write including retries (default 60 s). */
  readonly timeoutMs?: number;
  /** Signs what is written and requires a valid signature on what is read (snapshot-signature.ts). */
  readonly signature?: SnapshotSignature;
}

/**
 * Reads the store settings from app settings: the connection from `PDP_SNAPSHOT_CONNECTION`, else
 * `AzureWebJobsStorage` (the Functions host's own storage account); the container from
 * `PDP_SNAPSHOT_CONTAINER` and the blob from `PDP_SNAPSHOT_BLOB`. Undefined when there is no
 * connection string, meaning: use the memory store.
 */
export function blobStoreSettingsFrom(
  env: Readonly<Record<string, string | undefined>>,
): BlobSnapshotStoreOptions | undefined {
  const connectionString = nonEmpty(env['PDP_SNAPSHOT_CONNECTION']) ?? nonEmpty(env['AzureWebJobsStorage']);
  if (connectionString === undefined) return undefined;
  const container = nonEmpty(env['PDP_SNAPSHOT_CONTAINER']);
  const blobName = nonEmpty(env['PDP_SNAPSHOT_BLOB']);
  return {
    connectionString,
    ...(container === undefined ? {} : { container }),
    ...(blobName === undefined ? {} : { blobName }),
  };
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}
