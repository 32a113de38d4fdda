/**
 * A Decision as HTTP, in one place: the gateway modes' status and headers (WWW-Authenticate,
 * X-Decision-*, X-Auth-*), JSON mode's answer, the invalid-request answer, and the two JSON texts
 * of a decision: its answer (docs/decision-contract.md, "The answer") and its
 * decision-log line (docs/gateways.md, "The decision log"). Each is exactly JSON.stringify of one
 * object (`decisionBody`, `{ type: 'decision', ...event }`), written without serialising again
 * what does not change between decisions:
 *  - the members fixed by the reason code (decision, status, reason, message);
 *  - a cached principal's summary, which the Pdp freezes when it memoises a cached token's identity.
 * Both texts are written on every decision, so what never changes is serialised once.
 * test/unit/http/answer.test.ts compares both with JSON.stringify on random and hostile input.
 */
import type { Decision, DecisionEvent, DecisionInput, PrincipalSummary } from '../decision/types.js';
import { REASONS, type ReasonCode } from '../core/reasons.js';
import { json, jsonText, type PdpHttpResponse } from './types.js';

/** The JSON answer of the contract. `hint` only for admin callers. */
export function decisionBody(d: Decision, admin: boolean): Record<string, unknown> {
  // One literal in the contract's member order; absent members are undefined, which JSON leaves
  // out (conditional spreads here took V8's slow clone path on every answer).
  return {
    decision: d.decision,
    status: d.status,
    reason: d.reason,
    message: d.message,
    hint: admin && d.hint ? d.hint : undefined,
    decisionId: d.decisionId,
    principal: d.principal,
    dataActions: d.dataActions,
    compartment: d.compartment || undefined,
    queryAppend: d.queryAppend || undefined,
  };
}

/** What JSON.stringify escapes in a string: `"`, `\\`, U+0000–U+001F, and (paired or not) surrogates. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * JSON.stringify(s) for a string, without calling it for the common one that needs no escape (ids,
 * times, methods, paths): about half its cost, several times per decision. A string with a
 * surrogate, paired or lone, takes JSON.stringify, which alone knows which to escape.
 */
function jsonString(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

/** JSON.stringify of a decision's duration: a finite number as V8 writes it, else null. */
function jsonNumber(n: number): string {
  return Number.isFinite(n) ? String(n) : 'null';
}

/** JSON of frozen objects, made once per object. Only frozen ones: their JSON cannot go stale. */
const frozenJson = new WeakMap<object, string>();

function jsonOf(value: object): string {
  if (!Object.isFrozen(value)) return JSON.stringify(value);
  let text = frozenJson.get(value);
  if (text === undefined) {
    text = JSON.stringify(value);
    frozenJson.set(value, text);
  }
  return text;
}

/** `{"decision":…,"status":…,"reason":…,"message":…` for each reason code, made on first use. */
const answerHeads = new Map<ReasonCode, string>();

function answerHead(d: Decision): string | undefined {
  const def = REASONS[d.reason];
  // A decision always carries its reason's fixed members; anything else takes the general path.
  if (def === undefined || d.decision !== def.decision || d.status !== def.status || d.message !== def.message) return undefined;
  let head = answerHeads.get(d.reason);
  if (head === undefined) {
    head = JSON.stringify({ decision: def.decision, status: def.status, reason: d.reason, message: def.message }).slice(0, -1);
    answerHeads.set(d.reason, head);
  }
  return head;
}

/** JSON.stringify(decisionBody(d, admin)). */
export function decisionJson(d: Decision, admin: boolean): string {
  const head = answerHead(d);
  if (head === undefined || typeof d.decisionId !== 'string') return JSON.stringify(decisionBody(d, admin));
  let text = head;
  if (admin && d.hint) text += `,"hint":${JSON.stringify(d.hint)}`;
  text += `,"decisionId":${jsonString(d.decisionId)}`;
  if (d.principal !== undefined) text += `,"principal":${jsonOf(d.principal)}`;
  if (d.dataActions !== undefined) text += `,"dataActions":${JSON.stringify(d.dataActions)}`;
  if (d.compartment) text += `,"compartment":${JSON.stringify(d.compartment)}`;
  if (d.queryAppend) text += `,"queryAppend":${JSON.stringify(d.queryAppend)}`;
  return `${text}}`;
}

/** `,"issuer":…,"tenantId":…,"objectId":…,"applicationId":…` of frozen principal summaries. */
const lineIdentities = new WeakMap<PrincipalSummary, string>();

function identityMembers(e: DecisionEvent): string {
  return JSON.stringify({ issuer: e.issuer, tenantId: e.tenantId, objectId: e.objectId, applicationId: e.applicationId }).slice(1, -1);
}

/** `,"decision":…,"reason":…,"status":…` for each reason code, made on first use. */
const lineHeads = new Map<ReasonCode, string>();

function lineHead(e: DecisionEvent): string {
  const def = REASONS[e.reason];
  if (def === undefined || e.decision !== def.decision || e.status !== def.status)
    return `,"decision":${JSON.stringify(e.decision)},"reason":${JSON.stringify(e.reason)},"status":${JSON.stringify(e.status)}`;
  let head = lineHeads.get(e.reason);
  if (head === undefined) {
    head = `,"decision":${JSON.stringify(def.decision)},"reason":${JSON.stringify(e.reason)},"status":${JSON.stringify(def.status)}`;
    lineHeads.set(e.reason, head);
  }
  return head;
}

/**
 * `{"type":"decision", …event}` as one JSON line, for an event as the Pdp makes it (members in
 * DecisionEvent's order). `principal` is the summary the event's identity members were read from
 * (the Pdp passes the decision's): when it is frozen and its members are the event's, their JSON is
 * made once per summary.
 */
export function decisionLine(e: DecisionEvent, principal?: PrincipalSummary): string {
  let identity: string;
  if (
    principal !== undefined &&
    Object.isFrozen(principal) &&
    principal.issuer === e.issuer &&
    principal.tenantId === e.tenantId &&
    principal.objectId === e.objectId &&
    principal.applicationId === e.applicationId
  ) {
    let memo = lineIdentities.get(principal);
    if (memo === undefined) {
      memo = identityMembers(e);
      lineIdentities.set(principal, memo);
    }
    identity = memo;
  } else identity = identityMembers(e);
  let text = `{"type":"decision","decisionId":${jsonString(e.decisionId)},"time":${jsonString(e.time)}${lineHead(e)}`;
  if (e.mode !== undefined) text += `,"mode":${jsonString(e.mode)}`;
  if (e.traceId !== undefined) text += `,"traceId":${jsonString(e.traceId)}`;
  if (identity !== '') text += `,${identity}`;
  text += `,"method":${jsonString(e.method)},"path":${jsonString(e.path)},"durationMs":${jsonNumber(e.durationMs)},"cacheHit":${e.cacheHit ? 'true' : 'false'}`;
  if (e.narrowedBy !== undefined) text += `,"narrowedBy":${JSON.stringify(e.narrowedBy)}`;
  return `${text}}`;
}

// ---------------------------------------------------------------------------------------------
// A decision as HTTP: the only place that knows status, WWW-Authenticate and the answer headers.

const REALM = 'fhir-pdp';

/** How the question arrived over HTTP. */
export type DecideMode = 'json' | 'forward-auth' | 'envoy';

export interface AnswerOptions {
  /** The caller holds an admin key: operator hints are included. */
  readonly admin: boolean;
}

/** JSON mode's answer: always 200 (the caller reads the decision), the contract's JSON body. */
export function jsonAnswer(d: Decision, admin: boolean): PdpHttpResponse {
  return jsonText(200, decisionJson(d, admin), { 'x-decision-id': d.decisionId });
}

/** The answer carries the traceparent the decision continued, so the gateway's log line can name the trace. */
export function echoTraceparent(answer: PdpHttpResponse, input: DecisionInput): PdpHttpResponse {
  if (!input.traceparent) return answer;
  return { ...answer, headers: { ...answer.headers, traceparent: input.traceparent } };
}

/** A question that cannot be decided as asked: 400 invalid_request, the problem as the (admin) hint. */
export function invalidRequestAnswer(problem: string, admin: boolean): PdpHttpResponse {
  const def = REASONS.invalid_request;
  return json(400, { decision: def.decision, status: 400, reason: 'invalid_request', message: def.message, ...(admin ? { hint: problem } : {}) });
}

function quoted(v: string): string {
  return v.replace(/[\\"]/g, '');
}

/** RFC 6750 §3: the challenge for a denial. No `error` when the request had no token at all (§3.1). */
export function wwwAuthenticate(d: Decision): string | undefined {
  if (d.status !== 401 && d.status !== 403) return undefined;
  const def = REASONS[d.reason];
  if (d.reason === 'missing_token' || !('bearerError' in def)) return `Bearer realm="${REALM}"`;
  return `Bearer realm="${REALM}", error="${def.bearerError}", error_description="${quoted(d.message)}"`;
}

const IDENTITY_HEADERS = ['x-auth-principal', 'x-auth-tenant', 'x-auth-application', 'x-auth-fhir-user', 'x-auth-scopes', 'x-auth-compartment'] as const;

/** The forward-auth answer header that carries a narrowed search's parameters for nginx to append. */
export const QUERY_APPEND_HEADER = 'x-auth-query-append';

/** A gateway mode's answer: the status, X-Decision-*, X-Auth-* on an allow, WWW-Authenticate on a denial. */
export function gatewayAnswer(d: Decision, options: AnswerOptions, mode: DecideMode = 'forward-auth'): PdpHttpResponse {
  const headers: Record<string, string> = { 'x-decision-id': d.decisionId, 'x-decision-reason': d.reason, 'cache-control': 'no-store' };
  if (d.decision === 'allow') {
    // Sent unchanged: the Pdp refuses an identity whose values are not printable ASCII (src/decision/pipeline.ts),
    // because stripping or cutting one could turn it into another (a scope list cut short can lose
    // a constraint).
    const p = d.principal;
    if (p?.objectId) headers['x-auth-principal'] = p.objectId;
    else if (p?.applicationId) headers['x-auth-principal'] = p.applicationId;
    if (p?.tenantId) headers['x-auth-tenant'] = p.tenantId;
    if (p?.applicationId) headers['x-auth-application'] = p.applicationId;
    if (p?.fhirUser) headers['x-auth-fhir-user'] = p.fhirUser;
    if (p?.scopes?.length) headers['x-auth-scopes'] = p.scopes.join(' ');
    if (d.compartment) headers['x-auth-compartment'] = d.compartment;
    // Only ever set for a gateway listed in smartNarrowing (the Pdp offers no narrowing to Traefik or Envoy).
    if (d.queryAppend) headers[QUERY_APPEND_HEADER] = d.queryAppend;
    // Envoy's allowed_upstream_headers only overwrites headers fhir-pdp sends; a client's X-Auth-*
    // that fhir-pdp leaves unset would reach the upstream unless Envoy is told to remove it.
    if (mode === 'envoy') {
      const unset = IDENTITY_HEADERS.filter((h) => headers[h] === undefined);
      if (unset.length) headers['x-envoy-auth-headers-to-remove'] = unset.join(',');
    }
  } else {
    const challenge = wwwAuthenticate(d);
    if (challenge) headers['www-authenticate'] = challenge;
  }
  return jsonText(d.status, decisionJson(d, options.admin), headers);
}
