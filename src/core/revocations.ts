/**
 * The deny-list's vocabulary: what one revocation entry says, as the snapshot stores it, and the
 * bounds every layer applies to it (the config schema, the snapshot codec, the admin route). Owned
 * by neither state (which stores entries) nor the pipeline (which matches tokens against them).
 */

/** Hard bound of the deny-list: the most entries `revocation.maxEntries` may allow and a stored snapshot may hold. */
export const MAX_REVOCATION_ENTRIES = 100_000;
/** Longest `jti`, `sid` or object id an entry names; longer claims are not revocable by value. */
export const MAX_REVOKED_VALUE_CHARS = 256;
/** Longest issuer an entry names (a token's `iss` is compared exactly). */
export const MAX_REVOKED_ISSUER_CHARS = 2048;
/** Longest operator note kept with an entry. */
export const MAX_REVOCATION_NOTE_CHARS = 200;

/**
 * One revocation. `jti` and `sid` entries are scoped to the issuer that minted the value: two
 * authorities may reuse a `jti`. An `oid` entry revokes every token of that object id (any issuer)
 * whose `iat` is before `issuedBefore`: "sign this user out everywhere" without listing tokens.
 */
export type RevocationTarget =
  | { readonly kind: 'jti'; readonly issuer: string; readonly jti: string }
  | { readonly kind: 'sid'; readonly issuer: string; readonly sid: string }
  | { readonly kind: 'oid'; readonly oid: string; /** Seconds since epoch, compared with `iat`. */ readonly issuedBefore: number };

export type RevocationEntry = RevocationTarget & {
  /** Stable id of the target (the same target added twice is one entry): what DELETE names. */
  readonly id: string;
  /** ms since epoch. */
  readonly addedAt: number;
  /** ms since epoch after which the entry is dropped: no token it matches can be accepted by then. */
  readonly expiresAt: number;
  /** Why it was revoked, for the operator (never a token). */
  readonly note?: string;
};
