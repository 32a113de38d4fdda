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
import { randomUUID } from 'node:crypto';
import { accessSync, chmodSync, constants as fsConstants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedHost } from '../../src/host/main.js';
import { DEV_APP_ID, DEV_OBJECT_ID, DEV_TENANT_ID, DevIdentityProvider } from '../../src/host/dev-idp.js';
import { startFhirUpstream, type FhirUpstream } from '../support/fhir-upstream.js';
import { docSnippet, rawRequest, startPdpHost, substitute, type RawResponse } from '../support/gateway-harness.js';

const AUDIENCE = 'https://fhir.example.test';
const STRANGER_OID = '0b7c6d5e-4f3a-4b2c-9d1e-8f7a6b5c4d3e';
/** Granted read, write and delete, but not hardDelete or anything else a Bundle entry could need. */
const DELETER_OID = '6e5d4c3b-2a19-4f8e-8d7c-6b5a4f3e2d1c';
const API_KEY = `nginx-e2e-${randomUUID()}`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function findNginx(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, 'nginx');
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

const NGINX = findNginx();
const REQUIRED = Boolean(process.env.CI);
const SKIP = NGINX === undefined && !REQUIRED;
if (SKIP) process.stderr.write('test/e2e/nginx.test.ts: SKIPPED: nginx is not installed (apt-get install -y nginx); with CI set this is a failure\n');

/** A free loopback port: bound, read, released for nginx to take. */
function reservePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

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

function documentedServer(listenPort: number, pdpAddress: string, fhirAddress: string): string {
  let server = docSnippet('nginx');
  server = substitute(server, 'listen 8000;', `listen 127.0.0.1:${listenPort};`);
  server = substitute(server, 'server 127.0.0.1:7071;', `server ${pdpAddress};`);
  server = substitute(server, 'server 127.0.0.1:8080;', `server ${fhirAddress};`);
  return substitute(server, '__PDP_API_KEY__', API_KEY);
}

/**
 * The documented server as nginx's own auth_request examples write it: the URI header only, no
 * X-Original-Method (upstreams renamed so both servers fit in one http block).
 */
function uriOnlyServer(listenPort: number, pdpAddress: string, fhirAddress: string): string {
  let server = documentedServer(listenPort, pdpAddress, fhirAddress);
  server = substitute(server, '        proxy_set_header X-Original-Method  $request_method;\n', '');
  server = substitute(server, 'upstream fhir_pdp {', 'upstream fhir_pdp_uri_only {');
  server = substitute(server, 'http://fhir_pdp/', 'http://fhir_pdp_uri_only/');
  server = substitute(server, 'upstream fhir_server {', 'upstream fhir_server_uri_only {');
  return substitute(server, 'http://fhir_server;', 'http://fhir_server_uri_only;');
}

function nginxConfig(dir: string, listenPort: number, uriOnlyPort: number, pdpAddress: string, fhirAddress: string): string {
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
    documentedServer(listenPort, pdpAddress, fhirAddress),
    uriOnlyServer(uriOnlyPort, pdpAddress, fhirAddress),
    '}',
    '',
  ].join('\n');
}

describe.skipIf(SKIP)(`nginx auth_request → fhir-pdp → FHIR server${SKIP ? ' (skipped: nginx is not installed)' : ''}`, () => {
  let idp: DevIdentityProvider;
  let fhir: FhirUpstream;
  let pdp: StartedHost;
  let pdpClosed = false;
  let nginx: ChildProcess | undefined;
  let nginxStderr = '';
  let dir: string;
  let origin: string;
  /** The server without X-Original-Method (uriOnlyServer). */
  let uriOnlyOrigin: string;

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
    fhir = await startFhirUpstream({ seed: [{ resourceType: 'Patient', id: 'p1', name: [{ family: 'Doe', given: ['Jane'] }] }] });
    pdp = await startPdpHost({
      config: {
        authority: idp.authority,
        audience: AUDIENCE,
        accessPolicies: [
          { objectId: DEV_OBJECT_ID, dataActions: ['read', 'write'] },
          { objectId: DELETER_OID, dataActions: ['read', 'write', 'delete'] },
        ],
        decisionBudgetMs: 750,
        fetchTimeoutMs: 5000,
      },
      settings: { PDP_API_KEYS: API_KEY },
    });
    await pdp.service.refresh();

    dir = mkdtempSync(join(tmpdir(), 'fhir-pdp-nginx-'));
    // Workers drop root privileges; they must reach their temp paths inside this directory.
    chmodSync(dir, 0o755);
    const port = await reservePort();
    const uriOnlyPort = await reservePort();
    origin = `http://127.0.0.1:${port}`;
    uriOnlyOrigin = `http://127.0.0.1:${uriOnlyPort}`;
    const confPath = join(dir, 'nginx.conf');
    writeFileSync(confPath, nginxConfig(dir, port, uriOnlyPort, new URL(pdp.url).host, fhir.address));
    nginx = spawn(NGINX, ['-p', `${dir}/`, '-c', confPath, '-e', 'stderr', '-g', `daemon off; pid ${dir}/nginx.pid; error_log stderr;`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    nginx.stderr!.on('data', (chunk: Buffer) => {
      if (nginxStderr.length < 64 * 1024) nginxStderr += chunk.toString('utf8');
    });
    await waitUntilAccepting(port, nginx, () => nginxStderr);
  });

  afterAll(async () => {
    const child = nginx;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGQUIT');
      const forced = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(forced);
    }
    if (pdp && !pdpClosed) await pdp.close();
    await fhir?.close();
    await idp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
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
    const before = nginxStderr.length;
    const upstreamBefore = fhir.requests.length;
    const res = await rawRequest(uriOnlyOrigin, { path: '/Patient/p1', method: 'DELETE', headers: { authorization: await bearer() } });
    // fhir-pdp answers 400 invalid_request; auth_request makes that a 500, the snippet a 503.
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toMatchObject({ resourceType: 'OperationOutcome', issue: [{ code: 'transient' }] });
    expect(nginxStderr.slice(before)).toContain('auth request unexpected status: 400');
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
      expect(nginxStderr).toContain('auth request unexpected status: 503');
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
