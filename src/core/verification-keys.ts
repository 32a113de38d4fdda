/**
 * Which published keys may verify an access token, and with which algorithms. jose takes one
 * algorithm list for a whole verification; here the list is per key: a key's own `alg` when it
 * states one, else the algorithms its type can make, always intersected with the issuer's
 * advertised list. RFC 8725 §3.1: "each key MUST be used with exactly one algorithm" is the
 * strongest form; per-key lists are the practical one, since Entra's keys carry no `alg`.
 */
import type { JWK } from 'jose';

/** Asymmetric JWS algorithms. HMAC is never accepted: with OIDC its "key" is public (RFC 8725 §2.1). */
export const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
const ASYMMETRIC = new Set<string>(ASYMMETRIC_ALGORITHMS);

export function isAsymmetricAlgorithm(alg: string): boolean {
  return ASYMMETRIC.has(alg);
}

export const MIN_RSA_BITS = 2048;
export const MAX_KEYS_PER_ISSUER = 100;

function rsaModulusBits(n: unknown): number {
  if (typeof n !== 'string') return 0;
  const bytes = Buffer.from(n, 'base64url');
  let i = 0;
  while (i < bytes.length && bytes[i] === 0) i++;
  if (i === bytes.length) return 0;
  return (bytes.length - i - 1) * 8 + (32 - Math.clz32(bytes[i]!));
}

const CURVE_ALG: Record<string, string> = { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' };

/** Algorithms a key can verify, before the issuer's list is applied. Empty: the key is unusable. */
export function algorithmsForKey(jwk: JWK): string[] {
  let byType: string[];
  switch (jwk.kty) {
    case 'RSA':
      byType = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
      break;
    case 'EC':
      byType = jwk.crv && CURVE_ALG[jwk.crv] ? [CURVE_ALG[jwk.crv]!] : [];
      break;
    case 'OKP':
      byType = jwk.crv === 'Ed25519' ? ['EdDSA', 'Ed25519'] : [];
      break;
    default:
      byType = []; // `oct` and anything unknown: never used.
  }
  return typeof jwk.alg === 'string' ? byType.filter((a) => a === jwk.alg) : byType;
}

export interface KeyFilterResult {
  readonly usable: JWK[];
  /** Why keys were dropped, for health and check-config; kids only, never key material. */
  readonly dropped: string[];
}

/**
 * Keeps only keys that may verify signatures: public asymmetric keys, not `use: enc`, with a
 * `key_ops` (if any) that includes verify, RSA of at least 2048 bits (RFC 8725 §3.5; NIST SP
 * 800-131A), private parts stripped. Bounded to MAX_KEYS_PER_ISSUER.
 */
export function filterVerificationKeys(keys: readonly unknown[]): KeyFilterResult {
  const usable: JWK[] = [];
  const dropped: string[] = [];
  for (const raw of keys) {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      dropped.push('a non-object entry');
      continue;
    }
    const jwk = raw as JWK;
    const label = typeof jwk.kid === 'string' ? `kid ${jwk.kid.slice(0, 64)}` : 'a key without kid';
    if (jwk.kty === 'oct') dropped.push(`${label}: symmetric (oct)`);
    else if (jwk.use !== undefined && jwk.use !== 'sig') dropped.push(`${label}: use is ${String(jwk.use)}`);
    else if (Array.isArray(jwk.key_ops) && !jwk.key_ops.includes('verify')) dropped.push(`${label}: key_ops lacks verify`);
    else if (jwk.kty === 'RSA' && rsaModulusBits(jwk.n) < MIN_RSA_BITS)
      dropped.push(`${label}: RSA ${rsaModulusBits(jwk.n)} bits (< ${MIN_RSA_BITS})`);
    else if (algorithmsForKey(jwk).length === 0) dropped.push(`${label}: unsupported key type or curve`);
    else if (usable.length >= MAX_KEYS_PER_ISSUER) dropped.push(`${label}: more than ${MAX_KEYS_PER_ISSUER} keys`);
    else usable.push(publicPart(jwk));
  }
  return { usable, dropped };
}

const PUBLIC_MEMBERS = ['kty', 'kid', 'use', 'alg', 'key_ops', 'n', 'e', 'crv', 'x', 'y'] as const;

function publicPart(jwk: JWK): JWK {
  const out: Record<string, unknown> = {};
  for (const m of PUBLIC_MEMBERS) if (jwk[m] !== undefined) out[m] = jwk[m];
  return out as JWK;
}
