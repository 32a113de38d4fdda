/**
 * The running service: a Pdp plus its state lifecycle. Builds the Graph edge and the snapshot store
 * from settings, refreshes (issuer metadata and keys, expanded groups) into an immutable snapshot,
 * writes it with optimistic concurrency, follows the shared store on other instances, and reports
 * health. Hosts (standalone, Azure Functions, CLI) create one and route HTTP to it.
 */
import type { Client } from '@microsoft/microsoft-graph-client';
import { ConfigError } from './config/load.js';
import type { PdpConfig } from './config/schema.js';
import { readSetting, readSettings } from './config/settings.js';
import type { CircuitBreakerOptions } from './directory/circuit-breaker.js';
import type { GroupExpander } from './directory/types.js';
import { Counters } from './core/metrics.js';
import { Pdp } from './decision/pipeline.js';
import type { DecisionLogger } from './decision/types.js';
import { buildSmartConfiguration, type SmartConfigurationResult } from './fhir/smart-configuration.js';
import { Telemetry } from './telemetry/metrics.js';
import type { PrometheusMetrics } from './telemetry/prometheus.js';
import type { TelemetrySetup } from './telemetry/start.js';
import { LazyBlobStore, LazyGraphEdges } from './lazy-edges.js';
import { FhirCompartmentLookup } from './lookup/fhir-lookup.js';
import { assertNoBlobIdentitySettings, blobStoreSettingsFrom, missingAccountMessage } from './state/blob-settings.js';
import { newRevision } from './state/codec.js';
import {
  addRevocations,
  liveEntries,
  removeRevocation,
  type DenyListChange,
  type RevocationAddition,
  type RevocationEntry,
} from './state/deny-list.js';
import { assembleHealth, type HealthReport } from './state/health.js';
import { MemorySnapshotStore } from './state/memory-store.js';
import { SnapshotFollower, type SnapshotPollOutcome } from './state/snapshot-follower.js';
import {
  snapshotSigningFromSettings,
  SnapshotSigningSetupError,
  UNSIGNED_WARNING,
  type SnapshotSignatureStatus,
  type SnapshotSigningSetup,
} from './state/snapshot-signature.js';
import {
  SNAPSHOT_SCHEMA_VERSION,
  SnapshotConflictError,
  SnapshotRejectedError,
  type GroupRecord,
  type RefreshOutcome,
  type SnapshotData,
  type SnapshotStore,
} from './state/types.js';

export interface PdpServiceOptions {
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
  /**
   * Operational warnings, one line each, never a secret: a stored snapshot rejected (its signature,
   * its checksum), keys dropped from a snapshot, an unsigned Blob store. Default console.warn.
   */
  readonly warn?: (line: string) => void;
  /** Metrics and traces (src/telemetry/start.ts); without it, no metrics and the global tracer. */
  readonly telemetry?: Pick<TelemetrySetup, 'meter' | 'tracerProvider' | 'prometheus'>;
}

export type { HealthReport };

export interface SnapshotAppliedEvent {
  readonly revision: string;
  /** `revocation`: this instance changed the deny-list (POST or DELETE /api/revocations). */
  readonly source: 'refresh' | 'store' | 'revocation';
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

/** What a host may set or replace when it builds the app; the rest comes from settings and config. */
export type AppOverrides = Omit<PdpServiceOptions, 'config' | 'env'>;

/**
 * The one composition root: the service a host runs, from validated app settings, the parsed
 * configuration and the host's overrides (its decision logger; in tests, a store, a Graph client,
 * a clock). Used by the Functions adapter (src/http/azure.ts), the standalone host
 * (src/host/main.ts) and the CLI.
 */
export function buildApp(env: Record<string, string | undefined>, config: PdpConfig, overrides: AppOverrides = {}): PdpService {
  const settings = readSettings(env);
  return new PdpService({ snapshotPollMs: settings.PDP_SNAPSHOT_POLL_SECONDS * 1000, ...overrides, config, env });
}

/** Writes tried in one refresh when the stored snapshot keeps changing underneath (If-Match fails). */
const MAX_WRITE_ATTEMPTS = 3;
/** Lines of `snapshot.dropped` kept for health; a snapshot can name thousands of keys. */
const MAX_DROPPED_LINES = 20;

export class PdpService {
  readonly pdp: Pdp;
  /**
   * The decision entry point every mode and API plugs into: `decide(input, { trace })`. The Pdp's
   * own method, bound once, so calling it through the app costs nothing per decision.
   */
  readonly decide: Pdp['decide'];
  readonly store: SnapshotStore;
  /** The service's clock (explain renders a token's expiry against it). */
  readonly clock: () => number;
  readonly telemetry: Telemetry;
  private readonly prometheus?: PrometheusMetrics;
  private readonly maxStaleMs: number;
  private readonly expander?: GroupExpander;
  private readonly graphEdges?: LazyGraphEdges;
  /** The compartment lookup's token source, loaded (with @azure/identity) only when it needs one. */
  private readonly lookupToken?: Promise<() => Promise<string>>;
  private readonly follower?: SnapshotFollower;
  private readonly onSnapshotApplied?: (event: SnapshotAppliedEvent) => void;
  private current?: { data: SnapshotData; etag?: string };
  private lastReport?: RefreshReport;
  private refreshing?: Promise<RefreshReport>;
  private timer?: NodeJS.Timeout;
  private firstSnapshotRetry?: NodeJS.Timeout;
  private stopped = false;
  private readonly metadataRetryMs: number;
  private storeError?: { at: number; code: string; message: string };
  private readonly warn: (line: string) => void;
  /** Blob store from app settings: how its snapshot is signed, settled by prepare(). */
  private readonly signingSetup?: Promise<SnapshotSigningSetup>;
  private signatureStatus?: SnapshotSignatureStatus;
  /** What the served snapshot carried that the issuer checks refused (IssuerRegistry.load). */
  private droppedFromSnapshot: readonly string[] = [];

  constructor(options: PdpServiceOptions) {
    this.clock = options.clock ?? Date.now;
    this.maxStaleMs = options.config.maxStaleSeconds * 1000;
    this.metadataRetryMs = options.config.metadataRetrySeconds * 1000;
    const counters = new Counters();
    // Telemetry: fed by the decision log hook, the key fetch, Graph and snapshot poll callbacks.
    const telemetry = new Telemetry({
      ...(options.telemetry?.meter ? { meter: options.telemetry.meter } : {}),
      ...(options.telemetry?.tracerProvider ? { tracerProvider: options.telemetry.tracerProvider } : {}),
      authorities: [options.config.authority, ...options.config.smartIdentityProviders.map((p) => p.authority)],
      authorityOf: (issuer) => this.pdp.registry.authorityOf(issuer),
    });
    this.telemetry = telemetry;
    if (options.telemetry?.prometheus) this.prometheus = options.telemetry.prometheus;
    const onGraphCall = (o: 'ok' | 'failed'): void => counters.inc(o === 'ok' ? 'graph_call_ok' : 'graph_call_failed');
    const graphConfig = options.config.graph;
    const membership =
      options.graphClient || graphConfig
        ? new LazyGraphEdges(async () => {
            const [{ createGraphClient, credentialFromSettings, circuitBreakerOf }, { GraphMembershipResolver }, { createGroupExpander }] = await Promise.all([
              import('./directory/graph-client.js'),
              import('./directory/membership.js'),
              import('./directory/expand.js'),
            ]);
            const env = options.env ?? {};
            const client =
              options.graphClient ?? createGraphClient({
                credential: credentialFromSettings(env),
                baseUrl: graphConfig!.baseUrl,
                breaker: breakerFromSettings(env, this.clock),
                observer: { onCall: (outcome, retryAfterMs) => telemetry.graphCall(outcome, retryAfterMs), tracer: telemetry.graphTracer },
              });
            const breaker = circuitBreakerOf(client);
            return {
              resolver: new GraphMembershipResolver({ client, clock: this.clock, maxStaleMs: this.maxStaleMs, onGraphCall }),
              expander: createGroupExpander({ client, onGraphCall }),
              ...(breaker ? { breaker } : {}),
            };
          })
        : undefined;
    if (membership) {
      this.expander = membership;
      this.graphEdges = membership;
    }
    const lookupConfig = options.config.compartmentLookup;
    let compartmentLookup: FhirCompartmentLookup | undefined;
    if (lookupConfig) {
      const credential = lookupConfig.credential;
      if (credential.kind === 'managedIdentity') {
        const tokenSource = import('./lookup/credential.js').then(({ managedIdentityToken }) =>
          managedIdentityToken({
            scope: credential.scope ?? `${lookupConfig.fhirBaseUrl}/.default`,
            ...(credential.clientId ? { clientId: credential.clientId } : {}),
          }),
        );
        // Settled by prepare(), which hosts await at start-up; until then nothing may go unhandled.
        tokenSource.catch(() => undefined);
        this.lookupToken = tokenSource;
      }
      const tokenSource = this.lookupToken;
      compartmentLookup = new FhirCompartmentLookup({
        baseUrl: lookupConfig.fhirBaseUrl,
        timeoutMs: lookupConfig.timeoutMs,
        cacheSeconds: lookupConfig.cacheSeconds,
        maxEntries: lookupConfig.maxEntries,
        maxResponseBytes: lookupConfig.maxResponseBytes,
        clock: this.clock,
        ...(options.fetch ? { fetch: options.fetch } : {}),
        ...(tokenSource ? { token: () => tokenSource.then((token) => token()) } : {}),
        onLookup: (outcome) => telemetry.compartmentLookup(outcome),
      });
    }
    this.pdp = new Pdp(options.config, {
      clock: this.clock,
      counters,
      ...(options.fetch ? { fetch: options.fetch } : {}),
      logger: withTelemetry(telemetry, options.logger),
      onKeyFetch: (kind, outcome, authority, durationMs) => telemetry.keyFetch(authority, kind, outcome, durationMs),
      onUnknownKid: (authority, outcome) => telemetry.unknownKid(authority, outcome),
      ...(membership ? { membership } : {}),
      ...(compartmentLookup ? { compartmentLookup } : {}),
    });
    this.decide = this.pdp.decide.bind(this.pdp);
    if (options.onSnapshotApplied) this.onSnapshotApplied = options.onSnapshotApplied;
    this.warn = options.warn ?? ((line) => console.warn(line));
    if (options.store) this.store = options.store;
    else {
      const fromSettings = storeFromSettings(options.env ?? {});
      this.store = fromSettings.store;
      if (fromSettings.signing) this.signingSetup = fromSettings.signing;
    }
    if (this.store.kind === 'blob')
      this.follower = new SnapshotFollower({
        store: this.store,
        pollMs: options.snapshotPollMs ?? 30_000,
        now: this.clock,
        onSnapshot: (data, etag) => this.apply(data, etag, 'store'),
        onPoll: (outcome) => telemetry.snapshotPoll(outcome),
        onRejected: (error, etag) =>
          this.warn(`fhir-pdp: stored snapshot ${etag ?? ''} rejected, revision ${this.current?.data.revision ?? '(none)'} stays in use: ${error.code}: ${error.message}`),
      });
    telemetry.observe({
      counters,
      tokenCache: () => this.pdp.tokenCacheStats(),
      issuers: () => this.pdp.issuerHealth(),
      ready: () => this.pdp.registry.ready(),
      snapshot: () => {
        const now = this.clock();
        const snap = this.current?.data;
        return {
          ...(snap ? { ageSeconds: Math.max(0, (now - snap.createdAt) / 1000) } : {}),
          ...(this.lastReport ? { lastRefresh: { outcome: this.lastReport.outcome, durationMs: this.lastReport.durationMs } } : {}),
        };
      },
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
    if (this.signingSetup && this.signatureStatus === undefined) {
      const setup = await this.signingSetup;
      if (setup.mode === 'signed') this.signatureStatus = setup.signature.status;
      else {
        this.signatureStatus = { mode: 'unsigned', warning: UNSIGNED_WARNING };
        this.warn(`fhir-pdp: ${UNSIGNED_WARNING}`);
      }
    }
    await this.graphEdges?.load();
    await this.lookupToken;
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
    this.stopped = false;
    await this.loadStored();
    this.follower?.start();
    if (!this.current) await this.refresh();
    this.retryFirstSnapshot();
    if (options.refreshIntervalMs) {
      this.timer = setInterval(() => void this.refresh().catch(() => undefined), options.refreshIntervalMs);
      this.timer.unref();
    }
  }

  /**
   * A first refresh that loaded no issuer (the authority down at start-up) made no snapshot. It is
   * tried again every metadataRetrySeconds (at least 1 s), the schedule decisions already use for
   * an authority that is down, until a snapshot exists (from a refresh or from the store): an
   * instance whose authority came back is ready within that interval, not at the next timer refresh.
   */
  private retryFirstSnapshot(): void {
    if (this.current || this.stopped || this.firstSnapshotRetry) return;
    this.firstSnapshotRetry = setTimeout(() => {
      void this.refresh()
        .catch(() => undefined)
        .then(() => {
          this.firstSnapshotRetry = undefined;
          this.retryFirstSnapshot();
        });
    }, Math.max(1000, this.metadataRetryMs));
    this.firstSnapshotRetry.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.firstSnapshotRetry) clearTimeout(this.firstSnapshotRetry);
    this.firstSnapshotRetry = undefined;
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
      const dropped = this.pdp.registry.load(data.issuers);
      this.droppedFromSnapshot = dropped.slice(0, MAX_DROPPED_LINES).map((line) => line.slice(0, 300));
      if (dropped.length > 0) {
        this.warn(`fhir-pdp: snapshot ${data.revision} (${source}): ${dropped.length} record(s) or key(s) refused by the issuer key checks: ${this.droppedFromSnapshot.slice(0, 3).join('; ')}`);
      }
      this.pdp.setGroups(data.groups);
      this.pdp.setRevocations(data.revocations ?? []);
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
    // A refresh changes keys and groups, never the deny-list: it carries the one it is based on.
    const revocations = liveEntries(this.current?.data.revocations ?? [], this.clock());
    const data: SnapshotData = {
      schemaVersion: SNAPSHOT_SCHEMA_VERSION,
      revision: newRevision(),
      createdAt: this.clock(),
      issuers,
      groups,
      lastRefresh: outcome,
      ...(revocations.length > 0 ? { revocations } : {}),
    };
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
  private async writeSnapshot(refreshed: SnapshotData, startedAt: number): Promise<RefreshReport['stored']> {
    let data = refreshed;
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
      // Older keys and groups, but its deny-list is the newest there is (a revocation written by
      // another instance since this one last polled): ours replaces the keys, never the revocations.
      data = withRevocations(data, liveEntries(theirs.data.revocations ?? [], this.clock()));
      ifMatch = theirs.etag;
    }
  }

  /** The live deny-list of the snapshot served, and its bound. */
  revocations(): RevocationListing {
    const now = this.clock();
    return {
      revision: this.current?.data.revision ?? null,
      maxEntries: this.pdp.config.revocation.maxEntries,
      entries: liveEntries(this.current?.data.revocations ?? [], now),
    };
  }

  /** Adds to the deny-list (or widens entries already listed); see changeRevocations. */
  addRevocations(additions: readonly RevocationAddition[]): Promise<RevocationChangeResult> {
    const config = this.pdp.config;
    // The longest a token issued before now can still be accepted: maxTokenAgeSeconds refuses any
    // older one; without it, the longest lifetime the authorities issue. Plus the skew exp is allowed.
    const lifetimeS = (config.maxTokenAgeSeconds ?? config.revocation.maxTokenLifetimeSeconds) + config.clockSkewSeconds;
    return this.changeRevocations((current, now) =>
      addRevocations(current, additions, { now, defaultLifetimeMs: lifetimeS * 1000, maxEntries: config.revocation.maxEntries }),
    );
  }

  removeRevocation(id: string): Promise<RevocationChangeResult> {
    return this.changeRevocations((current, now) => removeRevocation(current, id, now));
  }

  /**
   * Read, change, write with If-Match, and retry on a conflict with the list as it is now: two
   * instances changing the deny-list at once both land, neither overwrites the other. The change
   * keeps the stored snapshot's keys, groups and createdAt (it is not a refresh) under a new
   * revision. Nothing is written when the change is refused; a store failure throws (503).
   */
  private async changeRevocations(change: (current: readonly RevocationEntry[], now: number) => DenyListChange): Promise<RevocationChangeResult> {
    for (let attempt = 1; attempt <= MAX_REVOCATION_WRITE_ATTEMPTS; attempt++) {
      const base = await this.revocationBase();
      if (base === undefined) return { ok: false, code: 'no_snapshot', message: NO_SNAPSHOT_MESSAGE };
      const now = this.clock();
      const result = change(base.data.revocations ?? [], now);
      if (!result.ok) return result;
      const data = withRevocations({ ...base.data, revision: newRevision() }, result.entries);
      try {
        const { etag } = await this.store.write(data, base.etag);
        this.apply(data, etag, 'revocation');
        return { ok: true, revision: data.revision, changed: result.changed, entries: result.entries.length };
      } catch (err) {
        if (!(err instanceof SnapshotConflictError)) throw err;
      }
    }
    throw new SnapshotConflictError(`The deny-list was changed by other writers ${MAX_REVOCATION_WRITE_ATTEMPTS} times during this change; nothing was written, try again.`);
  }

  /** The stored snapshot a deny-list change is made on: the store's current one, read now. */
  private async revocationBase(): Promise<{ data: SnapshotData; etag: string } | undefined> {
    const stored = await this.store.read();
    if (stored === undefined || stored === 'not-modified') return undefined;
    return stored;
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

  /**
   * GET /api/smart-configuration: the SMART discovery document, when `smartConfiguration` is set;
   * undefined otherwise. An authority not loaded yet is loaded (at most once per metadataRetry).
   */
  async smartConfiguration(): Promise<SmartConfigurationResult | undefined> {
    const settings = this.pdp.config.smartConfiguration;
    if (!settings) return undefined;
    // The schema accepts the authority in any case (as it compares authorities); the registry
    // knows it as configured.
    const wanted = (settings.authority ?? this.pdp.config.authority).toLowerCase();
    const configured = [this.pdp.config.authority, ...this.pdp.config.smartIdentityProviders.map((p) => p.authority)];
    const authority = configured.find((a) => a.toLowerCase() === wanted) ?? wanted;
    if (this.pdp.registry.discoveryOf(authority) === undefined) await this.pdp.registry.ensureLoaded();
    return buildSmartConfiguration(settings, authority, this.pdp.registry.discoveryOf(authority));
  }

  /** GET /api/metrics: the Prometheus text, when metrics are on (key checked by the router). */
  get metrics(): (() => Promise<string>) | undefined {
    const prometheus = this.prometheus;
    return prometheus ? () => prometheus.text() : undefined;
  }

  health(): HealthReport {
    return assembleHealth({
      now: this.clock(),
      maxStaleMs: this.maxStaleMs,
      store: this.store.kind,
      ...(this.current ? { snapshot: this.current.data } : {}),
      issuers: this.pdp.issuerHealth(),
      // Ready exactly when a decision can be made now: every authority has usable keys, whether they
      // came from a snapshot, a refresh or a decision that loaded them on demand (an authority that
      // was down at start-up and came back). A readiness probe must not keep an instance out of
      // rotation while its decisions succeed, whatever the store.
      ready: this.pdp.registry.ready(),
      groups: { indexed: this.pdp.groups.size, memberships: this.pdp.groups.memberships, oldestFetchedAt: this.pdp.groups.oldestFetchedAt() },
      ...(this.follower ? { follower: this.follower.status() } : {}),
      ...(this.graphEdges?.breakerStatus() ? { breaker: this.graphEdges.breakerStatus()! } : {}),
      ...(this.lastReport ? { lastRefresh: this.lastReport } : {}),
      ...(this.storeError ? { storeError: this.storeError } : {}),
      dropped: this.droppedFromSnapshot,
      ...(this.signatureStatus ? { signature: this.signatureStatus } : {}),
      counters: this.pdp.counters.snapshot(),
    });
  }

  get lastRefresh(): RefreshReport | undefined {
    return this.lastReport;
  }
}

/** Writes tried for one deny-list change while other writers keep changing the blob. */
const MAX_REVOCATION_WRITE_ATTEMPTS = 5;

const NO_SNAPSHOT_MESSAGE = 'no snapshot is stored yet, and the deny-list is part of it: retry once the first refresh has stored one (POST /api/refresh, GET /api/health)';

export interface RevocationListing {
  readonly revision: string | null;
  readonly maxEntries: number;
  readonly entries: readonly RevocationEntry[];
}

export type RevocationChangeResult =
  | { readonly ok: true; readonly revision: string; readonly changed: readonly RevocationEntry[]; readonly entries: number }
  | Extract<DenyListChange, { ok: false }>
  | { readonly ok: false; readonly code: 'no_snapshot'; readonly message: string };

function withRevocations(data: SnapshotData, revocations: readonly RevocationEntry[]): SnapshotData {
  const { revocations: _old, ...rest } = data;
  return revocations.length > 0 ? { ...rest, revocations } : rest;
}

/** The decision log hook: telemetry first (counts, duration, span), then the log line's writer. */
function withTelemetry(telemetry: Telemetry, logger: DecisionLogger | undefined): DecisionLogger {
  if (!logger) return (event) => telemetry.decision(event);
  return (event, decision) => {
    telemetry.decision(event);
    logger(event, decision);
  };
}

/** The Graph circuit breaker's thresholds (app settings PDP_GRAPH_BREAKER_*), on the service's clock. */
function breakerFromSettings(env: Record<string, string | undefined>, now: () => number): CircuitBreakerOptions {
  const settings = readSettings(env);
  return { failureThreshold: settings.PDP_GRAPH_BREAKER_FAILURES, openMs: settings.PDP_GRAPH_BREAKER_OPEN_SECONDS * 1000, now };
}

function storeFromSettings(env: Record<string, string | undefined>): { store: SnapshotStore; signing?: Promise<SnapshotSigningSetup> } {
  if (readSetting(env, 'PDP_SNAPSHOT_STORE') !== 'blob') {
    assertNoBlobIdentitySettings(env);
    return { store: new MemorySnapshotStore() };
  }
  const settings = blobStoreSettingsFrom(env);
  if (!settings) throw new Error(missingAccountMessage(env));
  const signing = blobSnapshotSigning(env);
  // Settled by prepare(), which hosts await at start-up; until then nothing may go unhandled.
  signing.catch(() => undefined);
  return {
    store: new LazyBlobStore(async () => {
      const setup = await signing;
      const { BlobSnapshotStore } = await import('./state/blob-store.js');
      return new BlobSnapshotStore({ ...settings, ...(setup.mode === 'signed' ? { signature: setup.signature } : {}) });
    }),
    signing,
  };
}

/**
 * Whoever can write the container could otherwise hand every instance issuer keys, so a Blob
 * store needs a signing key, or PDP_SNAPSHOT_TRUST_UNSIGNED=true to say the container is trusted.
 * There is no production switch to key this on: the rule is the same on every machine.
 */
async function blobSnapshotSigning(env: Record<string, string | undefined>): Promise<SnapshotSigningSetup> {
  try {
    const setup = await snapshotSigningFromSettings(env);
    if (setup.mode === 'none') {
      throw new SnapshotSigningSetupError(
        'PDP_SNAPSHOT_SIGNING_KEYS',
        'PDP_SNAPSHOT_STORE=blob needs a snapshot signing key (kid:base64secret, e.g. openssl rand -base64 32), or PDP_SNAPSHOT_TRUST_UNSIGNED=true when only this app can write the container',
      );
    }
    return setup;
  } catch (error) {
    if (error instanceof SnapshotSigningSetupError) {
      throw new ConfigError([{ path: error.setting, message: error.detail }], 'app settings');
    }
    throw error;
  }
}
