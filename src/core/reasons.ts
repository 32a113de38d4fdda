/**
 * The one catalogue of outcomes (docs/decision-contract.md, "The answer").
 *
 * Every decision fhir-pdp makes carries exactly one of these reason codes. The status, the RFC 6750
 * error code and the caller-safe message are fixed here; the operator hint is written by the check
 * that failed, because only it knows the actual and expected values. test/unit/core/reasons.test.ts keeps
 * this table, the contract document and docs/reason-codes.md in sync.
 */

export type DecisionKind = 'allow' | 'deny' | 'indeterminate';

/** RFC 6750 §3.1 error codes, plus `invalid_request` for a malformed question in JSON mode. */
export type BearerError = 'invalid_token' | 'insufficient_scope' | 'invalid_request';

export interface ReasonDefinition {
  readonly status: 200 | 400 | 401 | 403 | 503;
  readonly decision: DecisionKind;
  /** RFC 6750 `error` for WWW-Authenticate; absent where no bearer error applies. */
  readonly bearerError?: BearerError;
  /** Safe for any caller: never names configuration, keys or claims' values. */
  readonly message: string;
}

export const REASONS = {
  allowed: { status: 200, decision: 'allow', message: 'The request is allowed.' },
  missing_token: {
    status: 401,
    decision: 'deny',
    message: 'A bearer token is required.',
  },
  malformed_token: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The bearer token is malformed.',
  },
  unsupported_token: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The bearer token uses a form that is not supported.',
  },
  untrusted_issuer: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The token was not issued by a trusted authority.',
  },
  algorithm_not_allowed: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The token is signed with an algorithm that is not allowed.',
  },
  unknown_key: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The token is signed with an unknown key.',
  },
  invalid_signature: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The token signature is invalid.',
  },
  token_expired: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The token has expired.',
  },
  token_not_yet_valid: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The token is not valid yet.',
  },
  audience_mismatch: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The token was not issued for this service.',
  },
  unknown_application: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The token was issued to an unknown application.',
  },
  missing_claim: {
    status: 401,
    decision: 'deny',
    bearerError: 'invalid_token',
    message: 'The token lacks a required claim.',
  },
  principal_not_allowed: {
    status: 403,
    decision: 'deny',
    bearerError: 'insufficient_scope',
    message: 'The caller is not granted access.',
  },
  action_not_permitted: {
    status: 403,
    decision: 'deny',
    bearerError: 'insufficient_scope',
    message: 'The caller is not permitted to perform this action.',
  },
  insufficient_scope: {
    status: 403,
    decision: 'deny',
    bearerError: 'insufficient_scope',
    message: 'The token scopes do not cover this request.',
  },
  issuer_unavailable: {
    status: 503,
    decision: 'indeterminate',
    message: 'The token issuer cannot be reached; try again later.',
  },
  directory_unavailable: {
    status: 503,
    decision: 'indeterminate',
    message: 'The directory cannot be reached; try again later.',
  },
  invalid_request: {
    status: 400,
    decision: 'deny',
    bearerError: 'invalid_request',
    message: 'The decision request is malformed.',
  },
} as const satisfies Record<string, ReasonDefinition>;

export type ReasonCode = keyof typeof REASONS;
export const REASON_CODES = Object.keys(REASONS) as ReasonCode[];

/** A denial is a value: a reason code plus the operator hint that the failing check wrote. */
export interface Refusal {
  readonly reason: Exclude<ReasonCode, 'allowed'>;
  readonly hint: string;
  /**
   * A caller-safe message in place of the reason's own, where one reason code covers a refusal
   * the catalogue has no code for (a revoked token is `token_expired`, so that the client fetches
   * a new one, with "The token has been revoked."). Never names configuration.
   */
  readonly message?: string;
}

export function refuse(reason: Refusal['reason'], hint: string, message?: string): Refusal {
  return message === undefined ? { reason, hint } : { reason, hint, message };
}
