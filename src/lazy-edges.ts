/**
 * The Azure SDK edges, loaded only by configurations that use them. Importing
 * @microsoft/microsoft-graph-client with @azure/identity, or @azure/storage-blob, costs about
 * 0.3 s each on a cold start; a deployment without Graph or a Blob snapshot should not pay it.
 * Hosts call `prepare()` at start-up so a misconfiguration still fails there, not on a decision.
 */
import type { CircuitStatus } from './directory/circuit-breaker.js';
import type { GroupExpander, GroupExpansion, GroupMembershipResolver, MembershipAnswer, MembershipQuery } from './directory/types.js';
import type { SnapshotData, SnapshotStore, StoredSnapshot } from './state/types.js';

export interface GraphEdges {
  readonly resolver: GroupMembershipResolver;
  readonly expander: GroupExpander;
  /** The Graph client's circuit breaker, when it has one. */
  readonly breaker?: { status(): CircuitStatus };
}

export class LazyGraphEdges implements GroupMembershipResolver, GroupExpander {
  private loading?: Promise<GraphEdges>;
  private loaded?: GraphEdges;

  constructor(private readonly make: () => Promise<GraphEdges>) {}

  load(): Promise<GraphEdges> {
    this.loading ??= this.make().then((edges) => (this.loaded = edges));
    return this.loading;
  }

  /** The breaker's state once the edges are loaded (health reads it synchronously). */
  breakerStatus(): CircuitStatus | undefined {
    return this.loaded?.breaker?.status();
  }

  async checkMemberGroups(query: MembershipQuery): Promise<MembershipAnswer> {
    return (await this.load()).resolver.checkMemberGroups(query);
  }

  async expandGroups(groupIds: readonly string[]): Promise<GroupExpansion> {
    return (await this.load()).expander.expandGroups(groupIds);
  }
}

export class LazyBlobStore implements SnapshotStore {
  readonly kind = 'blob' as const;
  private loading?: Promise<SnapshotStore>;

  constructor(private readonly make: () => Promise<SnapshotStore>) {}

  load(): Promise<SnapshotStore> {
    this.loading ??= this.make();
    return this.loading;
  }

  async read(ifNoneMatch?: string): Promise<StoredSnapshot | 'not-modified' | undefined> {
    return (await this.load()).read(ifNoneMatch);
  }

  async write(data: SnapshotData, ifMatch: string | null): Promise<{ etag: string }> {
    return (await this.load()).write(data, ifMatch);
  }
}
