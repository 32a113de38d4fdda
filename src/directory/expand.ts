/**
 * Transitive expansion of the allow-listed groups for the snapshot's group index (refresh()).
 *
 * Each group is read from GET /groups/{id}/transitiveMembers, not from groups/delta, although
 * delta is far cheaper once it holds state (bench/PROFILE.md, "Group expansion", has the
 * measurement), because:
 * - Cost follows the allow-list, not the tenant. groups/delta has to track every group of the
 *   tenant (nested groups must be tracked to close over them; `$filter=id eq …` takes at most 50
 *   ids and restarts the round whenever the set changes), so its first round grows with the
 *   tenant, where transitiveMembers reads only the allow-listed groups.
 * - It is stateless. Delta needs its deltaLink and the direct-member graph of every group kept
 *   between refreshes; the timer runs on whichever Functions instance Azure picks, and a cold
 *   instance (or a deltaLink past Graph's expiry, HTTP 410) pays the full first round again.
 *   SnapshotData has no place for that state.
 * - Every refresh is a complete, authoritative answer per group, so one failed group keeps its
 *   previous value and the others move on; a delta round that fails leaves every group stale, and
 *   a change applied wrongly (a removal missed) would keep granting access until a full resync.
 * At a refresh interval of minutes, one small GET per 999 members of each group is far inside
 * Graph's limits.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from '@microsoft/microsoft-graph-client';
import type { GroupExpander, GroupExpansion } from './types.js';
import { describeGraphFailure, GRAPH_RETRYABLE_STATUSES, isGraphLink, withoutSdkRetries, type GraphFailure } from './graph-client.js';
// Directory object ids are GUIDs; anything else never goes into a URL.
import { isGuid } from '../core/guid.js';
import { kindOf, type DirectoryObjectKind } from './object-kind.js';

/** Graph: `$top` for directory object collections is at most 999. */
const PAGE_SIZE = 999;

export interface GroupExpanderOptions {
  readonly client: Client;
  /** A group with more transitive members than this fails (and keeps its previous value). Default 1 000 000. */
  readonly maxMembersPerGroup?: number;
  /** Retries of one request after 429/503/504. Default 3. */
  readonly maxRetries?: number;
  /** A Retry-After longer than this is not waited for; the request fails. Default 60 s. */
  readonly maxRetryAfterMs?: number;
  /** Wait before a retry when Graph sent no Retry-After. Default 1 s. */
  readonly defaultRetryMs?: number;
  /** Groups expanded at the same time. Default 4. */
  readonly concurrency?: number;
  readonly onGraphCall?: (outcome: 'ok' | 'failed') => void;
}

class ExpansionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExpansionError';
  }
}

/** GET with bounded retries that honour Retry-After; 404 Request_ResourceNotFound resolves 'not-found'. */
class GraphPager {
  readonly #client: Client;
  readonly #maxRetries: number;
  readonly #maxRetryAfterMs: number;
  readonly #defaultRetryMs: number;
  readonly #onGraphCall: (outcome: 'ok' | 'failed') => void;

  constructor(options: GroupExpanderOptions) {
    this.#client = options.client;
    this.#maxRetries = options.maxRetries ?? 3;
    this.#maxRetryAfterMs = options.maxRetryAfterMs ?? 60_000;
    this.#defaultRetryMs = options.defaultRetryMs ?? 1_000;
    this.#onGraphCall = options.onGraphCall ?? (() => {});
  }

  async get(pathOrLink: string): Promise<Record<string, unknown> | 'not-found'> {
    for (let retry = 0; ; retry += 1) {
      let failure: GraphFailure;
      try {
        const body: unknown = await this.#client.api(pathOrLink).middlewareOptions(withoutSdkRetries()).get();
        if (body === null || typeof body !== 'object') {
          this.#onGraphCall('failed');
          throw new ExpansionError('Graph answered without a JSON object');
        }
        this.#onGraphCall('ok');
        return body as Record<string, unknown>;
      } catch (error) {
        if (error instanceof ExpansionError) throw error;
        failure = describeGraphFailure(error);
      }
      if (failure.status === 404 && failure.code === 'Request_ResourceNotFound') {
        this.#onGraphCall('ok');
        return 'not-found';
      }
      this.#onGraphCall('failed');
      const retryable = failure.status !== undefined && GRAPH_RETRYABLE_STATUSES.has(failure.status);
      const wait = failure.retryAfterMs ?? this.#defaultRetryMs;
      if (!retryable || retry >= this.#maxRetries || wait > this.#maxRetryAfterMs) {
        throw new ExpansionError(failure.message);
      }
      await sleep(wait);
    }
  }
}

/** Most object kinds remembered (one per allow-listed id that is not a group). */
const MAX_KNOWN_KINDS = 100_000;

/** Per group: GET /groups/{id}/transitiveMembers?$select=id&$top=999, following @odata.nextLink. */
export class GraphGroupExpander implements GroupExpander {
  readonly #pager: GraphPager;
  readonly #maxMembers: number;
  readonly #concurrency: number;
  /**
   * Allow-listed ids the directory says are not groups (users, service principals, ...). An
   * object's id never changes kind, so they are not asked for members again: they have none.
   */
  readonly #notGroups = new Map<string, DirectoryObjectKind>();

  constructor(options: GroupExpanderOptions) {
    this.#pager = new GraphPager(options);
    this.#maxMembers = options.maxMembersPerGroup ?? 1_000_000;
    this.#concurrency = Math.max(1, options.concurrency ?? 4);
  }

  async expandGroups(groupIds: readonly string[]): Promise<GroupExpansion> {
    const members = new Map<string, readonly string[]>();
    const failed = new Map<string, string>();
    const queue = [...new Set(groupIds.map((id) => id.toLowerCase()))];
    const worker = async (): Promise<void> => {
      for (let groupId = queue.shift(); groupId !== undefined; groupId = queue.shift()) {
        try {
          members.set(groupId, await this.#expand(groupId));
        } catch (error) {
          failed.set(groupId, error instanceof Error ? error.message : 'expansion failed');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#concurrency, queue.length) }, worker));
    return { members, failed };
  }

  async #expand(groupId: string): Promise<string[]> {
    if (!isGuid(groupId)) throw new ExpansionError('group id is not a GUID');
    if (this.#notGroups.has(groupId)) return [];
    const found = new Set<string>();
    let next: string | undefined = `/groups/${groupId}/transitiveMembers?$select=id&$top=${PAGE_SIZE}`;
    const seen = new Set<string>();
    // Each page holds at least one member until the last, so this bounds a looping nextLink too.
    const maxPages = Math.ceil(this.#maxMembers / PAGE_SIZE) + 2;
    for (let pages = 0; next !== undefined; pages += 1) {
      if (pages >= maxPages) throw new ExpansionError(`more than ${maxPages} pages`);
      // A nextLink that names a page already read would be followed up to maxPages times for
      // the same members: a paging loop, so the answer is incomplete and the group fails.
      const key = pageKey(next);
      if (seen.has(key)) throw new ExpansionError(`@odata.nextLink repeats a page already read (page ${pages + 1} of a paging loop); expansion stopped`);
      seen.add(key);
      const body = await this.#pager.get(next);
      if (body === 'not-found') return this.#notFound(groupId);
      for (const id of idsOf(body.value)) found.add(id);
      if (found.size > this.#maxMembers) {
        throw new ExpansionError(`more than ${this.#maxMembers} transitive members`);
      }
      next = nextLinkOf(body);
    }
    return [...found];
  }

  /**
   * transitiveMembers answered 404: the id is no group. Either nothing has that id any more (a
   * deleted group has no members: keeping its previous value would keep granting access through
   * it), or it is a user or service principal listed directly, whose kind is remembered so later
   * refreshes do not ask for its members again. Either way it has no members.
   */
  async #notFound(id: string): Promise<string[]> {
    let kind: DirectoryObjectKind | undefined;
    try {
      const body = await this.#pager.get(`/directoryObjects/${id}?$select=id`);
      kind = body === 'not-found' ? 'not-found' : kindOf(body);
    } catch {
      // The kind is only an optimisation; it is asked again next time.
    }
    if (kind !== undefined && kind !== 'not-found' && kind !== 'group' && this.#notGroups.size < MAX_KNOWN_KINDS) this.#notGroups.set(id, kind);
    return [];
  }
}

/** A page link compared by path and decoded query parameters, whatever their order or host. */
function pageKey(link: string): string {
  const url = new URL(link.startsWith('/') ? `https://graph.microsoft.com/v1.0${link}` : link);
  const params = [...url.searchParams].map(([k, v]) => `${k}=${v}`).sort();
  return `${url.pathname.toLowerCase()}?${params.join('&')}`;
}

/** The expander refresh() uses (see above). */
export function createGroupExpander(options: GroupExpanderOptions): GroupExpander {
  return new GraphGroupExpander(options);
}

function idsOf(value: unknown): string[] {
  if (!Array.isArray(value)) throw new ExpansionError('Graph page has no value array');
  const ids: string[] = [];
  for (const item of value) {
    const id = (item as { id?: unknown } | null)?.id;
    if (typeof id === 'string' && isGuid(id)) ids.push(id.toLowerCase());
  }
  return ids;
}

/** Only Graph https links are followed (the client attaches the bearer to no other host). */
function nextLinkOf(body: Record<string, unknown>): string | undefined {
  const next = body['@odata.nextLink'];
  if (next === undefined) return undefined;
  if (typeof next !== 'string' || !isGraphLink(next)) throw new ExpansionError('nextLink is not a Graph https link');
  return next;
}
