/**
 * Child processes of the benchmarks (and of the tests that need a server in a process of its own):
 * spawn node, wait for the line that says it is ready (an event, never a sleep), stop it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';

export interface RunningChild {
  readonly child: ChildProcess;
  readonly match: RegExpExecArray;
  /** performance.now() when the process was spawned and when the line appeared. */
  readonly spawnedAt: number;
  readonly matchedAt: number;
  stop(): Promise<void>;
}

/**
 * Spawns `node args` and resolves when a line of `stream` matches `pattern` (never a sleep).
 * The other stream is kept (its tail) for the error message if the process exits first.
 */
export function startNode(
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; stream: 'stdout' | 'stderr'; pattern: RegExp; timeoutMs?: number; discardStdout?: boolean },
): Promise<RunningChild> {
  const spawnedAt = performance.now();
  const child = spawn(process.execPath, args, {
    env: options.env ?? process.env,
    stdio: ['ignore', options.discardStdout ? 'ignore' : 'pipe', 'pipe'],
  });
  let tail = '';
  const keepTail = (text: string): void => {
    tail = (tail + text).slice(-4000);
  };
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const force = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(force);
  };
  return new Promise((resolve, reject) => {
    const watched = options.stream === 'stdout' ? child.stdout! : child.stderr!;
    const other = options.stream === 'stdout' ? child.stderr : child.stdout;
    other?.setEncoding('utf8').on('data', keepTail);
    const lines = createInterface({ input: watched });
    const timeoutMs = options.timeoutMs ?? 30_000;
    const timer = setTimeout(() => fail(new Error(`${args.at(-1)} printed no line matching ${options.pattern} within ${timeoutMs} ms: ${tail}`)), timeoutMs);
    const onExit = (code: number | null): void => fail(new Error(`${args.at(-1)} exited (${code}) before it was ready: ${tail}`));
    function fail(err: Error): void {
      clearTimeout(timer);
      lines.close();
      child.kill('SIGKILL');
      reject(err);
    }
    child.once('error', fail);
    child.once('exit', onExit);
    lines.on('line', (line) => {
      keepTail(`${line}\n`);
      const match = options.pattern.exec(line);
      if (!match) return;
      const matchedAt = performance.now();
      clearTimeout(timer);
      child.off('exit', onExit);
      lines.removeAllListeners('line');
      // Keep draining so the child never blocks on a full pipe.
      lines.on('line', () => undefined);
      resolve({ child, match, spawnedAt, matchedAt, stop });
    });
  });
}

/** The parent's environment without fhir-pdp's own settings, so a developer's shell cannot change a run. */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PDP_') && k !== 'AzureWebJobsStorage' && k !== 'PORT') env[k] = v;
  return { ...env, ...extra };
}

/** The path of an executable on PATH or in one of `alsoIn` (where Debian puts servers), or undefined. */
export function findExecutable(name: string, alsoIn: readonly string[] = []): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), ...alsoIn]) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}
