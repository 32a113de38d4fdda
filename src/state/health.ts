/**
 * The health report (GET /api/health for admin callers; docs/state.md, "Health"), assembled from
 * what the running service knows. Pure: the service passes its state in, with the time.
 */
import { isFresh } from '../core/staleness.js';
import type { SnapshotFollowerStatus } from './snapshot-follower.js';
import type { SnapshotSignatureStatus } from './snapshot-signature.js';
import type { RefreshOutcome, SnapshotData, SnapshotStore } from './types.js';

/** What health() reports: `ready` decides the probe's status; the rest is for operators. */
export interface HealthReport {
  readonly ready: boolean;
  readonly [key: string]: unknown;
}

/** One issuer's entry, as the issuer registry reports it (src/identity/issuers.ts, IssuerHealth). */
export interface IssuerHealthEntry {
  readonly stale: boolean;
  readonly lastError?: unknown;
}

/** The Graph circuit breaker's state (src/directory/circuit-breaker.ts, CircuitStatus). */
export interface BreakerHealth {
  readonly state: string;
  readonly consecutiveFailures: number;
  readonly openedAt?: number;
  readonly nextProbeAt?: number;
  readonly opened: number;
  readonly shortCircuited: number;
}

export interface HealthInputs {
  readonly now: number;
  readonly maxStaleMs: number;
  readonly store: SnapshotStore['kind'];
  /** The snapshot served, when there is one. */
  readonly snapshot?: SnapshotData;
  readonly issuers: readonly IssuerHealthEntry[];
  /** Every authority has usable keys: a decision can be made now. */
  readonly ready: boolean;
  readonly groups: { readonly indexed: number; readonly memberships: number; readonly oldestFetchedAt: number | undefined };
  readonly follower?: SnapshotFollowerStatus;
  readonly breaker?: BreakerHealth;
  /** This instance's own last refresh. */
  readonly lastRefresh?: RefreshOutcome & { readonly stored: string; readonly durationMs: number };
  readonly storeError?: { readonly at: number; readonly code: string; readonly message: string };
  /** What the served snapshot carried that the issuer checks refused. */
  readonly dropped: readonly string[];
  readonly signature?: SnapshotSignatureStatus;
  readonly counters: Readonly<Record<string, number>>;
}

export function assembleHealth(input: HealthInputs): HealthReport {
  const { now, maxStaleMs, issuers, ready, follower, breaker } = input;
  const snap = input.snapshot;
  const oldestGroup = input.groups.oldestFetchedAt;
  const last = input.lastRefresh;
  const dropped = input.dropped;
  const degraded =
    (breaker !== undefined && breaker.state !== 'closed') ||
    issuers.some((i) => i.lastError || i.stale) ||
    (snap?.lastRefresh !== undefined && snap.lastRefresh.outcome !== 'ok') ||
    (last !== undefined && last.outcome !== 'ok') ||
    follower?.lastError !== undefined ||
    input.storeError !== undefined ||
    dropped.length > 0 ||
    (oldestGroup !== undefined && !isFresh(oldestGroup, now, maxStaleMs));
  return {
    ready,
    status: ready ? (degraded ? 'degraded' : 'ok') : 'unavailable',
    issuers,
    snapshot: snap
      ? {
          store: input.store,
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
          ...(dropped.length > 0 ? { dropped: dropped } : {}),
          // Live deny-list entries (the list itself: GET /api/revocations).
          ...(snap.revocations?.length ? { revocations: snap.revocations.filter((e) => e.expiresAt > now).length } : {}),
          ...(input.signature ? { signature: input.signature } : {}),
        }
      : { store: input.store, revision: null, ...(input.signature ? { signature: input.signature } : {}) },
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
    ...(breaker
      ? {
          graph: {
            breaker: {
              state: breaker.state,
              consecutiveFailures: breaker.consecutiveFailures,
              ...(breaker.openedAt !== undefined ? { openedAt: iso(breaker.openedAt) } : {}),
              ...(breaker.nextProbeAt !== undefined ? { nextProbeAt: iso(breaker.nextProbeAt) } : {}),
              opened: breaker.opened,
              shortCircuited: breaker.shortCircuited,
            },
          },
        }
      : {}),
    ...(input.storeError ? { storeError: { code: input.storeError.code, message: input.storeError.message, at: iso(input.storeError.at) } } : {}),
    groups: {
      indexed: input.groups.indexed,
      memberships: input.groups.memberships,
      ...(oldestGroup !== undefined
        ? { oldestAgeSeconds: Math.round((now - oldestGroup) / 1000), stale: !isFresh(oldestGroup, now, maxStaleMs) }
        : {}),
    },
    counters: input.counters,
  };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
