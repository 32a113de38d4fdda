/**
 * The running service: a Pdp plus its state lifecycle. Builds the Graph edge and the snapshot store
 * from settings, refreshes (issuer metadata and keys, expanded groups) into an immutable snapshot,
 * writes it with optimistic concurrency, follows the shared store on other instances, and reports
 * health. Hosts (standalone, Azure Functions, CLI) create one and route HTTP to it.
 */
import type { Client } from '@microsoft/microsoft-graph-client';
import type { PdpConfig } from './config/schema.js';
import { createGroupExpander } from './directory/expand.js';
import { createGraphClient, credentialFromSettings } from './directory/graph-client.js';
import { GraphMembershipResolver } from './directory/membership.js';
import type { GroupExpander } from './directory/types.js';
import type { HealthReport, PdpRuntime } from './http/routes.js';
import { Counters } from './metrics.js';
import { Pdp, type DecisionLogger } from './pdp.js';
import { BlobSnapshotStore, blobStoreSettingsFrom } from './state/blob-store.js';
import { newRevision } from './state/codec.js';
import { MemorySnapshotStore } from './state/memory-store.js';
import { SnapshotFollower } from './state/snapshot-follower.js';
import {
  SNAPSHOT_SCHEMA_VERSION,
  SnapshotConflictError,
  type GroupRecord,
  type RefreshOutcome,
  type SnapshotData,
  type SnapshotStore,
} from './state/types.js';

export interface RuntimeOptions {
  readonly config: PdpConfig;
  /** App settings (environment); used for the Graph credential and the snapshot store. */
  readonly env?: Record<string, string | undefined>;
  readonly store?: SnapshotStore;
  /** A ready Graph client (tests point one at the fake Graph); else built from config.graph + env. */
  readonly graphClient?: Client;
  readonly clock?: () => number;
  readonly fetch?: typeof fetch;
  readonly logger?: DecisionLogger;
  /** Poll interval of a shared store (default 30 s). */
  readonly snapshotPollMs?: number;
}

export interface RefreshReport extends RefreshOutcome {
  readonly revision: string;
  readonly durationMs: number;
  /** `written`: this instance's snapshot is now the shared one; `adopted`: another writer's was newer. */
  readonly stored: 'written' | 'adopted' | 'failed';
}

export class PdpService implements PdpRuntime {
  readonly pdp: Pdp;
  readonly store: SnapshotStore;
  private readonly clock: () => number;
  private readonly expander?: GroupExpander;
  private readonly follower?: SnapshotFollower;
  private current?: { data: SnapshotData; etag?: string };
  private lastReport?: RefreshReport;
  private refreshing?: Promise<RefreshReport>;
  private timer?: NodeJS.Timeout;
  private storeError?: { at: number; message: string };

  constructor(options: RuntimeOptions) {
    this.clock = options.clock ?? Date.now;
    const counters = new Counters();
    const graph = options.graphClient ?? (options.config.graph ? createGraphClient({ credential: credentialFromSettings(options.env ?? {}), baseUrl: options.config.graph.baseUrl }) : undefined);
    const membership = graph
      ? new GraphMembershipResolver({
          client: graph,
          clock: this.clock,
          maxStaleMs: options.config.maxStaleSeconds * 1000,
          onGraphCall: (o) => counters.inc(o === 'ok' ? 'graph_call_ok' : 'graph_call_failed'),
        })
      : undefined;
    if (graph) this.expander = createGroupExpander({ client: graph });
    this.pdp = new Pdp(options.config, {
      clock: this.clock,
      counters,
      ...(options.fetch ? { fetch: options.fetch } : {}),
      ...(options.logger ? { logger: options.logger } : {}),
      ...(membership ? { membership } : {}),
    });
    this.store = options.store ?? storeFromSettings(options.env ?? {});
    if (this.store.kind === 'blob')
      this.follower = new SnapshotFollower({
        store: this.store,
        pollMs: options.snapshotPollMs ?? 30_000,
        now: this.clock,
        onSnapshot: (data, etag) => this.apply(data, etag),
      });
  }

  /**
   * Start-up: a snapshot already in the store is served without contacting any authority; without
   * one, a refresh runs now (and decisions arriving meanwhile load what they need, single-flight).
   */
  async start(options: { refreshIntervalMs?: number } = {}): Promise<void> {
    if (this.follower) {
      await this.follower.pollNow();
      this.follower.start();
    } else {
      const stored = await this.store.read().catch(() => undefined);
      if (stored && stored !== 'not-modified') this.apply(stored.data, stored.etag);
    }
    if (!this.current) await this.refresh();
    if (options.refreshIntervalMs) {
      this.timer = setInterval(() => void this.refresh().catch(() => undefined), options.refreshIntervalMs);
      this.timer.unref();
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.follower?.stop();
  }

  /** Swaps a snapshot in: issuer keys into the registry, the group index into the policy. */
  private apply(data: SnapshotData, etag?: string): void {
    if (this.current?.data.revision === data.revision) {
      this.current = { data, ...(etag ? { etag } : {}) };
      return;
    }
    this.pdp.registry.load(data.issuers);
    this.pdp.setGroups(data.groups);
    this.current = { data, ...(etag ? { etag } : {}) };
  }

  /** Single-flight: concurrent callers (timer, POST /api/refresh) share one refresh. */
  refresh(): Promise<RefreshReport> {
    if (!this.refreshing)
      this.refreshing = this.refreshOnce().finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  private async refreshOnce(): Promise<RefreshReport> {
    const startedAt = this.clock();
    const t0 = performance.now();
    const problems = await this.pdp.refreshIssuers();
    const previous = this.current?.data.groups ?? {};
    const groups: Record<string, GroupRecord> = {};
    const listed = this.pdp.policy.objectIds;
    if (this.expander && listed.length > 0) {
      try {
        const expansion = await this.expander.expandGroups(listed);
        const at = this.clock();
        for (const [id, members] of expansion.members) groups[id] = { members: [...members], fetchedAt: at };
        for (const [id, why] of expansion.failed) {
          // A partly failed refresh keeps the previous value of what failed instead of dropping it.
          if (previous[id]) groups[id] = previous[id];
          problems.push(`group ${id}: ${why}`);
        }
      } catch (err) {
        Object.assign(groups, previous);
        problems.push(`groups: ${(err as Error).message}`);
      }
    }
    const issuers = this.pdp.registry.records();
    const outcome: RefreshOutcome = {
      startedAt,
      finishedAt: this.clock(),
      outcome: problems.length === 0 ? 'ok' : issuers.length === 0 ? 'failed' : 'partial',
      problems: problems.map((p) => p.slice(0, 500)),
    };
    const data: SnapshotData = { schemaVersion: SNAPSHOT_SCHEMA_VERSION, revision: newRevision(), createdAt: this.clock(), issuers, groups, lastRefresh: outcome };
    let stored: RefreshReport['stored'] = 'written';
    try {
      const { etag } = await this.store.write(data, this.current?.etag ?? null);
      this.apply(data, etag);
      delete this.storeError;
    } catch (err) {
      if (err instanceof SnapshotConflictError) {
        // Another instance refreshed at the same time; its snapshot is as fresh as ours. Adopt it
        // rather than overwrite, so two refreshes never interleave.
        const theirs = await this.store.read().catch(() => undefined);
        if (theirs && theirs !== 'not-modified') this.apply(theirs.data, theirs.etag);
        stored = 'adopted';
      } else {
        stored = 'failed';
        this.storeError = { at: this.clock(), message: (err as Error).message.slice(0, 300) };
        // The instance still serves what it fetched; other instances keep theirs until the next write.
        this.apply(data, this.current?.etag);
      }
    }
    this.pdp.counters.inc(outcome.outcome === 'failed' ? 'refresh_failed' : 'refresh_ok');
    this.lastReport = { ...outcome, revision: this.current?.data.revision ?? data.revision, durationMs: Math.round(performance.now() - t0), stored };
    return this.lastReport;
  }

  health(): HealthReport {
    const now = this.clock();
    const snap = this.current?.data;
    const issuers = this.pdp.issuerHealth();
    const ready = snap !== undefined && this.pdp.registry.ready();
    const oldestGroup = this.pdp.groups.oldestFetchedAt();
    return {
      ready,
      status: ready ? (issuers.some((i) => i.lastError) || snap?.lastRefresh?.outcome === 'partial' ? 'degraded' : 'ok') : 'unavailable',
      issuers,
      snapshot: snap
        ? {
            store: this.store.kind,
            revision: snap.revision,
            createdAt: new Date(snap.createdAt).toISOString(),
            ageSeconds: Math.round((now - snap.createdAt) / 1000),
            ...(snap.lastRefresh
              ? {
                  lastRefresh: {
                    outcome: snap.lastRefresh.outcome,
                    finishedAt: new Date(snap.lastRefresh.finishedAt).toISOString(),
                    durationMs: snap.lastRefresh.finishedAt - snap.lastRefresh.startedAt,
                    problems: snap.lastRefresh.problems,
                  },
                }
              : {}),
          }
        : { store: this.store.kind, revision: null },
      ...(this.follower ? { follower: this.follower.status() } : {}),
      ...(this.storeError ? { storeError: { at: new Date(this.storeError.at).toISOString(), message: this.storeError.message } } : {}),
      groups: {
        indexed: this.pdp.groups.size,
        memberships: this.pdp.groups.memberships,
        ...(oldestGroup !== undefined ? { oldestAgeSeconds: Math.round((now - oldestGroup) / 1000) } : {}),
      },
      counters: this.pdp.counters.snapshot(),
    };
  }

  get lastRefresh(): RefreshReport | undefined {
    return this.lastReport;
  }
}

function storeFromSettings(env: Record<string, string | undefined>): SnapshotStore {
  if ((env.PDP_SNAPSHOT_STORE ?? 'memory') !== 'blob') return new MemorySnapshotStore();
  const settings = blobStoreSettingsFrom(env);
  if (!settings) throw new Error('PDP_SNAPSHOT_STORE=blob needs PDP_SNAPSHOT_CONNECTION or AzureWebJobsStorage');
  return new BlobSnapshotStore(settings);
}
