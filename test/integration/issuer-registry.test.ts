/**
 * IssuerRegistry against a real authority on 127.0.0.1 (node:http serving discovery and a JWKS of
 * keys minted here): what a refresh loads, what it drops, what it reports when the authority is
 * down, what a snapshot restores without the network, and when keys stop being fresh.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { IssuerRegistry, type IssuerRegistryOptions } from '../../src/identity/issuers.js';

let server: Server;
let authority: string;
let signing: JWK[];
let failing = false;
const requests: string[] = [];

beforeAll(async () => {
  const a = { ...(await exportJWK((await generateKeyPair('RS256', { extractable: true })).publicKey)), kid: 'a', use: 'sig' };
  const b = { ...(await exportJWK((await generateKeyPair('ES256', { extractable: true })).publicKey)), kid: 'b' };
  signing = [a, b];
  server = createServer((req, res) => {
    requests.push(req.url ?? '');
    if (failing) {
      res.writeHead(500).end();
      return;
    }
    if (req.url === '/tenant/.well-known/openid-configuration') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ issuer: `${authority}`, jwks_uri: `${authority}/keys`, id_token_signing_alg_values_supported: ['RS256', 'ES256', 'HS256', 'none'] }));
    } else if (req.url === '/tenant/keys') {
      res.writeHead(200, { 'content-type': 'application/json' });
      // An HMAC secret and an encryption key are published beside the signing keys: never used.
      res.end(JSON.stringify({ keys: [...signing, { kty: 'oct', k: 'c2VjcmV0', kid: 'h' }, { ...signing[0], kid: 'enc', use: 'enc' }] }));
    } else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  authority = `http://127.0.0.1:${(server.address() as AddressInfo).port}/tenant`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  failing = false;
  requests.length = 0;
});

function registry(options: Partial<IssuerRegistryOptions> = {}): IssuerRegistry {
  return new IssuerRegistry({
    authorities: [authority],
    fetchTimeoutMs: 2000,
    jwksRefetchCooldownMs: 60_000,
    metadataRetryMs: 30_000,
    maxStaleMs: 3_600_000,
    clock: Date.now,
    ...options,
  });
}

describe('IssuerRegistry', () => {
  it('loads discovery and keys: only asymmetric algorithms, only signing keys', async () => {
    const r = registry();
    expect(r.ready()).toBe(false);
    expect(await r.refreshAll()).toEqual([]);
    expect(r.ready()).toBe(true);
    expect(r.lookup(authority)).toMatchObject({ state: 'found', issuer: authority, authority, algorithms: ['RS256', 'ES256'] });
    const [record] = r.records();
    expect(record!.keys.map((k) => k.kid)).toEqual(['a', 'b']);
    expect(r.health()).toMatchObject([{ authority, issuer: authority, keys: 2, stale: false }]);
    expect(r.lookup('https://elsewhere.example/')).toMatchObject({ state: 'unknown', known: [authority] });
  });

  it('reports an authority that is down, and is not ready', async () => {
    failing = true;
    const r = registry();
    const problems = await r.refreshAll();
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain('HTTP 500');
    expect(r.ready()).toBe(false);
    expect(r.lookup(authority)).toMatchObject({ state: 'unavailable', authorities: [authority] });
    expect(r.health()).toMatchObject([{ authority, keys: 0, stale: true, lastError: { message: expect.stringContaining('HTTP 500') } }]);
  });

  it('keeps what it had when a later refresh fails', async () => {
    const r = registry();
    await r.refreshAll();
    failing = true;
    expect(await r.refreshAll()).not.toEqual([]);
    expect(r.ready()).toBe(true);
    expect(r.records()[0]!.keys).toHaveLength(2);
  });

  it('restores a snapshot without the network, and drops what the issuer checks refuse', async () => {
    const first = registry();
    await first.refreshAll();
    const records = first.records();
    requests.length = 0;
    const second = registry();
    expect(second.load(records)).toEqual([]);
    expect(second.ready()).toBe(true);
    expect(requests).toEqual([]);
    const third = registry();
    const dropped = third.load([{ ...records[0]!, jwksUri: 'http://keys.example/keys' }]);
    expect(dropped).toHaveLength(1);
    expect(third.ready()).toBe(false);
  });

  it('keys older than maxStale are not fresh', async () => {
    let now = Date.now();
    const r = registry({ clock: () => now, maxStaleMs: 1000 });
    await r.refreshAll();
    expect(r.keysFresh(authority, now)).toBe(true);
    now += 1001;
    expect(r.keysFresh(authority, now)).toBe(false);
    expect(r.ready()).toBe(false);
    expect(r.keysFresh('https://elsewhere.example/', now)).toBe(false);
  });

  it('tells which kids a refresh no longer publishes', async () => {
    const removed: Array<[string, readonly string[]]> = [];
    const r = registry({ onKeysRemoved: (issuer, kids) => void removed.push([issuer, kids]) });
    await r.refreshAll();
    const kept = signing;
    signing = [kept[0]!];
    try {
      await r.refreshAll();
    } finally {
      signing = kept;
    }
    expect(removed).toEqual([[authority, ['b']]]);
  });

  it('refuses an algorithm the issuer does not advertise before any key work', async () => {
    const r = registry();
    await r.refreshAll();
    requests.length = 0;
    expect(await r.keyFor(authority, 'HS256', 'h')).toMatchObject({ ok: false, reason: 'algorithm_not_allowed' });
    expect(await r.keyFor(authority, 'RS256', 'a')).toMatchObject({ ok: true, kid: 'a' });
    expect(requests).toEqual([]);
  });
});
