import { generateKeyPairSync } from 'node:crypto';
import type { JWK } from 'jose';
import { describe, expect, it } from 'vitest';
import {
  MAX_KEYS_PER_ISSUER,
  MIN_RSA_BITS,
  algorithmsForKey,
  filterVerificationKeys,
  isAsymmetricAlgorithm,
} from '../../../src/core/verification-keys.js';

function rsa(bits: number, extra: Partial<JWK> = {}): JWK {
  const { publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return { ...(publicKey.export({ format: 'jwk' }) as JWK), ...extra };
}

function rsaPrivate(bits: number, extra: Partial<JWK> = {}): JWK {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return { ...(privateKey.export({ format: 'jwk' }) as JWK), ...extra };
}

function ec(curve: 'P-256' | 'P-384' | 'P-521', extra: Partial<JWK> = {}): JWK {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
  return { ...(publicKey.export({ format: 'jwk' }) as JWK), ...extra };
}

const RSA_2048 = rsa(2048, { kid: 'rsa-2048' });
const RSA_1024 = rsa(1024, { kid: 'rsa-1024' });
const ED25519 = { ...(generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }) as JWK), kid: 'ed' };
const X25519 = { ...(generateKeyPairSync('x25519').publicKey.export({ format: 'jwk' }) as JWK), kid: 'x' };

describe('isAsymmetricAlgorithm (RFC 8725 §2.1, §3.1)', () => {
  it.each([
    ['RS256', true],
    ['PS512', true],
    ['ES256', true],
    ['EdDSA', true],
    ['HS256', false],
    ['HS512', false],
    ['none', false],
    ['rs256', false],
    ['RSA-OAEP', false],
  ])('%s -> %s', (alg, expected) => {
    expect(isAsymmetricAlgorithm(alg)).toBe(expected);
  });
});

describe('algorithmsForKey: a list per key, never one list for all keys', () => {
  it.each<[string, JWK, string[]]>([
    ['RSA without alg', RSA_2048, ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']],
    ['RSA with alg RS256', { ...RSA_2048, alg: 'RS256' }, ['RS256']],
    ['RSA with alg PS384', { ...RSA_2048, alg: 'PS384' }, ['PS384']],
    ['RSA claiming alg HS256', { ...RSA_2048, alg: 'HS256' }, []],
    ['RSA claiming alg ES256', { ...RSA_2048, alg: 'ES256' }, []],
    ['EC P-256', ec('P-256'), ['ES256']],
    ['EC P-384', ec('P-384'), ['ES384']],
    ['EC P-521', ec('P-521'), ['ES512']],
    ['EC P-256 claiming ES384', ec('P-256', { alg: 'ES384' }), []],
    ['EC secp256k1', { kty: 'EC', crv: 'secp256k1', x: 'AA', y: 'AA' }, []],
    ['OKP Ed25519', ED25519, ['EdDSA', 'Ed25519']],
    ['OKP X25519', X25519, []],
    ['oct', { kty: 'oct', k: 'c2VjcmV0' }, []],
    ['oct claiming HS256', { kty: 'oct', k: 'c2VjcmV0', alg: 'HS256' }, []],
    ['an unknown kty', { kty: 'XYZ' }, []],
  ])('%s -> %j', (_what, jwk, algs) => {
    expect(algorithmsForKey(jwk)).toEqual(algs);
  });
});

describe('filterVerificationKeys', () => {
  const kids = (r: { usable: JWK[] }) => r.usable.map((k) => k.kid);

  it('keeps public asymmetric signature keys', () => {
    const r = filterVerificationKeys([RSA_2048, ec('P-256', { kid: 'ec' }), ED25519]);
    expect(kids(r)).toEqual(['rsa-2048', 'ec', 'ed']);
    expect(r.dropped).toEqual([]);
  });

  it.each<[string, JWK]>([
    ['a symmetric (oct) key', { kty: 'oct', kid: 'oct', k: 'c2VjcmV0', alg: 'HS256', use: 'sig' }],
    ['an encryption key (use: enc)', { ...RSA_2048, kid: 'enc', use: 'enc' }],
    ['a key with an unknown use', { ...RSA_2048, kid: 'odd-use', use: 'signature' }],
    ['a key whose key_ops lack verify', { ...RSA_2048, kid: 'ops', key_ops: ['encrypt', 'wrapKey'] }],
    ['an RSA key of 1024 bits', RSA_1024],
    ['an RSA key of 2040 bits', rsa(2040, { kid: 'rsa-2040' })],
    ['an RSA key without n', { kty: 'RSA', kid: 'no-n', e: 'AQAB' }],
    ['an X25519 key', X25519],
    ['an RSA key whose alg it cannot make', { ...RSA_2048, kid: 'rsa-es', alg: 'ES256' }],
  ])('drops %s', (_what, jwk) => {
    const r = filterVerificationKeys([jwk]);
    expect(r.usable).toEqual([]);
    expect(r.dropped).toHaveLength(1);
  });

  it('keeps key_ops with verify and use: sig', () => {
    expect(kids(filterVerificationKeys([{ ...RSA_2048, kid: 'v', use: 'sig', key_ops: ['verify'] }]))).toEqual(['v']);
  });

  it(`counts RSA modulus bits without leading zero bytes (min ${MIN_RSA_BITS})`, () => {
    const pad = (jwk: JWK, zeros: number) => ({ ...jwk, n: Buffer.concat([Buffer.alloc(zeros), Buffer.from(jwk.n!, 'base64url')]).toString('base64url') });
    // A 1024-bit modulus padded with zero bytes to 256 bytes is still 1024 bits.
    expect(filterVerificationKeys([pad(RSA_1024, 128)]).usable).toEqual([]);
    // A 2048-bit modulus with a leading zero byte is still 2048 bits.
    expect(filterVerificationKeys([pad(RSA_2048, 1)]).usable).toHaveLength(1);
  });

  it('strips private members (d, p, q, dp, dq, qi) and anything not a public member', () => {
    const priv = rsaPrivate(2048, { kid: 'priv', x5c: ['MIIB'], x5u: 'https://attacker.example/x', jku: 'https://attacker.example/j' } as Partial<JWK>);
    const [kept] = filterVerificationKeys([priv]).usable;
    expect(kept).toBeDefined();
    for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'x5c', 'x5u', 'jku']) expect(kept).not.toHaveProperty(m);
    expect(kept).toMatchObject({ kty: 'RSA', kid: 'priv', n: priv.n, e: priv.e });
  });

  it.each([null, 'a string', 7, [RSA_2048]])('drops a non-object entry: %j', (entry) => {
    const r = filterVerificationKeys([entry]);
    expect(r.usable).toEqual([]);
    expect(r.dropped).toEqual(['a non-object entry']);
  });

  it(`keeps at most ${MAX_KEYS_PER_ISSUER} keys per issuer`, () => {
    const many = Array.from({ length: MAX_KEYS_PER_ISSUER + 50 }, (_, i) => ({ ...RSA_2048, kid: `k${i}` }));
    const r = filterVerificationKeys(many);
    expect(r.usable).toHaveLength(MAX_KEYS_PER_ISSUER);
    expect(kids(r).at(-1)).toBe(`k${MAX_KEYS_PER_ISSUER - 1}`);
    expect(r.dropped).toHaveLength(50);
  });

  it('names dropped keys by kid only, never by key material', () => {
    const r = filterVerificationKeys([RSA_1024, { kty: 'oct', kid: 'oct', k: 'c2VjcmV0LXNlY3JldA' }]);
    const text = r.dropped.join('\n');
    expect(text).toContain('rsa-1024');
    expect(text).toContain('oct');
    expect(text).not.toContain(RSA_1024.n!.slice(0, 20));
    expect(text).not.toContain('c2VjcmV0LXNlY3JldA');
  });
});
