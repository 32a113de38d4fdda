/**
 * The directory edge: which allow-listed groups an object (user, service principal, group) belongs
 * to, transitively. Implemented against Microsoft Graph in src/directory/graph-*.ts; the policy core
 * never sees HTTP, only these answers.
 */

import type { MembershipSource } from '../core/principal.js';

export type { MembershipSource };

export interface MembershipAnswer {
  /** The subset of the asked group ids that the object is a transitive member of. */
  readonly memberOf: ReadonlySet<string>;
  readonly source: MembershipSource;
  /** When the underlying data was fetched from Graph (ms since epoch); for cache staleness. */
  readonly fetchedAt: number;
}

export interface MembershipQuery {
  readonly objectId: string;
  /** Allow-listed group ids to test; chunked by the resolver (Graph takes 20 per call). */
  readonly groupIds: readonly string[];
  /** Wall-clock budget for this lookup; past it the resolver gives up (see DirectoryUnavailableError). */
  readonly budgetMs: number;
}

export interface GroupMembershipResolver {
  /**
   * Which of `groupIds` the object is a transitive member of. Rejects with DirectoryUnavailableError
   * when Graph cannot answer within the budget and no cached answer younger than maxStale exists.
   */
  checkMemberGroups(query: MembershipQuery): Promise<MembershipAnswer>;
}

/** Transitive expansion of groups for the snapshot's group index (used by refresh). */
export interface GroupExpander {
  /** group id -> transitive member object ids (users, service principals, nested groups). */
  expandGroups(groupIds: readonly string[]): Promise<GroupExpansion>;
}

export interface GroupExpansion {
  readonly members: ReadonlyMap<string, readonly string[]>;
  /** Groups whose expansion failed, with why; refresh keeps their previous value. */
  readonly failed: ReadonlyMap<string, string>;
}

export class DirectoryUnavailableError extends Error {
  readonly code = 'directory_unavailable' as const;
  constructor(
    message: string,
    readonly detail: { readonly status?: number; readonly retryAfterSeconds?: number } = {},
  ) {
    super(message);
    this.name = 'DirectoryUnavailableError';
  }
}
