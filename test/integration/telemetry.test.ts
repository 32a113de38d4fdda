/**
 * Telemetry through a running standalone host: GET /api/metrics in the Prometheus format counts
 * decisions by reason with label values from closed sets only (garbage issuers and modes create no
 * series), a W3C traceparent is continued (log line, span, echoed header), and no exported span
 * carries the token.
 */
import { InMemorySpanExporter, SimpleSpanProcessor, BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedHost } from '../../src/host/main.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { localMeter, PrometheusMetrics } from '../../src/telemetry/prometheus.js';
import { PdpService } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { createPdpServer, listen } from '../../src/host/server.js';
import { KeyRing } from '../../src/http/keys.js';
import { METRICS } from '../../src/telemetry/metrics.js';
import { startPdpHost } from '../../testkit/host.js';

const AUDIENCE = 'https://fhir.example.test';
const ADMIN = 'telemetry-admin-key-0123456789';
const STRANGER = '0b7c6d5e-4f3a-4b2c-9d1e-8f7a6b5c4d3e';
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

function series(text: string): string[] {
  return text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
}

function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of series(text)) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (want.every((w) => line.includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('metrics and traces of the standalone host', () => {
  let idp: DevIdentityProvider;
  let host: StartedHost;
  let token: string;

  const config = () => ({ authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }] });
  const decide = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
    fetch(`${host.url}/api/decide`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-functions-key': ADMIN, ...headers }, body: JSON.stringify(body) });
  const metricsText = async () => {
    const res = await fetch(`${host.url}/api/metrics`, { headers: { 'x-functions-key': ADMIN } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    return res.text();
  };

  beforeAll(async () => {
    idp = await DevIdentityProvider.start();
    host = await startPdpHost({ config: config(), settings: { PDP_ADMIN_KEYS: ADMIN } });
    await host.service.refresh();
    token = await idp.mint({ audience: AUDIENCE });
  });

  afterAll(async () => {
    await host?.close();
    await idp?.close();
  });

  it('needs the admin key when the host has keys', async () => {
    expect((await fetch(`${host.url}/api/metrics`)).status).toBe(401);
    expect((await fetch(`${host.url}/api/metrics`, { headers: { 'x-functions-key': 'wrong' } })).status).toBe(401);
  });

  it('counts decisions by reason, mode and configured authority, and records their duration', async () => {
    const before = await metricsText();
    const allowedBefore = sample(before, 'fhir_pdp_decisions_total', { reason: 'allowed', mode: 'json', issuer: idp.authority }) ?? 0;
    expect((await (await decide({ method: 'GET', path: '/Patient/1', token })).json()).reason).toBe('allowed');
    expect((await (await decide({ method: 'GET', path: '/Patient/1' })).json()).reason).toBe('missing_token');
    const stranger = await idp.mint({ audience: AUDIENCE, oid: STRANGER });
    expect((await (await decide({ method: 'GET', path: '/Patient/1', token: stranger })).json()).status).toBe(403);
    const after = await metricsText();
    expect(sample(after, 'fhir_pdp_decisions_total', { reason: 'allowed', mode: 'json', issuer: idp.authority })).toBe(allowedBefore + 1);
    expect(sample(after, 'fhir_pdp_decisions_total', { reason: 'missing_token', mode: 'json', issuer: 'none' })).toBeGreaterThanOrEqual(1);
    expect(sample(after, 'fhir_pdp_decisions_total', { decision: 'deny', mode: 'json', issuer: idp.authority })).toBeGreaterThanOrEqual(1);
    expect(sample(after, 'fhir_pdp_decision_duration_seconds_count', {})).toBeGreaterThanOrEqual(3);
    expect(after).not.toMatch(/fhir_pdp_decision_duration_seconds_count\{[^}]*decision=/);
    expect(sample(after, 'fhir_pdp_key_fetches_total', { authority: idp.authority, document: 'jwks', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(sample(after, 'fhir_pdp_token_cache_lookups_total', { result: 'hit' })).toBeDefined();
    expect(sample(after, 'fhir_pdp_ready', {})).toBe(1);
    expect(sample(after, 'fhir_pdp_snapshot_age_seconds', {})).toBeGreaterThanOrEqual(0);
    expect(after).not.toContain(token);
    // Every family exported is a declared (and documented) one.
    const families = new Set(series(after).map((l) => /^[a-z_]+/.exec(l)![0].replace(/_(bucket|count|sum)$/, '')));
    expect([...families].filter((f) => !(f in METRICS))).toEqual([]);
    expect(families.size).toBeGreaterThanOrEqual(12);
  });

  it('creates no time series for anything a caller sends (issuers, modes, paths, headers)', async () => {
    const garbageRound = async (i: number) => {
      const garbage = await idp.mint({ audience: AUDIENCE, extraClaims: { iss: `https://evil-${i}.example/` } });
      await decide({ method: 'GET', path: `/Patient/${i}?mode=x${i}`, token: garbage }, { 'x-pdp-mode': `mode-${i}`, traceparent: `garbage-${i}` });
      await decide({ method: 'GET', path: `/Patient/${i}`, token: `junk.${i}.x` });
      await fetch(`${host.url}/api/decide`, { headers: { 'x-original-method': 'GET', 'x-original-uri': `/x/${i}`, 'x-functions-key': ADMIN, authorization: `Bearer ${i}` } });
    };
    // One round first: the (legitimate, closed-set) reasons these questions reach now have their series.
    await garbageRound(0);
    const settled = series(await metricsText()).filter((l) => l.startsWith('fhir_pdp_decisions_total')).length;
    for (let i = 1; i <= 20; i++) await garbageRound(i);
    const text = await metricsText();
    expect(series(text).filter((l) => l.startsWith('fhir_pdp_decisions_total')).length).toBe(settled);
    expect(text).not.toContain('evil');
    expect(text).not.toContain('mode-');
  });

  it('continues a traceparent: echoed in the answer and carried by the decision log line', async () => {
    const res = await decide({ method: 'GET', path: '/Patient/1', token }, { traceparent: TRACEPARENT });
    expect(res.headers.get('traceparent')).toBe(TRACEPARENT);
    const forward = await fetch(`${host.url}/api/decide`, {
      headers: { 'x-original-method': 'GET', 'x-original-uri': '/Patient/1', authorization: `Bearer ${token}`, 'x-functions-key': ADMIN, traceparent: TRACEPARENT },
    });
    expect(forward.status).toBe(200);
    expect(forward.headers.get('traceparent')).toBe(TRACEPARENT);
    // Invalid (all-zero trace id) or repeated: ignored, never echoed, never a refusal.
    const zero = await decide({ method: 'GET', path: '/Patient/1', token }, { traceparent: '00-00000000000000000000000000000000-00f067aa0ba902b7-01' });
    expect(zero.headers.get('traceparent')).toBeNull();
    expect((await zero.json()).reason).toBe('allowed');
  });
});

describe('decision spans', () => {
  let idp: DevIdentityProvider;
  let service: PdpService;
  let url: string;
  let close: () => Promise<void>;
  const exporter = new InMemorySpanExporter();
  const lines: string[] = [];

  beforeAll(async () => {
    idp = await DevIdentityProvider.start();
    const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const prometheus = new PrometheusMetrics();
    const { meter } = localMeter([prometheus.reader]);
    service = new PdpService({
      config: parseConfig({ authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID }] }),
      telemetry: { meter, tracerProvider, prometheus },
      logger: (event) => lines.push(JSON.stringify(event)),
    });
    const server = createPdpServer(service, { keys: new KeyRing([], [ADMIN]) });
    url = `http://127.0.0.1:${(await listen(server, 0, '127.0.0.1')).port}`;
    close = async () => {
      service.stop();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    };
    await service.start();
  });

  afterAll(async () => {
    await close?.();
    await idp?.close();
  });

  it('share the trace id of the traceparent and the log line, and never carry the token', async () => {
    const token = await idp.mint({ audience: AUDIENCE });
    const res = await fetch(`${url}/api/decide`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-functions-key': ADMIN, traceparent: TRACEPARENT },
      body: JSON.stringify({ method: 'GET', path: '/Patient/1', headers: { authorization: `Bearer ${token}` } }),
    });
    expect((await res.json()).reason).toBe('allowed');
    const spans = exporter.getFinishedSpans();
    const decide = spans.find((s) => s.name === 'fhir-pdp decide');
    expect(decide).toBeDefined();
    expect(decide!.spanContext().traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(decide!.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');
    expect(decide!.attributes['fhir_pdp.reason']).toBe('allowed');
    expect(spans.some((s) => s.name === 'fhir-pdp fetch jwks')).toBe(true);
    const logged = lines.map((l) => JSON.parse(l) as { traceId?: string }).find((e) => e.traceId);
    expect(logged?.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    // The token, its signature and its payload appear in no span (names, attributes, events).
    const exported = JSON.stringify(spans.map((s) => ({ name: s.name, attributes: s.attributes, events: s.events, status: s.status })));
    for (const part of [token, ...token.split('.')]) expect(exported).not.toContain(part);
  });
});
