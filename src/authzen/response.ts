/**
 * A Decision as an AuthZEN 1.0 evaluation response, the subject-id check, and the PDP metadata
 * document. Pure: types only from the decision entry point.
 */
import { REASONS } from '../core/reasons.js';
import type { Decision, PrincipalSummary } from '../decision/types.js';

/**
 * AuthZEN 1.0 "Access Evaluation API Response": `decision` REQUIRED boolean; `context` OPTIONAL, "any JSON object". Its members
 * here follow "Access Evaluation API Response"'s Reason Object (`id`, `reason_user`, `reason_admin`) and "Errors" of the Access Evaluations API's per-evaluation
 * `error`, plus what /api/decide answers (decision id, status, principal, compartment).
 */
export interface EvaluationResponse {
  readonly decision: boolean;
  readonly context: EvaluationContext;
}

export interface EvaluationContext {
  /** The reason code (docs/decision-contract.md). */
  readonly id: string;
  readonly decision_id?: string;
  /** The status /api/decide would answer (200, 401, 403, 503, 400). */
  readonly status: number;
  /** "Reason Object": "MAY be shared with the user". The caller-safe message. */
  readonly reason_user: { readonly en: string };
  /** "Reason Object": "MUST NOT be shared with the user". The operator hint, for admin callers only. */
  readonly reason_admin?: { readonly en: string };
  /** "Errors" of the Access Evaluations API: a failed evaluation (indeterminate, or a malformed one inside a batch). */
  readonly error?: { readonly status: number; readonly message: string };
  readonly principal?: PrincipalSummary;
  /** An allow that the FHIR server must narrow to this patient compartment (compartmentMode delegate). */
  readonly compartment?: string;
  /**
   * An allow of a search only narrowed (smartNarrowing lists `authzen`): the `&`-joined,
   * percent-encoded `param=value` pairs the PEP must append to the query before it forwards the
   * request. A PEP that cannot must treat the answer as `false`.
   */
  readonly queryAppend?: string;
}

/**
 * "Access Evaluation API Response": "true: The access request is permitted to go forward. false: ... MUST NOT be permitted".
 * Only an allow is true. Indeterminate (a dependency down) is false with an `error` naming 503:
 * "Errors" of the Access Evaluations API "Decisions default to closed (i.e. false), but the context field can include errors",
 * and the Transport section keeps HTTP errors for the request itself, "unrelated to the outcome of
 * an authorization decision, which is always returned with a 200 status code".
 */
export function evaluationResponse(d: Decision, admin: boolean): EvaluationResponse {
  const context: { -readonly [K in keyof EvaluationContext]: EvaluationContext[K] } = {
    id: d.reason,
    decision_id: d.decisionId,
    status: d.status,
    reason_user: { en: d.message },
  };
  if (admin && d.hint) context.reason_admin = { en: d.hint };
  if (d.decision === 'indeterminate') context.error = { status: d.status, message: d.message };
  if (d.principal) context.principal = d.principal;
  if (d.compartment) context.compartment = d.compartment;
  if (d.queryAppend) context.queryAppend = d.queryAppend;
  return { decision: d.decision === 'allow', context };
}

/**
 * An evaluation of a batch that could not be read as a FHIR question: false, with the problem in
 * `error` (it describes the caller's own request, never the configuration).
 */
export function malformedEvaluation(problem: string): EvaluationResponse {
  const def = REASONS.invalid_request;
  return {
    decision: false,
    context: { id: 'invalid_request', status: def.status, reason_user: { en: def.message }, error: { status: def.status, message: problem } },
  };
}

/**
 * The hint when `subject.id` does not name the principal the token proves, else undefined. The id
 * may be the object id (`oid`, compared case-insensitively: a GUID) or the `fhirUser`. A calling
 * service never chooses whom a decision is about: the token does.
 */
export function subjectMismatch(subjectId: string, p: PrincipalSummary): string | undefined {
  if (p.objectId !== undefined && subjectId.toLowerCase() === p.objectId) return undefined;
  if (p.fhirUser !== undefined && subjectId === p.fhirUser) return undefined;
  const names = [p.objectId ? `oid ${p.objectId}` : '', p.fhirUser ? `fhirUser ${p.fhirUser}` : ''].filter(Boolean).join(', ');
  return `subject.id ${JSON.stringify(subjectId.slice(0, 128))} is not the principal the token in subject.properties.token proves (${names || 'it carries no oid or fhirUser'}); the token decides whom a decision is about: send its oid or fhirUser as subject.id`;
}

/** AuthZEN 1.0 "Policy Decision Point Metadata": the PDP metadata. Endpoints absent here are not offered (the search APIs). */
export interface PdpMetadata {
  readonly policy_decision_point: string;
  readonly access_evaluation_endpoint: string;
  readonly access_evaluations_endpoint: string;
}

/**
 * The metadata of the PDP whose identifier is `pdp` (an https URL without query or fragment,
 * "Endpoint Parameters"): its endpoints are the spec's paths below it.
 */
export function pdpMetadata(pdp: string): PdpMetadata {
  const base = pdp.replace(/\/+$/, '');
  return {
    policy_decision_point: base,
    access_evaluation_endpoint: `${base}/access/v1/evaluation`,
    access_evaluations_endpoint: `${base}/access/v1/evaluations`,
  };
}
