/**
 * The container image's runtime stage, run without a container engine: images cannot be built on
 * these machines (the base image's registry is unreachable, and crun cannot start containers in
 * this sandbox: docs/deploy.md). So the test reads the Dockerfile's runtime stage, lays out a
 * directory the way its COPY lines do (no node_modules: the bundle must carry its production
 * dependencies), and runs its CMD there with its ENV, as an unprivileged user when the test runs as
 * root, the way USER does. One decision goes through it, its HEALTHCHECK command passes once the
 * host is ready and fails against a closed port, and SIGTERM (a container stop) exits 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';

const REPO = new URL('../../', import.meta.url).pathname;
const AUDIENCE = 'https://fhir.example.test';
const API_KEY = randomBytes(18).toString('base64url');
const ADMIN_KEY = randomBytes(18).toString('base64url');
/** The node image's `node` user. */
const IMAGE_UID = 1000;

interface RuntimeStage {
  readonly workdir: string;
  readonly env: Record<string, string>;
  readonly copies: ReadonlyArray<{ from: string; to: string }>;
  readonly user: string | undefined;
  readonly cmd: readonly string[];
  readonly healthcheck: readonly string[];
  readonly runs: readonly string[];
}

/** The last stage of the Dockerfile, its instructions as the image would apply them. */
function runtimeStage(dockerfile: string): RuntimeStage {
  const lines = dockerfile.replace(/\\\n\s*/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const stages = lines.reduce<string[][]>((acc, line) => (line.startsWith('FROM ') ? [...acc, [line]] : (acc.at(-1)?.push(line), acc)), []);
  const build = stages[0]!;
  const buildWorkdir = build.find((l) => l.startsWith('WORKDIR '))!.slice(8).trim();
  const stage = stages.at(-1)!;
  let workdir = '/';
  const env: Record<string, string> = {};
  const copies: Array<{ from: string; to: string }> = [];
  const runs: string[] = [];
  let user: string | undefined;
  let cmd: string[] = [];
  let healthcheck: string[] = [];
  for (const line of stage.slice(1)) {
    const [op, ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    if (op === 'WORKDIR') workdir = args;
    else if (op === 'ENV') for (const [, k, v] of args.matchAll(/(\w+)=(\S+)/g)) env[k!] = v!;
    else if (op === 'USER') user = args;
    else if (op === 'CMD') cmd = JSON.parse(args) as string[];
    else if (op === 'HEALTHCHECK') healthcheck = JSON.parse(/CMD (\[.*\])$/.exec(args)![1]!) as string[];
    else if (op === 'RUN') runs.push(args);
    else if (op === 'COPY') {
      const m = /^--from=build (\S+) (\S+)$/.exec(args);
      if (!m) throw new Error(`runtime stage: only COPY --from=build is laid out here: ${line}`);
      const from = m[1]!.startsWith(`${buildWorkdir}/`) ? m[1]!.slice(buildWorkdir.length + 1) : m[1]!;
      copies.push({ from, to: m[2]!.startsWith('/') ? m[2]! : join(workdir, m[2]!) });
    }
  }
  return { workdir, env, copies, user, cmd, healthcheck, runs };
}

let stage: RuntimeStage;
let imageRoot: string;
let idp: DevIdentityProvider;
/** Whether a user other than the owner may run `file`: o+x on it and on every folder above it. */
function othersCanRun(file: string): boolean {
  for (let path = file; ; path = dirname(path)) {
    if ((statSync(path).mode & 0o001) === 0) return false;
    if (path === dirname(path)) return true;
  }
}

// As root (CI), run as the image's user, provided that user can run this node at all.
const asImageUser = process.getuid?.() === 0 && othersCanRun(process.execPath) ? { uid: IMAGE_UID, gid: IMAGE_UID } : {};

beforeAll(async () => {
  stage = runtimeStage(await readFile(join(REPO, 'Dockerfile'), 'utf8'));
  imageRoot = await mkdtemp(join(tmpdir(), 'pdp-image-'));
  await chmod(imageRoot, 0o755);
  for (const { from, to } of stage.copies) {
    await mkdir(join(imageRoot, to, '..'), { recursive: true });
    await cp(join(REPO, from), join(imageRoot, to), { recursive: true });
  }
  idp = await DevIdentityProvider.start();
});

afterAll(async () => {
  await idp?.close();
  if (imageRoot) await rm(imageRoot, { recursive: true, force: true });
});

function run(argv: readonly string[], env: Record<string, string>): ChildProcess {
  // argv[0] is `node` in the image; here, the node running the tests.
  const [command, ...args] = argv;
  expect(command).toBe('node');
  return spawn(process.execPath, args, {
    cwd: join(imageRoot, stage.workdir),
    // Only PATH from outside, as in an image: nothing of the developer's shell, no NODE_PATH.
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...stage.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...asImageUser,
  });
}

async function exitCode(child: ChildProcess): Promise<number | null> {
  const [code] = (await once(child, 'exit')) as [number | null];
  return code;
}

describe('the container image (runtime stage of the Dockerfile)', () => {
  it('holds the bundle and no dependencies to install: no RUN, no node_modules, an unprivileged user', async () => {
    expect(stage.runs).toEqual([]);
    expect(stage.user).toBe('node');
    expect(stage.cmd).toEqual(['node', 'dist/bundle/main.js']);
    const top = await readdir(join(imageRoot, stage.workdir));
    expect(top.sort()).toEqual(['dist', 'package.json']);
    expect(stage.healthcheck.join(' ')).toContain('/api/health');
  });

  it('serves a decision, passes its health check when ready, and stops on SIGTERM with exit 0', async () => {
    const config = { authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }] };
    // PDP_HOST keeps the test on loopback; in the image the host binds 0.0.0.0 because keys are set.
    const child = run(stage.cmd, { PORT: '0', PDP_HOST: '127.0.0.1', PDP_CONFIG: JSON.stringify(config), PDP_API_KEYS: API_KEY, PDP_ADMIN_KEYS: ADMIN_KEY });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    child.stdout!.resume();
    const exited = exitCode(child);
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const lines = createInterface({ input: child.stderr! });
        lines.on('line', (line) => {
          const m = /listening on (http:\/\/\S+)/.exec(line);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (code) => reject(new Error(`the image's CMD exited (${code}) before listening: ${stderr}`)));
      });
      if (asImageUser.uid !== undefined) {
        const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
        expect(/^Uid:\s+(\d+)/m.exec(status)?.[1]).toBe(String(IMAGE_UID));
      }

      const token = await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation' });
      const ask = (authorization?: string) =>
        fetch(`${url}/api/decide`, {
          headers: { 'x-functions-key': API_KEY, 'x-original-method': 'GET', 'x-original-uri': '/Patient/123', ...(authorization ? { authorization } : {}) },
        });
      expect((await ask(`Bearer ${token}`)).status).toBe(200);
      expect((await ask()).status).toBe(401);

      // The refresh the host started at boot, awaited (single-flight): health is ready after it.
      expect((await fetch(`${url}/api/refresh`, { method: 'POST', headers: { 'x-functions-key': ADMIN_KEY } })).status).toBe(200);
      const port = new URL(url).port;
      expect(await exitCode(run(stage.healthcheck, { PORT: port }))).toBe(0);

      const closed = createServer();
      closed.listen(0, '127.0.0.1');
      await once(closed, 'listening');
      const closedPort = String((closed.address() as { port: number }).port);
      await new Promise<void>((resolve) => closed.close(() => resolve()));
      expect(await exitCode(run(stage.healthcheck, { PORT: closedPort }))).toBe(1);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(stderr).toContain('SIGTERM: stopping');
  });
});
