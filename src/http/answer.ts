/**
 * A Decision as HTTP, in one place: the gateway modes' status and headers (WWW-Authenticate,
 * X-Decision-*, X-Auth-*), JSON mode's answer, the invalid-request answer, and the two JSON texts
 * of a decision: its answer (docs/decision-contract.md, "The answer") and its
 * decision-log line (docs/gateways.md, "The decision log"). Each is exactly JSON.stringify of one
 * object (`decisionBody`, `{ type: 'decision', ...event }`), written without serialising again
 * what does not change between decisions:
 *  - the members fixed by the reason code (decision, status, reason, message);
 *  - what a cached principal's decisions repeat: the answer after its decisionId (principal, data
 *    actions) and the log line's members from decision to applicationId. The Pdp freezes a cached
 *    token's summary and its sorted grants, so these are made once per principal and data actions
 *    (answer) or reason and mode (line).
 * Both texts are written on every decision, so what never changes is serialised once, and each is
 * made of few pieces: flattening a string of many pieces, for its byte length and when it is
 * written, cost more than building it (bench/PROFILE.md, eighth pass).
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

/**
 * `{"decision":…,"status":…,"reason":…,"message":…,"decisionId":"` for each reason code, made on
 * first use. The memoised texts here are joined, not concatenated: a join is one flat string, where
 * `+` leaves a tree of pieces that is walked again each time an answer containing it is flattened
 * (for its byte length, and when node writes it).
 */
const answerHeads = new Map<ReasonCode, string>();

function answerHead(d: Decision): string | undefined {
  const def = REASONS[d.reason];
  // A decision always carries its reason's fixed members; anything else takes the general path.
  if (def === undefined || d.decision !== def.decision || d.status !== def.status || d.message !== def.message) return undefined;
  let head = answerHeads.get(d.reason);
  if (head === undefined) {
    head = [JSON.stringify({ decision: def.decision, status: def.status, reason: d.reason, message: def.message }).slice(0, -1), ',"decisionId":"'].join('');
    answerHeads.set(d.reason, head);
  }
  return head;
}

/** The answer after its decisionId (`","principal":…}`) for the last decision of a frozen principal, and the data actions it was made for. */
const answerTails = new WeakMap<PrincipalSummary, { readonly dataActions: readonly string[] | undefined; readonly text: string }>();

/** `"` (closing the decisionId), principal, dataActions, compartment, queryAppend and `}`. */
function answerTail(d: Decision): string {
  const p = d.principal;
  const actions = d.dataActions;
  // A cached principal's answers repeat their tail: memoised when every member in it is frozen.
  const memoised = p !== undefined && Object.isFrozen(p) && (actions === undefined || Object.isFrozen(actions)) && !d.compartment && !d.queryAppend;
  if (memoised) {
    const memo = answerTails.get(p);
    if (memo !== undefined && memo.dataActions === actions) return memo.text;
  }
  const parts = ['"'];
  if (p !== undefined) parts.push(',"principal":', jsonOf(p));
  if (actions !== undefined) parts.push(',"dataActions":', JSON.stringify(actions));
  if (d.compartment) parts.push(',"compartment":', JSON.stringify(d.compartment));
  if (d.queryAppend) parts.push(',"queryAppend":', JSON.stringify(d.queryAppend));
  parts.push('}');
  const text = parts.join('');
  if (memoised) answerTails.set(p, { dataActions: actions, text });
  return text;
}

/** JSON.stringify(decisionBody(d, admin)). */
export function decisionJson(d: Decision, admin: boolean): string {
  const head = answerHead(d);
  // A hint, or a decision id that needs escaping (the Pdp's never do), takes the general path.
  if (head === undefined || (admin && d.hint) || typeof d.decisionId !== 'string' || NEEDS_ESCAPE.test(d.decisionId)) return JSON.stringify(decisionBody(d, admin));
  return head + d.decisionId + answerTail(d);
}

/** `,"issuer":…,"tenantId":…,"objectId":…,"applicationId":…` of an event. */
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
    head = [',"decision":', JSON.stringify(def.decision), ',"reason":', JSON.stringify(e.reason), ',"status":', JSON.stringify(def.status)].join('');
    lineHeads.set(e.reason, head);
  }
  return head;
}

/**
 * The line's members from decision to mode (`,"decision":…,"mode":…`) and its identity members
 * (`,"issuer":…,"applicationId":…`), for the last event of a frozen principal summary, and the
 * reason and mode they were made for. A traceId goes between the two.
 */
interface LineMembers {
  readonly reason: ReasonCode;
  readonly decision: string;
  readonly status: number;
  readonly mode: string | undefined;
  readonly head: string;
  readonly identity: string;
}

const lineMembersMemo = new WeakMap<PrincipalSummary, LineMembers>();

function lineMembers(e: DecisionEvent, principal: PrincipalSummary | undefined): LineMembers {
  // Memoised only when the event's identity members are the frozen summary's (as the Pdp makes them).
  const memoised =
    principal !== undefined &&
    Object.isFrozen(principal) &&
    principal.issuer === e.issuer &&
    principal.tenantId === e.tenantId &&
    principal.objectId === e.objectId &&
    principal.applicationId === e.applicationId;
  if (memoised) {
    const memo = lineMembersMemo.get(principal);
    if (memo !== undefined && memo.reason === e.reason && memo.decision === e.decision && memo.status === e.status && memo.mode === e.mode) return memo;
  }
  const identity = identityMembers(e);
  const members: LineMembers = {
    reason: e.reason,
    decision: e.decision,
    status: e.status,
    mode: e.mode,
    head: e.mode !== undefined ? [lineHead(e), ',"mode":', jsonString(e.mode)].join('') : lineHead(e),
    identity: identity !== '' ? [',', identity].join('') : '',
  };
  if (memoised) lineMembersMemo.set(principal, members);
  return members;
}

/** `,"time":"…"` of the last time written: the Pdp's times repeat within a millisecond. */
let lastTime = '';
let lastTimeText = '';

function timeMember(time: string): string {
  if (time !== lastTime) {
    lastTimeText = [',"time":', jsonString(time)].join('');
    lastTime = time;
  }
  return lastTimeText;
}

/**
 * `{"type":"decision", …event}` as one JSON line, for an event as the Pdp makes it (members in
 * DecisionEvent's order, traceId after mode). `principal` is the summary the event's identity
 * members were read from (the Pdp passes the decision's): when it is frozen and its members are the
 * event's, the members from decision to applicationId are made once per summary, reason and mode.
 */
export function decisionLine(e: DecisionEvent, principal?: PrincipalSummary): string {
  const m = lineMembers(e, principal);
  const trace = e.traceId !== undefined ? `,"traceId":${jsonString(e.traceId)}` : '';
  const cacheHit = e.cacheHit ? ',"cacheHit":true' : ',"cacheHit":false';
  const narrowed = e.narrowedBy !== undefined ? `,"narrowedBy":${JSON.stringify(e.narrowedBy)}` : '';
  // The common line: nothing to escape, so the quotes are part of the fixed pieces (fewer pieces to join).
  if (!NEEDS_ESCAPE.test(e.decisionId) && !NEEDS_ESCAPE.test(e.method) && !NEEDS_ESCAPE.test(e.path))
    return `{"type":"decision","decisionId":"${e.decisionId}"${timeMember(e.time)}${m.head}${trace}${m.identity},"method":"${e.method}","path":"${e.path}","durationMs":${jsonNumber(e.durationMs)}${cacheHit}${narrowed}}`;
  return `{"type":"decision","decisionId":${jsonString(e.decisionId)}${timeMember(e.time)}${m.head}${trace}${m.identity},"method":${jsonString(e.method)},"path":${jsonString(e.path)},"durationMs":${jsonNumber(e.durationMs)}${cacheHit}${narrowed}}`;
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
