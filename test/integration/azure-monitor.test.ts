/**
 * Azure Monitor wiring: with APPLICATIONINSIGHTS_CONNECTION_STRING set, the host's decision spans
 * and metrics reach the ingestion endpoint the connection string names (here a loopback server
 * standing in for Application Insights' Breeze endpoint, so nothing leaves the machine), continuing
 * the question's traceparent and carrying no token. The exporter speaks https only, so the stand-in
 * has a self-signed certificate, trusted in this test's own worker process only.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedHost } from '../../src/host/main.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { azureMonitorOptions } from '../../src/telemetry/azure-monitor.js';
import { startPdpHost } from '../../testkit/host.js';

const AUDIENCE = 'https://fhir.example.test';
const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';
const TRACEPARENT = `00-${TRACE_ID}-b7ad6b7169203331-01`;
const IKEY = '11111111-2222-4333-8444-555555555555';

function body(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      resolve((req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8'));
    });
    req.on('error', reject);
  });
}

describe('Azure Monitor from APPLICATIONINSIGHTS_CONNECTION_STRING', () => {
  let idp: DevIdentityProvider;
  let host: StartedHost | undefined;
  let ingestion: Server;
  let ingestionUrl: string;
  let dir: string;
  const received: string[] = [];
  let arrived: () => void = () => undefined;

  beforeAll(async () => {
    // No SDK self-telemetry (statsbeat) to Microsoft's endpoints from a test, and no disk retry.
    process.env.APPLICATIONINSIGHTS_STATSBEAT_DISABLED = 'true';
    process.env.APPLICATIONINSIGHTS_SDKSTATS_DISABLED = 'true';
    // Follow the caller's sampled flag (docs/operations.md); the distro's default keeps 5 traces
    // per second, rate-limited from start, which the refresh's fetch spans would use up here.
    process.env.OTEL_TRACES_SAMPLER = 'parentbased_always_on';
    idp = await DevIdentityProvider.start();
    dir = mkdtempSync(join(tmpdir(), 'pdp-azure-monitor-'));
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ]);
    // This file runs in its own worker (vitest forks): the stand-in's certificate is accepted here only.
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
    ingestion = createServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (req, res) => {
      void body(req).then((text) => {
        received.push(text);
        arrived();
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ itemsReceived: text.split('\n').length, itemsAccepted: text.split('\n').length, errors: [] }));
      });
    });
    await new Promise<void>((r) => ingestion.listen(0, '127.0.0.1', () => r()));
    ingestionUrl = `https://127.0.0.1:${(ingestion.address() as { port: number }).port}/`;
  });

  afterAll(async () => {
    await host?.close();
    await idp?.close();
    ingestion?.closeAllConnections();
    await new Promise<void>((r) => ingestion?.close(() => r()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('configures the distro from the setting, with the Prometheus reader beside it and no http instrumentation', () => {
    const options = azureMonitorOptions({ connectionString: `InstrumentationKey=${IKEY}`, metricReaders: [] });
    expect(options.azureMonitorExporterOptions?.connectionString).toBe(`InstrumentationKey=${IKEY}`);
    expect(options.instrumentationOptions?.http?.enabled).toBe(false);
    expect(options.metricReaders).toBeUndefined();
  });

  it('sends the decision span, continuing the traceparent, to the ingestion endpoint; never the token', async () => {
    host = await startPdpHost({
      config: { authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID }] },
      settings: { APPLICATIONINSIGHTS_CONNECTION_STRING: `InstrumentationKey=${IKEY};IngestionEndpoint=${ingestionUrl}` },
    });
    await host.service.refresh();
    expect(process.env.AZURE_MONITOR_DISTRO_VERSION).toBeDefined();
    const token = await idp.mint({ audience: AUDIENCE });
    const res = await fetch(`${host.url}/api/decide`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', traceparent: TRACEPARENT },
      body: JSON.stringify({ method: 'GET', path: '/Patient/1', token }),
    });
    expect((await res.json()).reason).toBe('allowed');
    // Shutting down flushes the span and metric exporters; wait on what arrives, bounded.
    const sent = new Promise<void>((resolve) => {
      arrived = () => {
        if (received.some((t) => t.includes('fhir-pdp decide'))) resolve();
      };
      arrived();
    });
    await host.close();
    host = undefined;
    await Promise.race([sent, new Promise((_, reject) => setTimeout(() => reject(new Error(`no decision span arrived; got ${received.length} posts: ${(received.join("\n").match(/"(name|baseType)":"[^"]*"/g) ?? []).join(" ")}`)), 15_000).unref())]);
    const all = received.join('\n');
    const request = all.split('\n').find((line) => line.includes('fhir-pdp decide'))!;
    expect(request).toContain(TRACE_ID);
    expect(request).toContain(IKEY);
    expect(request).toContain('"ai.cloud.role":"fhir-pdp"');
    // The decision's metrics went the same way.
    expect(all).toContain('fhir_pdp_decision_duration_seconds');
    for (const part of token.split('.')) expect(all).not.toContain(part);
  });
});
