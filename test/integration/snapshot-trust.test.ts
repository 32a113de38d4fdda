/**
 * Who may hand instances issuer keys through the shared snapshot (Azurite): a snapshot written
 * straight into the container by a writer without the signing key is rejected and decisions keep
 * the keys they had; keys rotate by kid; a signed snapshot's keys still pass the JWKS key filter;
 * a Blob store without a signing key refuses to start unless told the container is trusted.
 */
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { BlobServiceClient } from '@azure/storage-blob';
import { decodeProtectedHeader } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { PdpService, type PdpServiceOptions } from '../../src/app.js';
import { DEFAULT_SNAPSHOT_BLOB } from '../../src/state/blob-store.js';
import { encodeSignedSnapshot, encodeSnapshot, newRevision } from '../../src/state/codec.js';
import { SnapshotSignature } from '../../src/state/snapshot-signature.js';
import type { SnapshotData } from '../../src/state/types.js';
import { startAzurite, type RunningAzurite } from '../../testkit/azurite.js';

const AUDIENCE = 'https://fhir.example.test';

let azurite: RunningAzurite;
let idp: DevIdentityProvider;
const services: PdpService[] = [];

beforeAll(async () => {
  [azurite, idp] = await Promise.all([startAzurite(), DevIdentityProvider.start()]);
});

afterAll(async () => {
  await Promise.all([azurite?.stop(), idp?.close()]);
});

afterEach(() => {
  for (const s of services.splice(0)) s.stop();
});

interface Instance {
  readonly service: PdpService;
  readonly warnings: string[];
}

/** One PDP instance on a container, configured through app settings as in Azure. */
function instance(container: string, settings: Record<string, string>, options: Partial<PdpServiceOptions> = {}): Instance {
  const warnings: string[] = [];
  const service = new PdpService({
    config: parseConfig({ authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }] }),
    env: { PDP_SNAPSHOT_STORE: 'blob', PDP_SNAPSHOT_CONNECTION: azurite.connectionString, PDP_SNAPSHOT_CONTAINER: container, ...settings },
    warn: (line) => warnings.push(line),
    ...options,
  });
  services.push(service);
  return { service, warnings };
}

const newContainer = (): string => `t-${randomUUID()}`;
const hmacSecret = (): Buffer => randomBytes(32);
const hmacSetting = (...keys: [string, Buffer][]): string => keys.map(([kid, secret]) => `${kid}:${secret.toString('base64')}`).join(',');

function revisionOf(s: PdpService): string | null {
  return (s.health().snapshot as { revision: string | null }).revision;
}

async function decide(s: PdpService, kid?: string, version: 1 | 2 = 2): Promise<{ reason: string; status: number }> {
  const token = await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', version, ...(kid ? { kid } : {}) });
  const d = await s.pdp.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${token}`] } });
  return { reason: d.reason, status: d.status };
}

function blobOf(container: string) {
  return BlobServiceClient.fromConnectionString(azurite.connectionString).getContainerClient(container).getBlockBlobClient(DEFAULT_SNAPSHOT_BLOB);
}

async function storedEnvelope(container: string): Promise<{ sha256: string; signature?: string; body: string }> {
  return JSON.parse((await blobOf(container).downloadToBuffer()).toString('utf8')) as { sha256: string; signature?: string; body: string };
}

async function upload(container: string, bytes: Buffer): Promise<void> {
  await blobOf(container).upload(bytes, bytes.length);
}

/**
 * A key the identity provider holds but does not publish: what an attacker who mints its own
 * tokens would add to a snapshot.
 */
function unpublishedKey(): { kid: string; jwk: Record<string, unknown> } {
  const kid = idp.rotateKey();
  idp.removeKey(kid);
  return { kid, jwk: { ...idp.publicJwk(kid) } };
}

/** The stored snapshot with `jwk` added to every issuer's keys, under a new revision. */
async function withExtraKey(container: string, jwk: Record<string, unknown>): Promise<SnapshotData> {
  const data = JSON.parse((await storedEnvelope(container)).body) as SnapshotData;
  return {
    ...data,
    revision: newRevision(),
    issuers: data.issuers.map((issuer) => ({ ...issuer, keys: [...issuer.keys, jwk as SnapshotData['issuers'][number]['keys'][number]] })),
  };
}

describe('a snapshot written into the container without the signing key', () => {
  it.each([
    ['unsigned, with a correct checksum', 'signature_missing', async (data: SnapshotData) => encodeSnapshot(data)],
    [
      'signed with another secret under the same kid',
      'signature_invalid',
      async (data: SnapshotData) => encodeSignedSnapshot(data, SnapshotSignature.fromHmacKeys([{ kid: 'k1', secret: hmacSecret() }])),
    ],
    [
      'carrying the signature of the previous snapshot',
      'signature_invalid',
      async (data: SnapshotData, previous: { signature?: string }) => {
        const forged = JSON.parse(encodeSnapshot(data).toString('utf8')) as Record<string, unknown>;
        return Buffer.from(JSON.stringify({ ...forged, signature: previous.signature }), 'utf8');
      },
    ],
  ])('is rejected when %s: the instances keep the old keys and say why', async (_name, reason, forge) => {
    const container = newContainer();
    const settings = { PDP_SNAPSHOT_SIGNING_KEYS: hmacSetting(['k1', hmacSecret()]) };
    const a = instance(container, settings);
    const b = instance(container, settings);
    await a.service.start();
    await b.service.start();
    const good = revisionOf(b.service);
    const previous = await storedEnvelope(container);
    expect(previous.signature).toEqual(expect.any(String));

    const attacker = unpublishedKey();
    await upload(container, await forge(await withExtraKey(container, attacker.jwk), previous));

    expect(await b.service.pollSnapshot()).toBe('rejected');
    expect(revisionOf(b.service)).toBe(good);
    expect(b.service.health()).toMatchObject({
      ready: true,
      status: 'degraded',
      follower: { lastError: { code: 'snapshot_rejected', message: expect.stringContaining(`Snapshot rejected (${reason})`) } },
    });
    expect(b.warnings).toEqual([expect.stringContaining(`snapshot_rejected: Snapshot rejected (${reason})`)]);
    // The attacker's key was never installed; the issuer's own keys still verify.
    expect(await decide(b.service, attacker.kid)).toMatchObject({ reason: 'unknown_key', status: 401 });
    expect(await decide(b.service)).toMatchObject({ reason: 'allowed', status: 200 });

    // A cold instance does not install it either: it refreshes and repairs the blob.
    const cold = instance(container, settings);
    await cold.service.start();
    expect(cold.service.lastRefresh).toMatchObject({ stored: 'written' });
    expect(await decide(cold.service, attacker.kid)).toMatchObject({ reason: 'unknown_key' });
    expect(await b.service.pollSnapshot()).toBe('changed');
    expect(b.service.health()).not.toHaveProperty('follower.lastError');
  });
});

describe('rotating the snapshot signing key', () => {
  it('keeps verifying the old kid while the new one signs, and an instance without the new kid keeps its snapshot', async () => {
    const container = newContainer();
    const k1 = hmacSecret();
    const k2 = hmacSecret();
    // Step 1: every instance has k1. Step 2: k2 is added after it (verifies only). Step 3: k2 first.
    const old = instance(container, { PDP_SNAPSHOT_SIGNING_KEYS: hmacSetting(['k1', k1]) });
    await old.service.start();
    expect(decodeProtectedHeader((await storedEnvelope(container)).signature!)).toMatchObject({ kid: 'k1', alg: 'HS256' });

    const added = instance(container, { PDP_SNAPSHOT_SIGNING_KEYS: hmacSetting(['k1', k1], ['k2', k2]) });
    await added.service.start();
    expect(added.service.lastRefresh).toBeUndefined();
    expect(revisionOf(added.service)).toBe(revisionOf(old.service));

    const rotated = instance(container, { PDP_SNAPSHOT_SIGNING_KEYS: hmacSetting(['k2', k2], ['k1', k1]) });
    await rotated.service.start();
    expect(revisionOf(rotated.service)).toBe(revisionOf(old.service));
    const report = await rotated.service.refresh();
    expect(report.stored).toBe('written');
    expect(decodeProtectedHeader((await storedEnvelope(container)).signature!)).toMatchObject({ kid: 'k2' });
    expect(rotated.service.health()).toMatchObject({ snapshot: { signature: { mode: 'signed', signingKid: 'k2', verificationKids: ['k2', 'k1'] } } });

    expect(await added.service.pollSnapshot()).toBe('changed');
    expect(revisionOf(added.service)).toBe(report.revision);

    // An instance still on step 1 cannot verify k2: it keeps what it has and says which kid it lacks.
    const before = revisionOf(old.service);
    expect(await old.service.pollSnapshot()).toBe('rejected');
    expect(revisionOf(old.service)).toBe(before);
    expect(old.service.health()).toMatchObject({
      follower: { lastError: { code: 'snapshot_rejected', message: expect.stringContaining('(unknown_signing_key): signed with kid k2') } },
    });
  });

  it('signs with an asymmetric key from settings and verifies on instances that hold only its public key', async () => {
    const container = newContainer();
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    const publicJwk = { ...publicKey.export({ format: 'jwk' }), kid: 'snapshot-ec-1', use: 'sig' };
    const writer = instance(container, { PDP_SNAPSHOT_SIGNING_PRIVATE_KEY: pem.replace(/\n/g, '\\n') });
    await writer.service.start();
    const header = decodeProtectedHeader((await storedEnvelope(container)).signature!);
    expect(header).toMatchObject({ alg: 'ES256', typ: 'fhir-pdp-snapshot-signature' });

    const reader = instance(container, { PDP_SNAPSHOT_VERIFY_KEYS: JSON.stringify({ keys: [{ ...publicJwk, kid: header.kid }] }) });
    await reader.service.start();
    expect(reader.service.lastRefresh).toBeUndefined();
    expect(revisionOf(reader.service)).toBe(revisionOf(writer.service));
    expect(reader.service.health()).toMatchObject({ snapshot: { signature: { mode: 'signed', signingKid: null } } });

    // A reader cannot sign: its own refresh is served by itself and not written.
    const report = await reader.service.refresh();
    expect(report.stored).toBe('failed');
    expect(reader.service.health()).toMatchObject({ storeError: { code: 'snapshot_signing_unavailable' } });

    // HMAC-signed bytes under the EC key's kid do not verify (the key fixes the algorithm).
    const stored = JSON.parse((await storedEnvelope(container)).body) as SnapshotData;
    const hmacUnderEcKid = SnapshotSignature.fromHmacKeys([{ kid: header.kid!, secret: hmacSecret() }]);
    await upload(container, await encodeSignedSnapshot({ ...stored, revision: newRevision() }, hmacUnderEcKid));
    expect(await writer.service.pollSnapshot()).toBe('rejected');
    expect(writer.service.health()).toMatchObject({ follower: { lastError: { message: expect.stringContaining('(signature_invalid)') } } });
  });
});

describe('keys carried by a signed snapshot', () => {
  it('pass the same filter as fetched JWKS keys: a use=enc key, an HMAC algorithm and a non-https jwks_uri are refused', async () => {
    const container = newContainer();
    const secret = hmacSecret();
    const settings = { PDP_SNAPSHOT_SIGNING_KEYS: hmacSetting(['k1', secret]) };
    const a = instance(container, settings);
    await a.service.start();
    const encryptionKey = unpublishedKey();
    const data = await withExtraKey(container, { ...encryptionKey.jwk, use: 'enc' });
    const [first, ...others] = data.issuers;
    const tampered: SnapshotData = {
      ...data,
      issuers: [{ ...first!, algorithms: [...first!.algorithms, 'HS256'] }, ...others.map((i) => ({ ...i, jwksUri: 'http://attacker.example/keys' }))],
    };
    // Written with the signing key, as a writer that has it would: what the filter is for.
    await upload(container, await encodeSignedSnapshot(tampered, SnapshotSignature.fromHmacKeys([{ kid: 'k1', secret }])));

    const b = instance(container, settings);
    await b.service.start();
    expect(revisionOf(b.service)).toBe(tampered.revision);
    const health = b.service.health() as unknown as { status: string; snapshot: { dropped: string[] }; issuers: { issuer?: string }[] };
    expect(health.status).toBe('degraded');
    expect(health.snapshot.dropped).toEqual(
      expect.arrayContaining([
        expect.stringContaining(`kid ${encryptionKey.kid}: use is enc`),
        expect.stringContaining('algorithms HS256'),
        expect.stringContaining('jwks_uri http://attacker.example/keys'),
      ]),
    );
    expect(b.warnings.some((w) => w.includes('refused by the issuer key checks'))).toBe(true);
    // The first issuer (v1) kept its record without the refused parts; the second was refused whole.
    expect(await decide(b.service, encryptionKey.kid, 1)).toMatchObject({ reason: 'unknown_key', status: 401 });
    expect(await decide(b.service, undefined, 1)).toMatchObject({ reason: 'allowed', status: 200 });
  });
});

describe('a Blob store without a signing key', () => {
  it('refuses to start, naming the setting', async () => {
    const s = instance(newContainer(), {});
    const error = await s.service.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([{ path: 'PDP_SNAPSHOT_SIGNING_KEYS', message: expect.stringContaining('PDP_SNAPSHOT_TRUST_UNSIGNED=true') }]);
  });

  it.each([
    ['a 5-byte HMAC secret', { PDP_SNAPSHOT_SIGNING_KEYS: 'k1:c2hvcnQ=' }, 'PDP_SNAPSHOT_SIGNING_KEYS', 'the secret has 5 bytes'],
    ['an entry without kid', { PDP_SNAPSHOT_SIGNING_KEYS: 'no-colon-here' }, 'PDP_SNAPSHOT_SIGNING_KEYS', 'entry 1 is not kid:base64secret'],
    ['a kid used twice', { PDP_SNAPSHOT_SIGNING_KEYS: `k1:${randomBytes(32).toString('base64')},k1:${randomBytes(32).toString('base64')}` }, 'PDP_SNAPSHOT_SIGNING_KEYS', 'kid k1 is configured twice'],
    ['a key and the opt-out together', { PDP_SNAPSHOT_SIGNING_KEYS: `k1:${randomBytes(32).toString('base64')}`, PDP_SNAPSHOT_TRUST_UNSIGNED: 'true' }, 'PDP_SNAPSHOT_TRUST_UNSIGNED', 'remove one or the other'],
    ['a private key that is not one', { PDP_SNAPSHOT_SIGNING_PRIVATE_KEY: 'not a key' }, 'PDP_SNAPSHOT_SIGNING_PRIVATE_KEY', 'neither a private JWK'],
    ['a symmetric verification key', { PDP_SNAPSHOT_VERIFY_KEYS: JSON.stringify({ keys: [{ kty: 'oct', k: 'AAAA', kid: 'x' }] }) }, 'PDP_SNAPSHOT_VERIFY_KEYS', 'kid x: symmetric (oct)'],
  ] as [string, Record<string, string>, string, string][])('refuses %s with a start-up error for %s, never quoting a secret', async (_name, settings, path, message) => {
    const s = instance(newContainer(), settings);
    const error = (await s.service.start().then(
      () => undefined,
      (e: unknown) => e,
    )) as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.problems).toEqual([{ path, message: expect.stringContaining(message) }]);
    for (const value of Object.values(settings)) {
      const secret = value.split(':')[1]?.split(',')[0];
      if (secret && secret.length > 8) expect(error.message).not.toContain(secret);
    }
  });

  it('with PDP_SNAPSHOT_TRUST_UNSIGNED=true, starts and says loudly in health and the log that the container is trusted', async () => {
    const container = newContainer();
    const s = instance(container, { PDP_SNAPSHOT_TRUST_UNSIGNED: 'true' });
    await s.service.start();
    expect(s.service.health()).toMatchObject({
      ready: true,
      snapshot: { signature: { mode: 'unsigned', warning: expect.stringContaining('anyone who can write its container') } },
    });
    expect(s.warnings).toEqual([expect.stringContaining('PDP_SNAPSHOT_TRUST_UNSIGNED=true')]);
    expect((await storedEnvelope(container)).signature).toBeUndefined();
  });
});
