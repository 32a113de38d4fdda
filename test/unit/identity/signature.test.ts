/**
 * verifyCompactSignature (src/identity/signature.ts) against jose's compactVerify, the verifier it
 * stands in for on the hot path: for every algorithm fhir-pdp accepts, the same keys (imported by
 * jose's importJWK, as issuers.ts does) and the same tokens, good and tampered, must get the same
 * answer from both.
 */
import { CompactSign, compactVerify, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { SignatureCheckError, verifyCompactSignature } from '../../../src/identity/signature.js';

const ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const;
type Alg = (typeof ALGS)[number];

interface Fixture {
  readonly alg: Alg;
  readonly sign: (payload: string) => Promise<string>;
  /** The public key as issuers.ts holds it: jose's importJWK of the published JWK for this alg. */
  readonly key: CryptoKey;
  /** Another key of the same type (a different issuer's, say). */
  readonly otherKey: CryptoKey;
}

const fixtures = new Map<Alg, Fixture>();

async function publicKeyFor(jwk: JWK, alg: Alg): Promise<CryptoKey> {
  const k = await importJWK(jwk, alg);
  if (k instanceof Uint8Array) throw new Error('symmetric');
  return k;
}

beforeAll(async () => {
  for (const alg of ALGS) {
    const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
    const other = await generateKeyPair(alg, { extractable: true });
    fixtures.set(alg, {
      alg,
      sign: (payload) => new CompactSign(new TextEncoder().encode(payload)).setProtectedHeader({ alg, typ: 'JWT', kid: 'k1' }).sign(privateKey),
      key: await publicKeyFor(await exportJWK(publicKey), alg),
      otherKey: await publicKeyFor(await exportJWK(other.publicKey), alg),
    });
  }
}, 60_000);

async function joseSays(token: string, key: CryptoKey, alg: string): Promise<boolean> {
  try {
    await compactVerify(token, key, { algorithms: [alg] });
    return true;
  } catch {
    return false;
  }
}

function flipBit(part: string, at: number): string {
  const bytes = Buffer.from(part, 'base64url');
  bytes[at % bytes.length]! ^= 0x01;
  return bytes.toString('base64url');
}

function variants(token: string): Array<[string, string]> {
  const [h, p, s] = token.split('.') as [string, string, string];
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>;
  const forged = Buffer.from(JSON.stringify({ ...payload, oid: 'someone-else' })).toString('base64url');
  return [
    ['the token as signed', token],
    ['a changed payload', `${h}.${forged}.${s}`],
    ['a changed header', `${Buffer.from(JSON.stringify({ alg: JSON.parse(Buffer.from(h, 'base64url').toString()).alg, kid: 'k2' })).toString('base64url')}.${p}.${s}`],
    ['a signature with one bit flipped at the start', `${h}.${p}.${flipBit(s, 0)}`],
    ['a signature with one bit flipped at the end', `${h}.${p}.${flipBit(s, Buffer.from(s, 'base64url').length - 1)}`],
    ['a truncated signature', `${h}.${p}.${Buffer.from(s, 'base64url').subarray(0, 10).toString('base64url')}`],
    ['a signature one byte too long', `${h}.${p}.${Buffer.concat([Buffer.from(s, 'base64url'), Buffer.from([0])]).toString('base64url')}`],
    ['an all-zero signature', `${h}.${p}.${Buffer.alloc(Buffer.from(s, 'base64url').length).toString('base64url')}`],
  ];
}

describe('verifyCompactSignature answers as jose compactVerify does', () => {
  it.each(ALGS)('%s: good, tampered, truncated and cross-key tokens', async (alg) => {
    const f = fixtures.get(alg)!;
    const token = await f.sign(JSON.stringify({ iss: 'https://issuer.example', oid: 'me', exp: 2_000_000_000 }));
    let accepted = 0;
    for (const [what, t] of variants(token)) {
      for (const [whose, key] of [['its key', f.key], ['another key', f.otherKey]] as const) {
        const expected = await joseSays(t, key, alg);
        expect({ what, whose, ours: await verifyCompactSignature(t, alg, key) }).toEqual({ what, whose, ours: expected });
        if (expected) accepted++;
      }
    }
    // Exactly one combination verifies: the token as signed, with its own key.
    expect(accepted).toBe(1);
  });

  it('refuses a key imported for another algorithm, as jose does, instead of verifying with it', async () => {
    const rs = fixtures.get('RS256')!;
    const token = await rs.sign('{"a":1}');
    // The same RSA key imported for PS256 and for RS384: a different WebCrypto algorithm or hash.
    const jwk = await exportJWK(rs.key);
    for (const importedFor of ['PS256', 'RS384'] as const) {
      const wrong = await publicKeyFor(jwk, importedFor);
      await expect(verifyCompactSignature(token, 'RS256', wrong)).rejects.toBeInstanceOf(SignatureCheckError);
      expect(await joseSays(token, wrong, 'RS256')).toBe(false);
    }
    // An EC key for an RSA algorithm, and a P-256 key for ES384.
    await expect(verifyCompactSignature(token, 'RS256', fixtures.get('ES256')!.key)).rejects.toBeInstanceOf(SignatureCheckError);
    await expect(verifyCompactSignature(token, 'ES384', fixtures.get('ES256')!.key)).rejects.toBeInstanceOf(SignatureCheckError);
  });

  it('knows no HMAC and no `none`', async () => {
    const token = await fixtures.get('RS256')!.sign('{"a":1}');
    for (const alg of ['HS256', 'none', 'RS1', '']) {
      await expect(verifyCompactSignature(token, alg, fixtures.get('RS256')!.key)).rejects.toThrow(/not supported/);
    }
  });
});
