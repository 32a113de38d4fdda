/**
 * `npm start` as a process: the bundle it runs (dist/bundle/main.js, scripts/bundle.mjs) spawned with a configuration in PDP_CONFIG, asked
 * over HTTP, then stopped the way a container runtime stops it (SIGTERM) and the way a terminal
 * does (SIGINT). It must write its decision-log lines to stdout and exit 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';

const MAIN = new URL('../../dist/bundle/main.js', import.meta.url).pathname;
const AUDIENCE = 'https://fhir.example.test';

let idp: DevIdentityProvider;

beforeAll(async () => {
  idp = await DevIdentityProvider.start();
});

afterAll(async () => {
  await idp.close();
});

interface Started {
  readonly child: ChildProcess;
  readonly url: string;
  readonly stdout: () => string;
  readonly stderr: () => string;
}

async function startMain(): Promise<Started> {
  const config = { authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }] };
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PDP_') && k !== 'PORT' && k !== 'AzureWebJobsStorage') env[k] = v;
  const child = spawn(process.execPath, [MAIN], {
    env: { ...env, PORT: '0', PDP_CONFIG: JSON.stringify(config), PDP_LOG_DECISIONS: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr!.setEncoding('utf8');
  // Wait for the line that names the address, not for a time.
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (c: string) => {
      err += c;
      const m = /(http:\/\/127\.0\.0\.1:\d+)/.exec(err);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`main.js exited (${code}) before listening:\n${err}`)));
  });
  return { child, url, stdout: () => out, stderr: () => err };
}

async function ask(url: string, token: string): Promise<{ reason: string; decisionId: string }> {
  const res = await fetch(`${url}/api/decide`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ method: 'GET', path: '/Patient/1', headers: { authorization: `Bearer ${token}` } }),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as { reason: string; decisionId: string };
}

describe('npm start (dist/bundle/main.js) as a process', () => {
  it.each(['SIGTERM', 'SIGINT'] as const)('stops on %s: says so, has logged every decision, exits 0', async (signal) => {
    const host = await startMain();
    const allowed = await ask(host.url, await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation' }));
    const refused = await ask(host.url, await idp.mint({ audience: 'api://someone-else', scp: 'user_impersonation' }));
    expect([allowed.reason, refused.reason]).toEqual(['allowed', 'audience_mismatch']);

    host.child.kill(signal);
    const [code] = (await once(host.child, 'exit')) as [number | null];
    expect(code).toBe(0);
    expect(host.stderr()).toContain(`fhir-pdp: ${signal}: stopping`);
    const lines = host.stdout().trim().split('\n').map((l) => JSON.parse(l) as { type: string; decisionId: string; reason: string });
    expect(lines.map((l) => [l.type, l.decisionId, l.reason])).toEqual([
      ['decision', allowed.decisionId, 'allowed'],
      ['decision', refused.decisionId, 'audience_mismatch'],
    ]);
    // Never the token.
    expect(host.stdout()).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\./);
  });
});
