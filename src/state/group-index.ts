/**
 * The expanded group index, built once per snapshot so membership is a lookup on the hot path.
 *
 * Stored member-first (member id -> the allow-listed groups it belongs to, transitively): a
 * decision asks "which listed groups is this principal in?", and with 100k listed ids and 1M
 * memberships a group-first index would make every decision walk every listed group. The
 * member-first map answers with one lookup plus the principal's own few groups.
 */
import type { GroupRecord } from './types.js';
import { isFresh } from '../core/staleness.js';

export class GroupIndex {
  /** group id -> when its expansion was fetched. */
  private readonly groups: ReadonlyMap<string, number>;
  /**
   * member id -> its group id, or its group ids when it is in more than one. Most members are in one
   * listed group; a bare string instead of a one-element array saves ~50 MB at 1M memberships.
   */
  private readonly byMember: ReadonlyMap<string, string | readonly string[]>;
  readonly memberships: number;

  constructor(records: Readonly<Record<string, GroupRecord>>) {
    const groups = new Map<string, number>();
    const byMember = new Map<string, string | string[]>();
    let memberships = 0;
    for (const [rawId, r] of Object.entries(records)) {
      const id = rawId.toLowerCase();
      groups.set(id, r.fetchedAt);
      for (const raw of r.members) {
        const m = raw.toLowerCase();
        const seen = byMember.get(m);
        if (seen === undefined) byMember.set(m, id);
        else if (typeof seen === 'string') {
          if (seen === id) continue;
          byMember.set(m, [seen, id]);
        } else if (!seen.includes(id)) seen.push(id);
        else continue;
        memberships++;
      }
    }
    this.groups = groups;
    this.byMember = byMember;
    this.memberships = memberships;
  }

  static empty(): GroupIndex {
    return new GroupIndex({});
  }

  get size(): number {
    return this.groups.size;
  }

  oldestFetchedAt(): number | undefined {
    let oldest: number | undefined;
    for (const at of this.groups.values()) if (oldest === undefined || at < oldest) oldest = at;
    return oldest;
  }

  private fresh(groupId: string, now: number, maxStaleMs: number): boolean {
    const at = this.groups.get(groupId);
    return at !== undefined && isFresh(at, now, maxStaleMs);
  }

  /**
   * The groups `objectId` belongs to that `isCandidate` accepts, using only entries younger than
   * maxStaleMs. Cost: one map lookup plus the member's own groups.
   */
  memberOf(objectId: string, isCandidate: (groupId: string) => boolean, now: number, maxStaleMs: number): Set<string> {
    const out = new Set<string>();
    const found = this.byMember.get(objectId);
    for (const g of typeof found === 'string' ? [found] : (found ?? [])) if (isCandidate(g) && this.fresh(g, now, maxStaleMs)) out.add(g);
    return out;
  }

  /** How many of the candidates the index can answer for (fresh entries). Used off the hot path. */
  coverage(candidates: readonly string[], now: number, maxStaleMs: number): number {
    let n = 0;
    for (const id of candidates) if (this.fresh(id, now, maxStaleMs)) n++;
    return n;
  }
}
