/**
 * The expanded group index, built once per snapshot so membership is a lookup on the hot path.
 *
 * Stored member-first (member id -> the allow-listed groups it belongs to, transitively): a
 * decision asks "which listed groups is this principal in?", and with 100k listed ids and 1M
 * memberships a group-first index would make every decision walk every listed group. The
 * member-first map answers with one lookup plus the principal's own few groups.
 */
import type { GroupRecord } from './types.js';

export class GroupIndex {
  /** group id -> when its expansion was fetched. */
  private readonly groups: ReadonlyMap<string, number>;
  /** member id -> group ids (a one-element array for most members). */
  private readonly byMember: ReadonlyMap<string, readonly string[]>;
  readonly memberships: number;

  constructor(records: Readonly<Record<string, GroupRecord>>) {
    const groups = new Map<string, number>();
    const byMember = new Map<string, string[]>();
    let memberships = 0;
    for (const [rawId, r] of Object.entries(records)) {
      const id = rawId.toLowerCase();
      groups.set(id, r.fetchedAt);
      for (const raw of r.members) {
        const m = raw.toLowerCase();
        const list = byMember.get(m);
        if (!list) byMember.set(m, [id]);
        else if (!list.includes(id)) list.push(id);
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
    return at !== undefined && now - at <= maxStaleMs;
  }

  /**
   * The groups `objectId` belongs to that `isCandidate` accepts, using only entries younger than
   * maxStaleMs. Cost: one map lookup plus the member's own groups.
   */
  memberOf(objectId: string, isCandidate: (groupId: string) => boolean, now: number, maxStaleMs: number): Set<string> {
    const out = new Set<string>();
    for (const g of this.byMember.get(objectId) ?? []) if (isCandidate(g) && this.fresh(g, now, maxStaleMs)) out.add(g);
    return out;
  }

  /** How many of the candidates the index can answer for (fresh entries). Used off the hot path. */
  coverage(candidates: readonly string[], now: number, maxStaleMs: number): number {
    let n = 0;
    for (const id of candidates) if (this.fresh(id, now, maxStaleMs)) n++;
    return n;
  }
}
