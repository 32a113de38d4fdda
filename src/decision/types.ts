/**
 * The decision entry point's vocabulary: what is asked (DecisionInput) and what is answered
 * (Decision), plus the decision log event. Every host, mode and API (JSON, forward-auth, Envoy,
 * explain, AuthZEN) speaks these; src/http/answer.ts turns a Decision into HTTP.
 */
import type { DataAction } from '../core/data-actions.js';
import type { DecisionKind, ReasonCode } from '../core/reasons.js';
import type { TraceStep } from '../core/trace.js';
import type { CredentialSources } from '../identity/extract.js';

/**
 * Which gateway asked, as far as SMART narrowing cares: nginx and Traefik are told apart by their
 * forward-auth headers (X-Original-URI, X-Forwarded-Uri), Envoy by its path prefix.
 */
export type AskingGateway = 'nginx' | 'traefik' | 'envoy' | 'json' | 'authzen';

export interface DecisionInput {
  readonly method: string;
  /** The original request target: path and query (or an absolute URL). */
  readonly target: string;
  readonly credentials: CredentialSources;
  /** How the question arrived, for the decision log. */
  readonly mode?: 'json' | 'forward-auth' | 'envoy' | 'explain' | 'authzen';
  /**
   * The gateway the answer goes to: a narrowed search (smartNarrowing) is offered only to one the
   * configuration lists. Explain sets the gateway whose answer it explains. Absent: never narrowed.
   */
  readonly gateway?: AskingGateway;
  /** The request body, for batch/transaction Bundles (`POST /`): JSON mode's `body`, or the client's body Envoy sent. */
  readonly body?: unknown;
  /** Set instead of `body` when the body was sent but cannot be read (not JSON, repeated members). */
  readonly bodyProblem?: string;
  /**
   * How a caller of this binding sends the request body, in the binding's own terms: the hint of
   * a Bundle whose entries were not seen ends with it (the pipeline knows no binding's vocabulary).
   */
  readonly bodyAdvice?: string;
  /** Set by a gateway mode when the original request cannot be determined unambiguously. */
  readonly ambiguity?: string;
  /** Set by a gateway mode when the question lacks part of the original request (its method or URI header). */
  readonly incomplete?: string;
  /** The W3C traceparent the question arrived with, validated (src/telemetry/trace-context.ts): the decision continues its trace. */
  readonly traceparent?: string;
}

export interface PrincipalSummary {
  readonly issuer: string;
  readonly objectId?: string;
  readonly tenantId?: string;
  readonly applicationId?: string;
  readonly fhirUser?: string;
  readonly scopes?: readonly string[];
}

export interface Decision {
  readonly decisionId: string;
  readonly decision: DecisionKind;
  readonly status: number;
  readonly reason: ReasonCode;
  readonly message: string;
  /** Operator hint; hosts return it only to admin callers. */
  readonly hint?: string;
  readonly principal?: PrincipalSummary;
  readonly dataActions?: readonly DataAction[];
  /** `Patient/{id}` to enforce upstream (compartmentMode delegate). */
  readonly compartment?: string;
  /** The `&`-joined, percent-encoded `param=value` pairs the gateway appends to the search (smartNarrowing). */
  readonly queryAppend?: string;
  readonly durationMs: number;
  readonly cacheHit: boolean;
  readonly trace?: readonly TraceStep[];
  /** The verified token's decoded header and claims, for explain only. */
  readonly token?: { readonly header: Readonly<Record<string, unknown>>; readonly claims: Readonly<Record<string, unknown>> };
}

/** One decision log event (OPA's EventV1 in spirit). Never the token. */
export interface DecisionEvent {
  readonly decisionId: string;
  readonly time: string;
  readonly decision: DecisionKind;
  readonly reason: ReasonCode;
  readonly status: number;
  readonly mode?: string;
  readonly issuer?: string;
  readonly tenantId?: string;
  readonly objectId?: string;
  readonly applicationId?: string;
  readonly method: string;
  /** Path without the query string (queries can carry identifiers). */
  readonly path: string;
  readonly durationMs: number;
  readonly cacheHit: boolean;
  /** The names (not the values) of the parameters a narrowed search's gateway appends, comma-joined. */
  readonly narrowedBy?: string;
  /** The trace id of the question's traceparent: joins this line with the gateway's logs and trace. */
  readonly traceId?: string;
  /** The question's traceparent, for the decision's span (not written to the log line). */
  readonly traceparent?: string;
}

/** Called once per decision with its log event and the decision it describes. */
export type DecisionLogger = (event: DecisionEvent, decision: Decision) => void;

export interface DecideOptions {
  readonly trace?: boolean;
  /**
   * Set by a caller that also names the subject (AuthZEN's subject.id): told the verified
   * principal, it returns a hint when that is not the subject named, and the decision is then
   * `principal_not_allowed`, logged and counted as such.
   */
  readonly subjectMismatch?: (principal: PrincipalSummary) => string | undefined;
}
