/**
 * The running service: a Pdp plus its state lifecycle. Builds the Graph edge and the snapshot store
 * from settings, refreshes (issuer metadata and keys, expanded groups) into an immutable snapshot,
 * writes it with optimistic concurrency, follows the shared store on other instances, and reports
 * health. Hosts (standalone, Azure Functions, CLI) create one and route HTTP to it.
 */
import type { Client } from '@microsoft/microsoft-graph-client';
import type { PdpConfig } from './config/schema.js';
import type { GroupExpander } from './directory/types.js';
import { explainHandler, explainPageResponse } from './explain/http.js';
import type { HealthReport, PdpRuntime } from './http/routes.js';
import type { PdpHttpRequest, PdpHttpResponse } from './http/types.js';
import { Counters } from './metrics.js';
import { Pdp, type DecisionLogger } from './pdp.js';
import { LazyBlobStore, LazyGraphEdges } from './lazy-edges.js';
import { assertNoBlobIdentitySettings, blobStoreSettingsFrom, missingAccountMessage } from './state/blob-settings.js';
import { newRevision } from './state/codec.js';
import { MemorySnapshotStore } from './state/memory-store.js';
import { SnapshotFollower, type SnapshotPollOutcome } from './state/snapshot-follower.js';
import {
  SNAPSHOT_SCHEMA_VERSION,
  SnapshotConflictError,
  SnapshotRejectedError,
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
  /** Poll interval of a shared store (default 30 s; app setting PDP_SNAPSHOT_POLL_SECONDS). */
  readonly snapshotPollMs?: number;
  /** Told each time a different snapshot is swapped in, from this instance's refresh or from the store. */
  readonly onSnapshotApplied?: (event: SnapshotAppliedEvent) => void;
}

export interface SnapshotAppliedEvent {
  readonly revision: string;
  readonly source: 'refresh' | 'store';
}

export interface RefreshReport extends RefreshOutcome {
  /** The snapshot this instance serves after the refresh. */
  readonly revision: string;
  readonly durationMs: number;
  /**
   * `written`: this instance's snapshot is now the stored one; `adopted`: another writer stored one
   * during this refresh, and it is served instead; `failed`: the store could not be written, the
   * refreshed snapshot is served by this instance only; `skipped`: nothing usable was fetched and
   * no snapshot existed, so nothing was written.
   */
  readonly stored: 'written' | 'adopted' | 'failed' | 'skipped';
}

/** Writes tried in one refresh when the stored snapshot keeps changing underneath (If-Match fails). */
const MAX_WRITE_ATTEMPTS = 3;

export class PdpService implements PdpRuntime {
  readonly pdp: Pdp;
  readonly store: SnapshotStore;
  private readonly clock: () => number;
  private readonly maxStaleMs: number;
  private readonly expander?: GroupExpander;
  private readonly graphEdges?: LazyGraphEdges;
  private readonly follower?: SnapshotFollower;
  private readonly onSnapshotApplied?: (event: SnapshotAppliedEvent) => void;
  private current?: { data: SnapshotData; etag?: string };
  private lastReport?: RefreshReport;
  private refreshing?: Promise<RefreshReport>;
  private timer?: NodeJS.Timeout;
  private storeError?: { at: number; code: string; message: string };

  constructor(options: RuntimeOptions) {
    this.clock = options.clock ?? Date.now;
    this.maxStaleMs = options.config.maxStaleSeconds * 1000;
    const counters = new Counters();
    const onGraphCall = (o: 'ok' | 'failed'): void => counters.inc(o === 'ok' ? 'graph_call_ok' : 'graph_call_failed');
    const graphConfig = options.config.graph;
    const membership =
      options.graphClient || graphConfig
        ? new LazyGraphEdges(async () => {
            const [{ createGraphClient, credentialFromSettings }, { GraphMembershipResolver }, { createGroupExpander }] = await Promise.all([
              import('./directory/graph-client.js'),
              import('./directory/membership.js'),
              import('./directory/expand.js'),
            ]);
            const client = options.graphClient ?? createGraphClient({ credential: credentialFromSettings(options.env ?? {}), baseUrl: graphConfig!.baseUrl });
            return {
              resolver: new GraphMembershipResolver({ client, clock: this.clock, maxStaleMs: this.maxStaleMs, onGraphCall }),
              expander: createGroupExpander({ client, onGraphCall }),
            };
          })
        : undefined;
    if (membership) {
      this.expander = membership;
      this.graphEdges = membership;
    }
    this.pdp = new Pdp(options.config, {
      clock: this.clock,
      counters,
      ...(options.fetch ? { fetch: options.fetch } : {}),
      ...(options.logger ? { logger: options.logger } : {}),
      ...(membership ? { membership } : {}),
    });
    if (options.onSnapshotApplied) this.onSnapshotApplied = options.onSnapshotApplied;
    this.store = options.store ?? storeFromSettings(options.env ?? {});
    if (this.store.kind === 'blob')
      this.follower = new SnapshotFollower({
        store: this.store,
        pollMs: options.snapshotPollMs ?? 30_000,
        now: this.clock,
        onSnapshot: (data, etag) => this.apply(data, etag, 'store'),
      });
  }

  /**
   * Start-up: a snapshot already in the store is served without contacting any authority; without
   * one, a refresh runs now (and decisions arriving meanwhile load what they need, single-flight).
   */
  /**
   * Loads the Azure SDK edges this configuration uses (Graph, Blob) and builds their clients, so
   * a misconfiguration (a Graph credential, a connection string) fails at start-up.
   */
  async prepare(): Promise<void> {
    await this.graphEdges?.load();
    if (this.store instanceof LazyBlobStore) await this.store.load();
  }

  /**
   * Loads the Azure SDK edges and the stored snapshot, if there is one: after this, decisions need
   * no authority. Hosts await it before they listen; start() calls it too (a second read is an
   * ETag-conditional no-op).
   */
  async loadStored(): Promise<void> {
    await this.prepare();
    if (this.follower) {
      await this.follower.pollNow();
      return;
    }
    if (this.current) return;
    const stored = await this.store.read().catch((err: unknown) => {
      this.noteStoreError(err);
      return undefined;
    });
    if (stored && stored !== 'not-modified') this.apply(stored.data, stored.etag, 'store');
  }

  async start(options: { refreshIntervalMs?: number } = {}): Promise<void> {
    await this.loadStored();
    this.follower?.start();
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

  /**
   * Reads the shared store once now (conditionally, by ETag) and swaps a changed snapshot in, as
   * the follower does every snapshotPollMs. Undefined with the memory store, which nobody else writes.
   */
  async pollSnapshot(): Promise<SnapshotPollOutcome | undefined> {
    return this.follower?.pollNow();
  }

  /** Swaps a snapshot in: issuer keys into the registry, the group index into the policy. */
  private apply(data: SnapshotData, etag: string | undefined, source: SnapshotAppliedEvent['source']): void {
    const changed = this.current?.data.revision !== data.revision;
    if (changed) {
      this.pdp.registry.load(data.issuers);
      this.pdp.setGroups(data.groups);
    }
    this.current = { data, ...(etag ? { etag } : {}) };
    if (changed) this.onSnapshotApplied?.({ revision: data.revision, source });
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
          // A partly failed refresh keeps the previous value of what failed instead of dropping it;
          // its fetchedAt stays, so it ages out at maxStale like any other.
          if (previous[id]) groups[id] = previous[id];
          problems.push(`group ${id}: ${why}`);
        }
      } catch (err) {
        for (const id of listed) if (previous[id]) groups[id] = previous[id];
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
    // A snapshot without any issuer serves no decision; writing one would only tell other
    // instances that a snapshot exists. Decisions keep loading metadata on demand instead.
    const stored: RefreshReport['stored'] = issuers.length === 0 && !this.current ? 'skipped' : await this.writeSnapshot(data, startedAt);
    this.pdp.counters.inc(outcome.outcome === 'failed' ? 'refresh_failed' : 'refresh_ok');
    this.lastReport = { ...outcome, revision: this.current?.data.revision ?? data.revision, durationMs: Math.round(performance.now() - t0), stored };
    return this.lastReport;
  }

  /**
   * Writes with optimistic concurrency (If-Match the ETag this instance last saw). When another
   * writer changed the blob meanwhile:
   * - its snapshot was made after this refresh began (a concurrent refresh): it is as fresh as
   *   ours, so it is adopted rather than overwritten, and every instance converges on one revision;
   * - it is older (this instance had not polled it yet): ours replaces it, If-Match its ETag;
   * - it fails validation: ours replaces the corrupted bytes, If-Match their ETag.
   * Each write replaces the whole blob, so a reader never sees a mix of two refreshes.
   */
  private async writeSnapshot(data: SnapshotData, startedAt: number): Promise<RefreshReport['stored']> {
    let ifMatch: string | null = this.current?.etag ?? null;
    for (let attempt = 1; ; attempt++) {
      try {
        const { etag } = await this.store.write(data, ifMatch);
        this.apply(data, etag, 'refresh');
        delete this.storeError;
        return 'written';
      } catch (err) {
        if (!(err instanceof SnapshotConflictError) || attempt >= MAX_WRITE_ATTEMPTS) return this.keepUnstored(data, err);
      }
      let theirs: Awaited<ReturnType<SnapshotStore['read']>>;
      try {
        theirs = await this.store.read();
      } catch (err) {
        const rejectedEtag = err instanceof SnapshotRejectedError ? (err as { etag?: unknown }).etag : undefined;
        if (typeof rejectedEtag !== 'string') return this.keepUnstored(data, err);
        ifMatch = rejectedEtag;
        continue;
      }
      if (theirs === undefined || theirs === 'not-modified') {
        ifMatch = null;
        continue;
      }
      if (theirs.data.createdAt >= startedAt) {
        this.apply(theirs.data, theirs.etag, 'store');
        delete this.storeError;
        return 'adopted';
      }
      ifMatch = theirs.etag;
    }
  }

  /** The store refused or failed: this instance serves what it fetched; others keep theirs. */
  private keepUnstored(data: SnapshotData, err: unknown): 'failed' {
    this.noteStoreError(err);
    this.apply(data, this.current?.etag, 'refresh');
    return 'failed';
  }

  private noteStoreError(err: unknown): void {
    const code = typeof (err as { code?: unknown })?.code === 'string' ? (err as { code: string }).code : 'snapshot_store_error';
    const message = err instanceof Error ? err.message : String(err);
    this.storeError = { at: this.clock(), code, message: message.slice(0, 300) };
  }

  /** POST /api/explain: the decision's trace as JSON (admin key checked by the router). */
  explain(req: PdpHttpRequest): Promise<PdpHttpResponse> {
    return explainHandler(this.pdp, this.clock)(req);
  }

  /** GET /api/explain: the self-contained page that draws the trace. */
  explainPage(): PdpHttpResponse {
    return explainPageResponse();
  }

  health(): HealthReport {
    const now = this.clock();
    const snap = this.current?.data;
    const issuers = this.pdp.issuerHealth();
    // Ready when a decision can be made now: every authority has usable keys. The memory store has
    // no snapshot until a refresh succeeds, yet keys loaded on demand (an authority that was down
    // at start-up and came back) already decide; a shared store also needs its first snapshot.
    const ready = this.pdp.registry.ready() && (snap !== undefined || this.store.kind === 'memory');
    const oldestGroup = this.pdp.groups.oldestFetchedAt();
    const follower = this.follower?.status();
    const last = this.lastReport;
    const degraded =
      issuers.some((i) => i.lastError || i.stale) ||
      (snap?.lastRefresh !== undefined && snap.lastRefresh.outcome !== 'ok') ||
      (last !== undefined && last.outcome !== 'ok') ||
      follower?.lastError !== undefined ||
      this.storeError !== undefined ||
      (oldestGroup !== undefined && now - oldestGroup > this.maxStaleMs);
    return {
      ready,
      status: ready ? (degraded ? 'degraded' : 'ok') : 'unavailable',
      issuers,
      snapshot: snap
        ? {
            store: this.store.kind,
            revision: snap.revision,
            createdAt: iso(snap.createdAt),
            ageSeconds: Math.round((now - snap.createdAt) / 1000),
            ...(snap.lastRefresh
              ? {
                  lastRefresh: {
                    outcome: snap.lastRefresh.outcome,
                    finishedAt: iso(snap.lastRefresh.finishedAt),
                    durationMs: snap.lastRefresh.finishedAt - snap.lastRefresh.startedAt,
                    problems: snap.lastRefresh.problems,
                  },
                }
              : {}),
          }
        : { store: this.store.kind, revision: null },
      // This instance's own last refresh; with a shared store the snapshot's may be another instance's.
      ...(last
        ? {
            refresh: {
              outcome: last.outcome,
              stored: last.stored,
              finishedAt: iso(last.finishedAt),
              durationMs: last.durationMs,
              problems: last.problems,
            },
          }
        : {}),
      ...(follower
        ? {
            follower: {
              etag: follower.etag ?? null,
              revision: follower.revision ?? null,
              ...(follower.lastPollAt !== undefined ? { lastPollAt: iso(follower.lastPollAt) } : {}),
              ...(follower.lastError ? { lastError: { code: follower.lastError.code, message: follower.lastError.message, at: iso(follower.lastError.at) } } : {}),
            },
          }
        : {}),
      ...(this.storeError ? { storeError: { code: this.storeError.code, message: this.storeError.message, at: iso(this.storeError.at) } } : {}),
      groups: {
        indexed: this.pdp.groups.size,
        memberships: this.pdp.groups.memberships,
        ...(oldestGroup !== undefined
          ? { oldestAgeSeconds: Math.round((now - oldestGroup) / 1000), stale: now - oldestGroup > this.maxStaleMs }
          : {}),
      },
      counters: this.pdp.counters.snapshot(),
    };
  }

  get lastRefresh(): RefreshReport | undefined {
    return this.lastReport;
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function storeFromSettings(env: Record<string, string | undefined>): SnapshotStore {
  if ((env.PDP_SNAPSHOT_STORE ?? 'memory') !== 'blob') {
    assertNoBlobIdentitySettings(env);
    return new MemorySnapshotStore();
  }
  const settings = blobStoreSettingsFrom(env);
  if (!settings) throw new Error(missingAccountMessage(env));
  return new LazyBlobStore(async () => new (await import('./state/blob-store.js')).BlobSnapshotStore(settings));
}
