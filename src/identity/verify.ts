/**
 * verifyAccessToken: a bearer token in, a verified token (or a refusal) out. The order follows the
 * troubleshooting tree: shape → issuer → key → signature → lifetime → audience. The issuer
 * registry fetches and filters the keys and jose imports them; the signature is node:crypto's verify
 * on the parts parsed once, with jose's parameters (signature.ts says why). Everything jose is lenient about is closed before or
 * after it (see compact-jws.ts and the lifetime checks below).
 */
import { refuse, type Refusal } from '../core/reasons.js';
import type { Trace } from '../core/trace.js';
import { parseCompactJws, type CompactJws } from './compact-jws.js';
import { CLAIMS, claimTypeProblem, hasClaimType, wrongTypeReason } from './claim-types.js';
import { audienceHint, untrustedIssuerHint } from './hints.js';
import { verifyCompactSignature } from './signature.js';
import type { IssuerRegistry } from './issuers.js';

export interface VerifyOptions {
  readonly registry: IssuerRegistry;
  readonly maxTokenBytes: number;
  readonly clockSkewSeconds: number;
  /** Current time in ms since epoch (passed in, never read here). */
  readonly now: number;
  /** Audiences accepted for tokens of each authority (primary: audience/audiences/fhirBaseUrl; SMART: its applications'). */
  readonly audiencesFor: (authority: string) => readonly string[];
  readonly trace?: Trace;
}

export interface VerifiedToken {
  readonly jws: CompactJws;
  readonly issuer: string;
  readonly authority: string;
  readonly claims: Readonly<Record<string, unknown>>;
  readonly audiences: readonly string[];
  /** `exp`, seconds since epoch. */
  readonly expiresAt: number;
  readonly kid?: string;
}

export type VerifyResult = { ok: true; token: VerifiedToken } | Refusal;

/** A usable NumericDate (claim-types.ts: finite, not before 1970, before year 10000), else undefined. */
function numericDate(v: unknown): number | undefined {
  return hasClaimType('numericDate', v) ? (v as number) : undefined;
}

function iso(seconds: number): string {
  return new Date(seconds * 1000).toISOString();
}

export async function verifyAccessToken(token: string, o: VerifyOptions): Promise<VerifyResult> {
  const t = o.trace;
  const jws = parseCompactJws(token, o.maxTokenBytes);
  if ('reason' in jws) {
    t?.fail('token', jws);
    return jws;
  }
  t?.pass('token', `alg ${jws.alg}${jws.kid ? `, kid ${jws.kid}` : ''}, ${token.length} bytes`);
  const claims = jws.payload;

  // --- issuer: chosen by `iss` first, so only that issuer's keys are ever tried.
  const iss = claims.iss;
  if (typeof iss !== 'string' || !hasClaimType(CLAIMS.iss.type, iss)) {
    const r = refuse('missing_claim', iss === undefined ? 'the token has no `iss` claim' : claimTypeProblem('iss', iss));
    t?.fail('issuer', r, { found: JSON.stringify(iss ?? null) });
    return r;
  }
  let found = o.registry.lookup(iss);
  if (found.state === 'unavailable') {
    await o.registry.ensureLoaded();
    found = o.registry.lookup(iss);
  }
  if (found.state === 'unavailable') {
    const r = refuse('issuer_unavailable', `iss ${iss} is not known yet and metadata of ${found.authorities.join(', ')} cannot be loaded: ${found.problems.join('; ')}`);
    t?.fail('issuer', r, { found: iss });
    return r;
  }
  if (found.state === 'unknown') {
    const r = refuse('untrusted_issuer', untrustedIssuerHint(iss, found.known));
    t?.fail('issuer', r, { found: iss, expected: found.known.join(' or ') });
    return r;
  }
  t?.pass('issuer', iss, found.authority);

  // --- key: per-issuer algorithm list, then the key by kid (rate-limited refetch when unknown).
  const key = await o.registry.keyFor(iss, jws.alg, jws.kid);
  if (!key.ok) {
    const r = refuse(key.reason, key.hint);
    t?.fail('key', r, { found: `alg ${jws.alg}, kid ${jws.kid ?? '(none)'}`, expected: `one of [${found.algorithms.join(', ')}] with a published key` });
    return r;
  }
  t?.pass('key', `alg ${jws.alg}, kid ${key.kid ?? '(none)'}`);

  // --- signature, with exactly the one algorithm chosen above and the key imported for it.
  let verified: boolean;
  let problem: string | undefined;
  try {
    verified = await verifyCompactSignature(token, jws.alg, key.key);
  } catch (err) {
    verified = false;
    problem = (err as Error).message;
  }
  if (!verified) {
    // Entra signs Graph access tokens over a hashed `nonce`; nobody but Graph can verify them.
    const graphHint =
      'nonce' in jws.header ? '; the header has a `nonce`: this is a Microsoft Graph token, which only Graph can validate; request a token for the FHIR audience instead' : '';
    const r = refuse(
      'invalid_signature',
      problem === undefined
        ? `the signature does not verify with key ${key.kid ?? '(no kid)'} of ${iss}${graphHint}`
        : `the signature could not be checked (${problem})${graphHint}`,
    );
    t?.fail('signature', r);
    return r;
  }
  t?.pass('signature', `verified with key ${key.kid ?? '(no kid)'}`);

  // --- lifetime. RFC 9068 §4 requires `exp`; jose treats it as optional. A non-finite or absurd
  // number (`1e400` is Infinity) is a wrong-typed claim, not a token valid forever.
  const nowS = o.now / 1000;
  const skew = o.clockSkewSeconds;
  const exp = numericDate(claims.exp);
  if (exp === undefined) {
    const r = refuse('missing_claim', claims.exp === undefined ? 'the token has no `exp` claim (RFC 9068 §2.2 requires it)' : claimTypeProblem('exp', claims.exp));
    t?.fail('lifetime', r, { found: String(claims.exp) });
    return r;
  }
  if (exp + skew <= nowS) {
    const ago = Math.round(nowS - exp);
    const r = refuse('token_expired', `exp ${iso(exp)} is ${ago} s ago, beyond the clock skew of ${skew} s (clockSkewSeconds); get a new token`);
    t?.fail('lifetime', r, { found: `exp ${iso(exp)}`, expected: `after ${iso(nowS - skew)}` });
    return r;
  }
  for (const name of ['nbf', 'iat'] as const) {
    if (claims[name] === undefined) continue;
    const v = numericDate(claims[name]);
    if (v === undefined) {
      // Optional claims: present with another type is a token no trusted issuer made.
      const r = refuse(wrongTypeReason(CLAIMS[name].entra)!, claimTypeProblem(name, claims[name]));
      t?.fail('lifetime', r, { found: String(claims[name]) });
      return r;
    }
    // RFC 7519 §4.1.5 for nbf; an `iat` in the future is as suspicious (a skewed or forged issuer).
    if (v - skew > nowS) {
      const r = refuse('token_not_yet_valid', `${name} ${iso(v)} is ${Math.round(v - nowS)} s in the future, beyond the clock skew of ${skew} s; check the clocks of the issuer and of this host`);
      t?.fail('lifetime', r, { found: `${name} ${iso(v)}`, expected: `before ${iso(nowS + skew)}` });
      return r;
    }
  }
  t?.pass('lifetime', `expires ${iso(exp)}`);

  // --- audience: exact comparison with the authority's accepted audiences (RFC 7519 §4.1.3).
  const aud = claims.aud;
  const audiences = hasClaimType(CLAIMS.aud.type, aud) ? (typeof aud === 'string' ? [aud] : (aud as string[])) : undefined;
  if (!audiences) {
    const r = refuse('missing_claim', aud === undefined ? 'the token has no `aud` claim' : claimTypeProblem('aud', aud));
    t?.fail('audience', r, { found: JSON.stringify(aud ?? null) });
    return r;
  }
  const accepted = o.audiencesFor(found.authority);
  if (!audiences.some((a) => accepted.includes(a))) {
    const r = refuse('audience_mismatch', audienceHint(audiences, accepted));
    t?.fail('audience', r, { found: audiences.join(', '), expected: accepted.join(' or ') });
    return r;
  }
  t?.pass('audience', audiences.join(', '));

  return {
    ok: true,
    token: {
      jws,
      issuer: iss,
      authority: found.authority,
      claims,
      audiences,
      expiresAt: exp,
      ...(key.kid ? { kid: key.kid } : {}),
    },
  };
}
