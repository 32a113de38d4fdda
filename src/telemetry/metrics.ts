/**
 * Every metric fhir-pdp exports, declared in one place (Envoy's stats.h), and the one Telemetry
 * object the service reports through. docs/operations.md lists the same names; a test keeps the two
 * in sync. Every label value comes from a closed set fixed when the service starts (reason codes,
 * modes, configured authorities, outcomes): nothing a caller sends can create a time series.
 */
import { SpanKind, SpanStatusCode, trace, type Attributes, type Meter, type Tracer, type TracerProvider } from '@opentelemetry/api';
import type { Counters } from '../core/metrics.js';
import { REASONS, type DecisionKind, type ReasonCode } from '../core/reasons.js';
import { parentContext } from './trace-context.js';

export const METER_NAME = 'fhir-pdp';

/** Metric names as Prometheus shows them (OpenTelemetry counters gain `_total`), with what they count. */
export const METRICS = {
  fhir_pdp_decisions_total: 'Decisions by decision, reason, mode and issuer (the configured authority).',
  fhir_pdp_decision_duration_seconds: 'Time to decide, from the question read to the answer made.',
  fhir_pdp_token_cache_lookups_total: 'Verified-token cache lookups by result (hit, miss).',
  fhir_pdp_token_cache_evictions_total: 'Verified-token cache entries evicted (size bounds, keys an issuer stopped publishing).',
  fhir_pdp_token_cache_entries: 'Verified tokens cached now.',
  fhir_pdp_token_cache_bytes: 'Estimated bytes of the verified-token cache.',
  fhir_pdp_key_fetches_total: 'Discovery and JWKS fetches by authority, document and outcome (ok, failed, refused_oversized, timeout).',
  fhir_pdp_unknown_kid_refetches_total: 'JWKS refetches for an unknown kid by authority and outcome (refetched, suppressed by the cooldown).',
  fhir_pdp_issuer_keys_age_seconds: "Age of the oldest keys held for the authority's issuers.",
  fhir_pdp_issuer_keys_stale: '1 when keys of the authority are older than maxStaleSeconds (decisions for it are refused), else 0.',
  fhir_pdp_graph_calls_total: 'Microsoft Graph HTTP calls by outcome (ok, throttled, failed, short_circuited).',
  fhir_pdp_graph_retry_after_seconds_total: 'Seconds of Retry-After that Graph asked for (and fhir-pdp honoured by waiting or failing over).',
  fhir_pdp_compartment_lookups_total: 'Compartment lookups at the FHIR server (compartmentLookup) by outcome (found, not_found, failed, cache_hit).',
  fhir_pdp_ready: '1 when every authority has usable keys (what /api/health answers 200 for), else 0.',
  fhir_pdp_snapshot_age_seconds: 'Age of the served snapshot (absent before the first snapshot).',
  fhir_pdp_refresh_last_duration_seconds: "Duration of this instance's last refresh.",
  fhir_pdp_refresh_last_outcome: "1 for the outcome (ok, partial, failed) of this instance's last refresh, 0 for the others.",
  fhir_pdp_refreshes_total: 'Refreshes by outcome (ok: with or without problems, failed: nothing loaded).',
  fhir_pdp_snapshot_polls_total: 'Polls of the shared Blob snapshot by outcome (changed, not-modified, empty, rejected, failed).',
} as const;

export type MetricName = keyof typeof METRICS;

export const MODES = ['json', 'forward-auth', 'envoy', 'explain', 'authzen'] as const;
export const KEY_FETCH_OUTCOMES = ['ok', 'failed', 'refused_oversized', 'timeout'] as const;
export const GRAPH_OUTCOMES = ['ok', 'throttled', 'failed', 'short_circuited'] as const;
export const COMPARTMENT_LOOKUP_OUTCOMES = ['found', 'not_found', 'failed', 'cache_hit'] as const;
export const POLL_OUTCOMES = ['changed', 'not-modified', 'empty', 'rejected', 'failed'] as const;
export const REFRESH_OUTCOMES = ['ok', 'partial', 'failed'] as const;
/** Label value of a decision without a verified principal (no token, a bad token). */
export const NO_ISSUER = 'none';
/** Label value for anything outside a closed set (never expected; counted, not dropped). */
export const OTHER = 'other';

export type KeyFetchOutcome = (typeof KEY_FETCH_OUTCOMES)[number];
export type GraphOutcome = (typeof GRAPH_OUTCOMES)[number];
export type PollOutcome = (typeof POLL_OUTCOMES)[number];
export type CompartmentLookupOutcome = (typeof COMPARTMENT_LOOKUP_OUTCOMES)[number];

/**
 * Seconds. A decision answered from memory takes tens of microseconds; one that fetches keys or
 * asks Graph takes milliseconds to the decision budget (seconds).
 */
export const DURATION_BUCKETS = [0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** What one decision reports: fields of its log event (src/decision/types.ts DecisionEvent). */
export interface DecisionFacts {
  readonly decisionId: string;
  readonly decision: DecisionKind;
  readonly reason: ReasonCode;
  readonly status: number;
  readonly mode?: string | undefined;
  readonly issuer?: string | undefined;
  readonly durationMs: number;
  readonly cacheHit: boolean;
  readonly traceparent?: string | undefined;
}

/** State read when metrics are collected (a scrape), never per decision. */
export interface ObservedState {
  readonly counters?: Counters;
  readonly tokenCache?: () => { entries: number; bytes: number; evictions: number } | undefined;
  readonly issuers?: () => ReadonlyArray<{ authority: string; ageSeconds?: number; stale: boolean }>;
  readonly ready?: () => boolean;
  readonly snapshot?: () => { ageSeconds?: number; lastRefresh?: { outcome: string; durationMs: number } };
}

export interface TelemetryOptions {
  /** Undefined: no metrics (PDP_METRICS=off); the counters in src/core/metrics.ts still count for health. */
  readonly meter?: Meter;
  /** Default: the global provider (a no-op unless an SDK was registered, e.g. Azure Monitor). */
  readonly tracerProvider?: TracerProvider;
  /** Configured authorities: the only values of the `issuer` and `authority` labels besides none/other. */
  readonly authorities: readonly string[];
  /** The configured authority a verified token's issuer belongs to (IssuerRegistry.authorityOf). */
  readonly authorityOf?: (issuer: string) => string | undefined;
}

/** Per-decision cell: a count and its attribute object, made once per label combination. */
interface DecisionCell {
  count: number;
  readonly attributes: Attributes;
}

export class Telemetry {
  readonly enabled: boolean;
  private readonly tracer: Tracer;
  private readonly tracing: boolean;
  private readonly authorities: ReadonlySet<string>;
  private readonly authorityOf: (issuer: string) => string | undefined;
  /**
   * Decision counts by reason → mode → issuer label. Every reason, mode and issuer comes from a
   * closed set, so this holds at most |reasons| × |modes| × (|authorities| + 2) cells; a decision
   * is three Map reads and an add, no attribute object made.
   */
  private readonly cells = new Map<string, Map<string, Map<string, DecisionCell>>>();
  /**
   * The cell of the previous decision and what it was looked up by: under steady traffic most
   * decisions repeat the last one's reason, mode and issuer, which three comparisons then settle.
   */
  private last: { reason: ReasonCode; mode: string | undefined; issuer: string | undefined; cell: DecisionCell } | undefined;
  private readonly keyFetches = new Map<string, { count: number; readonly attributes: Attributes }>();
  private readonly kidRefetches = new Map<string, { count: number; readonly attributes: Attributes }>();
  private readonly graphCalls = new Map<GraphOutcome, number>(GRAPH_OUTCOMES.map((o) => [o, 0]));
  private readonly compartmentLookups = new Map<CompartmentLookupOutcome, number>(COMPARTMENT_LOOKUP_OUTCOMES.map((o) => [o, 0]));
  private graphRetryAfterSeconds = 0;
  private readonly polls = new Map<PollOutcome, number>(POLL_OUTCOMES.map((o) => [o, 0]));
  private readonly recordDuration: (seconds: number) => void;

  constructor(private readonly options: TelemetryOptions) {
    this.enabled = options.meter !== undefined;
    this.authorities = new Set(options.authorities);
    this.authorityOf = options.authorityOf ?? (() => undefined);
    const provider = options.tracerProvider ?? trace.getTracerProvider();
    this.tracer = provider.getTracer(METER_NAME);
    // With no SDK registered the global provider hands out no-op tracers: no span is made at all.
    this.tracing = options.tracerProvider !== undefined || hasTracerSdk(provider);
    const meter = options.meter;
    if (!meter) {
      this.recordDuration = () => undefined;
      return;
    }
    const histogram = meter.createHistogram('fhir_pdp_decision_duration_seconds', {
      description: METRICS.fhir_pdp_decision_duration_seconds,
      unit: 's',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    });
    // No attributes: the SDK hashes a record's attribute set on every call (sorted keys, then
    // JSON), which cost most of what metrics add to a cached decision. Decisions by outcome are
    // the counter's job; the histogram is the latency of all of them.
    this.recordDuration = (seconds) => histogram.record(seconds);
    meter
      .createObservableCounter('fhir_pdp_decisions', { description: METRICS.fhir_pdp_decisions_total })
      .addCallback((result) => {
        for (const byMode of this.cells.values()) for (const byIssuer of byMode.values()) for (const cell of byIssuer.values()) result.observe(cell.count, cell.attributes);
      });
    meter
      .createObservableCounter('fhir_pdp_key_fetches', { description: METRICS.fhir_pdp_key_fetches_total })
      .addCallback((result) => this.keyFetches.forEach((c) => result.observe(c.count, c.attributes)));
    meter
      .createObservableCounter('fhir_pdp_unknown_kid_refetches', { description: METRICS.fhir_pdp_unknown_kid_refetches_total })
      .addCallback((result) => this.kidRefetches.forEach((c) => result.observe(c.count, c.attributes)));
    meter
      .createObservableCounter('fhir_pdp_graph_calls', { description: METRICS.fhir_pdp_graph_calls_total })
      .addCallback((result) => this.graphCalls.forEach((n, outcome) => result.observe(n, { outcome })));
    meter
      .createObservableCounter('fhir_pdp_compartment_lookups', { description: METRICS.fhir_pdp_compartment_lookups_total })
      .addCallback((result) => this.compartmentLookups.forEach((n, outcome) => result.observe(n, { outcome })));
    meter
      .createObservableCounter('fhir_pdp_graph_retry_after_seconds', { description: METRICS.fhir_pdp_graph_retry_after_seconds_total, unit: 's' })
      .addCallback((result) => result.observe(this.graphRetryAfterSeconds));
    meter
      .createObservableCounter('fhir_pdp_snapshot_polls', { description: METRICS.fhir_pdp_snapshot_polls_total })
      .addCallback((result) => this.polls.forEach((n, outcome) => result.observe(n, { outcome })));
  }

  /** One decision: its count, its duration and, when tracing, its span. Called from the decision log hook. */
  decision(facts: DecisionFacts): void {
    if (this.enabled) {
      const last = this.last;
      if (last !== undefined && last.reason === facts.reason && last.mode === facts.mode && last.issuer === facts.issuer) last.cell.count++;
      else {
        const cell = this.cellFor(facts.reason, facts.mode, facts.issuer);
        cell.count++;
        // An issuer read as `other` may belong to an authority once its keys are loaded: not kept.
        this.last = cell.attributes['issuer'] === OTHER ? undefined : { reason: facts.reason, mode: facts.mode, issuer: facts.issuer, cell };
      }
      this.recordDuration(facts.durationMs / 1000);
    }
    if (this.tracing) this.decisionSpan(facts);
  }

  private cellFor(reason: ReasonCode, mode: string | undefined, issuer: string | undefined): DecisionCell {
    const reasonLabel = reason in REASONS ? reason : OTHER;
    const modeLabel = mode !== undefined && (MODES as readonly string[]).includes(mode) ? mode : OTHER;
    const issuerLabel = this.issuerLabel(issuer);
    let byMode = this.cells.get(reasonLabel);
    if (!byMode) this.cells.set(reasonLabel, (byMode = new Map()));
    let byIssuer = byMode.get(modeLabel);
    if (!byIssuer) byMode.set(modeLabel, (byIssuer = new Map()));
    let cell = byIssuer.get(issuerLabel);
    if (!cell) {
      const def = REASONS[reason as ReasonCode];
      cell = { count: 0, attributes: Object.freeze({ decision: def?.decision ?? OTHER, reason: reasonLabel, mode: modeLabel, issuer: issuerLabel }) };
      byIssuer.set(issuerLabel, cell);
    }
    return cell;
  }

  /** A principal's issuer as the configured authority it belongs to: never the token's own value. */
  private issuerLabel(issuer: string | undefined): string {
    if (issuer === undefined) return NO_ISSUER;
    const authority = this.authorityOf(issuer);
    return authority !== undefined && this.authorities.has(authority) ? authority : OTHER;
  }

  private authorityLabel(authority: string): string {
    return this.authorities.has(authority) ? authority : OTHER;
  }

  private decisionSpan(facts: DecisionFacts): void {
    // Made after the fact with the decision's own start time: the pipeline is not touched, and a
    // decision carries no span object while it runs.
    const end = Date.now();
    const span = this.tracer.startSpan(
      'fhir-pdp decide',
      {
        kind: SpanKind.SERVER,
        startTime: end - facts.durationMs,
        attributes: {
          'fhir_pdp.decision_id': facts.decisionId,
          'fhir_pdp.decision': facts.decision,
          'fhir_pdp.reason': facts.reason,
          'fhir_pdp.mode': facts.mode ?? OTHER,
          'fhir_pdp.issuer': this.issuerLabel(facts.issuer),
          'fhir_pdp.cache_hit': facts.cacheHit,
          'http.response.status_code': facts.status,
        },
      },
      facts.traceparent ? parentContext(facts.traceparent) : undefined,
    );
    if (facts.decision === 'indeterminate') span.setStatus({ code: SpanStatusCode.ERROR, message: facts.reason });
    span.end(end);
  }

  /** One discovery or JWKS fetch of a configured authority. */
  keyFetch(authority: string, document: 'discovery' | 'jwks', outcome: KeyFetchOutcome, durationMs: number): void {
    const label = this.authorityLabel(authority);
    if (this.enabled) {
      const key = `${label}\n${document}\n${outcome}`;
      let cell = this.keyFetches.get(key);
      if (!cell) this.keyFetches.set(key, (cell = { count: 0, attributes: Object.freeze({ authority: label, document, outcome }) }));
      cell.count++;
    }
    if (this.tracing) {
      const end = Date.now();
      const span = this.tracer.startSpan(`fhir-pdp fetch ${document}`, {
        kind: SpanKind.CLIENT,
        startTime: end - durationMs,
        attributes: { 'fhir_pdp.authority': label, 'fhir_pdp.document': document, 'fhir_pdp.outcome': outcome },
      });
      if (outcome !== 'ok') span.setStatus({ code: SpanStatusCode.ERROR, message: outcome });
      span.end(end);
    }
  }

  /** An unknown kid: a JWKS refetch made, or one suppressed by the cooldown. */
  unknownKid(authority: string, outcome: 'refetched' | 'suppressed'): void {
    if (!this.enabled) return;
    const label = this.authorityLabel(authority);
    const key = `${label}\n${outcome}`;
    let cell = this.kidRefetches.get(key);
    if (!cell) this.kidRefetches.set(key, (cell = { count: 0, attributes: Object.freeze({ authority: label, outcome }) }));
    cell.count++;
  }

  /** One Microsoft Graph HTTP call; `retryAfterMs` when Graph answered with Retry-After. */
  /** One compartment lookup (a cached answer counts as cache_hit). */
  compartmentLookup(outcome: CompartmentLookupOutcome): void {
    this.compartmentLookups.set(outcome, (this.compartmentLookups.get(outcome) ?? 0) + 1);
  }

  graphCall(outcome: GraphOutcome, retryAfterMs?: number): void {
    this.graphCalls.set(outcome, (this.graphCalls.get(outcome) ?? 0) + 1);
    if (retryAfterMs !== undefined && retryAfterMs > 0) this.graphRetryAfterSeconds += retryAfterMs / 1000;
  }

  /** The tracer for spans made around I/O (the Graph call). */
  get graphTracer(): Tracer | undefined {
    return this.tracing ? this.tracer : undefined;
  }

  snapshotPoll(outcome: PollOutcome): void {
    this.polls.set(outcome, (this.polls.get(outcome) ?? 0) + 1);
  }

  /** Gauges and counters read from the service's state at each collection (a scrape). */
  observe(state: ObservedState): void {
    const meter = this.options.meter;
    if (!meter) return;
    const lookups = meter.createObservableCounter('fhir_pdp_token_cache_lookups', { description: METRICS.fhir_pdp_token_cache_lookups_total });
    const evictions = meter.createObservableCounter('fhir_pdp_token_cache_evictions', { description: METRICS.fhir_pdp_token_cache_evictions_total });
    const entries = meter.createObservableGauge('fhir_pdp_token_cache_entries', { description: METRICS.fhir_pdp_token_cache_entries });
    const bytes = meter.createObservableGauge('fhir_pdp_token_cache_bytes', { description: METRICS.fhir_pdp_token_cache_bytes, unit: 'By' });
    const keysAge = meter.createObservableGauge('fhir_pdp_issuer_keys_age_seconds', { description: METRICS.fhir_pdp_issuer_keys_age_seconds });
    const keysStale = meter.createObservableGauge('fhir_pdp_issuer_keys_stale', { description: METRICS.fhir_pdp_issuer_keys_stale });
    const ready = meter.createObservableGauge('fhir_pdp_ready', { description: METRICS.fhir_pdp_ready });
    const snapshotAge = meter.createObservableGauge('fhir_pdp_snapshot_age_seconds', { description: METRICS.fhir_pdp_snapshot_age_seconds });
    const refreshDuration = meter.createObservableGauge('fhir_pdp_refresh_last_duration_seconds', { description: METRICS.fhir_pdp_refresh_last_duration_seconds });
    const refreshOutcome = meter.createObservableGauge('fhir_pdp_refresh_last_outcome', { description: METRICS.fhir_pdp_refresh_last_outcome });
    const refreshes = meter.createObservableCounter('fhir_pdp_refreshes', { description: METRICS.fhir_pdp_refreshes_total });
    // One callback for all: the state is read once per collection.
    meter.addBatchObservableCallback(
      (result) => {
        const counters = state.counters;
        if (counters) {
          result.observe(lookups, counters.get('token_cache_hit'), { result: 'hit' });
          result.observe(lookups, counters.get('token_cache_miss'), { result: 'miss' });
          result.observe(refreshes, counters.get('refresh_ok'), { outcome: 'ok' });
          result.observe(refreshes, counters.get('refresh_failed'), { outcome: 'failed' });
        }
        const cache = state.tokenCache?.();
        if (cache) {
          result.observe(evictions, cache.evictions);
          result.observe(entries, cache.entries);
          result.observe(bytes, cache.bytes);
        }
        const byAuthority = new Map<string, { age?: number; stale: boolean }>();
        for (const issuer of state.issuers?.() ?? []) {
          const label = this.authorityLabel(issuer.authority);
          const seen = byAuthority.get(label) ?? { stale: false };
          if (issuer.ageSeconds !== undefined) seen.age = Math.max(seen.age ?? 0, issuer.ageSeconds);
          seen.stale ||= issuer.stale;
          byAuthority.set(label, seen);
        }
        for (const [authority, s] of byAuthority) {
          if (s.age !== undefined) result.observe(keysAge, s.age, { authority });
          result.observe(keysStale, s.stale ? 1 : 0, { authority });
        }
        if (state.ready) result.observe(ready, state.ready() ? 1 : 0);
        const snap = state.snapshot?.();
        if (snap?.ageSeconds !== undefined) result.observe(snapshotAge, snap.ageSeconds);
        if (snap?.lastRefresh) {
          result.observe(refreshDuration, snap.lastRefresh.durationMs / 1000);
          for (const outcome of REFRESH_OUTCOMES) result.observe(refreshOutcome, snap.lastRefresh.outcome === outcome ? 1 : 0, { outcome });
        }
      },
      [lookups, evictions, entries, bytes, keysAge, keysStale, ready, snapshotAge, refreshDuration, refreshOutcome, refreshes],
    );
  }
}

/** True when the provider hands out real tracers (an SDK is registered), not the API's no-op ones. */
function hasTracerSdk(provider: TracerProvider): boolean {
  const delegate = (provider as { getDelegate?: () => TracerProvider }).getDelegate?.() ?? provider;
  return delegate.constructor.name !== 'NoopTracerProvider';
}
