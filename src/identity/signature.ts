/**
 * The signature check of a compact JWS that parseCompactJws has already taken apart and validated
 * (canonical base64url, strict JSON, `alg` allowed for this issuer and for this key).
 *
 * fhir-pdp fetches and filters the keys itself (issuers.ts, core/verification-keys.ts) and jose
 * imports them (`importJWK`, once per algorithm and kid, in issuers.ts); the check itself is OpenSSL's verify on libuv's thread pool through node:crypto, with
 * the parameters jose uses for each algorithm (jose 6 `lib/jws_algorithms.js`). Not called is
 * jose's `compactVerify`: it parses the token a second time, its base64url decoding on Node 20 is
 * `atob` and a character loop, and it then calls WebCrypto, whose argument handling costs the event
 * loop more per call than node:crypto's, so node:crypto leaves the event loop the most time for
 * other decisions while verifications are in flight.
 *
 * test/unit/identity/signature.test.ts checks this against jose's compactVerify, token by token, for every
 * algorithm fhir-pdp accepts and for tampered, truncated and cross-key signatures.
 */
import { constants, KeyObject, verify, type VerifyKeyObjectInput } from 'node:crypto';

interface SigningAlgorithm {
  /** What the key jose imported for this alg must be (WebCrypto algorithm of the CryptoKey). */
  readonly keyName: string;
  readonly keyHash?: string;
  readonly keyCurve?: string;
  /** node:crypto verify: the digest (null for Ed25519, which hashes internally) and key options. */
  readonly digest: string | null;
  readonly options: { readonly padding?: number; readonly saltLength?: number; readonly dsaEncoding?: 'ieee-p1363' };
}

function rsa(bits: 256 | 384 | 512, pss: boolean): SigningAlgorithm {
  return {
    keyName: pss ? 'RSA-PSS' : 'RSASSA-PKCS1-v1_5',
    keyHash: `SHA-${bits}`,
    digest: `sha${bits}`,
    // RFC 7518 §3.5: the PSS salt is as long as the hash.
    options: pss ? { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: bits / 8 } : { padding: constants.RSA_PKCS1_PADDING },
  };
}

function ecdsa(curve: string, bits: 256 | 384 | 512): SigningAlgorithm {
  // RFC 7518 §3.4: the signature is R || S (IEEE P1363), not DER.
  return { keyName: 'ECDSA', keyCurve: curve, digest: `sha${bits}`, options: { dsaEncoding: 'ieee-p1363' } };
}

const ED25519: SigningAlgorithm = { keyName: 'Ed25519', digest: null, options: {} };

/** The asymmetric algorithms of keys.ts ASYMMETRIC_ALGORITHMS; HMAC and `none` are absent on purpose. */
const SIGNING: ReadonlyMap<string, SigningAlgorithm> = new Map([
  ['RS256', rsa(256, false)],
  ['RS384', rsa(384, false)],
  ['RS512', rsa(512, false)],
  ['PS256', rsa(256, true)],
  ['PS384', rsa(384, true)],
  ['PS512', rsa(512, true)],
  ['ES256', ecdsa('P-256', 256)],
  ['ES384', ecdsa('P-384', 384)],
  ['ES512', ecdsa('P-521', 512)],
  ['EdDSA', ED25519],
  ['Ed25519', ED25519],
]);

/** The node:crypto form of each imported key with its algorithm's options, made (and checked) once per key. */
const VERIFY_KEYS = new WeakMap<CryptoKey, { readonly alg: string; readonly input: VerifyKeyObjectInput | KeyObject }>();

function verifyKeyFor(key: CryptoKey, alg: string, a: SigningAlgorithm): VerifyKeyObjectInput | KeyObject {
  const known = VERIFY_KEYS.get(key);
  if (known?.alg === alg) return known.input;
  assertKeyFits(alg, a, key);
  const keyObject = KeyObject.from(key);
  const input = a.digest === null ? keyObject : { key: keyObject, ...a.options };
  VERIFY_KEYS.set(key, { alg, input });
  return input;
}

/** The key or algorithm cannot be used for this check (a configuration or import bug, never the token's fault). */
export class SignatureCheckError extends Error {
  readonly code = 'ERR_SIGNATURE_CHECK';
}

function assertKeyFits(alg: string, a: SigningAlgorithm, key: CryptoKey): void {
  const algorithm = key.algorithm as KeyAlgorithm & { hash?: { name?: string }; namedCurve?: string };
  const fits =
    key.type === 'public' &&
    key.usages.includes('verify') &&
    algorithm.name === a.keyName &&
    (a.keyHash === undefined || algorithm.hash?.name === a.keyHash) &&
    (a.keyCurve === undefined || algorithm.namedCurve === a.keyCurve);
  if (!fits) throw new SignatureCheckError(`the key (${algorithm.name}) was not imported for ${alg}`);
}

/**
 * True when `signature` is the signature of `signingInput` (the token's `header.payload` text) under
 * `key` with `alg`; false when it is not (including a signature of the wrong length or form, as jose
 * treats it). Throws SignatureCheckError for an algorithm or key this check cannot use.
 */
export async function verifyCompactSignature(token: string, alg: string, key: CryptoKey): Promise<boolean> {
  const a = SIGNING.get(alg);
  if (!a) throw new SignatureCheckError(`alg ${alg} is not supported`);
  const k = verifyKeyFor(key, alg, a);
  const dot = token.lastIndexOf('.');
  // parseCompactJws established that the token is ASCII: latin1 gives its exact bytes.
  const signingInput = Buffer.from(token.slice(0, dot), 'latin1');
  const signature = Buffer.from(token.slice(dot + 1), 'base64url');
  return new Promise((resolve) => {
    // On libuv's thread pool, like WebCrypto's verify. An error (a malformed signature) is a
    // failed verification, as jose reports it.
    verify(a.digest, signingInput, k, signature, (err, ok) => resolve(err === null && ok));
  });
}
