/**
 * The expanded group index: allow-listed group id -> set of transitive member object ids, built once
 * per snapshot so membership is an O(1) lookup per listed group on the hot path.
 */
import type { GroupRecord } from './types.js';

interface IndexedGroup {
  readonly members: ReadonlySet<string>;
  readonly fetchedAt: number;
}

export class GroupIndex {
  private readonly groups: ReadonlyMap<string, IndexedGroup>;
  readonly memberships: number;

  constructor(records: Readonly<Record<string, GroupRecord>>) {
    const groups = new Map<string, IndexedGroup>();
    let memberships = 0;
    for (const [id, r] of Object.entries(records)) {
      const members = new Set(r.members.map((m) => m.toLowerCase()));
      memberships += members.size;
      groups.set(id.toLowerCase(), { members, fetchedAt: r.fetchedAt });
    }
    this.groups = groups;
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
    for (const g of this.groups.values()) if (oldest === undefined || g.fetchedAt < oldest) oldest = g.fetchedAt;
    return oldest;
  }

  /**
   * Which candidate groups list `objectId` as a member, using only entries younger than maxStaleMs.
   * `indexed` counts the candidates the index could answer for.
   */
  memberOf(objectId: string, candidates: readonly string[], now: number, maxStaleMs: number): { memberOf: Set<string>; indexed: number } {
    const memberOf = new Set<string>();
    let indexed = 0;
    for (const id of candidates) {
      const g = this.groups.get(id);
      if (!g || now - g.fetchedAt > maxStaleMs) continue;
      indexed++;
      if (g.members.has(objectId)) memberOf.add(id);
    }
    return { memberOf, indexed };
  }
}
