/**
 * Keeps an instance's snapshot in step with a shared store: every `pollMs` it reads conditionally
 * (If-None-Match with the ETag it holds), hands a changed snapshot to `onSnapshot`, and on any
 * failure keeps the last good one and reports why in `status()` for the health endpoint.
 */
import { SnapshotRejectedError } from './types.js';
import type { SnapshotData, SnapshotStore } from './types.js';

export interface SnapshotFollowerOptions {
  readonly store: SnapshotStore;
  /** Interval between the end of one poll and the start of the next. */
  readonly pollMs: number;
  /**
   * Swaps a new snapshot in. If it throws, the snapshot is treated as rejected: the previous one
   * stays, and the same ETag is not applied again.
   */
  readonly onSnapshot: (data: SnapshotData, etag: string) => void;
  /**
   * Told once per stored version that is rejected (its checks failed, or onSnapshot threw), for
   * the log; the same bytes are not downloaded again, so this does not repeat every poll.
   */
  readonly onRejected?: (error: SnapshotFollowerError, etag: string | undefined) => void;
  /** Clock for the timestamps in status() (default Date.now). */
  readonly now?: () => number;
  /** Told what each poll did (metrics). */
  readonly onPoll?: (outcome: SnapshotPollOutcome) => void;
}

/** What one poll did. */
export type SnapshotPollOutcome = 'changed' | 'not-modified' | 'empty' | 'rejected' | 'failed';

export interface SnapshotFollowerError {
  readonly code: string;
  readonly message: string;
  readonly at: number;
}

export interface SnapshotFollowerStatus {
  /** ETag of the snapshot in use; undefined until one was applied. */
  readonly etag: string | undefined;
  readonly revision: string | undefined;
  readonly lastPollAt: number | undefined;
  /** Why the latest poll did not leave the instance on the store's current snapshot. */
  readonly lastError?: SnapshotFollowerError;
}

const MAX_ERROR_MESSAGE = 300;

export class SnapshotFollower {
  readonly #store: SnapshotStore;
  readonly #pollMs: number;
  readonly #onSnapshot: (data: SnapshotData, etag: string) => void;
  readonly #onRejected: ((error: SnapshotFollowerError, etag: string | undefined) => void) | undefined;
  readonly #now: () => number;
  readonly #onPoll: ((outcome: SnapshotPollOutcome) => void) | undefined;
  #etag: string | undefined;
  #revision: string | undefined;
  /** ETag of stored bytes that were rejected, polled against so they are not downloaded again. */
  #rejectedEtag: string | undefined;
  #lastPollAt: number | undefined;
  #lastError: SnapshotFollowerError | undefined;
  #inFlight: Promise<SnapshotPollOutcome> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running = false;

  constructor(options: SnapshotFollowerOptions) {
    if (!Number.isFinite(options.pollMs) || options.pollMs <= 0) {
      throw new TypeError('pollMs must be a positive number');
    }
    this.#store = options.store;
    this.#pollMs = options.pollMs;
    this.#onSnapshot = options.onSnapshot;
    this.#onRejected = options.onRejected;
    this.#now = options.now ?? Date.now;
    this.#onPoll = options.onPoll;
  }

  /** Polls every pollMs from now on, the first time pollMs from now; call pollNow() to load at once. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#schedule();
  }

  stop(): void {
    this.#running = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Polls once; joins the poll in flight if there is one. Never rejects: failures go to status(). */
  pollNow(): Promise<SnapshotPollOutcome> {
    if (this.#inFlight) return this.#inFlight;
    this.#inFlight = this.#poll().finally(() => {
      this.#inFlight = undefined;
    });
    // Once per poll, not per caller that joined it.
    const onPoll = this.#onPoll;
    if (onPoll) void this.#inFlight.then((outcome) => onPoll(outcome));
    return this.#inFlight;
  }

  status(): SnapshotFollowerStatus {
    return {
      etag: this.#etag,
      revision: this.#revision,
      lastPollAt: this.#lastPollAt,
      ...(this.#lastError === undefined ? {} : { lastError: this.#lastError }),
    };
  }

  #schedule(): void {
    if (!this.#running) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.pollNow().then(() => this.#schedule());
    }, this.#pollMs);
    this.#timer.unref();
  }

  async #poll(): Promise<SnapshotPollOutcome> {
    let result: Awaited<ReturnType<SnapshotStore['read']>>;
    try {
      result = await this.#store.read(this.#rejectedEtag ?? this.#etag);
    } catch (error) {
      this.#lastPollAt = this.#now();
      if (error instanceof SnapshotRejectedError) {
        const etag = (error as { etag?: unknown }).etag;
        if (typeof etag === 'string') this.#rejectedEtag = etag;
        this.#fail(error.code, error);
        this.#onRejected?.(this.#lastError!, typeof etag === 'string' ? etag : undefined);
        return 'rejected';
      }
      this.#fail(codeOf(error) ?? 'snapshot_store_unavailable', error);
      return 'failed';
    }
    this.#lastPollAt = this.#now();

    if (result === 'not-modified') {
      // Unchanged rejected bytes keep their error; unchanged good ones mean the store is healthy.
      if (this.#rejectedEtag === undefined) this.#lastError = undefined;
      return 'not-modified';
    }
    this.#rejectedEtag = undefined;
    if (result === undefined) {
      if (this.#etag === undefined) {
        this.#lastError = undefined;
      } else {
        this.#fail('snapshot_missing', new Error('The stored snapshot disappeared; the last one read stays in use.'));
      }
      return 'empty';
    }
    if (result.etag === this.#etag) {
      this.#lastError = undefined;
      return 'not-modified';
    }
    try {
      this.#onSnapshot(result.data, result.etag);
    } catch (error) {
      this.#rejectedEtag = result.etag;
      this.#fail('snapshot_apply_failed', error);
      this.#onRejected?.(this.#lastError!, result.etag);
      return 'rejected';
    }
    this.#etag = result.etag;
    this.#revision = result.data.revision;
    this.#lastError = undefined;
    return 'changed';
  }

  #fail(code: string, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    this.#lastError = { code, message: message.slice(0, MAX_ERROR_MESSAGE), at: this.#now() };
  }
}

function codeOf(error: unknown): string | undefined {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && /^[a-z][a-z0-9_]{0,63}$/.test(code) ? code : undefined;
}
