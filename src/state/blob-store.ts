/**
 * A SnapshotStore on one Azure Blob Storage block blob, shared by every instance of a scaled-out
 * app. Put Blob and Put Block List replace a blob atomically, and a download is one GET against
 * one ETag, so a reader sees either the old or the new snapshot, never a mix. Writers use
 * If-Match / If-None-Match: * so two refreshes cannot overwrite each other unnoticed.
 */
import type { Readable } from 'node:stream';
import { BlobServiceClient } from '@azure/storage-blob';
import type { BlockBlobClient, ContainerClient } from '@azure/storage-blob';
import { decodeFromStore, DEFAULT_SNAPSHOT_MAX_BYTES, encodeForStore, SnapshotDecodeError } from './codec.js';
import type { SnapshotSignature } from './snapshot-signature.js';
import { snapshotStoreCredential } from './blob-credential.js';
import { SnapshotConflictError } from './types.js';
import type { SnapshotData, SnapshotStore, StoredSnapshot } from './types.js';

export const DEFAULT_SNAPSHOT_CONTAINER = 'fhir-pdp';
export const DEFAULT_SNAPSHOT_BLOB = 'snapshot.json';
export const DEFAULT_SNAPSHOT_TIMEOUT_MS = 60_000;


/** Blob Storage could not be reached or answered with an error other than a precondition failure. */
export class SnapshotStoreUnavailableError extends Error {
  readonly code = 'snapshot_store_unavailable' as const;
  readonly statusCode: number | undefined;
  constructor(message: string, statusCode: number | undefined, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SnapshotStoreUnavailableError';
    this.statusCode = statusCode;
  }
}

export { blobStoreSettingsFrom, type BlobSnapshotStoreOptions } from './blob-settings.js';
import type { BlobSnapshotStoreOptions } from './blob-settings.js';

export class BlobSnapshotStore implements SnapshotStore {
  readonly kind = 'blob' as const;
  readonly #container: ContainerClient;
  readonly #blob: BlockBlobClient;
  readonly #maxBytes: number;
  readonly #timeoutMs: number;
  readonly #signature: SnapshotSignature | undefined;
  #containerReady: Promise<void> | undefined;

  constructor(options: BlobSnapshotStoreOptions) {
    const container = options.container ?? DEFAULT_SNAPSHOT_CONTAINER;
    const blobName = options.blobName ?? DEFAULT_SNAPSHOT_BLOB;
    this.#maxBytes = options.maxBytes ?? DEFAULT_SNAPSHOT_MAX_BYTES;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_SNAPSHOT_TIMEOUT_MS;
    this.#signature = options.signature;
    // https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata
    // "Container names must be from 3 through 63 characters long", lowercase letters, numbers and
    // single hyphens between them.
    if (!/^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$/.test(container)) {
      throw new TypeError(`PDP_SNAPSHOT_CONTAINER: "${container}" is not a valid Blob Storage container name`);
    }
    // "A blob name must be at least one character long and cannot be more than 1,024 characters long"
    if (blobName.length < 1 || blobName.length > 1024) {
      throw new TypeError('PDP_SNAPSHOT_BLOB: a blob name has 1 to 1024 characters');
    }
    if (!Number.isSafeInteger(this.#maxBytes) || this.#maxBytes <= 0) {
      throw new TypeError('maxBytes must be a positive integer');
    }
    if (!Number.isFinite(this.#timeoutMs) || this.#timeoutMs <= 0) {
      throw new TypeError('timeoutMs must be a positive number');
    }
    const pipeline = {
      retryOptions: { maxTries: 3, tryTimeoutInMs: this.#timeoutMs, retryDelayInMs: 200, maxRetryDelayInMs: 2_000 },
    };
    let service: BlobServiceClient;
    if ('accountUrl' in options) {
      // By identity: Microsoft Entra ID tokens for https://storage.azure.com, no key in the app.
      service = new BlobServiceClient(options.accountUrl, options.credential ?? snapshotStoreCredential(options.managedIdentityClientId), pipeline);
    } else {
      try {
        service = BlobServiceClient.fromConnectionString(options.connectionString, pipeline);
      } catch {
        // The SDK's message may quote the connection string, which holds the account key.
        throw new TypeError('The snapshot store connection string is not a valid Azure Storage connection string');
      }
    }
    this.#container = service.getContainerClient(container);
    this.#blob = this.#container.getBlockBlobClient(blobName);
  }

  async read(ifNoneMatch?: string): Promise<StoredSnapshot | 'not-modified' | undefined> {
    const abortSignal = AbortSignal.timeout(this.#timeoutMs);
    let response: Awaited<ReturnType<BlockBlobClient['download']>>;
    try {
      response = await this.#blob.download(0, undefined, {
        abortSignal,
        ...(ifNoneMatch ? { conditions: { ifNoneMatch } } : {}),
      });
    } catch (error) {
      const status = statusCodeOf(error);
      if (status === 304) return 'not-modified';
      if (status === 404) return undefined;
      throw this.#unavailable('read', error);
    }
    const { etag, contentLength } = response;
    const body = response.readableStreamBody as Readable | undefined;
    if (etag === undefined || contentLength === undefined || body === undefined) {
      body?.destroy();
      throw new SnapshotStoreUnavailableError('Snapshot store read failed: the answer had no ETag, length or body', undefined);
    }
    if (contentLength > this.#maxBytes) {
      body.destroy();
      throw new SnapshotDecodeError('too_large', `${contentLength} bytes exceed the limit of ${this.#maxBytes}`, etag);
    }
    const bytes = await this.#readBody(body, contentLength, abortSignal, etag);
    return decodeFromStore(bytes, etag, this.#maxBytes, this.#signature);
  }

  async write(data: SnapshotData, ifMatch: string | null): Promise<{ etag: string }> {
    const bytes = await encodeForStore(data, this.#maxBytes, this.#signature);
    const abortSignal = AbortSignal.timeout(this.#timeoutMs);
    await this.#ensureContainer(abortSignal);
    try {
      const response = await this.#blob.uploadData(bytes, {
        abortSignal,
        conditions: ifMatch === null ? { ifNoneMatch: '*' } : { ifMatch },
        blobHTTPHeaders: { blobContentType: 'application/json' },
      });
      if (response.etag === undefined) {
        throw new SnapshotStoreUnavailableError('Snapshot store write failed: the answer had no ETag', undefined);
      }
      return { etag: response.etag };
    } catch (error) {
      if (error instanceof SnapshotStoreUnavailableError) throw error;
      const status = statusCodeOf(error);
      // 412 ConditionNotMet for If-Match; 409 BlobAlreadyExists for If-None-Match: * (and a lease
      // held by someone else): in each case another writer owns the current state.
      if (status === 412 || status === 409) throw new SnapshotConflictError();
      if (status === 404) this.#containerReady = undefined;
      throw this.#unavailable('write', error);
    }
  }

  #ensureContainer(abortSignal: AbortSignal): Promise<void> {
    this.#containerReady ??= this.#container.createIfNotExists({ abortSignal }).then(
      () => undefined,
      (error: unknown) => {
        // A SAS scoped to the container may not create it; the upload then says whether it exists.
        if (statusCodeOf(error) === 403) return;
        this.#containerReady = undefined;
        throw this.#unavailable('create container', error);
      },
    );
    return this.#containerReady;
  }

  async #readBody(body: Readable, contentLength: number, abortSignal: AbortSignal, etag: string): Promise<Buffer> {
    const onAbort = (): void => {
      body.destroy(new Error('timed out'));
    };
    abortSignal.addEventListener('abort', onAbort, { once: true });
    const chunks: Buffer[] = [];
    let received = 0;
    try {
      for await (const chunk of body) {
        const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
        received += buffer.byteLength;
        if (received > contentLength) {
          body.destroy();
          break;
        }
        chunks.push(buffer);
      }
    } catch (error) {
      throw this.#unavailable('read', error);
    } finally {
      abortSignal.removeEventListener('abort', onAbort);
    }
    if (received !== contentLength) {
      throw new SnapshotDecodeError('truncated', `received ${received} bytes of the ${contentLength} announced`, etag);
    }
    return Buffer.concat(chunks, received);
  }

  #unavailable(operation: string, error: unknown): SnapshotStoreUnavailableError {
    const status = statusCodeOf(error);
    return new SnapshotStoreUnavailableError(
      `Snapshot store ${operation} failed: ${describe(error, this.#timeoutMs)}`,
      status,
      { cause: error },
    );
  }
}

function statusCodeOf(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const status = (error as { statusCode?: unknown }).statusCode;
  return typeof status === 'number' ? status : undefined;
}

/** A short description from status and error code only: SDK messages can quote request URLs (SAS). */
function describe(error: unknown, timeoutMs: number): string {
  if (typeof error !== 'object' || error === null) return 'unknown error';
  const { name, code, statusCode } = error as { name?: unknown; code?: unknown; statusCode?: unknown };
  if (name === 'AbortError' || name === 'TimeoutError') return `timed out after ${timeoutMs} ms`;
  // @azure/identity's errors: the identity got no token, so Storage was never asked. Their
  // messages are not quoted: they can be long and name the token endpoint's answer.
  if (name === 'CredentialUnavailableError' || name === 'AuthenticationError' || name === 'AggregateAuthenticationError') {
    return `no token for Blob Storage (${name}${typeof statusCode === 'number' ? ` HTTP ${statusCode}` : ''}); check the managed identity (PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID)`;
  }
  const parts: string[] = [];
  if (typeof statusCode === 'number') parts.push(`HTTP ${statusCode}`);
  if (typeof code === 'string' && /^[\w.-]{1,64}$/.test(code)) parts.push(code);
  if (parts.length === 0 && error instanceof Error && error.message === 'timed out') {
    return `timed out after ${timeoutMs} ms`;
  }
  return parts.length > 0 ? parts.join(' ') : typeof name === 'string' ? name : 'unknown error';
}
