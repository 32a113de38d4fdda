/**
 * Finding the one bearer token of a request. RFC 6750 §2: a client MUST NOT use more than one method
 * to transmit the token in each request, and a request with more than one credential is ambiguous
 * (a proxy and the PDP may each see a different one), so it is refused whatever the order.
 * Node's http module keeps only the first of two `Authorization` headers, so hosts pass every value
 * they received (rawHeaders / headersDistinct) in `authorization`.
 */
import { refuse, type Refusal } from '../policy/reasons.js';

export interface CredentialSources {
  /** Every `Authorization` header value of the request, in order. */
  readonly authorization: readonly string[];
  /** JSON mode's `token` field, when present. */
  readonly token?: string;
  /** True when the request URL carries an `access_token` query parameter (RFC 6750 §2.3). */
  readonly queryToken?: boolean;
}

// RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token. The scheme is case-insensitive (RFC 9110 §11.1).
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;

export function extractBearerToken(sources: CredentialSources): { ok: true; token: string } | Refusal {
  const count = sources.authorization.length + (sources.token !== undefined ? 1 : 0) + (sources.queryToken ? 1 : 0);
  if (count > 1)
    return refuse('malformed_token', `the request carries ${count} credentials (Authorization headers, token field or access_token parameter); exactly one is allowed (RFC 6750 §2)`);
  if (sources.token !== undefined) {
    const t = sources.token.trim();
    if (!t) return refuse('missing_token', 'the `token` field is empty');
    return { ok: true, token: t };
  }
  if (sources.queryToken)
    return refuse('missing_token', 'a token in the access_token query parameter is not accepted (RFC 6750 §2.3 SHOULD NOT); send it in the Authorization header');
  const header = sources.authorization[0];
  if (header === undefined) return refuse('missing_token', 'the request has no Authorization header');
  const scheme = header.trim().split(/\s+/, 1)[0] ?? '';
  if (scheme.toLowerCase() !== 'bearer')
    return refuse('missing_token', `the Authorization header uses the ${scheme ? `"${scheme.slice(0, 20)}"` : 'empty'} scheme; a Bearer token is required`);
  const m = BEARER.exec(header.trim());
  if (!m) return refuse('malformed_token', 'the Authorization header is not "Bearer <token>" (RFC 6750 §2.1)');
  return { ok: true, token: m[1]! };
}
