/**
 * Finding the one bearer token of a request. RFC 6750 §2: a client MUST NOT use more than one method
 * to transmit the token in each request, and a request with more than one credential is ambiguous
 * (a proxy and the PDP may each see a different one), so it is refused whatever the order.
 * Node's http module keeps only the first of two `Authorization` headers, so hosts pass every value
 * they received (rawHeaders / headersDistinct) in `authorization`.
 */
import { refuse, type Refusal } from '../core/reasons.js';

export interface CredentialSources {
  /** Every `Authorization` header value of the request, in order. */
  readonly authorization: readonly string[];
  /** JSON mode's `token` field, when present. */
  readonly token?: string;
  /** True when the request URL carries an `access_token` query parameter (RFC 6750 §2.3). */
  readonly queryToken?: boolean;
}

// RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token. The scheme is case-insensitive (RFC 9110 §11.1).
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/** A located credential. `grammarChecked` is false for a header token not yet matched against b64token. */
export type LocatedToken = { ok: true; token: string; grammarChecked: boolean };

/**
 * Finds the one credential of a request and splits `Bearer <token>`, without scanning the token
 * against RFC 6750's b64token grammar: that scan of the whole token is the costliest part of a cached
 * decision, and a token found in the verified-token cache is byte-identical to one that passed the stricter
 * compact-JWS parse (base64url and dots only). Callers that verify call checkB64Token first.
 */
export function locateBearerToken(sources: CredentialSources): LocatedToken | Refusal {
  const count = sources.authorization.length + (sources.token !== undefined ? 1 : 0) + (sources.queryToken ? 1 : 0);
  if (count > 1)
    return refuse('malformed_token', `the request carries ${count} credentials (Authorization headers, token field or access_token parameter); exactly one is allowed (RFC 6750 §2)`);
  if (sources.token !== undefined) {
    const t = sources.token.trim();
    if (!t) return refuse('missing_token', 'the `token` field is empty');
    return { ok: true, token: t, grammarChecked: true };
  }
  if (sources.queryToken)
    return refuse('missing_token', 'a token in the access_token query parameter is not accepted (RFC 6750 §2.3 SHOULD NOT); send it in the Authorization header');
  const header = sources.authorization[0];
  if (header === undefined) return refuse('missing_token', 'the request has no Authorization header');
  const h = header.trim();
  if (!startsWithBearerAndSpace(h)) {
    const scheme = h.split(/\s+/, 1)[0] ?? '';
    if (scheme.toLowerCase() !== 'bearer')
      return refuse('missing_token', `the Authorization header uses the ${scheme ? `"${scheme.slice(0, 20)}"` : 'empty'} scheme; a Bearer token is required`);
    // `Bearer` alone, or followed by whitespace other than SP.
    return notBearerSyntax();
  }
  // 1*SP after the scheme; `h` is trimmed, so a token follows the spaces.
  let start = 7;
  while (h.charCodeAt(start) === 0x20) start++;
  return { ok: true, token: h.slice(start), grammarChecked: false };
}

/** `Bearer ` in any letter case (RFC 9110 §11.1), by character codes: `c | 0x20` lower-cases an ASCII letter. */
function startsWithBearerAndSpace(h: string): boolean {
  return (
    h.charCodeAt(6) === 0x20 &&
    (h.charCodeAt(0) | 0x20) === 0x62 &&
    (h.charCodeAt(1) | 0x20) === 0x65 &&
    (h.charCodeAt(2) | 0x20) === 0x61 &&
    (h.charCodeAt(3) | 0x20) === 0x72 &&
    (h.charCodeAt(4) | 0x20) === 0x65 &&
    (h.charCodeAt(5) | 0x20) === 0x72
  );
}

/** RFC 6750 §2.1 b64token: what may follow `Bearer ` (one token: no spaces, no quotes, ASCII). */
export function checkB64Token(token: string): Refusal | undefined {
  return B64TOKEN.test(token) ? undefined : notBearerSyntax();
}

/**
 * A token field (JSON mode's `token` is taken as is; AuthZEN's `subject.properties.token` and
 * explain's `token` also take `Bearer <token>`): `Bearer eyJ…` and `eyJ…` name the same token.
 */
export function stripBearer(value: string): string {
  return value.replace(/^\s*bearer\s+/i, '').trim();
}

/** True when a request target carries an `access_token` query parameter (RFC 6750 §2.3), which is refused. */
export function hasAccessTokenParam(target: string): boolean {
  const q = target.indexOf('?');
  if (q < 0) return false;
  return new URLSearchParams(target.slice(q + 1)).has('access_token');
}

function notBearerSyntax(): Refusal {
  return refuse('malformed_token', 'the Authorization header is not "Bearer <token>" (RFC 6750 §2.1)');
}
