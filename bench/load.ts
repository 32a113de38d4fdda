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
  /**
   * Fixed-rate load only: the sender's own lateness at the 99th percentile, ms: how long after a
   * request was due the sender got to it (wrote it, or queued it because every connection was busy).
   * Its sleeps between requests end a little late, and on a shared machine it can be descheduled.
   */
  readonly senderLateP99Ms?: number;
  /**
   * Fixed-rate load only: the longest time the server held a request without answering any, ms: how
   * long the server (or the machine under it) went silent while it had work.
   */
  readonly longestSilenceMs?: number;
  /** Fixed-rate load only: the longest the sender itself went without running its loop, ms. */
  readonly senderLongestStallMs?: number;
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
  /** Response times, ms. */
  readonly times: Float64Array;
  /** Fixed-rate load only: how long after it was due the sender got to each request, ms. */
  readonly late: Float64Array;
  count: number;
  /** When the last answer was read, and the longest silence so far (see LoadResult.longestSilenceMs). */
  lastAnswerAt: number;
  longestSilenceMs: number;
  longestStallMs: number;
}

/**
 * Made before the warm-up, sized to the round (a fixed-rate round needs about 1 MB, not 24): in one
 * window traced with perf sched at the start of a measured period, when the recorder was made there,
 * the sender's garbage-collector threads took a third of a vCPU from the server.
 */
function newRecorder(capacity: number): Recorder {
  const n = Math.min(MAX_SAMPLES, Math.ceil(capacity));
  return { times: new Float64Array(n), late: new Float64Array(n), count: 0, lastAnswerAt: 0, longestSilenceMs: 0, longestStallMs: 0 };
}

function percentile(values: Float64Array, count: number, q: number): number {
  const sorted = values.subarray(0, count).sort();
  return count === 0 ? Number.NaN : sorted[Math.min(count - 1, Math.floor(q * count))]!;
}

function summary(rec: Recorder, elapsedSeconds: number, sent: number, answered: number, failures: LoadResult['failures'], paced = false): LoadResult {
  return {
    requestsPerSecond: rec.count / elapsedSeconds,
    p50Ms: percentile(rec.times, rec.count, 0.5),
    p99Ms: percentile(rec.times, rec.count, 0.99),
    ...(paced
      ? {
          senderLateP99Ms: percentile(rec.late, rec.count, 0.99),
          longestSilenceMs: rec.longestSilenceMs,
          senderLongestStallMs: rec.longestStallMs,
        }
      : {}),
    completed: rec.count,
    sent,
    answered,
    failures,
  };
}

/** Every response of the process's lifetime, warm-up included. */
let answered = 0;

/** What the paced sender sleeps on between requests: nothing ever wakes it but its timeout. */
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));
/** The longest the paced sender sleeps before it reads what arrived (bounds the delay it adds). */
const MAX_SLEEP_MS = 0.2;
/** Shorter sleeps than this are not worth a system call. */
const MIN_SLEEP_MS = 0.01;

/** Keep-alive sockets of the open-loop sender, opened once and used by the warm-up and the measured period. */
interface Connection {
  readonly socket: Socket;
  /** When the request in flight on this socket was due (one at a time: no pipelining). */
  dueAt: number | undefined;
  /** When the sender got to it: wrote it, or queued it for a free connection. */
  reachedAt: number;
  buffered: Buffer;
  /** Where this socket's answers go: the period running now. */
  onAnswer: (c: Connection, status: number, body: Buffer) => void;
  onLost: (c: Connection) => void;
}

const IGNORE_ANSWER = (): void => {};

/** Reads whole answers off the socket: status line, headers up to the blank line, Content-Length bytes. */
function readAnswers(c: Connection, chunk: Buffer): void {
  c.buffered = c.buffered.length === 0 ? chunk : Buffer.concat([c.buffered, chunk]);
  for (;;) {
    const headerEnd = c.buffered.indexOf('\r\n\r\n');
    if (headerEnd < 0 || c.dueAt === undefined) return;
    const headerText = c.buffered.toString('latin1', 0, headerEnd).toLowerCase();
    const length = /\r\ncontent-length: *(\d+)/.exec(headerText);
    if (!length) {
      c.socket.destroy();
      return;
    }
    const total = headerEnd + 4 + Number(length[1]);
    if (c.buffered.length < total) return;
    const body = c.buffered.subarray(headerEnd + 4, total);
    c.buffered = c.buffered.subarray(total);
    c.onAnswer(c, Number(headerText.slice(9, 12)), body);
  }
}

function openConnections(url: URL, count: number): Promise<Connection[]> {
  return Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Connection>((resolve, reject) => {
          const socket = connect({ host: url.hostname, port: Number(url.port) }, () => {
            socket.off('error', reject);
            socket.setNoDelay(true);
            resolve(c);
          });
          const c: Connection = { socket, dueAt: undefined, reachedAt: 0, buffered: Buffer.alloc(0), onAnswer: IGNORE_ANSWER, onLost: IGNORE_ANSWER };
          socket.once('error', reject);
          socket.on('data', (chunk: Buffer) => readAnswers(c, chunk));
          // A socket lost with a request in flight (or without an answer it could read): that request failed.
          socket.on('close', () => c.onLost(c));
        }),
    ),
  );
}

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
 * 6.5-8.7 ms through node:http and 2.7-4.7 ms this way (bench/PROFILE.md). The sockets are the ones
 * the warm-up used: opening 64 new ones at the start of the measured period put the servers' (and the
 * sender's) first-use costs into its first few hundred milliseconds.
 *
 * Even intervals need a clock finer than node's timers: a setInterval of 1 ms fires every 1-2 ms, so
 * the sender wrote 11-15 requests back to back per tick, and the server saw bursts, not a rate (p50
 * 1.3-1.5 ms for the bare server at 10,800 req/s, mostly the wait for the tick and the queue behind
 * the burst; 0.27 ms paced). Between requests the sender sleeps until the next is due, at most
 * MAX_SLEEP_MS, in Atomics.wait (a futex with a microsecond timeout), then lets the event loop read
 * what arrived (setImmediate) and sends what is due. An answer can therefore wait up to one sleep
 * before it is read; that counts in its latency.
 *
 * A request still goes out a little after it is due, later when the sender itself is descheduled.
 * That lateness is part of the latency counted from the due time (`times`), and is recorded on its
 * own (`late`), so a report can tell a late sender from a slow server.
 */
async function paced(
  connections: readonly Connection[],
  rate: number,
  next: () => Buffer,
  expected: Buffer,
  seconds: number,
  rec: Recorder | undefined,
): Promise<{ failures: LoadResult['failures']; elapsedSeconds: number }> {
  const failures = { non2xx: 0, errors: 0, timeouts: 0, mismatches: 0 };
  const idle: Connection[] = [...connections];
  /** Requests waiting for a free connection (they wait like wrk2's do): due time, then when queued. */
  const waiting: number[] = [];
  let outstanding = 0;
  let drained: (() => void) | undefined;

  const dispatch = (c: Connection, dueAt: number, reachedAt: number): void => {
    c.dueAt = dueAt;
    c.reachedAt = reachedAt;
    outstanding++;
    c.socket.write(next());
  };
  const release = (c: Connection): void => {
    c.dueAt = undefined;
    outstanding--;
    if (waiting.length > 0) {
      const due = waiting.shift()!;
      dispatch(c, due, waiting.shift()!);
    } else idle.push(c);
    if (outstanding === 0 && waiting.length === 0) drained?.();
  };
  const onAnswer = (c: Connection, status: number, body: Buffer): void => {
    answered++;
    if (status !== 200) failures.non2xx++;
    else if (body.indexOf(expected) < 0) failures.mismatches++;
    else if (rec && rec.count < rec.times.length) {
      const now = performance.now();
      // Since the previous answer, or since this request went out if that was later, the server
      // held this request and answered nothing.
      const heldSince = rec.lastAnswerAt > c.reachedAt ? rec.lastAnswerAt : c.reachedAt;
      if (now - heldSince > rec.longestSilenceMs) rec.longestSilenceMs = now - heldSince;
      rec.lastAnswerAt = now;
      rec.late[rec.count] = c.reachedAt - c.dueAt!;
      rec.times[rec.count++] = now - c.dueAt!;
    }
    release(c);
  };
  const onLost = (c: Connection): void => {
    if (c.dueAt === undefined) return;
    failures.errors++;
    c.dueAt = undefined;
    outstanding--;
    if (outstanding === 0) drained?.();
  };
  for (const c of connections) {
    c.onAnswer = onAnswer;
    c.onLost = onLost;
  }

  const interval = 1000 / rate;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  let sent = 0;
  let lastTick = t0;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now();
      if (rec) rec.longestStallMs = Math.max(rec.longestStallMs, now - lastTick);
      lastTick = now;
      for (let due = t0 + sent * interval; due <= now && due < end; due = t0 + sent * interval) {
        sent++;
        const c = idle.pop();
        if (c) dispatch(c, due, now);
        else waiting.push(due, now);
      }
      if (now >= end) {
        resolve();
        return;
      }
      const sleep = Math.min(t0 + sent * interval - performance.now(), MAX_SLEEP_MS);
      if (sleep > MIN_SLEEP_MS) Atomics.wait(SLEEPER, 0, 0, sleep);
      setImmediate(tick);
    };
    tick();
  });
  if (outstanding > 0 || waiting.length > 0) {
    // Answers still due are waited for, up to 10 s; the rest count as timeouts.
    const timeout = setTimeout(() => drained?.(), 10_000);
    await new Promise<void>((resolve) => (drained = resolve));
    clearTimeout(timeout);
    failures.timeouts += outstanding + waiting.length / 2;
  }
  // Until the last answer: a server that cannot keep up shows a rate below the one asked for.
  return { failures, elapsedSeconds: (performance.now() - t0) / 1000 };
}

async function run(job: LoadJob): Promise<LoadResult> {
  const bodies = JSON.parse(readFileSync(job.bodiesFile, 'utf8')) as string[];
  let cursor = job.startAt;
  if (job.overallRate) {
    const url = new URL(job.url);
    const head = `POST ${url.pathname} HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\ncontent-length: `;
    // Built once: the sender's own garbage collections land on the percentiles it measures.
    const requests = bodies.map((body) => Buffer.from(`${head}${Buffer.byteLength(body)}\r\n\r\n${body}`));
    const next = (): Buffer => requests[cursor++ % requests.length]!;
    const expected = Buffer.from(job.expectInBody);
    // Every answer of the measured period, with room for the ones still in flight at its end.
    const rec = newRecorder(job.overallRate * job.durationSeconds * 1.1 + job.connections);
    const connections = await openConnections(url, job.connections);
    try {
      if (job.warmupSeconds > 0) await paced(connections, job.overallRate, next, expected, job.warmupSeconds, undefined);
      const { failures, elapsedSeconds } = await paced(connections, job.overallRate, next, expected, job.durationSeconds, rec);
      return summary(rec, elapsedSeconds, cursor - job.startAt, answered, failures, true);
    } finally {
      for (const c of connections) c.socket.destroy();
    }
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

  const rec = newRecorder(MAX_SAMPLES);
  if (job.warmupSeconds > 0) {
    const warmup = autocannon(options(job.warmupSeconds));
    warmup.on('response', () => answered++);
    await warmup;
  }

  const started = performance.now();
  const instance = autocannon(options(job.durationSeconds));
  instance.on('response', (_client, statusCode, _bytes, ms) => {
    answered++;
    if (statusCode === 200 && rec.count < rec.times.length) rec.times[rec.count++] = ms;
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
