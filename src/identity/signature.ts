/**
 * The signature check of a compact JWS that parseCompactJws has already taken apart and validated
 * (canonical base64url, strict JSON, `alg` allowed for this issuer and this key).
 *
 * It is WebCrypto's `verify`, the primitive jose itself calls, with the parameters jose uses for
 * each algorithm (jose 6 `lib/jws_algorithms.js`: `signing`), on the CryptoKey jose imported for
 * exactly this algorithm and kid (`importJWK` in issuers.ts). What is not called is jose's
 * `compactVerify` around it: that parses the token a second time, and on Node 20 its base64url
 * decoding goes through `atob` and a character loop. Measured with 64 RS256 verifications in
 * flight on 2 cores: `compactVerify` costs about 57 µs of CPU per token and keeps the event loop
 * busy 95-99% of the time; `crypto.subtle.verify` on the same bytes, 34 µs and 68-74%
 * (bench/PROFILE.md). A cache miss of `decide` paid for both parses.
 *
 * test/unit/signature.test.ts checks this against jose's compactVerify, token by token, for every
 * algorithm fhir-pdp accepts and for tampered, truncated and cross-key signatures.
 */

interface SigningAlgorithm {
  /** WebCrypto parameters of `verify` for this JWS alg (RFC 7518 §3). */
  readonly params: AlgorithmIdentifier | RsaPssParams | EcdsaParams;
  /** What the key jose imported for this alg must be. */
  readonly keyName: string;
  readonly keyHash?: string;
  readonly keyCurve?: string;
}

function rsa(bits: 256 | 384 | 512, pss: boolean): SigningAlgorithm {
  const name = pss ? 'RSA-PSS' : 'RSASSA-PKCS1-v1_5';
  const hash = `SHA-${bits}`;
  // RFC 7518 §3.5: the PSS salt is as long as the hash.
  return { params: pss ? { name, saltLength: bits / 8 } : { name }, keyName: name, keyHash: hash };
}

function ecdsa(curve: string, bits: 256 | 384 | 512): SigningAlgorithm {
  // RFC 7518 §3.4: R || S, which is WebCrypto's ECDSA signature format.
  return { params: { name: 'ECDSA', hash: `SHA-${bits}` }, keyName: 'ECDSA', keyCurve: curve };
}

const ED25519: SigningAlgorithm = { params: { name: 'Ed25519' }, keyName: 'Ed25519' };

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
  assertKeyFits(alg, a, key);
  const dot = token.lastIndexOf('.');
  // parseCompactJws established that the token is ASCII: latin1 gives its exact bytes.
  const signingInput = Buffer.from(token.slice(0, dot), 'latin1');
  const signature = Buffer.from(token.slice(dot + 1), 'base64url');
  try {
    return await crypto.subtle.verify(a.params, key, signature, signingInput);
  } catch {
    // WebCrypto rejects some malformed signatures (an ECDSA signature of the wrong size) instead of
    // answering false; jose reports both as a failed verification, and so does this.
    return false;
  }
}
