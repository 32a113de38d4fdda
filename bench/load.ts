/**
 * The load generator, run in a process of its own so it never shares a core's event loop with the
 * server it measures: `node load.js <job.json>`. Peak load: autocannon (programmatic API), a warm-up
 * then the measured period, every response time recorded at full resolution (autocannon's own
 * histogram counts whole milliseconds). Fixed-rate load: an open-loop sender (below, `paced`).
 * Prints one `RESULT {json}` line.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { connect, type Socket } from 'node:net';

export interface LoadJob {
  readonly url: string;
  readonly connections: number;
  readonly warmupSeconds: number;
  readonly durationSeconds: number;
  /**
   * Requests per second across all connections, sent open-loop at even intervals; omitted means
   * closed-loop autocannon, as fast as the server answers.
   */
  readonly overallRate?: number;
  /** JSON array of request bodies, sent in order (one per request) and cycled. */
  readonly bodiesFile: string;
  /** Where in the bodies to start, so consecutive rounds continue the cycle. */
  readonly startAt: number;
  /** Every answer must contain this text (a decision that is not an allow is a failed request). */
  readonly expectInBody: string;
}

export interface LoadResult {
  readonly requestsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  /** Requests answered in the measured period. */
  readonly completed: number;
  /** Bodies consumed (warm-up and measured), to continue the cycle in the next round. */
  readonly sent: number;
  /** Responses received in the warm-up and the measured period, to divide the server's CPU time by. */
  readonly answered: number;
  readonly failures: { readonly non2xx: number; readonly errors: number; readonly timeouts: number; readonly mismatches: number };
}

interface AutocannonRequest {
  method?: string;
  path?: string;
  body?: string;
  headers?: Record<string, string>;
}

interface AutocannonOptions {
  url: string;
  connections: number;
  duration: number;
  sampleInt: number;
  method: string;
  headers: Record<string, string>;
  requests: RequestTemplate[];
  setupClient: (client: AutocannonClient) => void;
  verifyBody: (body: string) => boolean;
}

type RequestTemplate = AutocannonRequest & { setupRequest: (req: AutocannonRequest) => AutocannonRequest };

interface AutocannonClient {
  setRequests(requests: RequestTemplate[]): void;
}

interface AutocannonResult {
  readonly non2xx: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly mismatches: number;
}

interface AutocannonInstance extends PromiseLike<AutocannonResult> {
  on(event: 'response', listener: (client: unknown, statusCode: number, bytes: number, responseTimeMs: number) => void): void;
}

// autocannon ships no type declarations; this is the part of its API used here.
const autocannon = createRequire(import.meta.url)('autocannon') as (options: AutocannonOptions) => AutocannonInstance;

/** Upper bound on recorded response times (a 10 s round at 100k req/s): bounded memory. */
const MAX_SAMPLES = 1_000_000;

interface Recorder {
  readonly times: Float64Array;
  count: number;
}

function summary(rec: Recorder, elapsedSeconds: number, sent: number, answered: number, failures: LoadResult['failures']): LoadResult {
  const sorted = rec.times.subarray(0, rec.count).sort();
  const at = (q: number): number => (rec.count === 0 ? Number.NaN : sorted[Math.min(rec.count - 1, Math.floor(q * rec.count))]!);
  return { requestsPerSecond: rec.count / elapsedSeconds, p50Ms: at(0.5), p99Ms: at(0.99), completed: rec.count, sent, answered, failures };
}

/** Every response of the process's lifetime, warm-up included. */
let answered = 0;

/**
 * Open-loop load at a fixed rate (wrk2's model): request i is due at t0 + i / rate whatever happened to
 * the ones before, on at most `connections` keep-alive sockets, and its latency counts from when it was
 * due, so a stall of the server shows in the percentiles instead of slowing the sender (coordinated
 * omission). autocannon's overallRate is not used for this: it gives each connection a per-second
 * quota that it spends back to back at the start of every second, so the server sees all connections
 * busy, peak load, for part of each second.
 *
 * The sender writes pre-built HTTP/1.1 requests on raw sockets and reads answers by Content-Length
 * (both servers measured send it). Through a node:http client the sender's own work and GC pauses
 * landed on the server's percentiles on 2 cores: the bare server's p99 at about 8,000 req/s was
 * 6.5-8.7 ms through node:http and 2.7-4.7 ms this way (bench/PROFILE.md).
 */
async function paced(
  job: LoadJob,
  rate: number,
  next: () => string,
  seconds: number,
  rec: Recorder | undefined,
): Promise<{ failures: LoadResult['failures']; elapsedSeconds: number }> {
  const url = new URL(job.url);
  const failures = { non2xx: 0, errors: 0, timeouts: 0, mismatches: 0 };
  const head = `POST ${url.pathname} HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\ncontent-length: `;
  const requestBytes = (body: string): Buffer => Buffer.from(`${head}${Buffer.byteLength(body)}\r\n\r\n${body}`);
  const expected = Buffer.from(job.expectInBody);

  interface Connection {
    readonly socket: Socket;
    /** When each request in flight on this socket was due (one at a time: no pipelining). */
    dueAt: number | undefined;
    buffered: Buffer;
  }
  const idle: Connection[] = [];
  /** Due times of requests waiting for a free connection (they wait like wrk2's do). */
  const waiting: number[] = [];
  let outstanding = 0;
  let drained: (() => void) | undefined;

  const dispatch = (c: Connection, dueAt: number): void => {
    c.dueAt = dueAt;
    outstanding++;
    c.socket.write(requestBytes(next()));
  };
  const release = (c: Connection): void => {
    c.dueAt = undefined;
    outstanding--;
    const due = waiting.shift();
    if (due !== undefined) dispatch(c, due);
    else idle.push(c);
    if (outstanding === 0 && waiting.length === 0) drained?.();
  };
  /** Reads whole answers off the socket: status line, headers up to the blank line, Content-Length bytes. */
  const onData = (c: Connection, chunk: Buffer): void => {
    c.buffered = c.buffered.length === 0 ? chunk : Buffer.concat([c.buffered, chunk]);
    for (;;) {
      const headerEnd = c.buffered.indexOf('\r\n\r\n');
      if (headerEnd < 0 || c.dueAt === undefined) return;
      const headerText = c.buffered.toString('latin1', 0, headerEnd).toLowerCase();
      const length = /\r\ncontent-length: *(\d+)/.exec(headerText);
      if (!length) {
        failures.errors++;
        c.socket.destroy();
        return;
      }
      const total = headerEnd + 4 + Number(length[1]);
      if (c.buffered.length < total) return;
      const status = Number(headerText.slice(9, 12));
      const body = c.buffered.subarray(headerEnd + 4, total);
      answered++;
      if (status !== 200) failures.non2xx++;
      else if (body.indexOf(expected) < 0) failures.mismatches++;
      else if (rec && rec.count < MAX_SAMPLES) rec.times[rec.count++] = performance.now() - c.dueAt;
      c.buffered = c.buffered.subarray(total);
      release(c);
    }
  };
  const connections = await Promise.all(
    Array.from({ length: job.connections }, () =>
      new Promise<Connection>((resolve, reject) => {
        const socket = connect({ host: url.hostname, port: Number(url.port) }, () => {
          socket.off('error', reject);
          socket.setNoDelay(true);
          resolve(c);
        });
        const c: Connection = { socket, dueAt: undefined, buffered: Buffer.alloc(0) };
        socket.once('error', reject);
        socket.on('data', (chunk: Buffer) => onData(c, chunk));
        socket.on('close', () => {
          // A socket lost with a request in flight: that request failed.
          if (c.dueAt !== undefined) {
            failures.errors++;
            c.dueAt = undefined;
            outstanding--;
            if (outstanding === 0) drained?.();
          }
        });
      }),
    ),
  );
  idle.push(...connections);

  const interval = 1000 / rate;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let sent = 0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const now = performance.now();
      for (let due = t0 + sent * interval; due <= now && due < end; due = t0 + sent * interval) {
        sent++;
        const c = idle.pop();
        if (c) dispatch(c, due);
        else waiting.push(due);
      }
      if (now >= end) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  if (outstanding > 0 || waiting.length > 0) {
    // Answers still due are waited for, up to 10 s; the rest count as timeouts.
    const timeout = setTimeout(() => drained?.(), 10_000);
    await new Promise<void>((resolve) => (drained = resolve));
    clearTimeout(timeout);
    failures.timeouts += outstanding + waiting.length;
  }
  for (const c of connections) c.socket.destroy();
  // Until the last answer: a server that cannot keep up shows a rate below the one asked for.
  return { failures, elapsedSeconds: (performance.now() - t0) / 1000 };
}

async function run(job: LoadJob): Promise<LoadResult> {
  const bodies = JSON.parse(readFileSync(job.bodiesFile, 'utf8')) as string[];
  let cursor = job.startAt;
  if (job.overallRate) {
    const next = (): string => bodies[cursor++ % bodies.length]!;
    if (job.warmupSeconds > 0) await paced(job, job.overallRate, next, job.warmupSeconds, undefined);
    const rec: Recorder = { times: new Float64Array(MAX_SAMPLES), count: 0 };
    const { failures, elapsedSeconds } = await paced(job, job.overallRate, next, job.durationSeconds, rec);
    return summary(rec, elapsedSeconds, cursor - job.startAt, answered, failures);
  }
  const path = new URL(job.url).pathname;
  const template = (): RequestTemplate => ({
    method: 'POST',
    path,
    setupRequest: (req: AutocannonRequest): AutocannonRequest => {
      req.body = bodies[cursor++ % bodies.length]!;
      return req;
    },
  });
  const options = (duration: number): AutocannonOptions => ({
    url: job.url,
    connections: job.connections,
    duration,
    // autocannon notices the end of `duration` only at its next sample tick (default every 1000 ms).
    sampleInt: 100,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    requests: [template()],
    // autocannon keeps the built request on the request object, which its clients share: a client's
    // first request would send whatever body another client built last. One object per client.
    setupClient: (client) => client.setRequests([template()]),
    verifyBody: (body) => body.includes(job.expectInBody),
  });

  if (job.warmupSeconds > 0) {
    const warmup = autocannon(options(job.warmupSeconds));
    warmup.on('response', () => answered++);
    await warmup;
  }

  const rec: Recorder = { times: new Float64Array(MAX_SAMPLES), count: 0 };
  const started = performance.now();
  const instance = autocannon(options(job.durationSeconds));
  instance.on('response', (_client, statusCode, _bytes, ms) => {
    answered++;
    if (statusCode === 200 && rec.count < MAX_SAMPLES) rec.times[rec.count++] = ms;
  });
  const result = await instance;
  const elapsedSeconds = (performance.now() - started) / 1000;
  return summary(rec, elapsedSeconds, cursor - job.startAt, answered, { non2xx: result.non2xx, errors: result.errors, timeouts: result.timeouts, mismatches: result.mismatches });
}

const jobFile = process.argv[2];
if (!jobFile) {
  process.stderr.write('usage: node load.js <job.json>\n');
  process.exit(2);
}
run(JSON.parse(readFileSync(jobFile, 'utf8')) as LoadJob).then(
  (result) => process.stdout.write(`RESULT ${JSON.stringify(result)}\n`),
  (err: unknown) => {
    process.stderr.write(`load: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
