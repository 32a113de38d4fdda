/**
 * Fault tests: the authority down at start-up (issuer_unavailable, 503, recovery without a restart
 * or a manual refresh), JWKS rotation (a new kid is accepted without restart), a flood of random
 * kids (refetches bounded by the cooldown, single-flight), stale keys, oversized key sets.
 * Time moves through the service's injected clock, never by sleeping.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DevIdentityProvider, type OutageMode } from '../../testkit/dev-idp.js';
import { REASONS, type ReasonCode } from '../../src/core/reasons.js';
import { askForwardAuth, readAnswer, startPdpWithDevIdp, type RunningPdp, type StartPdpOptions } from '../../testkit/service.js';

// One IdP for the file (RSA key generation is the slow part); each test gets a new service and
// leaves the IdP up, without overrides.
let idp: DevIdentityProvider;
let running: RunningPdp[] = [];
beforeAll(async () => {
  idp = await DevIdentityProvider.start();
});
afterAll(() => idp?.close());

async function start(config: Parameters<typeof startPdpWithDevIdp>[0] = {}, options: Omit<StartPdpOptions, 'idp'> = {}): Promise<RunningPdp> {
  const p = await startPdpWithDevIdp(config, { ...options, idp });
  running.push(p);
  return p;
}
afterEach(async () => {
  await Promise.all(running.map((p) => p.close()));
  running = [];
  idp.up();
  for (const route of ['v1-discovery', 'v2-discovery', 'v1-jwks', 'v2-jwks'] as const) idp.overrideResponse(route);
});

function expectReason(d: { reason: string; status: number }, reason: ReasonCode): void {
  expect({ reason: d.reason, status: d.status }).toEqual({ reason, status: REASONS[reason].status });
}

const discoveryPath = (p: RunningPdp) => `${new URL(p.idp.authority).pathname}/`;
const discoveryRequests = (p: RunningPdp) => p.idp.requestCount(`${new URL(p.idp.authority).pathname}/.well-known`) + p.idp.requestCount(`${new URL(p.idp.authority).pathname}/v2.0/.well-known`);
const jwksRequests = (p: RunningPdp) => p.idp.requestCount(`${new URL(p.idp.authority).pathname}/discovery/`);

async function health(p: RunningPdp): Promise<{ status: number; body: Record<string, unknown> }> {
  return readAnswer(await fetch(`${p.url}/api/health`));
}

describe('the authority is down at start-up', () => {
  it.each<[OutageMode, number]>([
    ['unavailable', 2000],
    ['reset', 2000],
    ['hang', 150],
  ])('%s: decisions are issuer_unavailable (503), bounded retries, recovery by itself', async (mode, fetchTimeoutMs) => {
    const p = await start({ metadataRetrySeconds: 10, fetchTimeoutMs }, { beforeStart: (idp) => idp.down(mode) });
    const token = await p.mint();

    expectReason(await p.decide(token), 'issuer_unavailable');
    const fa = await askForwardAuth(p.url, { token });
    expect(fa.status).toBe(503);
    expect(fa.headers.get('x-decision-reason')).toBe('issuer_unavailable');
    expect(fa.headers.get('www-authenticate')).toBeNull();
    const json = await p.ask({ token });
    expect(json.status).toBe(200);
    expect(json.body).toMatchObject({ decision: 'indeterminate', status: 503, reason: 'issuer_unavailable' });
    const h = await health(p);
    expect(h.status).toBe(503);
    expect(h.body).toMatchObject({ ready: false });

    // Within metadataRetrySeconds, no decision reaches the authority again, however many arrive.
    const before = p.idp.requestCount(discoveryPath(p));
    await Promise.all(Array.from({ length: 20 }, () => p.decide(token)));
    expect(p.idp.requestCount(discoveryPath(p))).toBe(before);

    // It comes back: still refused until the retry interval has passed, then allowed with no
    // restart and no call to refresh().
    p.idp.up();
    expectReason(await p.decide(token), 'issuer_unavailable');
    p.clock.advance(11);
    expectReason(await p.decide(token), 'allowed');
  });

  // Contract: health answers "503 when a decision could not be made now", so once decisions are
  // allowed again it answers 200, snapshot or not (a readiness probe must not keep the instance out).
  it('health answers 200 once decisions are allowed again', async () => {
    const p = await start({ metadataRetrySeconds: 10 }, { beforeStart: (i) => i.down('unavailable') });
    expect((await health(p)).status).toBe(503);
    p.idp.up();
    p.clock.advance(11);
    expectReason(await p.decide(await p.mint()), 'allowed');
    expect((await health(p)).status).toBe(200);
  });

  it('concurrent decisions share one load (single-flight)', async () => {
    const p = await start({ metadataRetrySeconds: 10 }, { beforeStart: (idp) => idp.down('unavailable') });
    p.idp.up();
    p.clock.advance(11);
    const before = discoveryRequests(p);
    const token = await p.mint();
    const ds = await Promise.all(Array.from({ length: 25 }, () => p.decide(token)));
    for (const d of ds) expectReason(d, 'allowed');
    // One v1 and one v2 discovery document.
    expect(discoveryRequests(p) - before).toBe(2);
  });
});

describe('the authority goes down after start-up', () => {
  it('cached keys keep deciding; health reports the error; refresh keeps the previous keys', async () => {
    const p = await start({ maxStaleSeconds: 3600 });
    p.idp.down('unavailable');
    const report = await p.service.refresh();
    expect(report.outcome).not.toBe('ok');
    expectReason(await p.decide(await p.mint()), 'allowed');
    expectReason(await p.decide(await p.mint({ version: 1 })), 'allowed');
    const h = await health(p);
    expect(h.status).toBe(200);
    expect(h.body.status).toBe('degraded');
  });

  it('keys older than maxStaleSeconds that cannot be refetched: issuer_unavailable, then recovery', async () => {
    const p = await start({ maxStaleSeconds: 60, metadataRetrySeconds: 5 });
    p.idp.down('unavailable');
    p.clock.advance(61);
    const token = await p.mint();
    const d = await p.decide(token);
    expectReason(d, 'issuer_unavailable');
    expect((await health(p)).status).toBe(503);
    p.idp.up();
    p.clock.advance(6);
    expectReason(await p.decide(token), 'allowed');
  });
});

describe('JWKS rotation', () => {
  it('a new kid is accepted without restart; a second rotation waits for the cooldown; a removed key stops verifying at refresh', async () => {
    const p = await start({ jwksRefetchCooldownSeconds: 30 });
    const oldKid = p.idp.signingKid;
    const oldToken = await p.mint();
    expectReason(await p.decide(oldToken), 'allowed');

    const before = jwksRequests(p);
    const newKid = p.idp.rotateKey();
    expect(newKid).not.toBe(oldKid);
    expectReason(await p.decide(await p.mint({ kid: newKid })), 'allowed');
    expect(jwksRequests(p) - before).toBe(1);
    // The old key is still published: its tokens keep working.
    expectReason(await p.decide(await p.mint({ kid: oldKid })), 'allowed');

    const newerKid = p.idp.rotateKey();
    const newer = await p.mint({ kid: newerKid });
    const d = await p.decide(newer);
    expectReason(d, 'unknown_key');
    expect(d.hint).toContain('rate-limited');
    p.clock.advance(31);
    expectReason(await p.decide(newer), 'allowed');

    // The issuer stops publishing the old key: after the next refresh even the token that was
    // verified (and cached) with it is refused.
    p.idp.removeKey(oldKid);
    await p.service.refresh();
    expectReason(await p.decide(oldToken), 'unknown_key');
  });
});

describe('a flood of random kids', () => {
  it('costs at most one JWKS refetch per cooldown, shared by concurrent requests', async () => {
    const p = await start({ jwksRefetchCooldownSeconds: 30 });
    const valid = await p.mint();
    const flood = async (n: number, concurrent: boolean) => {
      const tokens = await Promise.all(Array.from({ length: n }, () => p.mint({ header: { kid: randomBytes(12).toString('base64url') } })));
      const ds = concurrent ? await Promise.all(tokens.map((t) => p.decide(t))) : [];
      if (!concurrent) for (const t of tokens) ds.push(await p.decide(t));
      for (const d of ds) expectReason(d, 'unknown_key');
    };

    const before = jwksRequests(p);
    await flood(100, true);
    expect(jwksRequests(p) - before).toBe(1);
    await flood(50, false);
    expect(jwksRequests(p) - before).toBe(1);
    expectReason(await p.decide(valid), 'allowed');

    p.clock.advance(31);
    await flood(50, true);
    await flood(50, false);
    expect(jwksRequests(p) - before).toBe(2);
    expectReason(await p.decide(valid), 'allowed');
  });

  it('v1 and v2 tokens with random kids still cost one refetch per issuer per cooldown', async () => {
    const p = await start({ jwksRefetchCooldownSeconds: 30 });
    const before = jwksRequests(p);
    for (const version of [1, 2, 1, 2] as const)
      expectReason(await p.decide(await p.mint({ version, header: { kid: randomBytes(8).toString('hex') } })), 'unknown_key');
    expect(jwksRequests(p) - before).toBe(2);
  });
});

describe('unusable key sets', () => {
  const tooLarge = { keys: [], padding: 'x'.repeat(300 * 1024) };

  it('both JWKS larger than 256 KiB: issuer_unavailable, nothing half-loaded', async () => {
    const p = await start({}, {
      beforeStart: (idp) => {
        idp.overrideResponse('v1-jwks', { body: tooLarge });
        idp.overrideResponse('v2-jwks', { body: tooLarge });
      },
    });
    expectReason(await p.decide(await p.mint()), 'issuer_unavailable');
    expect((await health(p)).status).toBe(503);
  });

  it.each<[string, unknown]>([
    ['not JSON', '{"keys": ['],
    ['keys not an array', { keys: { kid: 'x' } }],
    ['a JSON array', [1, 2, 3]],
  ])('a JWKS that is %s: issuer_unavailable', async (_what, body) => {
    const p = await start({}, {
      beforeStart: (idp) => {
        idp.overrideResponse('v1-jwks', { body });
        idp.overrideResponse('v2-jwks', { body });
      },
    });
    expectReason(await p.decide(await p.mint()), 'issuer_unavailable');
  });

  it('a discovery document whose jwks_uri is plain http to a non-loopback host: never fetched, issuer_unavailable', async () => {
    const p = await start({}, {
      beforeStart: (idp) => {
        idp.overrideResponse('v1-discovery', { body: { ...idp.discovery(1), jwks_uri: 'http://keys.example.test/keys' } });
        idp.overrideResponse('v2-discovery', { body: { ...idp.discovery(2), jwks_uri: 'http://keys.example.test/keys' } });
      },
    });
    expectReason(await p.decide(await p.mint()), 'issuer_unavailable');
  });

  // Contract: issuer_unavailable (503) when "keys or metadata for the issuer cannot be had and no
  // usable cached copy exists"; untrusted_issuer (401) when "iss is not the issuer of any configured
  // authority". Here the v2 issuer IS published by the configured authority's v2 discovery document,
  // only its keys cannot be had; issuers.ts fetchAuthority drops the issuer and the token gets a
  // permanent-looking 401 untrusted_issuer (with a misleading hint) instead of a retryable 503.
  it('the v2 JWKS alone cannot be read: v2 tokens are issuer_unavailable, not untrusted_issuer', async () => {
    const p = await start({}, { beforeStart: (idp) => idp.overrideResponse('v2-jwks', { body: tooLarge }) });
    expectReason(await p.decide(await p.mint({ version: 1 })), 'allowed');
    expectReason(await p.decide(await p.mint({ version: 2 })), 'issuer_unavailable');
  });
});
