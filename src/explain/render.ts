/**
 * Explain, the pure half: a Decision made with `{ trace: true }` becomes an Explanation (what the
 * CLI prints with --json, what POST /api/explain returns, what the page draws), and an Explanation
 * becomes text lines for the terminal. Nothing here checks anything: every pass, fail, expected,
 * found and fix comes from the trace the decision code wrote. Time is passed in.
 */
import type { Decision, PrincipalSummary } from '../decision/types.js';
import type { DecisionKind, ReasonCode } from '../core/reasons.js';
import type { StepOutcome, TraceStep, TraceStepId } from '../core/trace.js';
import { stripBearer } from '../identity/extract.js';

export interface ExplainRequest {
  readonly method: string;
  readonly path: string;
}

export interface DecisionSummary {
  readonly decision: DecisionKind;
  readonly status: number;
  readonly reason: ReasonCode;
  readonly message: string;
  readonly decisionId: string;
  readonly principal?: PrincipalSummary;
  readonly dataActions?: readonly string[];
  readonly compartment?: string;
  /** The parameters the gateway appends to the search (SMART narrowing). */
  readonly queryAppend?: string;
}

/** A NumericDate claim shown as a date and relative to the time of the decision. */
export interface ClaimTime {
  readonly claim: string;
  readonly seconds: number;
  readonly iso: string;
  /** "expired 3 h ago", "expires in 59 min", "12 s ago", "in 2 d". */
  readonly relative: string;
}

export interface ExplainedToken {
  readonly header: Readonly<Record<string, unknown>>;
  readonly claims: Readonly<Record<string, unknown>>;
  /**
   * True when header and claims are those of the verified token. False when the token did not get
   * that far: they were then decoded for display only, and nothing in them has been checked.
   */
  readonly verified: boolean;
  /** One line on how far the token got, from the trace: "verified", "signature verified; refused at Lifetime (exp, nbf, iat)", ... */
  readonly status: string;
  readonly times: readonly ClaimTime[];
}

export interface Explanation {
  readonly request: ExplainRequest;
  /** When the decision was made (ISO 8601); relative times are computed from it. */
  readonly evaluatedAt: string;
  readonly decision: DecisionSummary;
  /** The operator hint of the refusal (the fix). */
  readonly hint?: string;
  /** The first step whose outcome is `fail`. */
  readonly failedStep?: TraceStepId;
  readonly trace: readonly TraceStep[];
  readonly token?: ExplainedToken;
}

/** Above this a token is not decoded for display (the decision refuses it as malformed anyway). */
const MAX_DISPLAY_TOKEN_CHARS = 64 * 1024;
const TIME_CLAIMS = ['iat', 'nbf', 'exp', 'auth_time'] as const;
/** JSON numbers beyond year 9999 are not dates. */
const MAX_NUMERIC_DATE = 253402300799;

/**
 * Builds the explanation of a decision made with `{ trace: true }`. `rawToken` is used only when the
 * decision carries no decoded token (it failed before verification completed), and then only to
 * show what the token says, labelled as unverified.
 */
export function explanationOf(decision: Decision, request: ExplainRequest, rawToken: string | undefined, now: number): Explanation {
  const trace = decision.trace ?? [];
  const failed = trace.find((s) => s.outcome === 'fail');
  const decoded = decision.token
    ? { header: decision.token.header, claims: decision.token.claims, verified: true }
    : rawToken !== undefined
      ? decodeForDisplay(rawToken)
      : undefined;
  return {
    request,
    evaluatedAt: new Date(now).toISOString(),
    decision: {
      decision: decision.decision,
      status: decision.status,
      reason: decision.reason,
      message: decision.message,
      decisionId: decision.decisionId,
      ...(decision.principal ? { principal: decision.principal } : {}),
      ...(decision.dataActions ? { dataActions: decision.dataActions } : {}),
      ...(decision.compartment ? { compartment: decision.compartment } : {}),
      ...(decision.queryAppend ? { queryAppend: decision.queryAppend } : {}),
    },
    ...(decision.hint ? { hint: decision.hint } : {}),
    ...(failed ? { failedStep: failed.id } : {}),
    trace,
    ...(decoded ? { token: { ...decoded, status: tokenStatus(decoded.verified, trace, failed), times: claimTimes(decoded.claims, now) } } : {}),
  };
}

function tokenStatus(verified: boolean, trace: readonly TraceStep[], failed: TraceStep | undefined): string {
  if (verified) return 'verified';
  const signature = trace.find((s) => s.id === 'signature')?.outcome;
  if (signature === 'pass') return `signature verified; refused at ${failed?.title ?? 'a later step'}`;
  if (signature === 'fail') return 'the signature does not verify: decoded for display only';
  return 'not verified: decoded for display only';
}

/**
 * Display only, never a check: base64url and JSON.parse of the first two parts, leniently, so an
 * operator can see what a refused token claims. Returns undefined when they are not JSON objects.
 */
export function decodeForDisplay(rawToken: string): { header: Record<string, unknown>; claims: Record<string, unknown>; verified: false } | undefined {
  const token = stripBearer(rawToken);
  if (token.length > MAX_DISPLAY_TOKEN_CHARS) return undefined;
  const [h, p] = token.split('.');
  const header = lenientJsonObject(h);
  const claims = lenientJsonObject(p);
  if (!header || !claims) return undefined;
  return { header, claims, verified: false };
}


function lenientJsonObject(part: string | undefined): Record<string, unknown> | undefined {
  if (!part) return undefined;
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export function claimTimes(claims: Readonly<Record<string, unknown>>, now: number): ClaimTime[] {
  const out: ClaimTime[] = [];
  for (const claim of TIME_CLAIMS) {
    const v = claims[claim];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > MAX_NUMERIC_DATE) continue;
    out.push({ claim, seconds: v, iso: new Date(v * 1000).toISOString(), relative: relativeTime(claim, v, now) });
  }
  return out;
}

/** `exp` reads as "expired … ago" / "expires in …"; other times as "… ago" / "in …". */
export function relativeTime(claim: string, seconds: number, now: number): string {
  const delta = Math.round(seconds - now / 1000);
  const span = formatSpan(Math.abs(delta));
  if (claim === 'exp') return delta <= 0 ? `expired ${span} ago` : `expires in ${span}`;
  if (delta === 0) return 'now';
  return delta < 0 ? `${span} ago` : `in ${span}`;
}

export function formatSpan(seconds: number): string {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 48 * 3600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

// ---------------------------------------------------------------------------------------------
// Text

export interface RenderOptions {
  /** ANSI colours (the CLI sets this for a terminal without NO_COLOR). */
  readonly color?: boolean;
  /** Longest value shown for a claim; longer ones are cut with "…" (--json shows all). */
  readonly maxValueChars?: number;
}

const OUTCOME_LABEL: Readonly<Record<StepOutcome, string>> = { pass: 'pass', fail: 'FAIL', skipped: 'skip' };
const ANSI = { green: '\u001b[32m', red: '\u001b[31m', dim: '\u001b[2m', bold: '\u001b[1m', reset: '\u001b[0m' } as const;

/** The explanation as terminal lines: verdict, fix, token, every step with the failing one expanded. */
export function renderExplanation(e: Explanation, options: RenderOptions = {}): string[] {
  const paint = (code: keyof typeof ANSI, text: string) => (options.color ? `${ANSI[code]}${text}${ANSI.reset}` : text);
  const max = options.maxValueChars ?? 160;
  const d = e.decision;
  const verdict = d.decision === 'allow' ? paint('green', 'ALLOW') : d.decision === 'deny' ? paint('red', 'DENY') : paint('red', 'INDETERMINATE');
  const lines: string[] = [];
  lines.push(`${e.request.method} ${e.request.path}  ->  ${verdict} ${d.status} ${d.reason}`);
  lines.push(`  ${d.message}`);
  if (e.hint) lines.push(`  fix: ${e.hint}`);
  if (d.decision === 'allow') {
    if (d.principal) lines.push(`  principal: ${describePrincipal(d.principal)}`);
    if (d.dataActions) lines.push(`  data actions: ${d.dataActions.join(', ')}`);
    if (d.compartment) lines.push(`  compartment enforced upstream: ${d.compartment}`);
    if (d.queryAppend) lines.push(`  narrowed: the gateway appends ${d.queryAppend}`);
  }
  lines.push('');

  if (e.token) {
    const t = e.token;
    lines.push(`${paint('bold', 'Token')} (${t.status})`);
    lines.push('  header');
    lines.push(...keyValues(t.header, new Map(), max, '    '));
    lines.push('  claims');
    lines.push(...keyValues(t.claims, new Map(t.times.map((x) => [x.claim, x])), max, '    '));
  } else {
    lines.push(paint('bold', 'Token: not decodable (not a JWS of JSON header and claims)'));
  }
  lines.push('');

  lines.push(paint('bold', 'Steps'));
  const titleWidth = Math.max(...e.trace.map((s) => s.title.length));
  for (const s of e.trace) {
    const label = s.outcome === 'pass' ? paint('green', OUTCOME_LABEL.pass) : s.outcome === 'fail' ? paint('red', OUTCOME_LABEL.fail) : paint('dim', OUTCOME_LABEL.skipped);
    const summary = s.outcome === 'fail' ? (s.reason ?? '') : s.outcome === 'pass' ? (s.found ?? '') : (s.hint ?? '');
    const title = s.outcome === 'skipped' ? paint('dim', s.title.padEnd(titleWidth)) : s.title.padEnd(titleWidth);
    lines.push(`  ${label}  ${title}  ${cut(oneLine(summary), max)}`.trimEnd());
    if (s.id === e.failedStep) {
      if (s.expected !== undefined) lines.push(`          expected  ${oneLine(s.expected)}`);
      if (s.found !== undefined) lines.push(`          found     ${oneLine(s.found)}`);
      if (s.hint !== undefined) lines.push(`          fix       ${oneLine(s.hint)}`);
    }
  }
  lines.push('');
  lines.push(paint('dim', `decision ${d.decisionId} at ${e.evaluatedAt}`));
  return lines;
}

export function describePrincipal(p: PrincipalSummary): string {
  return [
    p.objectId ? `oid ${p.objectId}` : undefined,
    p.tenantId ? `tenant ${p.tenantId}` : undefined,
    p.applicationId ? `app ${p.applicationId}` : undefined,
    p.fhirUser ? `fhirUser ${p.fhirUser}` : undefined,
    p.scopes?.length ? `scopes ${p.scopes.join(' ')}` : undefined,
  ]
    .filter((x) => x !== undefined)
    .join(', ');
}

function keyValues(o: Readonly<Record<string, unknown>>, times: ReadonlyMap<string, ClaimTime>, max: number, indent: string): string[] {
  const names = Object.keys(o);
  if (names.length === 0) return [`${indent}(none)`];
  const width = Math.min(24, Math.max(...names.map((n) => n.length)));
  return names.map((name) => {
    const t = times.get(name);
    const shown = t ? `${t.seconds}  ${t.iso}  (${t.relative})` : displayValue(o[name]);
    return `${indent}${oneLine(name).padEnd(width)}  ${cut(oneLine(shown), max)}`;
  });
}

/** A claim value as one readable string: strings bare, arrays of strings listed, the rest JSON. */
export function displayValue(v: unknown): string {
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return `[${v.join(', ')}]`;
  return JSON.stringify(v) ?? String(v);
}

/** Token contents are untrusted: control characters (terminal escapes, newlines) are shown escaped. */
function oneLine(s: string): string {
  return s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function cut(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}
