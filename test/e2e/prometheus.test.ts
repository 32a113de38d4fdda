/**
 * End to end with a real Prometheus: it scrapes a running standalone host with the scrape snippet
 * of docs/operations.md (only the address, the key and the interval replaced), allow, 401, 403 and
 * 503 decisions are driven through the host, and Prometheus's own query API shows the decision
 * counters by reason and the latency histogram moving.
 *
 * Skipped (with a message) when prometheus is not installed and CI is unset; with CI set, a missing
 * prometheus fails the suite (.ci/run installs it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedHost } from '../../src/host/main.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { findExecutable } from '../../testkit/child.js';
import { fencedSnippet, startPdpHost, substitute } from '../../testkit/host.js';
import { reserveLoopbackPort } from '../../testkit/loopback.js';

const AUDIENCE = 'https://fhir.example.test';
const ADMIN_KEY = 'prometheus-e2e-admin-key-0123456789';
const STRANGER_OID = '0b7c6d5e-4f3a-4b2c-9d1e-8f7a6b5c4d3e';

const PROMETHEUS = findExecutable('prometheus', ['/usr/bin', '/usr/local/bin']);
const REQUIRED = Boolean(process.env.CI);
const SKIP = PROMETHEUS === undefined && !REQUIRED;
if (SKIP) process.stderr.write('test/e2e/prometheus.test.ts: SKIPPED: prometheus is not installed (apt-get install -y prometheus); with CI set this is a failure\n');

/** Polls `probe` until it returns a value, at most `ms`; each try waits on the previous answer. */
async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

describe.skipIf(SKIP)('a real Prometheus scraping the standalone host', () => {
  let idp: DevIdentityProvider;
  let host: StartedHost;
  let prometheus: ChildProcess | undefined;
  let promUrl: string;
  let dir: string;
  const promLog: string[] = [];

  /** The value of an instant query's single (summed) result, or undefined while it has none. */
  async function query(promql: string): Promise<number | undefined> {
    const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as { status: string; data: { result: Array<{ value: [number, string] }> } };
    if (body.status !== 'success' || body.data.result.length === 0) return undefined;
    return Number(body.data.result[0]!.value[1]);
  }

  const atLeast = (promql: string, n: number) => until(`${promql} >= ${n}`, 30_000, async () => {
    const v = await query(promql);
    return v !== undefined && v >= n ? v : undefined;
  });

  beforeAll(async () => {
    if (!PROMETHEUS) throw new Error('prometheus is not installed (apt-get install -y prometheus)');
    idp = await DevIdentityProvider.start();
    host = await startPdpHost({
      config: { authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }], decisionBudgetMs: 2000, fetchTimeoutMs: 1000 },
      settings: { PDP_ADMIN_KEYS: ADMIN_KEY },
    });
    await host.service.refresh();
    dir = mkdtempSync(join(tmpdir(), 'fhir-pdp-prometheus-'));
    let config = fencedSnippet(new URL('../../docs/operations.md', import.meta.url), 'prometheus');
    config = substitute(config, 'PDP_ADMIN_KEY', ADMIN_KEY);
    config = substitute(config, 'PDP_HOST_PORT', new URL(host.url).host);
    config = substitute(config, 'scrape_interval: 15s', 'scrape_interval: 1s');
    writeFileSync(join(dir, 'prometheus.yml'), config);
    const port = await reserveLoopbackPort();
    promUrl = `http://127.0.0.1:${port}`;
    prometheus = spawn(PROMETHEUS, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    prometheus.stdout!.on('data', (c: Buffer) => promLog.push(c.toString()));
    prometheus.stderr!.on('data', (c: Buffer) => promLog.push(c.toString()));
    const exited = new Promise<never>((_, reject) => prometheus!.once('exit', (code) => reject(new Error(`prometheus exited (${code}): ${promLog.join('').slice(-2000)}`))));
    exited.catch(() => undefined);
    await Promise.race([until('Prometheus ready', 60_000, async () => ((await fetch(`${promUrl}/-/ready`)).ok ? true : undefined)), exited]);
    // The target is up: Prometheus scraped /api/metrics with the key from the snippet.
    await Promise.race([atLeast('up{job="fhir-pdp"}', 1), exited]);
  });

  afterAll(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const gone = new Promise((r) => prometheus!.once('exit', r));
      prometheus.kill('SIGTERM');
      await gone;
    }
    await host?.close();
    await idp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('shows allow, 401, 403 and 503 decisions by reason, and the latency histogram', async () => {
    const ask = (body: Record<string, unknown>) =>
      fetch(`${host.url}/api/decide`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-functions-key': ADMIN_KEY }, body: JSON.stringify(body) }).then(
        (r) => r.json() as Promise<{ reason: string; status: number }>,
      );
    const token = await idp.mint({ audience: AUDIENCE });
    const stranger = await idp.mint({ audience: AUDIENCE, oid: STRANGER_OID });
    expect(await ask({ method: 'GET', path: '/Patient/1', token })).toMatchObject({ status: 200, reason: 'allowed' });
    expect(await ask({ method: 'GET', path: '/Patient/1', token })).toMatchObject({ status: 200, reason: 'allowed' });
    expect(await ask({ method: 'GET', path: '/Patient/1' })).toMatchObject({ status: 401, reason: 'missing_token' });
    expect(await ask({ method: 'GET', path: '/Patient/1', token: stranger })).toMatchObject({ status: 403 });
    // A key the PDP has never seen while the authority is down: the refetch fails, so 503.
    idp.rotateKey();
    idp.down();
    const unseenKey = await idp.mint({ audience: AUDIENCE });
    expect(await ask({ method: 'GET', path: '/Patient/1', token: unseenKey })).toMatchObject({ status: 503, reason: 'issuer_unavailable' });
    idp.up();

    const issuer = idp.authority;
    expect(await atLeast(`sum(fhir_pdp_decisions_total{reason="allowed",mode="json",issuer="${issuer}"})`, 2)).toBe(2);
    expect(await atLeast('sum(fhir_pdp_decisions_total{reason="missing_token",issuer="none"})', 1)).toBe(1);
    expect(await atLeast(`sum(fhir_pdp_decisions_total{decision="deny",reason!="missing_token",issuer="${issuer}"})`, 1)).toBe(1);
    expect(await atLeast('sum(fhir_pdp_decisions_total{decision="indeterminate",reason="issuer_unavailable"})', 1)).toBe(1);
    expect(await atLeast('sum(fhir_pdp_decision_duration_seconds_count)', 5)).toBe(5);
    // Buckets are cumulative: every decision here took less than 10 s.
    expect(await atLeast('sum(fhir_pdp_decision_duration_seconds_bucket{le="10"})', 5)).toBe(5);
    expect(await atLeast(`sum(fhir_pdp_unknown_kid_refetches_total{authority="${issuer}",outcome="refetched"})`, 1)).toBeGreaterThanOrEqual(1);
  });
});
