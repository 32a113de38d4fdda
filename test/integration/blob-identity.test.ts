/**
 * The Blob snapshot store reached by identity, as in Azure with shared keys disabled: the standalone
 * host (dist/bundle/main.js, what `npm start` and the container image run) with
 * PDP_SNAPSHOT_ACCOUNT_URL and PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID, against Azurite serving
 * HTTPS with `--oauth basic`. The token comes through @azure/identity's real managed identity path
 * (the App Service / Functions source: IDENTITY_ENDPOINT + IDENTITY_HEADER) from a local stand-in
 * for that endpoint, which returns a well-formed Entra-shaped JWT; the Blob traffic is real.
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, startNode, type RunningChild } from '../../testkit/child.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { ManagedIdentityEndpoint } from '../../testkit/managed-identity.js';
import { startHost } from '../../src/host/main.js';
import { blobStoreSettingsFrom } from '../../src/state/blob-settings.js';
import { startAzurite, type RunningAzurite } from '../../testkit/azurite.js';

const MAIN = new URL('../../dist/bundle/main.js', import.meta.url).pathname;
const AUDIENCE = 'https://fhir.example.test';
const ADMIN_KEY = randomBytes(18).toString('base64url');
const CLIENT_ID = '6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f';
const TENANT_ID = '72f988bf-86f1-41af-91ab-2d7cd011db47';


let dir: string;
let certPath: string;
let azurite: RunningAzurite;
let identity: ManagedIdentityEndpoint;
let idp: DevIdentityProvider;
const hosts: RunningChild[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pdp-blob-identity-'));
  certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  // A self-signed certificate for 127.0.0.1, trusted by the host through NODE_EXTRA_CA_CERTS only.
  await promisify(execFile)('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', keyPath, '-out', certPath,
  ]);
  [azurite, identity, idp] = await Promise.all([startAzurite({ oauthHttps: { certPath, keyPath } }), ManagedIdentityEndpoint.start({ tenantId: TENANT_ID, defaultClientId: CLIENT_ID }), DevIdentityProvider.start()]);
});

afterAll(async () => {
  await Promise.all([azurite?.stop(), identity?.close(), idp?.close()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  await Promise.all(hosts.splice(0).map((h) => h.stop()));
  identity.audience = 'https://storage.azure.com';
  identity.requests.length = 0;
});

function configJson(): string {
  return JSON.stringify({ authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }] });
}

interface Host {
  readonly url: string;
  readonly output: () => string;
}

async function startIdentityHost(container: string, settings: Record<string, string> = { PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID: CLIENT_ID }): Promise<Host> {
  const running = await startNode([MAIN], {
    env: cleanEnv({
      PORT: '0',
      PDP_HOST: '127.0.0.1',
      PDP_CONFIG: configJson(),
      PDP_ADMIN_KEYS: ADMIN_KEY,
      PDP_LOG_DECISIONS: 'false',
      PDP_REFRESH_INTERVAL_SECONDS: '3600',
      PDP_SNAPSHOT_STORE: 'blob',
      PDP_SNAPSHOT_ACCOUNT_URL: azurite.blobEndpoint,
      PDP_SNAPSHOT_CONTAINER: container,
      PDP_SNAPSHOT_SIGNING_KEYS: 'k1:c2lnbmluZy1rZXktb2YtdGhlLWlkZW50aXR5LXRlc3QtMzJi',
      IDENTITY_ENDPOINT: identity.url,
      IDENTITY_HEADER: identity.identityHeader,
      NODE_EXTRA_CA_CERTS: certPath,
      ...settings,
    }),
    stream: 'stderr',
    pattern: /listening on (http:\/\/\S+)/,
  });
  hosts.push(running);
  let output = running.match.input;
  running.child.stdout?.setEncoding('utf8').on('data', (text: string) => (output += text));
  running.child.stderr?.setEncoding('utf8').on('data', (text: string) => (output += text));
  return { url: running.match[1]!, output: () => output };
}

async function refresh(host: Host): Promise<{ stored: string; revision: string }> {
  const response = await fetch(`${host.url}/api/refresh`, { method: 'POST', headers: { 'x-functions-key': ADMIN_KEY } });
  expect(response.status).toBe(200);
  return (await response.json()) as { stored: string; revision: string };
}

async function health(host: Host): Promise<{ snapshot: { revision: string | null }; storeError?: { message: string } }> {
  const response = await fetch(`${host.url}/api/health`, { headers: { 'x-functions-key': ADMIN_KEY } });
  return (await response.json()) as { snapshot: { revision: string | null }; storeError?: { message: string } };
}

describe('the Blob snapshot store by managed identity (Azurite, HTTPS, --oauth basic)', () => {
  it('writes the snapshot with the user-assigned identity\'s token, and a cold instance reads it by identity', async () => {
    const container = `mi-${randomUUID()}`;
    const writer = await startIdentityHost(container);
    const report = await refresh(writer);
    expect(report.stored).toBe('written');
    expect(identity.requests.length).toBeGreaterThan(0);
    expect(identity.requests.every((r) => r.identityHeaderOk && r.clientId === CLIENT_ID && r.resource === 'https://storage.azure.com')).toBe(true);

    const reader = await startIdentityHost(container);
    // The host reads the stored snapshot before it listens: the revision is there at once.
    expect((await health(reader)).snapshot.revision).toBe(report.revision);
    for (const token of identity.issued) expect(writer.output() + reader.output()).not.toContain(token);
  });

  it('uses DefaultAzureCredential (here: its managed identity step) when no client id is set', async () => {
    const host = await startIdentityHost(`mi-${randomUUID()}`, {});
    expect((await refresh(host)).stored).toBe('written');
    expect(identity.requests.length).toBeGreaterThan(0);
    expect(identity.requests.every((r) => r.clientId === null)).toBe(true);
  });

  it('fails the write, reported in health and never logging the token, when Storage refuses the token', async () => {
    identity.audience = 'https://vault.azure.net';
    const host = await startIdentityHost(`mi-${randomUUID()}`);
    const report = await refresh(host);
    expect(report.stored).toBe('failed');
    expect((await health(host)).storeError?.message).toMatch(/HTTP 403/);
    expect(identity.issued.length).toBeGreaterThan(0);
    for (const token of identity.issued) expect(host.output()).not.toContain(token);
  });
});

describe('the Blob snapshot store when the identity gets no token', () => {
  it('reports the failed write as a missing token, never as a Storage answer, and serves its own snapshot', async () => {
    const host = await startIdentityHost(`mi-${randomUUID()}`, { PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID: CLIENT_ID, IDENTITY_HEADER: 'not-the-header' });
    const report = await refresh(host);
    expect(report.stored).toBe('failed');
    expect(identity.requests.some((r) => !r.identityHeaderOk)).toBe(true);
    const state = await health(host);
    expect(state.storeError?.message).toMatch(/no token for Blob Storage/);
    expect(state.snapshot.revision).toBe(report.revision);
  });
});

describe('blobStoreSettingsFrom by identity', () => {
  it.each([
    [{ PDP_SNAPSHOT_ACCOUNT_URL: 'https://stpdp.blob.core.windows.net' }, { accountUrl: 'https://stpdp.blob.core.windows.net' }],
    [
      { PDP_SNAPSHOT_ACCOUNT_URL: 'https://stpdp.blob.core.windows.net', PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID: CLIENT_ID, PDP_SNAPSHOT_CONTAINER: 'pdp-state' },
      { accountUrl: 'https://stpdp.blob.core.windows.net', managedIdentityClientId: CLIENT_ID, container: 'pdp-state' },
    ],
    // The host's connection string is the host's: an account URL names the snapshot's account.
    [
      { PDP_SNAPSHOT_ACCOUNT_URL: 'https://stpdp.blob.core.windows.net', AzureWebJobsStorage: 'UseDevelopmentStorage=true' },
      { accountUrl: 'https://stpdp.blob.core.windows.net' },
    ],
  ])('blobStoreSettingsFrom(%j) is %j', (env, expected) => {
    expect(blobStoreSettingsFrom(env)).toEqual(expected);
  });

  it('lists every problem at once', () => {
    expect(() =>
      blobStoreSettingsFrom({ PDP_SNAPSHOT_ACCOUNT_URL: 'http://x', PDP_SNAPSHOT_CONNECTION: 'c', PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID: 'name' }),
    ).toThrow(expect.objectContaining({ code: 'invalid_config', problems: expect.arrayContaining([expect.anything(), expect.anything(), expect.anything()]) }));
  });
});

describe('snapshot store settings at start-up', () => {
  const base = (): Record<string, string> => ({ PDP_CONFIG: configJson(), PORT: '0', PDP_SNAPSHOT_STORE: 'blob' });

  it.each([
    ['both an account URL and a connection string', { PDP_SNAPSHOT_ACCOUNT_URL: 'https://acct.blob.core.windows.net', PDP_SNAPSHOT_CONNECTION: 'UseDevelopmentStorage=true' }, /not both/],
    ['an account URL over plain HTTP', { PDP_SNAPSHOT_ACCOUNT_URL: 'http://acct.blob.core.windows.net' }, /must be https/],
    ['an account URL carrying a SAS', { PDP_SNAPSHOT_ACCOUNT_URL: 'https://acct.blob.core.windows.net/?sv=2024&sig=c2VjcmV0' }, /query string/],
    ['a client id without an account URL', { PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID: CLIENT_ID, AzureWebJobsStorage: 'UseDevelopmentStorage=true' }, /PDP_SNAPSHOT_ACCOUNT_URL, which is not set/],
    ['a client id that is not a GUID', { PDP_SNAPSHOT_ACCOUNT_URL: 'https://acct.blob.core.windows.net', PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID: 'id-fhir-pdp' }, /not a GUID/],
    ['no account, with identity-based host storage', { AzureWebJobsStorage__accountName: 'stpdp' }, /PDP_SNAPSHOT_ACCOUNT_URL=https:\/\/stpdp\.blob\.core\.windows\.net/],
    ['an account URL with the memory store', { PDP_SNAPSHOT_STORE: 'memory', PDP_SNAPSHOT_ACCOUNT_URL: 'https://acct.blob.core.windows.net' }, /PDP_SNAPSHOT_STORE is not blob/],
  ])('refuses to start with %s', async (_name, settings, message) => {
    const error = await startHost({ ...base(), ...settings }, () => undefined).then(
      (started) => started.close(),
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message).not.toContain('c2VjcmV0');
  });
});
