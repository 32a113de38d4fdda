/** Bounds on a token's scopes, shared by reading the claim (identity) and parsing it (fhir). */
export const MAX_SCOPES = 200;
/** Bound on the scope claim, counted in characters (scope tokens are ASCII, RFC 6749 §3.3). */
export const MAX_SCOPE_CLAIM_LENGTH = 8192;
