/**
 * End to end with a real nginx: client → nginx (auth_request) → fhir-pdp standalone host → allow →
 * a FHIR server (@medplum/fhir-router in memory). nginx runs the `nginx` snippet of
 * docs/gateways.md, with only its addresses and key replaced, so the documented configuration is
 * the one proven here. Every case is checked at the client and at the FHIR server.
 *
 * Skipped (with a message) when nginx is not installed and CI is unset; with CI set, a missing
 * nginx fails the suite (.ci/run installs it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import smart from 'fhirclient';
import type * as FhirClientClass from 'fhirclient/lib/FhirClient.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import type { StartedHost } from '../../src/host/main.js';
import { DEV_APP_ID, DEV_OBJECT_ID, DEV_TENANT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { startFhirUpstream, type FhirUpstream } from '../../testkit/fhir-upstream.js';
import { findExecutable } from '../../testkit/child.js';
import { docSnippet, rawRequest, startPdpHost, substitute, type RawResponse } from '../../testkit/host.js';
import { reserveLoopbackPort } from '../../testkit/loopback.js';

const AUDIENCE = 'https://fhir.example.test';
const STRANGER_OID = '0b7c6d5e-4f3a-4b2c-9d1e-8f7a6b5c4d3e';
/** Granted read, write and delete, but not hardDelete or anything else a Bundle entry could need. */
const DELETER_OID = '6e5d4c3b-2a19-4f8e-8d7c-6b5a4f3e2d1c';
/** A second principal granted `export` only, and a third granted `read` only. */
const EXPORTER_OID = '5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a';
const READER_OID = '7e6d5c4b-3a2f-4e1d-9c8b-7a6f5e4d3c2b';
/** Granted read and `smart`: narrowed by the SMART scopes of its token. */
const SMART_OID = '8f7e6d5c-4b3a-4f2e-9d1c-0b9a8f7e6d5c';
/** A patient-scoped SMART user (the FHIR SMART User role's `smart`), patient p1. */
const PATIENT_OID = '8f7e6d5c-4b3a-4f2e-8d1c-9b8a7f6e5d4c';
const SMART_AUTHORIZE = 'https://login.example.test/authorize';
const SMART_TOKEN = 'https://login.example.test/token';
const API_KEY = `nginx-e2e-${randomUUID()}`;
const ADMIN_KEY = `nginx-e2e-admin-${randomUUID()}`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** fhirclient's standalone FHIR client; its Node entry exports it as `smart.FhirClient`, its types do not. */
const FhirClient = (smart as typeof smart & { FhirClient: typeof FhirClientClass.default }).FhirClient;

const NGINX = findExecutable('nginx', ['/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin']);
const REQUIRED = Boolean(process.env.CI);
const SKIP = NGINX === undefined && !REQUIRED;
if (SKIP) process.stderr.write('test/e2e/nginx.test.ts: SKIPPED: nginx is not installed (apt-get install -y nginx); with CI set this is a failure\n');

function tryConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Polls until nginx accepts connections: bounded, and failing at once if nginx exits. */
async function waitUntilAccepting(port: number, child: ChildProcess, stderr: () => string): Promise<void> {
  let exit: string | undefined;
  child.once('exit', (code, signal) => (exit = `nginx exited (${code ?? signal}) before accepting connections:\n${stderr()}`));
  for (let attempt = 0; attempt < 200; attempt++) {
    if (exit) throw new Error(exit);
    if (await tryConnect(port)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nginx did not accept connections on 127.0.0.1:${port} within 5 s:\n${stderr()}`);
}

interface NginxOptions {
  /** The key the gateway sends fhir-pdp (default: the one fhir-pdp holds). */
  readonly apiKey?: string;
  /**
   * The documented server as nginx's own auth_request examples write it: the URI header only, no
   * X-Original-Method.
   */
  readonly uriOnly?: boolean;
  /** With the `nginx-smart-configuration` location: fhir-pdp serves SMART discovery. */
  readonly smartConfiguration?: boolean;
}

function nginxConfig(dir: string, listenPort: number, pdpAddress: string, fhirAddress: string, { apiKey = API_KEY, uriOnly = false, smartConfiguration = false }: NginxOptions = {}): string {
  let server = docSnippet('nginx');
  if (smartConfiguration) server = substitute(server, '    location / {\n', `${docSnippet('nginx-smart-configuration')}\n    location / {\n`);
  if (uriOnly) server = substitute(server, '        proxy_set_header X-Original-Method  $request_method;\n', '');
  server = substitute(server, 'listen 8000;', `listen 127.0.0.1:${listenPort};`);
  server = substitute(server, 'server 127.0.0.1:7071;', `server ${pdpAddress};`);
  server = substitute(server, 'server 127.0.0.1:8080;', `server ${fhirAddress};`);
  server = substitute(server, '__PDP_API_KEY__', apiKey);
  return [
    'worker_processes 1;',
    'events { worker_connections 256; }',
    'http {',
    '    access_log off;',
    `    client_body_temp_path ${dir}/client_body;`,
    `    proxy_temp_path ${dir}/proxy;`,
    `    fastcgi_temp_path ${dir}/fastcgi;`,
    `    uwsgi_temp_path ${dir}/uwsgi;`,
    `    scgi_temp_path ${dir}/scgi;`,
    server,
    '}',
    '',
  ].join('\n');
}

interface RunningNginx {
  readonly origin: string;
  stderr(): string;
  stop(): Promise<void>;
}

/** nginx with the documented snippet in its own prefix directory, accepting connections. */
async function startNginx(pdpAddress: string, fhirAddress: string, options: NginxOptions = {}): Promise<RunningNginx> {
  if (NGINX === undefined) throw new Error('CI is set but nginx is not installed: .ci/run installs it with apt-get install -y nginx');
  const dir = mkdtempSync(join(tmpdir(), 'fhir-pdp-nginx-'));
  // Workers drop root privileges; they must reach their temp paths inside this directory.
  chmodSync(dir, 0o755);
  const port = await reserveLoopbackPort();
  const confPath = join(dir, 'nginx.conf');
  writeFileSync(confPath, nginxConfig(dir, port, pdpAddress, fhirAddress, options));
  const child = spawn(NGINX, ['-p', `${dir}/`, '-c', confPath, '-e', 'stderr', '-g', `daemon off; pid ${dir}/nginx.pid; error_log stderr;`], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    if (stderr.length < 64 * 1024) stderr += chunk.toString('utf8');
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGQUIT');
      const forced = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(forced);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitUntilAccepting(port, child, () => stderr);
  } catch (err) {
    await stop();
    throw err;
  }
  return { origin: `http://127.0.0.1:${port}`, stderr: () => stderr, stop };
}

describe.skipIf(SKIP)(`nginx auth_request → fhir-pdp → FHIR server${SKIP ? ' (skipped: nginx is not installed)' : ''}`, () => {
  let idp: DevIdentityProvider;
  let fhir: FhirUpstream;
  let pdp: StartedHost;
  let pdpClosed = false;
  let nginx: RunningNginx | undefined;
  /** The server without X-Original-Method. */
  let uriOnly: RunningNginx | undefined;
  /** The server with the location that routes SMART discovery to fhir-pdp. */
  let smartNginx: RunningNginx | undefined;
  let origin: string;
  /** What the fhir-pdp host wrote to its operational log (not the decision log). */
  const pdpLog: string[] = [];

  const send = (path: string, init: { method?: string; headers?: Record<string, string | string[]>; body?: string } = {}): Promise<RawResponse> =>
    rawRequest(origin, { path, ...init });
  const bearer = async (options: Partial<Parameters<DevIdentityProvider['mint']>[0]> = {}) =>
    `Bearer ${await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', ...options })}`;

  /** Runs a request and returns what the FHIR server received because of it. */
  async function throughGateway(path: string, init: Parameters<typeof send>[1] = {}) {
    const before = fhir.requests.length;
    const res = await send(path, init);
    return { res, upstream: fhir.requests.slice(before) };
  }

  beforeAll(async () => {
    if (NGINX === undefined) throw new Error('CI is set but nginx is not installed: .ci/run installs it with apt-get install -y nginx');
    idp = await DevIdentityProvider.start();
    fhir = await startFhirUpstream({
      seed: [
        { resourceType: 'Patient', id: 'p1', name: [{ family: 'Doe', given: ['Jane'] }] },
        { resourceType: 'Observation', id: 'obs-p1', status: 'final', code: { text: 'glucose' }, subject: { reference: 'Patient/p1' } },
        { resourceType: 'Observation', id: 'obs-p2', status: 'final', code: { text: 'glucose' }, subject: { reference: 'Patient/p2' } },
      ],
      smart: { authorizationEndpoint: SMART_AUTHORIZE, tokenEndpoint: SMART_TOKEN },
    });
    pdp = await startPdpHost({
      config: {
        authority: idp.authority,
        audience: AUDIENCE,
        accessPolicies: [
          { objectId: DEV_OBJECT_ID, dataActions: ['read', 'write', 'export'] },
          { objectId: EXPORTER_OID, dataActions: ['export'] },
          { objectId: DELETER_OID, dataActions: ['read', 'write', 'delete'] },
          { objectId: READER_OID, dataActions: ['read'] },
          { objectId: SMART_OID, dataActions: ['read', 'smart'] },
          { objectId: PATIENT_OID, dataActions: ['read', 'smart'] },
        ],
        smartNarrowing: { gateways: ['nginx'] },
        // fhir-pdp asks the FHIR server itself (loopback: no credential) about reads by id under patient/ scopes.
        compartmentLookup: { fhirBaseUrl: fhir.origin, credential: { kind: 'none' } },
        decisionBudgetMs: 750,
        fetchTimeoutMs: 5000,
        // Served only through smartNginx; the main snippet leaves discovery to the FHIR server.
        smartConfiguration: { capabilities: ['launch-ehr', 'launch-standalone', 'client-public', 'sso-openid-connect', 'permission-v2'] },
      },
      settings: { PDP_API_KEYS: API_KEY, PDP_ADMIN_KEYS: ADMIN_KEY },
      log: (line) => pdpLog.push(line),
    });
    await pdp.service.refresh();

    nginx = await startNginx(new URL(pdp.url).host, fhir.address);
    origin = nginx.origin;
    uriOnly = await startNginx(new URL(pdp.url).host, fhir.address, { uriOnly: true });
    smartNginx = await startNginx(new URL(pdp.url).host, fhir.address, { smartConfiguration: true });
    // The FHIR server hands out URLs (Content-Location, export files) at the gateway's address.
    fhir.setBaseUrl(origin);
  });

  afterAll(async () => {
    await nginx?.stop();
    await uriOnly?.stop();
    await smartNginx?.stop();
    if (pdp && !pdpClosed) await pdp.close();
    await fhir?.close();
    await idp?.close();
  });

  it('allows a read and the FHIR server sees fhir-pdp identity headers', async () => {
    const { res, upstream } = await throughGateway('/Patient/p1', { headers: { authorization: await bearer() } });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ resourceType: 'Patient', id: 'p1' });
    expect(upstream).toHaveLength(1);
    const seen = upstream[0]!;
    expect(seen).toMatchObject({ method: 'GET', url: '/Patient/p1' });
    expect(seen.headers['x-auth-principal']).toEqual([DEV_OBJECT_ID]);
    expect(seen.headers['x-auth-tenant']).toEqual([DEV_TENANT_ID]);
    expect(seen.headers['x-auth-application']).toEqual([DEV_APP_ID]);
    expect(seen.headers['x-auth-scopes']).toEqual(['user_impersonation']);
    expect(seen.headers['x-decision-id']?.[0]).toMatch(UUID);
    // Nothing fhir-pdp did not set for this caller.
    expect(seen.headers['x-auth-fhir-user']).toBeUndefined();
    expect(seen.headers['x-auth-compartment']).toBeUndefined();
  });

  it("lets a patient-scoped client read its own Observation by id, after fhir-pdp asked the FHIR server, and refuses another patient's", async () => {
    const authorization = await bearer({ oid: PATIENT_OID, scp: 'launch/patient patient/Observation.rs', fhirUser: 'Patient/p1' });
    const own = await throughGateway('/Observation/obs-p1', { headers: { authorization } });
    expect(own.res.status).toBe(200);
    expect(JSON.parse(own.res.body)).toMatchObject({ resourceType: 'Observation', id: 'obs-p1' });
    // First fhir-pdp's lookup (no X-Auth-*: it is fhir-pdp asking), then the client's read through nginx.
    expect(own.upstream.map((r) => r.url)).toEqual(['/Observation?_id=obs-p1&patient=Patient/p1&_summary=count', '/Observation/obs-p1']);
    expect(own.upstream[0]!.headers['x-auth-principal']).toBeUndefined();
    expect(own.upstream[1]!.headers['x-auth-principal']).toEqual([PATIENT_OID]);
    // Proven, so nothing is delegated to the FHIR server.
    expect(own.upstream[1]!.headers['x-auth-compartment']).toBeUndefined();

    const other = await throughGateway('/Observation/obs-p2', { headers: { authorization } });
    expect(other.res.status).toBe(403);
    expect(other.res.headers['x-decision-reason']).toBe('insufficient_scope');
    // Only the lookup reached the FHIR server; the read never did.
    expect(other.upstream.map((r) => r.url)).toEqual(['/Observation?_id=obs-p2&patient=Patient/p1&_summary=count']);

    // Answered again from the cache: the read goes straight through.
    const again = await throughGateway('/Observation/obs-p1', { headers: { authorization } });
    expect(again.res.status).toBe(200);
    expect(again.upstream.map((r) => r.url)).toEqual(['/Observation/obs-p1']);
  });

  it('lets a large token through to fhir-pdp (an Entra token with 200 groups)', async () => {
    const groups = Array.from({ length: 200 }, () => randomUUID());
    const authorization = await bearer({ groups });
    expect(authorization.length).toBeGreaterThan(10 * 1024);
    const { res, upstream } = await throughGateway('/Patient/p1', { headers: { authorization } });
    expect(res.status).toBe(200);
    expect(upstream).toHaveLength(1);
    expect(upstream[0]!.headers['x-auth-principal']).toEqual([DEV_OBJECT_ID]);
  });

  it('passes the query string and the body through unchanged', async () => {
    const search = await throughGateway('/Patient?family=Doe&_count=5', { headers: { authorization: await bearer() } });
    expect(search.res.status).toBe(200);
    expect(JSON.parse(search.res.body)).toMatchObject({ resourceType: 'Bundle', type: 'searchset', total: 1 });
    expect(search.upstream.map((r) => r.url)).toEqual(['/Patient?family=Doe&_count=5']);

    const observation = JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'heart rate' }, subject: { reference: 'Patient/p1' } });
    const create = await throughGateway('/Observation', {
      method: 'POST',
      headers: { authorization: await bearer(), 'content-type': 'application/fhir+json' },
      body: observation,
    });
    expect(create.res.status).toBe(201);
    expect(create.upstream).toHaveLength(1);
    expect(create.upstream[0]!.body).toBe(observation);
  });

  it('replaces spoofed identity headers with fhir-pdp values and drops those it did not set', async () => {
    const { res, upstream } = await throughGateway('/Patient/p1', {
      headers: {
        authorization: await bearer(),
        'x-auth-principal': ['00000000-0000-0000-0000-000000000bad', 'second-spoof'],
        'X-Auth-Tenant': 'evil-tenant',
        'x-auth-fhir-user': 'Practitioner/evil',
        'x-auth-compartment': 'Patient/someone-else',
        'x-auth-scopes': 'system/*.*',
        'x-decision-id': 'forged',
      },
    });
    expect(res.status).toBe(200);
    expect(upstream).toHaveLength(1);
    const headers = upstream[0]!.headers;
    expect(headers['x-auth-principal']).toEqual([DEV_OBJECT_ID]);
    expect(headers['x-auth-tenant']).toEqual([DEV_TENANT_ID]);
    expect(headers['x-auth-scopes']).toEqual(['user_impersonation']);
    expect(headers['x-auth-fhir-user']).toBeUndefined();
    expect(headers['x-auth-compartment']).toBeUndefined();
    expect(headers['x-decision-id']).toHaveLength(1);
    expect(headers['x-decision-id']![0]).toMatch(UUID);
  });

  it.each([
    {
      name: 'no token',
      auth: async () => undefined,
      reason: 'missing_token',
      challenge: 'Bearer realm="fhir-pdp"',
    },
    {
      name: 'an expired token',
      auth: () => bearer({ expiresInSeconds: -3600 }),
      reason: 'token_expired',
      challenge: /^Bearer realm="fhir-pdp", error="invalid_token", error_description="[^"]+"$/,
    },
    {
      name: 'a token for another audience',
      auth: () => bearer({ audience: 'https://other.example.test' }),
      reason: 'audience_mismatch',
      challenge: /error="invalid_token"/,
    },
  ])('answers 401 with WWW-Authenticate for $name and never calls the FHIR server', async ({ auth, reason, challenge }) => {
    const authorization = await auth();
    const { res, upstream } = await throughGateway('/Patient/p1', {
      headers: { ...(authorization ? { authorization } : {}), 'x-auth-principal': DEV_OBJECT_ID },
    });
    expect(res.status).toBe(401);
    expect(res.headers['x-decision-reason']).toBe(reason);
    expect(res.headers['x-decision-id']).toMatch(UUID);
    if (typeof challenge === 'string') expect(res.headers['www-authenticate']).toBe(challenge);
    else expect(res.headers['www-authenticate']).toMatch(challenge);
    expect(res.headers['content-type']).toBe('application/fhir+json');
    expect(JSON.parse(res.body)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'login', diagnostics: reason }] });
    expect(upstream).toEqual([]);
  });

  it.each([
    { name: 'a caller granted nothing', path: '/Patient/p1', method: 'GET', oid: STRANGER_OID, reason: 'principal_not_allowed' },
    { name: 'an action not granted', path: '/Patient/p1', method: 'DELETE', oid: DEV_OBJECT_ID, reason: 'action_not_permitted' },
  ])('answers 403 with WWW-Authenticate for $name and never calls the FHIR server', async ({ path, method, oid, reason }) => {
    const { res, upstream } = await throughGateway(path, { method, headers: { authorization: await bearer({ oid }) } });
    expect(res.status).toBe(403);
    expect(res.headers['x-decision-reason']).toBe(reason);
    expect(res.headers['x-decision-id']).toMatch(UUID);
    expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="fhir-pdp", error="insufficient_scope", error_description="[^"]+"$/);
    expect(JSON.parse(res.body)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'forbidden', diagnostics: reason }] });
    expect(upstream).toEqual([]);
  });

  it('decides on the request nginx received, not on X-Original-* or X-Forwarded-* a client sends', async () => {
    const { res, upstream } = await throughGateway('/Patient/p1', {
      method: 'DELETE',
      headers: {
        authorization: await bearer(),
        'x-original-method': 'GET',
        'x-original-uri': '/Patient/p1',
        'x-forwarded-method': 'GET',
        'x-forwarded-uri': '/Patient/p1',
      },
    });
    expect(res.status).toBe(403);
    expect(res.headers['x-decision-reason']).toBe('action_not_permitted');
    expect(upstream).toEqual([]);
    expect(await fhir.repository.readResource('Patient', 'p1')).toMatchObject({ id: 'p1' });
  });

  it.each([
    { order: 'valid token first', first: true },
    { order: 'valid token second', first: false },
  ])('refuses a request with two Authorization headers ($order)', async ({ first }) => {
    const valid = await bearer();
    const other = await bearer({ oid: STRANGER_OID });
    const { res, upstream } = await throughGateway('/Patient/p1', { headers: { authorization: first ? [valid, other] : [other, valid] } });
    // nginx 1.22 rejects a repeated Authorization header itself (400); were it to pass both,
    // fhir-pdp would refuse them as malformed_token (401).
    expect([400, 401]).toContain(res.status);
    if (res.status === 401) expect(res.headers['x-decision-reason']).toBe('malformed_token');
    expect(upstream).toEqual([]);
  });

  describe('Bulk Data export through the gateway', () => {
    const pathOf = (url: string): string => {
      const u = new URL(url);
      expect(u.origin).toBe(origin);
      return `${u.pathname}${u.search}`;
    };

    /** Kick-off as the Bulk Data IG asks for it; returns the status URL's path. */
    async function kickOff(authorization: string): Promise<string> {
      const { res, upstream } = await throughGateway('/$export?_type=Patient', {
        headers: { authorization, accept: 'application/fhir+json', prefer: 'respond-async' },
      });
      expect(res.status).toBe(202);
      expect(upstream).toHaveLength(1);
      return pathOf(String(res.headers['content-location']));
    }

    it('starts, polls, fetches and cancels an export, each step decided as `export`', async () => {
      const authorization = await bearer({ oid: EXPORTER_OID });
      const status = await kickOff(authorization);
      expect(status).toMatch(/^\/_operations\/export\/[0-9a-f-]+$/);

      // In progress: 202 with X-Progress, as the IG's status request answers.
      const running = await throughGateway(status, { headers: { authorization } });
      expect(running.res.status).toBe(202);
      expect(running.res.headers['x-progress']).toBe('in progress');
      expect(running.upstream[0]!.headers['x-auth-principal']).toEqual([EXPORTER_OID]);

      const done = await throughGateway(status, { headers: { authorization } });
      expect(done.res.status).toBe(200);
      const manifest = JSON.parse(done.res.body) as { requiresAccessToken: boolean; output: { type: string; url: string; count: number }[]; error: unknown[] };
      expect(manifest).toMatchObject({ requiresAccessToken: true, error: [], output: [{ type: 'Patient', count: 1 }] });

      // requiresAccessToken: the file is fetched with the same token, through the gateway.
      const file = await throughGateway(pathOf(manifest.output[0]!.url), { headers: { authorization, accept: 'application/fhir+ndjson' } });
      expect(file.res.status).toBe(200);
      expect(file.res.headers['content-type']).toBe('application/fhir+ndjson');
      expect(file.res.body.trim().split('\n').map((l) => JSON.parse(l) as { id: string })).toMatchObject([{ resourceType: 'Patient', id: 'p1' }]);
      const noToken = await throughGateway(pathOf(manifest.output[0]!.url));
      expect(noToken.res.status).toBe(401);
      expect(noToken.upstream).toEqual([]);

      const cancelled = await throughGateway(status, { method: 'DELETE', headers: { authorization } });
      expect(cancelled.res.status).toBe(202);
      expect((await throughGateway(status, { headers: { authorization } })).res.status).toBe(404);
    });

    it('refuses status, files and cancel to a caller without `export`, before the FHIR server', async () => {
      const status = await kickOff(await bearer({ oid: EXPORTER_OID }));
      const reader = await bearer({ oid: READER_OID });
      for (const [method, path] of [['GET', status], ['DELETE', status], ['GET', `${status}/Patient-1.ndjson`]] as const) {
        const { res, upstream } = await throughGateway(path, { method, headers: { authorization: reader } });
        expect(res.status).toBe(403);
        expect(res.headers['x-decision-reason']).toBe('action_not_permitted');
        expect(upstream).toEqual([]);
      }
    });

    it("answers another exporter's job 404, the server's convention for a job the caller may not see", async () => {
      const status = await kickOff(await bearer({ oid: EXPORTER_OID }));
      const other = await bearer();
      const { res, upstream } = await throughGateway(status, { headers: { authorization: other } });
      expect(res.status).toBe(404);
      expect(upstream[0]!.headers['x-auth-principal']).toEqual([DEV_OBJECT_ID]);
    });
  });

  describe('anonymous SMART discovery with fhirclient (SMART on FHIR JavaScript client)', () => {
    /** A SMART app (a node:http launch endpoint, as fhirclient's Node adapter expects) launched with `iss`. */
    async function launchThrough(iss: string): Promise<RawResponse> {
      const storage = new Map<string, unknown>();
      const sessionStorage = {
        get: async (key: string) => storage.get(key),
        set: async (key: string, value: unknown) => (storage.set(key, value), value),
        unset: async (key: string) => storage.delete(key),
      };
      const app = createHttpServer((req, res) => {
        smart(req, res, sessionStorage)
          .authorize({ clientId: 'fhir-pdp-e2e', scope: 'launch/patient openid fhirUser patient/*.rs', redirectUri: '/callback' })
          .catch((err: unknown) => {
            res.writeHead(500, { 'content-type': 'text/plain' });
            res.end(String(err));
          });
      });
      await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
      try {
        const { port } = app.address() as AddressInfo;
        return await rawRequest(`http://127.0.0.1:${port}`, { path: `/launch?iss=${encodeURIComponent(iss)}&launch=xyz` });
      } finally {
        await new Promise<void>((resolve) => app.close(() => resolve()));
      }
    }

    it('reads the CapabilityStatement at /metadata without a token', async () => {
      fhir.clearRequests();
      const client = new FhirClient(origin);
      expect(await client.getFhirVersion()).toBe('4.0.1');
      const seen = fhir.requests.filter((r) => r.url.startsWith('/metadata'));
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((r) => r.headers.authorization === undefined && r.headers['x-auth-principal'] === undefined)).toBe(true);
    });

    it('launches: authorize() discovers the endpoints at /.well-known/smart-configuration and redirects there', async () => {
      fhir.clearRequests();
      const launch = await launchThrough(origin);
      expect(launch.body).toBe('');
      expect(launch.status).toBe(302);
      const location = new URL(String(launch.headers.location));
      expect(`${location.origin}${location.pathname}`).toBe(SMART_AUTHORIZE);
      expect(location.searchParams.get('aud')).toBe(origin);
      expect(location.searchParams.get('client_id')).toBe('fhir-pdp-e2e');
      const seen = fhir.requests.filter((r) => r.url === '/.well-known/smart-configuration');
      expect(seen).toHaveLength(1);
      expect(seen[0]!.headers.authorization).toBeUndefined();
    });

    it('with the smart-configuration location, fhir-pdp serves the document and fhirclient launches from it', async () => {
      const smartOrigin = smartNginx!.origin;
      const v2 = (await (await fetch(idp.v2DiscoveryUrl)).json()) as Record<string, string>;
      fhir.clearRequests();
      const doc = await rawRequest(smartOrigin, { path: '/.well-known/smart-configuration', headers: { authorization: 'Bearer not-passed-on' } });
      expect(doc.status).toBe(200);
      const body = JSON.parse(doc.body) as Record<string, unknown>;
      expect(body).toMatchObject({
        authorization_endpoint: v2.authorization_endpoint,
        token_endpoint: v2.token_endpoint,
        issuer: v2.issuer,
        jwks_uri: v2.jwks_uri,
        grant_types_supported: expect.arrayContaining(['authorization_code']),
        code_challenge_methods_supported: expect.arrayContaining(['S256']),
        capabilities: expect.arrayContaining(['launch-standalone', 'sso-openid-connect']),
      });
      expect(body.code_challenge_methods_supported).not.toContain('plain');

      const launch = await launchThrough(smartOrigin);
      expect(launch.status).toBe(302);
      const location = new URL(String(launch.headers.location));
      expect(`${location.origin}${location.pathname}`).toBe(v2.authorization_endpoint);
      expect(location.searchParams.get('aud')).toBe(smartOrigin);
      // fhir-pdp answered; the FHIR server was not asked for discovery.
      expect(fhir.requests.filter((r) => r.url.startsWith('/.well-known/'))).toEqual([]);
      const post = await rawRequest(smartOrigin, { path: '/.well-known/smart-configuration', method: 'POST', body: '{}' });
      expect(post.status).toBe(403);
    });

    it('keeps everything else behind a token', async () => {
      for (const [method, path] of [['POST', '/metadata'], ['GET', '/.well-known/openid-configuration'], ['GET', '/Patient/p1']] as const) {
        const { res, upstream } = await throughGateway(path, { method, ...(method === 'POST' ? { body: '{}', headers: { 'content-type': 'application/fhir+json' } } : {}) });
        expect(res.status).toBe(401);
        expect(res.headers['x-decision-reason']).toBe('missing_token');
        expect(upstream).toEqual([]);
      }
    });
  });

  describe("a gateway whose key fhir-pdp does not recognise (a rotation half done)", () => {
    it('reaches the client as 503, never calls the FHIR server, and is logged without the key', async () => {
      const oldKey = `rotated-away-${randomUUID()}`;
      const stale = await startNginx(new URL(pdp.url).host, fhir.address, { apiKey: oldKey });
      try {
        const before = fhir.requests.length;
        pdpLog.length = 0;
        const res = await rawRequest(stale.origin, { path: '/Patient/p1', headers: { authorization: await bearer() } });
        expect(res.status).toBe(503);
        expect(res.headers['retry-after']).toBe('5');
        expect(JSON.parse(res.body)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'transient' }] });
        expect(res.headers['x-decision-reason']).toBeUndefined();
        expect(fhir.requests.length).toBe(before);

        const lines = pdpLog.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(lines).toEqual([
          expect.objectContaining({
            type: 'key_refused',
            mode: 'forward-auth',
            status: 503,
            key: 'not_recognised',
            keySource: 'header',
            keyFingerprint: `sha256:${createHash('sha256').update(oldKey).digest('hex').slice(0, 8)}`,
            remoteAddress: '127.0.0.1',
          }),
        ]);
        expect(pdpLog.join('\n')).not.toContain(oldKey);
        expect(pdpLog.join('\n')).not.toContain(API_KEY);
      } finally {
        await stale.stop();
      }
    });

    it('answers 503 for a 401 or 403 that carries no X-Decision-Reason (the Functions host refusing a function key)', async () => {
      // Azure Functions checks function keys itself, before fhir-pdp runs, and refuses a wrong one
      // with a bare 401. Functions Core Tools are not installed here, so this stand-in answers
      // exactly that: status, no body, no fhir-pdp headers.
      for (const status of [401, 403]) {
        const functionsHost = createHttpServer((_req, res) => {
          res.writeHead(status, { 'content-length': '0' });
          res.end();
        });
        await new Promise<void>((resolve) => functionsHost.listen(0, '127.0.0.1', resolve));
        const gateway = await startNginx(`127.0.0.1:${(functionsHost.address() as AddressInfo).port}`, fhir.address);
        try {
          const before = fhir.requests.length;
          const res = await rawRequest(gateway.origin, { path: '/Patient/p1', headers: { authorization: await bearer() } });
          expect(res.status).toBe(503);
          expect(res.headers['retry-after']).toBe('5');
          expect(JSON.parse(res.body)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'transient' }] });
          expect(fhir.requests.length).toBe(before);
        } finally {
          await gateway.stop();
          functionsHost.closeAllConnections();
          await new Promise<void>((resolve) => functionsHost.close(() => resolve()));
        }
      }
    });
  });

  it('cuts a patient-scoped client off once its token is revoked, though the token was cached', async () => {
    const jti = `e2e-${randomUUID()}`;
    const authorization = await bearer({ oid: PATIENT_OID, scp: 'launch/patient patient/Patient.rs', fhirUser: 'Patient/p1', extraClaims: { jti } });
    const before = await throughGateway('/Patient/p1', { headers: { authorization } });
    expect(before.res.status).toBe(200);
    const revoked = await fetch(`${pdp.url}/api/revocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-functions-key': ADMIN_KEY },
      body: JSON.stringify({ kind: 'jti', issuer: idp.v2Issuer, jti, note: 'nginx e2e' }),
    });
    expect(revoked.status).toBe(200);
    const after = await throughGateway('/Patient/p1', { headers: { authorization } });
    expect(after.res.status).toBe(401);
    expect(after.res.headers['x-decision-reason']).toBe('token_expired');
    expect(after.res.headers['www-authenticate']).toMatch(/error="invalid_token"/);
    expect(after.upstream).toEqual([]);
  });

  describe('SMART search narrowing (X-Auth-Query-Append appended by the snippet)', () => {
    const CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
    const observation = (id: string, patient: string, category: string): Resource => ({
      resourceType: 'Observation',
      id,
      status: 'final',
      category: [{ coding: [{ system: CATEGORY, code: category }] }],
      code: { text: category },
      subject: { reference: `Patient/${patient}` },
    });
    const seeded: Resource[] = [
      { resourceType: 'Patient', id: 'pa', name: [{ family: 'Alpha' }] },
      { resourceType: 'Patient', id: 'pb', name: [{ family: 'Beta' }] },
      observation('pa-lab-1', 'pa', 'laboratory'),
      observation('pa-lab-2', 'pa', 'laboratory'),
      observation('pa-vitals', 'pa', 'vital-signs'),
      observation('pb-lab', 'pb', 'laboratory'),
      observation('pb-vitals', 'pb', 'vital-signs'),
    ];
    /** A patient-launch token for Patient/pa allowing only its laboratory Observations. */
    const labToken = () =>
      bearer({ oid: SMART_OID, scp: 'launch/patient patient/Observation.rs?category=laboratory', extraClaims: { patient: 'pa' } });
    const ids = (body: string) => ((JSON.parse(body) as Bundle).entry ?? []).map((e) => e.resource?.id).sort();

    beforeAll(async () => {
      for (const r of seeded) await fhir.repository.createResource(r);
    });

    afterAll(async () => {
      for (const r of seeded) await fhir.repository.deleteResource(r.resourceType, r.id!);
    });

    it("a search without the patient gets exactly the patient's laboratory Observations", async () => {
      const { res, upstream } = await throughGateway('/Observation', { headers: { authorization: await labToken() } });
      expect(res.status).toBe(200);
      expect(ids(res.body)).toEqual(['pa-lab-1', 'pa-lab-2']);
      expect(upstream.map((r) => r.url)).toEqual(['/Observation?patient=Patient/pa&category=laboratory']);
      // The append travels from fhir-pdp to nginx only.
      expect(upstream[0]!.headers['x-auth-query-append']).toBeUndefined();
    });

    it.each([
      ['/Observation?', '/Observation?patient=Patient/pa&category=laboratory'],
      ['/Observation?_count=50&status=final', '/Observation?_count=50&status=final&patient=Patient/pa&category=laboratory'],
      ['/Observation?patient=Patient/pa', '/Observation?patient=Patient/pa&category=laboratory'],
      ['/Observation?category=laboratory&patient=Patient/pa', '/Observation?category=laboratory&patient=Patient/pa'],
    ])('%s reaches the FHIR server as %s and finds only those', async (path, seen) => {
      const { res, upstream } = await throughGateway(path, { headers: { authorization: await labToken() } });
      expect(res.status).toBe(200);
      expect(ids(res.body)).toEqual(['pa-lab-1', 'pa-lab-2']);
      expect(upstream.map((r) => r.url)).toEqual([seen]);
    });

    it.each([
      ['another patient', '/Observation?patient=Patient/pb'],
      ['another category', '/Observation?category=vital-signs'],
      ['a category modifier', '/Observation?category:not=laboratory'],
      ['an _include', '/Observation?_include=Observation:subject'],
      ['a read by id', '/Observation/pa-lab-1'],
    ])('refuses %s (403 insufficient_scope) before the FHIR server', async (_name, path) => {
      const { res, upstream } = await throughGateway(path, { headers: { authorization: await labToken() } });
      expect(res.status).toBe(403);
      expect(res.headers['x-decision-reason']).toBe('insufficient_scope');
      expect(upstream).toEqual([]);
    });
  });

  it('refuses a batch nginx does not send the body of, even to a principal granted read, write and delete', async () => {
    // A transaction could hold a hard delete or a SearchParameter write; nginx's auth request
    // carries no body, so fhir-pdp cannot see the entries.
    const transaction = JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: 'Patient/p1?_hardDelete=true' } }] });
    const { res, upstream } = await throughGateway('/', {
      method: 'POST',
      headers: { authorization: await bearer({ oid: DELETER_OID }), 'content-type': 'application/fhir+json' },
      body: transaction,
    });
    expect(res.status).toBe(403);
    expect(res.headers['x-decision-reason']).toBe('action_not_permitted');
    expect(upstream).toEqual([]);
    expect(await fhir.repository.readResource('Patient', 'p1')).toMatchObject({ id: 'p1' });
  });

  it("refuses a method override: the FHIR server is not asked to run another method than fhir-pdp decided", async () => {
    const { res, upstream } = await throughGateway('/Patient/p1', {
      headers: { authorization: await bearer(), 'x-http-method-override': 'DELETE' },
    });
    expect(res.status).toBe(403);
    expect(res.headers['x-decision-reason']).toBe('action_not_permitted');
    expect(upstream).toEqual([]);
  });

  it('without X-Original-Method (the URI header only), decides nothing: a DELETE is never judged as the GET nginx asks with', async () => {
    const before = uriOnly!.stderr().length;
    const upstreamBefore = fhir.requests.length;
    const res = await rawRequest(uriOnly!.origin, { path: '/Patient/p1', method: 'DELETE', headers: { authorization: await bearer() } });
    // fhir-pdp answers 400 invalid_request; auth_request makes that a 500, the snippet a 503.
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'transient' }] });
    expect(uriOnly!.stderr().slice(before)).toContain('auth request unexpected status: 400');
    expect(fhir.requests.slice(upstreamBefore)).toEqual([]);
    expect(await fhir.repository.readResource('Patient', 'p1')).toMatchObject({ id: 'p1' });
    // The documented server, with the header, decides the same DELETE: refused, not granted.
    const documented = await throughGateway('/Patient/p1', { method: 'DELETE', headers: { authorization: await bearer() } });
    expect(documented.res.status).toBe(403);
    expect(documented.upstream).toEqual([]);
  });

  it.each([
    { order: 'valid token first', first: true },
    { order: 'valid token second', first: false },
  ])('refuses a request with two Authorization headers ($order)', async ({ first }) => {
    const valid = await bearer();
    const other = await bearer({ oid: STRANGER_OID });
    const { res, upstream } = await throughGateway('/Patient/p1', { headers: { authorization: first ? [valid, other] : [other, valid] } });
    // nginx 1.22 rejects a repeated Authorization header itself (400); were it to pass both,
    // fhir-pdp would refuse them as malformed_token (401).
    expect([400, 401]).toContain(res.status);
    if (res.status === 401) expect(res.headers['x-decision-reason']).toBe('malformed_token');
    expect(upstream).toEqual([]);
  });

  it('answers 503 when fhir-pdp cannot decide within its budget, and never calls the FHIR server', async () => {
    // A key fhir-pdp has not seen yet makes it refetch the key set, which now never answers.
    const kid = idp.rotateKey();
    const authorization = await bearer({ kid });
    idp.down('hang');
    try {
      const { res, upstream } = await throughGateway('/Patient/p1', { headers: { authorization } });
      expect(res.status).toBe(503);
      expect(res.headers['retry-after']).toBe('5');
      expect(JSON.parse(res.body)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'transient' }] });
      expect(upstream).toEqual([]);
      expect(nginx!.stderr()).toContain('auth request unexpected status: 503');
    } finally {
      idp.up();
    }
  });

  it('answers 503 when fhir-pdp is down, and never calls the FHIR server', async () => {
    await pdp.close();
    pdpClosed = true;
    const { res, upstream } = await throughGateway('/Patient/p1', { headers: { authorization: await bearer() } });
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'transient' }] });
    expect(upstream).toEqual([]);
  });
});
