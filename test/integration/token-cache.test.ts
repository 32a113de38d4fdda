/**
 * The verified-token cache (src/identity/token-cache.ts) on its own, with synthetic verified tokens,
 * and wired into Pdp with a real (development) identity provider: bounded under 100k distinct
 * tokens, keyed by a SHA-256 of the token, expiring at `exp`, evicted with its key, holding
 * only successful verifications, and never standing in for a policy decision.
 */
import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { VerifiedTokenCache, type TokenCacheOptions } from '../../src/identity/token-cache.js';
import type { VerifiedToken } from '../../src/identity/verify.js';
import type { DecisionInput } from '../../src/decision/types.js';
import { PdpService } from '../../src/app.js';

const ISSUER = 'https://login.example.test/tenant/v2.0';
const AUDIENCE = 'https://fhir.example.test';
const EXP = 2_000_000_000;

function syntheticToken(i: number, overrides: { kid?: string; issuer?: string; expiresAt?: number; claimBytes?: number } = {}): VerifiedToken {
  const kid = overrides.kid ?? 'kid-a';
  const expiresAt = overrides.expiresAt ?? EXP;
  const claims = {
    aud: AUDIENCE,
    iss: overrides.issuer ?? ISSUER,
    exp: expiresAt,
    oid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    scp: 'user_impersonation',
    ...(overrides.claimBytes ? { padding: 'x'.repeat(overrides.claimBytes) } : {}),
  };
  return {
    jws: { token: `header.payload-${i}.signature`, header: { alg: 'RS256', kid, typ: 'JWT' }, payload: claims, alg: 'RS256', kid },
    issuer: overrides.issuer ?? ISSUER,
    authority: 'https://login.example.test/tenant',
    claims,
    audiences: [AUDIENCE],
    expiresAt,
    kid,
  };
}

function cacheWith(options: Partial<TokenCacheOptions> = {}): VerifiedTokenCache {
  return new VerifiedTokenCache({ maxEntries: 1000, maxBytes: 1024 * 1024, clockSkewSeconds: 0, ...options });
}

const NOW = (EXP - 3600) * 1000;

describe('VerifiedTokenCache', () => {
  it.each([
    { name: 'the entry count', maxEntries: 2_000, maxBytes: 64 * 1024 * 1024 },
    { name: 'the byte budget', maxEntries: 1_000_000, maxBytes: 1024 * 1024 },
  ])('stays within $name under 100k distinct tokens, least recently used out first', ({ maxEntries, maxBytes }) => {
    const cache = cacheWith({ maxEntries, maxBytes });
    const keys: string[] = [];
    let peakEntries = 0;
    let peakBytes = 0;
    for (let i = 0; i < 100_000; i++) {
      const key = cache.keyOf(`token-${i}-${randomUUID()}`);
      keys.push(key);
      cache.set(key, syntheticToken(i, { kid: `kid-${i % 7}` }));
      const { entries, bytes } = cache.stats();
      peakEntries = Math.max(peakEntries, entries);
      peakBytes = Math.max(peakBytes, bytes);
    }
    expect(peakEntries).toBeLessThanOrEqual(maxEntries);
    expect(peakBytes).toBeLessThanOrEqual(maxBytes);
    const { entries } = cache.stats();
    expect(entries).toBeGreaterThan(100);
    expect(entries).toBeLessThan(100_000);
    expect(cache.get(keys.at(-1)!, NOW)).toBeDefined();
    expect(cache.get(keys[0]!, NOW)).toBeUndefined();
    expect(cache.get(keys[keys.length - entries - 1]!, NOW)).toBeUndefined();
    // The per-key index holds exactly the live entries: evicting every key empties the cache.
    const evicted = Array.from({ length: 7 }, (_, k) => cache.evictKeys(ISSUER, [`kid-${k}`])).reduce((a, b) => a + b, 0);
    expect(evicted).toBe(entries);
    // Every one of the 100k left before it expired: pushed out by the bounds or evicted by key.
    expect(cache.stats()).toEqual({ entries: 0, bytes: 0, evictions: 100_000 });
  });

  it('keys entries by SHA-256 of the token, never the token itself', () => {
    const token = `eyJhbGciOiJSUzI1NiJ9.${randomUUID()}.sig`;
    const cache = cacheWith();
    const a = cache.keyOf(token);
    expect(a).toBe(createHash('sha256').update(token).digest('base64url'));
    expect(cache.keyOf(`${token}x`)).not.toBe(a);
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(a).not.toContain(token.split('.')[1]);
  });

  it('gives a hit entry a second chance: it outlives an older entry that was never asked for again, once', () => {
    const cache = cacheWith({ maxEntries: 3 });
    const [a, b, c, d, e] = ['a', 'b', 'c', 'd', 'e'].map((t) => cache.keyOf(t)) as [string, string, string, string, string];
    cache.set(a, syntheticToken(1));
    cache.set(b, syntheticToken(2));
    cache.set(c, syntheticToken(3));
    expect(cache.get(a, NOW)).toBeDefined(); // marked: a survives the next insert, b does not
    cache.set(d, syntheticToken(4));
    expect([a, b, c, d].map((k) => cache.get(k, NOW) !== undefined)).toEqual([true, false, true, true]);
    // Every live entry was just asked for: the next insert clears the marks in age order, passes
    // over itself, and evicts the oldest of the cleared entries (c), never the entry it inserts.
    cache.set(e, syntheticToken(5));
    expect(cache.stats().entries).toBe(3);
    expect([a, c, d, e].map((k) => cache.get(k, NOW) !== undefined)).toEqual([true, false, true, true]);
  });

  it('does not keep the token text in an entry', () => {
    const cache = cacheWith();
    const key = cache.keyOf('some.token.text');
    cache.set(key, syntheticToken(1));
    expect(cache.get(key, NOW)?.jws.token).toBe('');
  });

  it('serves an entry until exp plus the clock skew, and drops it then', () => {
    const cache = cacheWith({ clockSkewSeconds: 60 });
    const key = cache.keyOf('expiring.token.text');
    cache.set(key, syntheticToken(1, { expiresAt: EXP }));
    expect(cache.get(key, (EXP + 59) * 1000)).toBeDefined();
    expect(cache.get(key, (EXP + 60) * 1000)).toBeUndefined();
    expect(cache.stats().entries).toBe(0);
  });

  it('touches an entry on a hit, so the least recently used is evicted', () => {
    const cache = cacheWith({ maxEntries: 3 });
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((t) => cache.keyOf(t)) as [string, string, string, string];
    cache.set(a, syntheticToken(1));
    cache.set(b, syntheticToken(2));
    cache.set(c, syntheticToken(3));
    expect(cache.get(a, NOW)).toBeDefined();
    cache.set(d, syntheticToken(4));
    expect(cache.get(b, NOW)).toBeUndefined();
    expect(cache.get(a, NOW)).toBeDefined();
    expect(cache.get(c, NOW)).toBeDefined();
    expect(cache.get(d, NOW)).toBeDefined();
  });

  it('refuses an entry that would take more than a sixteenth of the byte budget', () => {
    const cache = cacheWith({ maxBytes: 64 * 1024 });
    cache.set(cache.keyOf('small'), syntheticToken(1));
    cache.set(cache.keyOf('large'), syntheticToken(2, { claimBytes: 8 * 1024 }));
    expect(cache.get(cache.keyOf('small'), NOW)).toBeDefined();
    expect(cache.get(cache.keyOf('large'), NOW)).toBeUndefined();
    expect(cache.stats().entries).toBe(1);
  });

  it('evicts the entries of a removed key only, for that issuer only', () => {
    const cache = cacheWith();
    const entries = [
      { key: cache.keyOf('1'), token: syntheticToken(1, { kid: 'old' }) },
      { key: cache.keyOf('2'), token: syntheticToken(2, { kid: 'old' }) },
      { key: cache.keyOf('3'), token: syntheticToken(3, { kid: 'new' }) },
      { key: cache.keyOf('4'), token: syntheticToken(4, { kid: 'old', issuer: 'https://other.example.test' }) },
    ];
    for (const e of entries) cache.set(e.key, e.token);
    expect(cache.evictKeys(ISSUER, ['old'])).toBe(2);
    expect(entries.map((e) => cache.get(e.key, NOW) !== undefined)).toEqual([false, false, true, true]);
  });
});

describe('the token cache in Pdp', () => {
  let idp: DevIdentityProvider;
  let service: PdpService;
  let now = Date.now();

  const request = (method: string, target: string, token: string): DecisionInput => ({
    method,
    target,
    credentials: { authorization: [`Bearer ${token}`] },
    mode: 'forward-auth',
  });
  const mint = (options: Partial<Parameters<DevIdentityProvider['mint']>[0]> = {}) =>
    idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', now: new Date(now), ...options });

  beforeAll(async () => {
    idp = await DevIdentityProvider.start();
    const config = parseConfig({
      authority: idp.authority,
      audience: AUDIENCE,
      accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }],
      clockSkewSeconds: 60,
    });
    service = new PdpService({ config, clock: () => now });
    await service.start();
  });

  afterAll(async () => {
    service?.stop();
    await idp?.close();
  });

  it('decides policy afresh for a cached token on another path and with another method', async () => {
    const token = await mint();
    const hitsBefore = service.pdp.counters.get('token_cache_hit');
    const first = await service.pdp.decide(request('GET', '/Patient/1', token));
    const otherPath = await service.pdp.decide(request('GET', '/Observation?patient=Patient/1', token));
    const otherMethod = await service.pdp.decide(request('DELETE', '/Patient/1', token));
    expect([first, otherPath, otherMethod].map((d) => ({ reason: d.reason, status: d.status, cacheHit: d.cacheHit }))).toEqual([
      { reason: 'allowed', status: 200, cacheHit: false },
      { reason: 'allowed', status: 200, cacheHit: true },
      { reason: 'action_not_permitted', status: 403, cacheHit: true },
    ]);
    expect(service.pdp.counters.get('token_cache_hit') - hitsBefore).toBe(2);
  });

  it('fails closed when the cached path throws: a 503 decision, never a rejected promise', async () => {
    const token = await mint();
    const first = await service.pdp.decide(request('GET', '/Patient/1', token));
    expect(first.reason).toBe('allowed');
    // The cached path runs without a promise of its own; a throw there must still become a decision.
    const keysFresh = service.pdp.registry.keysFresh;
    service.pdp.registry.keysFresh = () => {
      throw new Error('boom');
    };
    try {
      const d = await service.pdp.decide(request('GET', '/Patient/1', token));
      expect({ decision: d.decision, reason: d.reason, status: d.status }).toEqual({ decision: 'indeterminate', reason: 'issuer_unavailable', status: 503 });
      expect(d.hint).toContain('Error: boom');
    } finally {
      service.pdp.registry.keysFresh = keysFresh;
    }
    const again = await service.pdp.decide(request('GET', '/Patient/1', token));
    expect({ reason: again.reason, cacheHit: again.cacheHit }).toEqual({ reason: 'allowed', cacheHit: true });
  });

  it('answers a cached decision the same as the verified one, but for cacheHit', async () => {
    const token = await mint();
    const verified = await service.pdp.decide(request('GET', '/Patient/1', token));
    const cached = await service.pdp.decide(request('GET', '/Patient/1', token));
    const comparable = (d: typeof verified) => ({ ...d, decisionId: undefined, durationMs: undefined, cacheHit: undefined });
    expect(cached.cacheHit).toBe(true);
    expect(comparable(cached)).toEqual(comparable(verified));
  });

  it('walks every check for explain, cached or not', async () => {
    const token = await mint();
    await service.pdp.decide(request('GET', '/Patient/1', token));
    const explained = await service.pdp.decide(request('GET', '/Patient/1', token), { trace: true });
    expect(explained.cacheHit).toBe(false);
    expect(explained.trace?.find((s) => s.id === 'signature')?.outcome).toBe('pass');
  });

  it('refuses a cached token once it has expired', async () => {
    const started = now;
    try {
      const token = await mint({ expiresInSeconds: 120 });
      expect((await service.pdp.decide(request('GET', '/Patient/1', token))).reason).toBe('allowed');
      now = started + (120 + 59) * 1000;
      const withinSkew = await service.pdp.decide(request('GET', '/Patient/1', token));
      expect({ reason: withinSkew.reason, cacheHit: withinSkew.cacheHit }).toEqual({ reason: 'allowed', cacheHit: true });
      now = started + (120 + 61) * 1000;
      const expired = await service.pdp.decide(request('GET', '/Patient/1', token));
      expect({ reason: expired.reason, status: expired.status, cacheHit: expired.cacheHit }).toEqual({ reason: 'token_expired', status: 401, cacheHit: false });
      const again = await service.pdp.decide(request('GET', '/Patient/1', token));
      expect(again.reason).toBe('token_expired');
    } finally {
      now = started;
    }
  });

  it.each([
    { name: 'another audience', token: () => mint({ audience: 'https://other.example.test' }), reason: 'audience_mismatch' },
    { name: 'a forged signature', token: async () => `${(await mint()).slice(0, -8)}AAAAAAAA`, reason: 'invalid_signature' },
    { name: 'an expired token', token: () => mint({ expiresInSeconds: -3600 }), reason: 'token_expired' },
  ])('never caches a failed verification ($name)', async ({ token, reason }) => {
    const t = await token();
    const entriesBefore = service.pdp.tokenCacheStats()!.entries;
    for (let i = 0; i < 2; i++) {
      const d = await service.pdp.decide(request('GET', '/Patient/1', t));
      expect({ reason: d.reason, cacheHit: d.cacheHit }).toEqual({ reason, cacheHit: false });
    }
    expect(service.pdp.tokenCacheStats()!.entries).toBe(entriesBefore);
  });

  it('evicts the entries of a key the issuer stopped publishing, at the next refresh', async () => {
    const oldKid = idp.signingKid;
    const token = await mint({ kid: oldKid });
    await service.pdp.decide(request('GET', '/Patient/1', token));
    expect((await service.pdp.decide(request('GET', '/Patient/1', token))).cacheHit).toBe(true);
    const cachedBefore = service.pdp.tokenCacheStats()!.entries;
    expect(cachedBefore).toBeGreaterThan(0);

    idp.rotateKey();
    idp.removeKey(oldKid);
    await service.refresh();
    // Every token cached so far was signed with the removed key.
    expect(service.pdp.tokenCacheStats()).toMatchObject({ entries: 0, bytes: 0 });

    const after = await service.pdp.decide(request('GET', '/Patient/1', token));
    expect({ reason: after.reason, status: after.status, cacheHit: after.cacheHit }).toEqual({ reason: 'unknown_key', status: 401, cacheHit: false });
    const fresh = await service.pdp.decide(request('GET', '/Patient/1', await mint()));
    expect(fresh.reason).toBe('allowed');
  });
});
