/**
 * The decision log event: one per decision, allow, deny and indeterminate alike, written by the
 * host's DecisionLogger (src/http/answer.ts's decisionLine). Never the token.
 */
import { appendedNames } from '../fhir/narrowing.js';
import type { Decision, DecisionEvent, DecisionInput } from './types.js';

/** The path of a request target without its query (queries can carry identifiers), bounded for hints and logs. */
export function pathOnly(target: string): string {
  const q = target.search(/[?#]/);
  const path = q >= 0 ? target.slice(0, q) : target;
  return path.length > 512 ? `${path.slice(0, 512)}…` : path;
}

/** The decision log event of a decision (OPA's EventV1 in spirit): never the token. */
export function eventFor(d: Decision, input: DecisionInput): DecisionEvent {
  const p = d.principal;
  // Every member in one literal, absent ones undefined (JSON.stringify leaves them out): one object
  // shape for every event, in the order docs/gateways.md shows.
  return {
    decisionId: d.decisionId,
    time: isoNow(),
    decision: d.decision,
    reason: d.reason,
    status: d.status,
    mode: input.mode,
    issuer: p?.issuer,
    tenantId: p?.tenantId,
    objectId: p?.objectId,
    applicationId: p?.applicationId,
    method: input.method,
    path: pathOnly(input.target),
    durationMs: d.durationMs,
    cacheHit: d.cacheHit,
    narrowedBy: d.queryAppend ? appendedNames(d.queryAppend) : undefined,
    // traceparent is 00-<trace id: 32 hex>-<parent id>-<flags>, validated where it was read.
    traceId: input.traceparent?.slice(3, 35),
    traceparent: input.traceparent,
  };
}

/** new Date().toISOString(), formatted at most once per millisecond (decision logs ask per decision). */
let lastIsoMs = Number.NaN;
let lastIso = '';
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastIsoMs) {
    lastIsoMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}
