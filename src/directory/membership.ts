/**
 * Group membership from Microsoft Graph, for the case the token's `groups` claim and the snapshot's
 * group index cannot answer (a principal outside the index, or the groups overage:
 * `_claim_names.groups` / `hasgroups`). Graph's `checkMemberGroups` is transitive, so nested groups
 * and service principals need nothing more here.
 *
 * Caching (docs/decision-contract.md, `directory_unavailable`): answers are kept per object id and
 * asked group set, positive and negative answers with their own TTLs, at most `maxEntries` (least
 * recently used first out). A lookup that fails or runs out of budget falls back to a cached answer
 * younger than `maxStaleMs`; without one it rejects with DirectoryUnavailableError (503).
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from '@microsoft/microsoft-graph-client';
import {
  DirectoryUnavailableError,
  type GroupMembershipResolver,
  type MembershipAnswer,
  type MembershipQuery,
} from './types.js';
import {
  describeGraphFailure,
  GRAPH_RETRYABLE_STATUSES,
  retryAfterFromHeaders,
  withoutSdkRetries,
  type GraphFailure,
} from './graph-client.js';
import { isGuid } from '../core/guid.js';
import { isFresh } from '../core/staleness.js';

/** Graph: "You can check up to a maximum of 20 groups per request." (directoryObject: checkMemberGroups) */
const GROUPS_PER_CHECK = 20;
/** Graph JSON batching: a `$batch` request holds at most 20 requests. */
const REQUESTS_PER_BATCH = 20;
/** Attempts per request; the budget is the real bound, this only stops a Retry-After: 0 loop. */
const MAX_ATTEMPTS = 4;
/** Wait before retrying a throttled answer that carried no Retry-After. */
const DEFAULT_RETRY_MS = 200;

export interface GraphMembershipResolverOptions {
  readonly client: Client;
  /** How long a non-empty answer is served from cache without asking Graph. Default 5 min. */
  readonly positiveTtlMs?: number;
  /** How long an empty answer is served from cache. Default 60 s. */
  readonly negativeTtlMs?: number;
  /** Most cached answers kept (object id × group set). Default 10 000. */
  readonly maxEntries?: number;
  /** Oldest cached answer used when Graph cannot answer. Default 24 h. */
  readonly maxStaleMs?: number;
  /** Wall clock (ms since epoch) for cache ages; budgets are measured on a monotonic clock. */
  readonly clock?: () => number;
  /** One call per HTTP exchange with Graph (graph_call_ok / graph_call_failed). */
  readonly onGraphCall?: (outcome: 'ok' | 'failed') => void;
}

interface CachedAnswer {
  readonly memberOf: ReadonlySet<string>;
  readonly fetchedAt: number;
  readonly freshUntil: number;
}

/** The object id names nothing in the directory: it is a member of no group. */
const NOT_FOUND = Symbol('not-found');
type ChunkAnswer = ReadonlySet<string> | typeof NOT_FOUND;

interface BatchStep {
  readonly id: string;
  readonly groupIds: readonly string[];
}

export class GraphMembershipResolver implements GroupMembershipResolver {
  readonly #client: Client;
  readonly #positiveTtlMs: number;
  readonly #negativeTtlMs: number;
  readonly #maxEntries: number;
  readonly #maxStaleMs: number;
  readonly #clock: () => number;
  readonly #onGraphCall: (outcome: 'ok' | 'failed') => void;
  readonly #cache = new Map<string, CachedAnswer>();
  readonly #inFlight = new Map<string, Promise<CachedAnswer>>();
  /** Monotonic time before which Graph asked us (Retry-After on a 429) not to call again. */
  #throttledUntil = 0;

  constructor(options: GraphMembershipResolverOptions) {
    this.#client = options.client;
    this.#positiveTtlMs = options.positiveTtlMs ?? 5 * 60_000;
    this.#negativeTtlMs = options.negativeTtlMs ?? 60_000;
    this.#maxEntries = Math.max(1, options.maxEntries ?? 10_000);
    this.#maxStaleMs = options.maxStaleMs ?? 24 * 60 * 60_000;
    this.#clock = options.clock ?? Date.now;
    this.#onGraphCall = options.onGraphCall ?? (() => {});
  }

  async checkMemberGroups(query: MembershipQuery): Promise<MembershipAnswer> {
    const objectId = query.objectId.toLowerCase();
    // A group id that is not a GUID names no group, so nobody is its member; it is not sent.
    const groupIds = [...new Set(query.groupIds.map((id) => id.toLowerCase()).filter(isGuid))].sort();
    if (!isGuid(objectId) || groupIds.length === 0) {
      // Entra object ids are GUIDs: anything else is a member of nothing, and never enters a URL.
      return { memberOf: new Set(), source: 'graph', fetchedAt: this.#clock() };
    }
    const key = `${objectId}|${groupIds.join(',')}`;
    const cached = this.#cache.get(key);
    if (cached !== undefined && this.#clock() < cached.freshUntil) {
      this.#touch(key, cached);
      return { memberOf: cached.memberOf, source: 'cache', fetchedAt: cached.fetchedAt };
    }

    const deadline = performance.now() + Math.max(0, query.budgetMs);
    let flight = this.#inFlight.get(key);
    if (flight === undefined) {
      flight = this.#lookup(objectId, groupIds, deadline)
        .then((answer) => {
          this.#store(key, answer);
          return answer;
        })
        .finally(() => this.#inFlight.delete(key));
      this.#inFlight.set(key, flight);
    }
    try {
      // A caller that joins a lookup started by another keeps its own budget.
      const answer = await withinDeadline(flight, deadline);
      return { memberOf: answer.memberOf, source: 'graph', fetchedAt: answer.fetchedAt };
    } catch (error) {
      const stale = this.#cache.get(key);
      if (stale !== undefined && isFresh(stale.fetchedAt, this.#clock(), this.#maxStaleMs)) {
        return { memberOf: stale.memberOf, source: 'cache', fetchedAt: stale.fetchedAt };
      }
      throw error instanceof DirectoryUnavailableError
        ? error
        : new DirectoryUnavailableError('Group membership could not be read from Microsoft Graph.');
    }
  }

  async #lookup(objectId: string, groupIds: readonly string[], deadline: number): Promise<CachedAnswer> {
    const chunks = chunk(groupIds, GROUPS_PER_CHECK);
    const answers =
      chunks.length === 1
        ? [await this.#checkOne(objectId, chunks[0] as string[], deadline)]
        : await this.#checkBatched(objectId, chunks, deadline);
    const memberOf = new Set<string>();
    if (!answers.includes(NOT_FOUND)) {
      for (const answer of answers) for (const id of answer as ReadonlySet<string>) memberOf.add(id);
    }
    const fetchedAt = this.#clock();
    const ttl = memberOf.size > 0 ? this.#positiveTtlMs : this.#negativeTtlMs;
    return { memberOf, fetchedAt, freshUntil: fetchedAt + ttl };
  }

  /** One chunk: POST /directoryObjects/{id}/checkMemberGroups {"groupIds": [...]}. */
  async #checkOne(objectId: string, groupIds: readonly string[], deadline: number): Promise<ChunkAnswer> {
    for (let attempt = 1; ; attempt += 1) {
      await this.#waitOutThrottle(deadline);
      try {
        const body: unknown = await this.#client
          .api(`/directoryObjects/${objectId}/checkMemberGroups`)
          .middlewareOptions(withoutSdkRetries())
          .option('signal', AbortSignal.timeout(remaining(deadline)))
          .post({ groupIds });
        const memberOf = memberIdsFrom(body, groupIds);
        if (memberOf === undefined) {
          this.#onGraphCall('failed');
          throw unavailable({ message: 'Graph checkMemberGroups answer has no value array' });
        }
        this.#onGraphCall('ok');
        return memberOf;
      } catch (error) {
        if (error instanceof DirectoryUnavailableError) throw error;
        const failure = describeGraphFailure(error);
        if (isResourceNotFound(failure)) {
          this.#onGraphCall('ok');
          return NOT_FOUND;
        }
        this.#onGraphCall('failed');
        if (attempt >= MAX_ATTEMPTS || !isRetryable(failure)) throw unavailable(failure);
        await this.#backOff(failure, deadline);
      }
    }
  }

  /** More than one chunk: POST /$batch with up to 20 checkMemberGroups steps per call. */
  async #checkBatched(objectId: string, chunks: readonly string[][], deadline: number): Promise<ChunkAnswer[]> {
    const steps: BatchStep[] = chunks.map((groupIds, index) => ({ id: String(index + 1), groupIds }));
    const perCall = chunk(steps, REQUESTS_PER_BATCH);
    const results = await Promise.all(perCall.map((calls) => this.#runBatch(objectId, calls, deadline)));
    return results.flat();
  }

  async #runBatch(
    objectId: string,
    steps: readonly BatchStep[],
    deadline: number,
  ): Promise<ChunkAnswer[]> {
    const answers = new Map<string, ChunkAnswer>();
    let pending = steps;
    for (let attempt = 1; ; attempt += 1) {
      await this.#waitOutThrottle(deadline);
      let body: unknown;
      try {
        body = await this.#client
          .api('/$batch')
          .middlewareOptions(withoutSdkRetries())
          .option('signal', AbortSignal.timeout(remaining(deadline)))
          .post({
            requests: pending.map((step) => ({
              id: step.id,
              method: 'POST',
              url: `/directoryObjects/${objectId}/checkMemberGroups`,
              headers: { 'Content-Type': 'application/json' },
              body: { groupIds: step.groupIds },
            })),
          });
      } catch (error) {
        const failure = describeGraphFailure(error);
        this.#onGraphCall('failed');
        if (attempt >= MAX_ATTEMPTS || !isRetryable(failure)) throw unavailable(failure);
        await this.#backOff(failure, deadline);
        continue;
      }

      const responses = batchResponses(body);
      const retry: BatchStep[] = [];
      let retryFailure: GraphFailure | undefined;
      for (const step of pending) {
        const response = responses.get(step.id);
        const stepFailure = response === undefined ? undefined : stepFailureOf(response);
        const memberOf =
          response !== undefined && stepFailure === undefined
            ? memberIdsFrom(response.body, step.groupIds)
            : undefined;
        if (memberOf !== undefined) {
          answers.set(step.id, memberOf);
        } else if (stepFailure !== undefined && isResourceNotFound(stepFailure)) {
          // The object does not exist: the answer for every chunk is "member of nothing".
          this.#onGraphCall('ok');
          return [NOT_FOUND];
        } else if (stepFailure !== undefined && isRetryable(stepFailure)) {
          retry.push(step);
          retryFailure = laterRetry(retryFailure, stepFailure);
        } else {
          this.#onGraphCall('failed');
          throw unavailable(stepFailure ?? { message: 'Graph $batch answer is missing or malformed for a step' });
        }
      }
      if (retryFailure === undefined) {
        this.#onGraphCall('ok');
        return steps.map((step) => answers.get(step.id) as ChunkAnswer);
      }
      this.#onGraphCall('failed');
      if (attempt >= MAX_ATTEMPTS) throw unavailable(retryFailure);
      await this.#backOff(retryFailure, deadline);
      pending = retry;
    }
  }

  /**
   * Honours Retry-After without holding the decision past its budget: when the wait would end
   * after the deadline, give up now (the caller falls back to the cache or answers 503).
   */
  async #backOff(failure: GraphFailure, deadline: number): Promise<void> {
    const wait = failure.retryAfterMs ?? DEFAULT_RETRY_MS;
    const now = performance.now();
    if (failure.status === 429 && failure.retryAfterMs !== undefined) {
      this.#throttledUntil = Math.max(this.#throttledUntil, now + wait);
    }
    if (now + wait >= deadline) throw unavailable(failure);
    await sleep(wait);
  }

  /** Throttling is per application and tenant, so a Retry-After holds for every lookup. */
  async #waitOutThrottle(deadline: number): Promise<void> {
    const now = performance.now();
    if (this.#throttledUntil <= now) return;
    if (this.#throttledUntil >= deadline) {
      throw new DirectoryUnavailableError('Microsoft Graph is throttling this application.', {
        status: 429,
        retryAfterSeconds: Math.ceil((this.#throttledUntil - now) / 1000),
      });
    }
    await sleep(this.#throttledUntil - now);
  }

  #store(key: string, answer: CachedAnswer): void {
    this.#cache.delete(key);
    this.#cache.set(key, answer);
    while (this.#cache.size > this.#maxEntries) {
      this.#cache.delete(this.#cache.keys().next().value as string);
    }
  }

  #touch(key: string, answer: CachedAnswer): void {
    this.#cache.delete(key);
    this.#cache.set(key, answer);
  }
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const chunks: T[][] = [];
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size));
  return chunks;
}

function remaining(deadline: number): number {
  return Math.max(1, Math.ceil(deadline - performance.now()));
}

async function withinDeadline<T>(promise: Promise<T>, deadline: number): Promise<T> {
  const controller = new AbortController();
  const timeout = sleep(remaining(deadline), undefined, { signal: controller.signal }).then(() => {
    throw new DirectoryUnavailableError('Microsoft Graph did not answer within the decision budget.');
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    controller.abort();
    timeout.catch(() => {});
  }
}

/** Only ids that were asked count: an answer naming other groups grants nothing. */
function memberIdsFrom(body: unknown, asked: readonly string[]): ReadonlySet<string> | undefined {
  const value = (body as { value?: unknown } | null)?.value;
  if (!Array.isArray(value)) return undefined;
  const askedSet = new Set(asked);
  const memberOf = new Set<string>();
  for (const id of value) {
    if (typeof id === 'string' && askedSet.has(id.toLowerCase())) memberOf.add(id.toLowerCase());
  }
  return memberOf;
}

interface BatchStepResponse {
  readonly status: number;
  readonly headers?: unknown;
  readonly body?: unknown;
}

function batchResponses(body: unknown): Map<string, BatchStepResponse> {
  const responses = (body as { responses?: unknown } | null)?.responses;
  const byId = new Map<string, BatchStepResponse>();
  if (!Array.isArray(responses)) return byId;
  for (const response of responses) {
    const { id, status } = (response ?? {}) as { id?: unknown; status?: unknown };
    if (typeof id === 'string' && typeof status === 'number') byId.set(id, response as BatchStepResponse);
  }
  return byId;
}

/** undefined for a 2xx step. */
function stepFailureOf(response: BatchStepResponse): GraphFailure | undefined {
  if (response.status >= 200 && response.status < 300) return undefined;
  const code = (response.body as { error?: { code?: unknown } } | null)?.error?.code;
  const retryAfterMs = retryAfterFromHeaders(response.headers, Date.now());
  return {
    status: response.status,
    ...(typeof code === 'string' ? { code } : {}),
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
    message: `Graph $batch step answered ${response.status}${typeof code === 'string' ? ` ${code}` : ''}`,
  };
}

function laterRetry(current: GraphFailure | undefined, next: GraphFailure): GraphFailure {
  if (current === undefined) return next;
  return (next.retryAfterMs ?? 0) > (current.retryAfterMs ?? 0) ? next : current;
}

function isResourceNotFound(failure: GraphFailure): boolean {
  return failure.status === 404 && failure.code === 'Request_ResourceNotFound';
}

function isRetryable(failure: GraphFailure): boolean {
  return failure.status !== undefined && GRAPH_RETRYABLE_STATUSES.has(failure.status);
}

function unavailable(failure: GraphFailure): DirectoryUnavailableError {
  return new DirectoryUnavailableError(failure.message, {
    ...(failure.status !== undefined ? { status: failure.status } : {}),
    ...(failure.retryAfterMs !== undefined ? { retryAfterSeconds: Math.ceil(failure.retryAfterMs / 1000) } : {}),
  });
}
