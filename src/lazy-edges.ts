/**
 * The Azure SDK edges, loaded only by configurations that use them. Importing
 * @microsoft/microsoft-graph-client with @azure/identity, or @azure/storage-blob, costs about
 * 0.3 s each on a cold start; a deployment without Graph or a Blob snapshot should not pay it.
 * Hosts call `prepare()` at start-up so a misconfiguration still fails there, not on a decision.
 */
import type { GroupExpander, GroupExpansion, GroupMembershipResolver, MembershipAnswer, MembershipQuery } from './directory/types.js';
import type { SnapshotData, SnapshotStore, StoredSnapshot } from './state/types.js';

export interface GraphEdges {
  readonly resolver: GroupMembershipResolver;
  readonly expander: GroupExpander;
}

export class LazyGraphEdges implements GroupMembershipResolver, GroupExpander {
  private loading?: Promise<GraphEdges>;

  constructor(private readonly make: () => Promise<GraphEdges>) {}

  load(): Promise<GraphEdges> {
    this.loading ??= this.make();
    return this.loading;
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
