/**
 * The first look at a bearer token, before any key is touched: size, shape, canonical base64url,
 * strict JSON and the header parameters fhir-pdp refuses to honour. jose is lenient on several of
 * these (padding, whitespace and non-canonical trailing bits in base64url; duplicate member names,
 * last one wins), so they are closed here. RFC 8725 §3.1 and §3.2 (algorithm verification, use
 * appropriate algorithms), RFC 7515 §5.2 (validation steps), RFC 9068 §4.
 */
import { refuse, type Refusal } from '../core/reasons.js';
import { parseJsonObjectStrict } from './strict-json.js';

export interface CompactJws {
  readonly token: string;
  readonly header: Readonly<Record<string, unknown>>;
  readonly payload: Readonly<Record<string, unknown>>;
  readonly alg: string;
  readonly kid?: string;
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * RFC 7515 §2 / RFC 4648 §5 without padding, and canonical: a string whose unused trailing bits
 * are not zero decodes to the same bytes as another string, so two different tokens would verify
 * as one. The last character of a 2- or 3-character final group carries 4 or 2 unused bits, which
 * must be zero (RFC 4648 §3.5); checked on that character rather than by re-encoding the part.
 */
export function isCanonicalBase64Url(part: string): boolean {
  if (!BASE64URL.test(part)) return false;
  const rest = part.length % 4;
  if (rest === 0) return true;
  if (rest === 1) return false;
  return (ALPHABET.indexOf(part[part.length - 1]!) & (rest === 2 ? 0x0f : 0x03)) === 0;
}

export function decodeBase64UrlStrict(part: string): Buffer | undefined {
  return isCanonicalBase64Url(part) ? Buffer.from(part, 'base64url') : undefined;
}

const FATAL = new TextDecoder('utf-8', { fatal: true });

function decodeJsonPart(part: string, what: 'header' | 'payload'): { ok: true; value: Record<string, unknown> } | Refusal {
  const bytes = decodeBase64UrlStrict(part);
  if (!bytes) return refuse('malformed_token', `the token ${what} is not canonical base64url (RFC 7515 §2)`);
  let text: string;
  try {
    text = FATAL.decode(bytes);
  } catch {
    return refuse('malformed_token', `the token ${what} is not UTF-8`);
  }
  const parsed = parseJsonObjectStrict(text);
  if (!parsed.ok) return refuse('malformed_token', `the token ${what} is ${parsed.problem === 'duplicate member names' ? 'JSON with duplicate member names (RFC 7515 §5.2)' : parsed.problem}`);
  return parsed;
}

/** Parses a compact JWS; the size limit is checked before anything is decoded. */
export function parseCompactJws(token: string, maxBytes: number): CompactJws | Refusal {
  if (token.length > maxBytes)
    return refuse('malformed_token', `the token is ${token.length} bytes; the limit is ${maxBytes} (maxTokenBytes)`);
  const parts = token.split('.');
  if (parts.length === 5)
    return refuse('unsupported_token', 'the token is a JWE (five parts); only signed JWTs (JWS) are accepted');
  if (parts.length !== 3)
    return refuse('malformed_token', `the token has ${parts.length} part(s); a compact JWS has three (header.payload.signature)`);
  const [h, p, s] = parts as [string, string, string];
  if (!h || !p) return refuse('malformed_token', 'the token has an empty header or payload');
  const header = decodeJsonPart(h, 'header');
  if ('reason' in header) return header;
  const hv = header.value;
  if ('enc' in hv) return refuse('unsupported_token', 'the token header has `enc`: it is a JWE, not a signed JWT');
  if (typeof hv.alg !== 'string' || hv.alg === '')
    return refuse('malformed_token', 'the token header has no `alg`');
  // RFC 8725 §3.1: "none" is never acceptable for an access token.
  if (hv.alg.toLowerCase() === 'none') return refuse('unsupported_token', 'the token is unsigned (`alg: none`)');
  // RFC 7515 §4.1.11: a recipient MUST reject a JWS whose `crit` lists anything it does not
  // understand. fhir-pdp understands no extension, so any `crit` is refused.
  if ('crit' in hv) return refuse('unsupported_token', `the token header lists critical extensions (${JSON.stringify(hv.crit)}) that are not supported`);
  // RFC 7797: an unencoded payload changes what is signed; refused whether or not `crit` names it.
  if ('b64' in hv) return refuse('unsupported_token', 'the token header has `b64` (RFC 7797 unencoded payload), which is not supported');
  if ('kid' in hv && (typeof hv.kid !== 'string' || hv.kid.length === 0 || hv.kid.length > 256))
    return refuse('malformed_token', 'the token header `kid` is not a non-empty string');
  // The signature is checked after the header, so an unsigned token (`alg: none`, empty
  // signature) is named for what it is rather than as malformed.
  if (!s) return refuse('malformed_token', 'the token has an empty signature');
  if (!isCanonicalBase64Url(s)) return refuse('malformed_token', 'the token signature is not canonical base64url');
  const payload = decodeJsonPart(p, 'payload');
  if ('reason' in payload) return payload;
  const jws: { -readonly [K in keyof CompactJws]: CompactJws[K] } = { token, header: hv, payload: payload.value, alg: hv.alg };
  if (typeof hv.kid === 'string') jws.kid = hv.kid;
  return jws;
}
