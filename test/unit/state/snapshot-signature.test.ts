import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { CompactSign, decodeProtectedHeader } from 'jose';
import { describe, expect, it } from 'vitest';
import { decodeSignedSnapshot, decodeSnapshot, encodeSignedSnapshot, encodeSnapshot, SnapshotDecodeError } from '../../../src/state/codec.js';
import { MemorySnapshotStore } from '../../../src/state/memory-store.js';
import {
  SNAPSHOT_SIGNATURE_TYPE,
  SnapshotSignature,
  SnapshotSignatureError,
  snapshotSigningFromSettings,
  SnapshotSigningSetupError,
  SnapshotSigningUnavailableError,
} from '../../../src/state/snapshot-signature.js';
import type { SnapshotData } from '../../../src/state/types.js';

const snapshot: SnapshotData = {
  schemaVersion: 1,
  revision: 'rev-1',
  createdAt: 1_700_000_000_000,
  issuers: [],
  groups: { 'group-a': { members: ['user-1'], fetchedAt: 1_700_000_000_001 } },
};
const LIMIT = 1024 * 1024;
const digest = (text: string): string => createHash('sha256').update(text).digest('hex');
const DIGEST = digest('body');

async function failure(promise: Promise<unknown>): Promise<SnapshotSignatureError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(SnapshotSignatureError);
  return error as SnapshotSignatureError;
}

async function signed(settings: Record<string, string>): Promise<SnapshotSignature> {
  const setup = await snapshotSigningFromSettings(settings);
  if (setup.mode !== 'signed') throw new Error(`expected signing, got ${setup.mode}`);
  return setup.signature;
}

describe('SnapshotSignature', () => {
  const k1 = SnapshotSignature.fromHmacKeys([{ kid: 'k1', secret: randomBytes(32) }]);

  it('signs a digest as a compact JWS with alg, kid and typ in the protected header, and verifies it', async () => {
    const jws = await k1.sign(DIGEST);
    expect(decodeProtectedHeader(jws)).toEqual({ alg: 'HS256', kid: 'k1', typ: SNAPSHOT_SIGNATURE_TYPE });
    await expect(k1.verify(jws, DIGEST)).resolves.toBeUndefined();
  });

  it('refuses a signature over another digest, a missing one, a garbled one and an oversized one', async () => {
    const jws = await k1.sign(DIGEST);
    expect((await failure(k1.verify(jws, digest('other')))).reason).toBe('signature_invalid');
    expect((await failure(k1.verify(undefined, DIGEST))).reason).toBe('signature_missing');
    expect((await failure(k1.verify(`${jws.slice(0, -2)}AA`, DIGEST))).reason).toBe('signature_invalid');
    expect((await failure(k1.verify(42, DIGEST))).reason).toBe('signature_invalid');
    expect((await failure(k1.verify('a'.repeat(5000), DIGEST))).reason).toBe('signature_invalid');
  });

  it('names an unknown kid, and refuses a JWS without kid', async () => {
    const other = SnapshotSignature.fromHmacKeys([{ kid: 'k9', secret: randomBytes(32) }]);
    const error = await failure(k1.verify(await other.sign(DIGEST), DIGEST));
    expect(error.reason).toBe('unknown_signing_key');
    expect(error.message).toContain('kid k9');
    const secret = randomBytes(32);
    const noKid = await new CompactSign(new TextEncoder().encode('{}')).setProtectedHeader({ alg: 'HS256', typ: SNAPSHOT_SIGNATURE_TYPE }).sign(secret);
    expect((await failure(SnapshotSignature.fromHmacKeys([{ kid: 'k1', secret }]).verify(noKid, DIGEST))).reason).toBe('unknown_signing_key');
  });

  it('takes the algorithm from the key, not the header: an HMAC JWS under an EC key\'s kid is refused', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const asymmetric = await signed({ PDP_SNAPSHOT_SIGNING_PRIVATE_KEY: ec });
    const kid = asymmetric.status.mode === 'signed' ? asymmetric.status.signingKid! : '';
    const forged = await SnapshotSignature.fromHmacKeys([{ kid, secret: randomBytes(32) }]).sign(DIGEST);
    expect(decodeProtectedHeader(forged)).toMatchObject({ alg: 'HS256', kid });
    expect((await failure(asymmetric.verify(forged, DIGEST))).message).toContain('alg HS256 is not allowed');
    await expect(asymmetric.verify(await asymmetric.sign(DIGEST), DIGEST)).resolves.toBeUndefined();
  });

  it('refuses a valid JWS of another type made with the same key', async () => {
    const secret = randomBytes(32);
    const signature = SnapshotSignature.fromHmacKeys([{ kid: 'k1', secret }]);
    const payload = new TextEncoder().encode(JSON.stringify({ format: 'fhir-pdp-snapshot-digest', sha256: DIGEST }));
    const jwt = await new CompactSign(payload).setProtectedHeader({ alg: 'HS256', kid: 'k1', typ: 'JWT' }).sign(secret);
    expect((await failure(signature.verify(jwt, DIGEST))).message).toContain('typ');
  });

  it('cannot sign with verification keys only', async () => {
    const { publicKey } = generateKeyPairSync('ed25519');
    const reader = await signed({ PDP_SNAPSHOT_VERIFY_KEYS: JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'ed-1' }] }) });
    expect(reader.status).toEqual({ mode: 'signed', signingKid: null, verificationKids: ['ed-1'] });
    await expect(reader.sign(DIGEST)).rejects.toBeInstanceOf(SnapshotSigningUnavailableError);
  });
});

describe('snapshotSigningFromSettings', () => {
  const secret = (): string => randomBytes(32).toString('base64');

  it('is none without settings and unsigned only when told so', async () => {
    expect(await snapshotSigningFromSettings({})).toEqual({ mode: 'none' });
    expect(await snapshotSigningFromSettings({ PDP_SNAPSHOT_TRUST_UNSIGNED: 'false' })).toEqual({ mode: 'none' });
    expect(await snapshotSigningFromSettings({ PDP_SNAPSHOT_TRUST_UNSIGNED: 'true' })).toEqual({ mode: 'unsigned' });
  });

  it('signs with the first HMAC key and verifies with all; URL-safe base64 works too', async () => {
    const urlSafe = randomBytes(32).toString('base64url');
    const s = await signed({ PDP_SNAPSHOT_SIGNING_KEYS: ` new:${secret()} , old:${urlSafe}` });
    expect(s.status).toEqual({ mode: 'signed', signingKid: 'new', verificationKids: ['new', 'old'] });
  });

  it('lets an asymmetric key sign instead of the HMAC keys, its kid a JWK thumbprint unless the JWK states one', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pemOnOneLine = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString().replace(/\n/g, '\\n');
    const s = await signed({ PDP_SNAPSHOT_SIGNING_PRIVATE_KEY: pemOnOneLine, PDP_SNAPSHOT_SIGNING_KEYS: `h1:${secret()}` });
    const status = s.status as unknown as { signingKid: string; verificationKids: string[] };
    expect(status.signingKid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(status.verificationKids).toEqual([status.signingKid, 'h1']);
    expect(decodeProtectedHeader(await s.sign(DIGEST))).toMatchObject({ alg: 'PS256', kid: status.signingKid });

    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'rsa-2026', alg: 'RS256' };
    const fromJwk = await signed({ PDP_SNAPSHOT_SIGNING_PRIVATE_KEY: JSON.stringify(jwk) });
    expect(decodeProtectedHeader(await fromJwk.sign(DIGEST))).toMatchObject({ alg: 'RS256', kid: 'rsa-2026' });
  });

  it.each([
    ['PDP_SNAPSHOT_TRUST_UNSIGNED', { PDP_SNAPSHOT_TRUST_UNSIGNED: 'yes' }, 'is true or false'],
    ['PDP_SNAPSHOT_SIGNING_KEYS', { PDP_SNAPSHOT_SIGNING_KEYS: `bad kid:${randomBytes(32).toString('base64')}` }, 'a kid is 1 to 64'],
    ['PDP_SNAPSHOT_SIGNING_KEYS', { PDP_SNAPSHOT_SIGNING_KEYS: 'k1:!!!!' }, 'entry 1 is not kid:base64secret'],
    ['PDP_SNAPSHOT_SIGNING_KEYS', { PDP_SNAPSHOT_SIGNING_KEYS: Array.from({ length: 17 }, (_, i) => `k${i}:${randomBytes(32).toString('base64')}`).join(',') }, 'at most 16'],
    [
      'PDP_SNAPSHOT_SIGNING_PRIVATE_KEY',
      { PDP_SNAPSHOT_SIGNING_PRIVATE_KEY: generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() },
      'at least 2048 bits',
    ],
    [
      'PDP_SNAPSHOT_SIGNING_PRIVATE_KEY',
      { PDP_SNAPSHOT_SIGNING_PRIVATE_KEY: JSON.stringify({ ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }), alg: 'ES384' }) },
      'alg ES384 does not fit the key',
    ],
    [
      'PDP_SNAPSHOT_SIGNING_PRIVATE_KEY',
      { PDP_SNAPSHOT_SIGNING_PRIVATE_KEY: JSON.stringify(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' })) },
      'neither a private JWK',
    ],
    [
      'PDP_SNAPSHOT_VERIFY_KEYS',
      { PDP_SNAPSHOT_VERIFY_KEYS: JSON.stringify({ keys: [generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' })] }) },
      'holds a private key',
    ],
    [
      'PDP_SNAPSHOT_VERIFY_KEYS',
      { PDP_SNAPSHOT_VERIFY_KEYS: JSON.stringify({ keys: [{ ...generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }), kid: 'e', use: 'enc' }] }) },
      'kid e: use is enc',
    ],
    ['PDP_SNAPSHOT_VERIFY_KEYS', { PDP_SNAPSHOT_VERIFY_KEYS: '{"keys": []}' }, 'at least one key'],
    ['PDP_SNAPSHOT_VERIFY_KEYS', { PDP_SNAPSHOT_VERIFY_KEYS: 'x'.repeat(70_000) }, 'longer than'],
    [
      'PDP_SNAPSHOT_SIGNING_KEYS',
      { PDP_SNAPSHOT_SIGNING_KEYS: '@Microsoft.KeyVault(SecretUri=https://vault.vault.azure.net/secrets/snapshot-key/)' },
      'Key Vault reference the platform did not resolve',
    ],
  ] as [string, Record<string, string>, string][])('refuses %s (case %#) with a start-up error that names it', async (setting, env, message) => {
    const error = await snapshotSigningFromSettings(env).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SnapshotSigningSetupError);
    expect(error).toMatchObject({ setting, message: expect.stringContaining(message) });
  });
});

describe('signed snapshots in the codec and the memory store', () => {
  const signature = SnapshotSignature.fromHmacKeys([{ kid: 'k1', secret: randomBytes(32) }]);

  it('round-trips, and a reader without signing still reads a signed envelope', async () => {
    const bytes = await encodeSignedSnapshot(snapshot, signature);
    expect(await decodeSignedSnapshot(bytes, LIMIT, signature)).toEqual(snapshot);
    expect(decodeSnapshot(bytes, LIMIT)).toEqual(snapshot);
  });

  it('rejects an unsigned envelope when signing is configured, naming the reason', async () => {
    const error = await decodeSignedSnapshot(encodeSnapshot(snapshot), LIMIT, signature).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(SnapshotDecodeError);
    expect(error).toMatchObject({ reason: 'signature_missing', code: 'snapshot_rejected' });
  });

  it('checks the checksum before the signature, and the signature before the body schema', async () => {
    const envelope = JSON.parse((await encodeSignedSnapshot(snapshot, signature)).toString('utf8')) as Record<string, string>;
    const reject = (bytes: Buffer) =>
      decodeSignedSnapshot(bytes, LIMIT, signature).then(
        () => 'accepted',
        (e: SnapshotDecodeError) => e.reason,
      );
    expect(await reject(Buffer.from(JSON.stringify({ ...envelope, body: `${envelope.body} ` })))).toBe('checksum_mismatch');
    const badBody = '{"schemaVersion": 1}';
    expect(await reject(Buffer.from(JSON.stringify({ ...envelope, body: badBody, sha256: digest(badBody) })))).toBe('signature_invalid');
  });

  it('a memory store with a signature refuses raw unsigned bytes and writes signed ones', async () => {
    const store = new MemorySnapshotStore({ signature });
    const { etag } = await store.write(snapshot, null);
    expect(await store.read()).toEqual({ data: snapshot, etag });
    const raw = store.writeRawBytes(encodeSnapshot({ ...snapshot, revision: 'forged' }));
    await expect(store.read()).rejects.toMatchObject({ reason: 'signature_missing', etag: raw.etag });
  });
});
