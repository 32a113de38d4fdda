/**
 * Blob snapshot store settings, read from app settings. Kept apart from blob-store.ts so the runtime
 * can tell whether a Blob store is configured without loading @azure/storage-blob.
 */
import type { TokenCredential } from '@azure/identity';
import { ConfigError, type ConfigProblem } from '../core/config-error.js';
import { isGuid } from '../core/guid.js';
import type { SnapshotSignature } from './snapshot-signature.js';

interface BlobSnapshotStoreCommonOptions {
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

/** The account reached with a connection string (an account key or SAS inside it). */
export interface BlobConnectionStringOptions extends BlobSnapshotStoreCommonOptions {
  /** An Azure Storage connection string; `UseDevelopmentStorage=true` means Azurite on its default ports. */
  readonly connectionString: string;
}

/** The account reached by identity (Microsoft Entra ID bearer tokens), no shared key anywhere. */
export interface BlobAccountUrlOptions extends BlobSnapshotStoreCommonOptions {
  /** The Blob service URL, `https://<account>.blob.core.windows.net`. */
  readonly accountUrl: string;
  /**
   * Client id of the user-assigned managed identity to use (ManagedIdentityCredential); without it,
   * DefaultAzureCredential (environment, workload identity, managed identity, developer sign-ins).
   */
  readonly managedIdentityClientId?: string;
  /** A ready credential; takes the place of the two above (tests, hosts with their own credential). */
  readonly credential?: TokenCredential;
}

export type BlobSnapshotStoreOptions = BlobConnectionStringOptions | BlobAccountUrlOptions;

/**
 * Reads the store settings from app settings. The account is either
 *
 * - `PDP_SNAPSHOT_ACCOUNT_URL` (by identity; with `PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID` for a
 *   user-assigned identity), or
 * - a connection string: `PDP_SNAPSHOT_CONNECTION`, else `AzureWebJobsStorage` (the Functions host's
 *   own storage account).
 *
 * The container comes from `PDP_SNAPSHOT_CONTAINER` and the blob from `PDP_SNAPSHOT_BLOB`.
 * Undefined when no account is named at all, meaning: no Blob store can be built. Contradictory
 * settings are a ConfigError listing each problem: a choice made silently here would send the
 * snapshot to an account the operator did not mean.
 */
export function blobStoreSettingsFrom(
  env: Readonly<Record<string, string | undefined>>,
): BlobSnapshotStoreOptions | undefined {
  const accountUrl = nonEmpty(env['PDP_SNAPSHOT_ACCOUNT_URL']);
  const clientId = nonEmpty(env['PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID']);
  const connection = nonEmpty(env['PDP_SNAPSHOT_CONNECTION']);
  const container = nonEmpty(env['PDP_SNAPSHOT_CONTAINER']);
  const blobName = nonEmpty(env['PDP_SNAPSHOT_BLOB']);
  const common = {
    ...(container === undefined ? {} : { container }),
    ...(blobName === undefined ? {} : { blobName }),
  };
  const problems: ConfigProblem[] = [];
  if (accountUrl !== undefined && connection !== undefined)
    problems.push({
      path: 'PDP_SNAPSHOT_ACCOUNT_URL',
      message: 'set either PDP_SNAPSHOT_ACCOUNT_URL (by identity) or PDP_SNAPSHOT_CONNECTION (connection string), not both',
    });
  if (clientId !== undefined && accountUrl === undefined)
    problems.push({
      path: 'PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID',
      message: 'is used only with PDP_SNAPSHOT_ACCOUNT_URL, which is not set: set it to the Blob service URL (https://<account>.blob.core.windows.net)',
    });
  if (accountUrl !== undefined) {
    const problem = accountUrlProblem(accountUrl);
    if (problem !== undefined) problems.push({ path: 'PDP_SNAPSHOT_ACCOUNT_URL', message: problem });
  }
  if (clientId !== undefined && !isGuid(clientId))
    problems.push({ path: 'PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID', message: 'is not a GUID (the identity\'s client id, not its name or resource id)' });
  if (problems.length > 0) throw new ConfigError(problems, 'app settings');

  if (accountUrl !== undefined)
    return { accountUrl, ...(clientId === undefined ? {} : { managedIdentityClientId: clientId }), ...common };
  const connectionString = connection ?? nonEmpty(env['AzureWebJobsStorage']);
  if (connectionString === undefined) return undefined;
  return { connectionString, ...common };
}

/**
 * What to tell an operator whose blob store names no account. Functions' identity-based host
 * storage (`AzureWebJobsStorage__accountName`) is not taken over silently: the snapshot store says
 * where it writes.
 */
export function missingAccountMessage(env: Readonly<Record<string, string | undefined>>): string {
  const hostAccount = nonEmpty(env['AzureWebJobsStorage__accountName']);
  const base = 'PDP_SNAPSHOT_STORE=blob needs PDP_SNAPSHOT_ACCOUNT_URL (by identity), PDP_SNAPSHOT_CONNECTION or AzureWebJobsStorage (connection strings)';
  return hostAccount === undefined
    ? base
    : `${base}; the host storage is AzureWebJobsStorage__accountName=${hostAccount}: to use it, set PDP_SNAPSHOT_ACCOUNT_URL=https://${hostAccount}.blob.core.windows.net`;
}

/**
 * With the memory store, the by-identity settings would do nothing: an operator who set them meant
 * a shared snapshot, so start-up says so instead of running each instance on its own.
 */
export function assertNoBlobIdentitySettings(env: Readonly<Record<string, string | undefined>>): void {
  const set = ['PDP_SNAPSHOT_ACCOUNT_URL', 'PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID'].filter((name) => nonEmpty(env[name]) !== undefined);
  if (set.length > 0)
    throw new ConfigError(
      set.map((name) => ({ path: name, message: 'is set but PDP_SNAPSHOT_STORE is not blob: set PDP_SNAPSHOT_STORE=blob, or remove it' })),
      'app settings',
    );
}

function accountUrlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'is not a URL (expected https://<account>.blob.core.windows.net)';
  }
  // Storage authorizes Microsoft Entra ID bearer tokens on HTTPS requests only
  // (https://learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory),
  // and a token sent over plain HTTP would be readable on the wire.
  if (url.protocol !== 'https:') return `must be https (found ${url.protocol}); a bearer token is never sent over plain HTTP`;
  // A SAS in the URL is a shared-key-derived secret: use PDP_SNAPSHOT_CONNECTION for that.
  if (url.search !== '' || url.username !== '' || url.password !== '')
    return 'must not carry a query string (a SAS) or credentials; with a SAS or key use PDP_SNAPSHOT_CONNECTION';
  return undefined;
}

function nonEmpty(value: string | undefined): string | undefined {
  const trimmed = value?.trim();
  return trimmed ? trimmed : undefined;
}
