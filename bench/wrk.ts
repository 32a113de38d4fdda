/**
 * Peak load with wrk (Debian's `wrk`: C, epoll), beside autocannon: on 2 cores autocannon's own CPU
 * caps the bare server and flatters every ratio to it. wrk is optional: without it on PATH the
 * HTTP suite says so in its report and measures the rest.
 */
import { spawn } from 'node:child_process';

/**
 * POSTs the bodies of a file (one JSON body a line, the path after `--`) in turn on every
 * connection. The requests are built once, in init(), with wrk.format; request() only hands the next
 * one over, so the Lua work per request is an index.
 */
export const WRK_SCRIPT = `local requests = {}
local i = 0
function init(args)
  for body in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
  end
  if #requests == 0 then error("no request bodies in " .. args[1]) end
end
function request()
  i = i % #requests + 1
  return requests[i]
end
`;

/**
 * One wrk thread: the servers measured answer on one JavaScript thread each, and a second wrk
 * thread would take the other core from the server's kernel work and garbage-collector helpers.
 */
const THREADS = 1;

export interface WrkResult {
  readonly requestsPerSecond: number;
  readonly requests: number;
  /** Answers that were not 2xx/3xx, and socket errors (connect, read, write, timeout). */
  readonly failures: number;
}

/** wrk's version line (`wrk debian/4.1.0-3+b2 [epoll]`), or undefined when wrk is not on PATH. */
export function wrkVersion(): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn('wrk', ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
    child.once('error', () => resolve(undefined));
    // `wrk --version` prints its version and exits 1.
    child.once('close', () => resolve(/^wrk \S+ \[\w+\]/.exec(out)?.[0]));
  });
}

/** The figures of wrk's report; throws when a line it needs is missing, never a NaN. */
export function parseWrkOutput(text: string): WrkResult {
  const rps = /^Requests\/sec:\s+([\d.]+)$/m.exec(text);
  const total = /^\s*(\d+) requests in /m.exec(text);
  if (!rps || !total) throw new Error(`wrk printed no "Requests/sec:" or "N requests in" line: ${text.slice(0, 2000)}`);
  const non2xx = /^\s*Non-2xx or 3xx responses: (\d+)$/m.exec(text);
  const socket = /^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)$/m.exec(text);
  const socketErrors = socket ? socket.slice(1).reduce((n, x) => n + Number(x), 0) : 0;
  return { requestsPerSecond: Number(rps[1]), requests: Number(total[1]), failures: Number(non2xx?.[1] ?? 0) + socketErrors };
}

/** `wrk` for `seconds` (whole seconds: wrk takes no fractions) with WRK_SCRIPT written to `scriptFile`. */
export function runWrk(job: { url: string; connections: number; seconds: number; scriptFile: string; bodiesFile: string }): Promise<WrkResult> {
  const args = [`-t${THREADS}`, `-c${job.connections}`, `-d${Math.max(1, Math.round(job.seconds))}s`, '-s', job.scriptFile, job.url, '--', job.bodiesFile];
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => (err = (err + t).slice(-4000)));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code !== 0) reject(new Error(`wrk ${args.join(' ')} exited ${code}: ${err}${out}`));
      else {
        try {
          resolve(parseWrkOutput(out));
        } catch (e) {
          reject(e as Error);
        }
      }
    });
  });
}
