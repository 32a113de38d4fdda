/**
 * The signature of a stored snapshot. The Blob container is shared by every instance; a checksum
 * only shows the bytes arrived whole, not who wrote them. So the writer signs the body's SHA-256
 * with a key from app settings, and every reader verifies it before the snapshot is installed:
 * whoever can write the container but holds no signing key cannot hand instances issuer keys.
 *
 * The signature is a compact JWS (RFC 7515) made and checked by jose. Its payload names the digest
 * rather than carrying the body, so a 100 MB snapshot is hashed once and never base64url-encoded.
 * RFC 7515 section 4.1.4: the `kid` header "is a hint indicating which key was used to secure the
 * JWS"; here it selects exactly one configured key, so keys can rotate (the first signs, all verify).
 */
import { createPrivateKey, createPublicKey, createSecretKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, CompactSign, compactVerify, type JWK } from 'jose';
import { algorithmsForKey, filterVerificationKeys, MIN_RSA_BITS } from '../core/verification-keys.js';

/**
 * RFC 7515 section 4.1.9: `typ` declares "the media type of this complete JWS"; a distinct value
 * keeps a snapshot signature from being taken for any other JWS made with the same key.
 */
export const SNAPSHOT_SIGNATURE_TYPE = 'fhir-pdp-snapshot-signature';
const PAYLOAD_FORMAT = 'fhir-pdp-snapshot-digest';

/**
 * RFC 7518 section 3.2: "A key of the same size as the hash output (for instance, 256 bits for
 * "HS256") or larger MUST be used with this algorithm."
 */
export const MIN_HMAC_KEY_BYTES = 32;
const MAX_HMAC_KEY_BYTES = 1024;
/** Keys across all snapshot signing settings; rotation needs two or three. */
export const MAX_SNAPSHOT_KEYS = 16;
/** A setting holding keys is read whole before parsing. */
const MAX_KEY_SETTING_CHARS = 64 * 1024;
/** An RSA-8192 signature is 1366 base64url characters; a header adds a few dozen. */
const MAX_SIGNATURE_CHARS = 4096;
const KID_PATTERN = /^[A-Za-z0-9._~-]{1,64}$/;
const DIGEST_PATTERN = /^[0-9a-f]{64}$/;

/** A snapshot signing setting cannot be used; names the setting, never quotes key material. */
export class SnapshotSigningSetupError extends Error {
  readonly code = 'snapshot_signing_setup' as const;
  constructor(
    readonly setting: string,
    /** What is wrong with the setting, without its name. */
    readonly detail: string,
  ) {
    super(`${setting}: ${detail}`);
    this.name = 'SnapshotSigningSetupError';
  }
}

/** This instance holds verification keys only, so it cannot sign what it would write. */
export class SnapshotSigningUnavailableError extends Error {
  readonly code = 'snapshot_signing_unavailable' as const;
  constructor() {
    super(
      'This instance has snapshot verification keys but no signing key (PDP_SNAPSHOT_SIGNING_KEYS or PDP_SNAPSHOT_SIGNING_PRIVATE_KEY): its refresh is served here and not written.',
    );
    this.name = 'SnapshotSigningUnavailableError';
  }
}

export type SnapshotSignatureFailure = 'signature_missing' | 'signature_invalid' | 'unknown_signing_key';

/** A signature did not prove the snapshot came from a holder of a configured key. */
export class SnapshotSignatureError extends Error {
  readonly code = 'snapshot_signature' as const;
  constructor(
    readonly reason: SnapshotSignatureFailure,
    message: string,
  ) {
    super(message);
    this.name = 'SnapshotSignatureError';
  }
}

export interface SnapshotKey {
  readonly kid: string;
  /** Algorithms a JWS made with this key may name; exactly one for a signing key. */
  readonly algorithms: readonly string[];
  readonly key: KeyObject;
}

/** What health shows about the snapshot's signature: key ids only, never key material. */
export type SnapshotSignatureStatus =
  | { readonly mode: 'signed'; readonly signingKid: string | null; readonly verificationKids: readonly string[] }
  | { readonly mode: 'unsigned'; readonly warning: string };

export const UNSIGNED_WARNING =
  'PDP_SNAPSHOT_TRUST_UNSIGNED=true: the Blob snapshot is trusted by checksum only; anyone who can write its container can hand every instance issuer keys. Set PDP_SNAPSHOT_SIGNING_KEYS.';

interface SigningKey {
  readonly kid: string;
  readonly alg: string;
  readonly privateKey: KeyObject;
}

/** Signs snapshot digests with one key and verifies them against every configured key. */
export class SnapshotSignature {
  readonly #signing: SigningKey | undefined;
  readonly #verifying: ReadonlyMap<string, SnapshotKey>;

  /**
   * `privateKey` signs when given, else the first HMAC key; every key verifies. Throws
   * SnapshotSigningSetupError (naming `setting`) for no key, too many, or a kid used twice.
   */
  constructor(parts: SnapshotSigningParts) {
    const { setting: name, privateKey, hmacKeys, verifyKeys } = parts;
    const all: SnapshotKey[] = [
      ...(privateKey ? [{ kid: privateKey.kid, algorithms: [privateKey.alg], key: privateKey.publicKey }] : []),
      ...hmacKeys,
      ...verifyKeys,
    ];
    if (all.length === 0) throw new SnapshotSigningSetupError(name, 'no key');
    if (all.length > MAX_SNAPSHOT_KEYS) throw new SnapshotSigningSetupError(name, `at most ${MAX_SNAPSHOT_KEYS} keys`);
    const verifying = new Map<string, SnapshotKey>();
    for (const k of all) {
      if (verifying.has(k.kid)) throw new SnapshotSigningSetupError(name, `kid ${k.kid} is configured twice`);
      verifying.set(k.kid, k);
    }
    this.#verifying = verifying;
    const firstHmac = hmacKeys[0];
    this.#signing = privateKey
      ? { kid: privateKey.kid, alg: privateKey.alg, privateKey: privateKey.privateKey }
      : firstHmac
        ? { kid: firstHmac.kid, alg: 'HS256', privateKey: firstHmac.key }
        : undefined;
  }

  /** HMAC keys (HS256) as kid and raw secret, the first of which signs: for tests and tools. */
  static fromHmacKeys(keys: readonly { readonly kid: string; readonly secret: Uint8Array }[]): SnapshotSignature {
    const hmacKeys = keys.map((k, i) => hmacKey(k.kid, k.secret, 'hmacKeys', i));
    return new SnapshotSignature({ setting: 'hmacKeys', hmacKeys, verifyKeys: [] });
  }

  get status(): SnapshotSignatureStatus {
    return { mode: 'signed', signingKid: this.#signing?.kid ?? null, verificationKids: [...this.#verifying.keys()] };
  }

  /** A compact JWS over the body digest, `kid` in its protected header. */
  async sign(sha256Hex: string): Promise<string> {
    const signing = this.#signing;
    if (signing === undefined) throw new SnapshotSigningUnavailableError();
    const payload = new TextEncoder().encode(JSON.stringify(digestPayload(sha256Hex)));
    return new CompactSign(payload)
      .setProtectedHeader({ alg: signing.alg, kid: signing.kid, typ: SNAPSHOT_SIGNATURE_TYPE })
      .sign(signing.privateKey);
  }

  /** Resolves when `jws` is a valid signature, by a configured key, over exactly this digest. */
  async verify(jws: unknown, sha256Hex: string): Promise<void> {
    if (jws === undefined) {
      throw new SnapshotSignatureError('signature_missing', `the envelope has no signature; signing is configured (kids ${this.#kids()})`);
    }
    if (typeof jws !== 'string' || jws.length > MAX_SIGNATURE_CHARS) {
      throw new SnapshotSignatureError('signature_invalid', `the signature is not a compact JWS of at most ${MAX_SIGNATURE_CHARS} characters`);
    }
    let unknownKid: string | undefined;
    let result: Awaited<ReturnType<typeof compactVerify>>;
    try {
      result = await compactVerify(jws, (header) => {
        const kid = typeof header.kid === 'string' ? header.kid : undefined;
        const key = kid === undefined ? undefined : this.#verifying.get(kid);
        if (key === undefined) {
          unknownKid = kid?.slice(0, 64) ?? '(none)';
          throw new Error('unknown kid');
        }
        // RFC 8725 section 3.1: the algorithm is the one this key is for, never the header's choice.
        if (typeof header.alg !== 'string' || !key.algorithms.includes(header.alg)) {
          throw new Error(`alg ${String(header.alg).slice(0, 16)} is not allowed for kid ${kid}`);
        }
        return key.key;
      });
    } catch (error) {
      if (unknownKid !== undefined) {
        throw new SnapshotSignatureError('unknown_signing_key', `signed with kid ${unknownKid}, which is not among the verification keys (kids ${this.#kids()})`);
      }
      throw new SnapshotSignatureError('signature_invalid', `the signature does not verify (${errorText(error)})`);
    }
    if (result.protectedHeader.typ !== SNAPSHOT_SIGNATURE_TYPE) {
      throw new SnapshotSignatureError('signature_invalid', `the signature's typ is not ${SNAPSHOT_SIGNATURE_TYPE}`);
    }
    let payload: unknown;
    try {
      payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(result.payload));
    } catch {
      throw new SnapshotSignatureError('signature_invalid', 'the signed payload is not JSON');
    }
    const expected = digestPayload(sha256Hex);
    const signed = payload as Partial<Record<keyof typeof expected, unknown>> | null;
    if (typeof signed !== 'object' || signed === null || signed.format !== expected.format || signed.sha256 !== expected.sha256) {
      throw new SnapshotSignatureError('signature_invalid', `the signature (kid ${String(result.protectedHeader.kid)}) is for another body`);
    }
  }

  #kids(): string {
    return [...this.#verifying.keys()].join(', ');
  }
}

function digestPayload(sha256Hex: string): { readonly format: string; readonly sha256: string } {
  const sha256 = sha256Hex.toLowerCase();
  if (!DIGEST_PATTERN.test(sha256)) throw new TypeError('a snapshot digest is 64 hex digits');
  return { format: PAYLOAD_FORMAT, sha256 };
}

function errorText(error: unknown): string {
  const code = (error as { code?: unknown })?.code;
  const message = error instanceof Error ? error.message : String(error);
  return (typeof code === 'string' ? code : message).slice(0, 120);
}

/** The parsed snapshot signing settings (see snapshotSignatureFromSettings). */
export interface SnapshotSigningParts {
  readonly setting: string;
  readonly hmacKeys: readonly SnapshotKey[];
  readonly privateKey?: { readonly kid: string; readonly alg: string; readonly privateKey: KeyObject; readonly publicKey: KeyObject };
  readonly verifyKeys: readonly SnapshotKey[];
}

/** How the Blob snapshot is protected, from app settings. */
export type SnapshotSigningSetup =
  | { readonly mode: 'signed'; readonly signature: SnapshotSignature }
  | { readonly mode: 'unsigned' }
  | { readonly mode: 'none' };

/**
 * Reads PDP_SNAPSHOT_SIGNING_KEYS, PDP_SNAPSHOT_SIGNING_PRIVATE_KEY, PDP_SNAPSHOT_VERIFY_KEYS and
 * PDP_SNAPSHOT_TRUST_UNSIGNED. `none`: nothing is set (the caller decides whether that is allowed);
 * `unsigned`: the explicit opt-out. Throws SnapshotSigningSetupError on anything unusable or
 * contradictory, so a mistake fails at start-up rather than at the first poll.
 */
export async function snapshotSigningFromSettings(env: Readonly<Record<string, string | undefined>>): Promise<SnapshotSigningSetup> {
  const hmacSetting = setting(env, 'PDP_SNAPSHOT_SIGNING_KEYS');
  const privateSetting = setting(env, 'PDP_SNAPSHOT_SIGNING_PRIVATE_KEY');
  const verifySetting = setting(env, 'PDP_SNAPSHOT_VERIFY_KEYS');
  const trustSetting = setting(env, 'PDP_SNAPSHOT_TRUST_UNSIGNED') ?? 'false';
  if (trustSetting !== 'true' && trustSetting !== 'false') {
    throw new SnapshotSigningSetupError('PDP_SNAPSHOT_TRUST_UNSIGNED', 'is true or false');
  }
  const anyKey = hmacSetting !== undefined || privateSetting !== undefined || verifySetting !== undefined;
  if (trustSetting === 'true') {
    if (anyKey) {
      throw new SnapshotSigningSetupError('PDP_SNAPSHOT_TRUST_UNSIGNED', 'is true while snapshot signing keys are set; remove one or the other');
    }
    return { mode: 'unsigned' };
  }
  if (!anyKey) return { mode: 'none' };
  const hmacKeys = hmacSetting === undefined ? [] : parseHmacKeys(hmacSetting);
  const privateKey = privateSetting === undefined ? undefined : await parsePrivateKey(privateSetting);
  const verifyKeys = verifySetting === undefined ? [] : await parseVerifyKeys(verifySetting);
  const settingName = hmacSetting !== undefined ? 'PDP_SNAPSHOT_SIGNING_KEYS' : privateSetting !== undefined ? 'PDP_SNAPSHOT_SIGNING_PRIVATE_KEY' : 'PDP_SNAPSHOT_VERIFY_KEYS';
  return {
    mode: 'signed',
    signature: new SnapshotSignature({ setting: settingName, hmacKeys, ...(privateKey ? { privateKey } : {}), verifyKeys }),
  };
}

function setting(env: Readonly<Record<string, string | undefined>>, name: string): string | undefined {
  const value = env[name]?.trim();
  if (!value) return undefined;
  if (value.length > MAX_KEY_SETTING_CHARS) throw new SnapshotSigningSetupError(name, `is longer than ${MAX_KEY_SETTING_CHARS} characters`);
  // App Service leaves a Key Vault reference it could not resolve in the setting as written.
  // https://learn.microsoft.com/azure/app-service/app-service-key-vault-references
  if (/^@Microsoft\.KeyVault\(/i.test(value)) {
    throw new SnapshotSigningSetupError(
      name,
      'is a Key Vault reference the platform did not resolve: give the app\'s managed identity "get" on the secret (Key Vault Secrets User) and check the reference status under Environment variables',
    );
  }
  return value;
}

/** `kid:base64secret` entries, comma-separated; standard or URL-safe base64. */
function parseHmacKeys(value: string): SnapshotKey[] {
  const entries = value.split(',').map((e) => e.trim()).filter(Boolean);
  if (entries.length > MAX_SNAPSHOT_KEYS) throw new SnapshotSigningSetupError('PDP_SNAPSHOT_SIGNING_KEYS', `at most ${MAX_SNAPSHOT_KEYS} keys`);
  return entries.map((entry, i) => {
    const colon = entry.indexOf(':');
    const kid = colon < 0 ? '' : entry.slice(0, colon).trim();
    const encoded = colon < 0 ? '' : entry.slice(colon + 1).trim();
    if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(encoded)) {
      throw new SnapshotSigningSetupError('PDP_SNAPSHOT_SIGNING_KEYS', `entry ${i + 1} is not kid:base64secret`);
    }
    return hmacKey(kid, Buffer.from(encoded.replace(/-/g, '+').replace(/_/g, '/'), 'base64'), 'PDP_SNAPSHOT_SIGNING_KEYS', i);
  });
}

function hmacKey(kid: string, secret: Uint8Array, settingName: string, index: number): SnapshotKey {
  if (!KID_PATTERN.test(kid)) {
    throw new SnapshotSigningSetupError(settingName, `entry ${index + 1}: a kid is 1 to 64 of A-Z a-z 0-9 . _ ~ -`);
  }
  if (secret.byteLength < MIN_HMAC_KEY_BYTES || secret.byteLength > MAX_HMAC_KEY_BYTES) {
    throw new SnapshotSigningSetupError(
      settingName,
      `kid ${kid}: the secret has ${secret.byteLength} bytes; HS256 needs ${MIN_HMAC_KEY_BYTES} to ${MAX_HMAC_KEY_BYTES} (e.g. openssl rand -base64 32)`,
    );
  }
  return { kid, algorithms: ['HS256'], key: createSecretKey(secret) };
}

/** A private JWK (JSON) or a PKCS#8 / SEC1 / PKCS#1 PEM; the kid is the JWK's or its RFC 7638 thumbprint. */
async function parsePrivateKey(value: string): Promise<NonNullable<SnapshotSigningParts['privateKey']>> {
  const name = 'PDP_SNAPSHOT_SIGNING_PRIVATE_KEY';
  let privateKey: KeyObject;
  let statedKid: unknown;
  let statedAlg: unknown;
  try {
    if (value.startsWith('{')) {
      const jwk = JSON.parse(value) as JWK;
      statedKid = jwk.kid;
      statedAlg = jwk.alg;
      privateKey = createPrivateKey({ key: jwk as JsonWebKey, format: 'jwk' });
    } else {
      // App settings often hold a PEM on one line with literal \n.
      privateKey = createPrivateKey(value.replace(/\\n/g, '\n'));
    }
  } catch {
    throw new SnapshotSigningSetupError(name, 'is neither a private JWK (JSON) nor a PEM private key');
  }
  const publicKey = createPublicKey(privateKey);
  const publicJwk = publicKey.export({ format: 'jwk' }) as JWK;
  const alg = signingAlgorithm(privateKey, publicJwk, statedAlg, name);
  const kid = await kidFor(statedKid, publicJwk, name);
  return { kid, alg, privateKey, publicKey };
}

/** One algorithm per signing key (RFC 8725 section 3.1): the JWK's `alg`, else the type's usual one. */
function signingAlgorithm(privateKey: KeyObject, publicJwk: JWK, statedAlg: unknown, name: string): string {
  if (privateKey.asymmetricKeyType === 'rsa' && (privateKey.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) {
    throw new SnapshotSigningSetupError(name, `an RSA key has at least ${MIN_RSA_BITS} bits`);
  }
  const possible = algorithmsForKey(publicJwk);
  if (possible.length === 0) throw new SnapshotSigningSetupError(name, 'the key type is not RSA, EC P-256/384/521 or Ed25519');
  if (statedAlg !== undefined) {
    if (typeof statedAlg !== 'string' || !possible.includes(statedAlg)) {
      throw new SnapshotSigningSetupError(name, `alg ${String(statedAlg).slice(0, 16)} does not fit the key (${possible.join(', ')})`);
    }
    return statedAlg;
  }
  // RSASSA-PSS over PKCS#1 v1.5 (RFC 8017 section 8: PSS "is recommended for eventual adoption").
  return publicJwk.kty === 'RSA' ? 'PS256' : possible[0]!;
}

async function kidFor(stated: unknown, publicJwk: JWK, name: string): Promise<string> {
  if (stated === undefined) return calculateJwkThumbprint(publicJwk);
  if (typeof stated !== 'string' || !KID_PATTERN.test(stated)) throw new SnapshotSigningSetupError(name, 'a kid is 1 to 64 of A-Z a-z 0-9 . _ ~ -');
  return stated;
}

/** A JWK Set of public keys, checked by the same filter as an issuer's JWKS. */
async function parseVerifyKeys(value: string): Promise<SnapshotKey[]> {
  const name = 'PDP_SNAPSHOT_VERIFY_KEYS';
  let keys: unknown;
  try {
    keys = (JSON.parse(value) as { keys?: unknown }).keys;
  } catch {
    throw new SnapshotSigningSetupError(name, 'is not JSON');
  }
  if (!Array.isArray(keys) || keys.length === 0) throw new SnapshotSigningSetupError(name, 'is a JWK Set: {"keys": [...]} with at least one key');
  if (keys.length > MAX_SNAPSHOT_KEYS) throw new SnapshotSigningSetupError(name, `at most ${MAX_SNAPSHOT_KEYS} keys`);
  if (keys.some((k) => typeof k === 'object' && k !== null && 'd' in k)) {
    throw new SnapshotSigningSetupError(name, 'holds a private key; it takes public keys only (the private one goes in PDP_SNAPSHOT_SIGNING_PRIVATE_KEY)');
  }
  const { usable, dropped } = filterVerificationKeys(keys);
  if (dropped.length > 0) throw new SnapshotSigningSetupError(name, `not usable: ${dropped.join('; ')}`);
  const out: SnapshotKey[] = [];
  for (const jwk of usable) {
    let key: KeyObject;
    try {
      key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
    } catch {
      throw new SnapshotSigningSetupError(name, `${typeof jwk.kid === 'string' ? `kid ${jwk.kid.slice(0, 64)}` : 'a key'} is not a valid public JWK`);
    }
    out.push({ kid: await kidFor(jwk.kid, jwk, name), algorithms: algorithmsForKey(jwk), key });
  }
  return out;
}
