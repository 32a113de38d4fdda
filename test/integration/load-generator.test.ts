/**
 * The fixed-rate load generator of the benchmarks (bench/load.ts, run as its own process as the
 * benchmark runs it) against a node:http server in this process that stops once, for a known time,
 * by blocking its event loop: the round must report that stop as the server's longest silence,
 * not as the sender's own stall, and its latency must include it.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LoadJob, LoadResult } from '../../bench/load.js';

const LOAD = fileURLToPath(new URL('../../dist/bench/load.js', import.meta.url));
const STOP_MS = 80;
const BODY = '{"decision":"allow"}';

function runLoad(job: LoadJob): Promise<LoadResult> {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-pdp-load-'));
  const file = join(dir, 'job.json');
  writeFileSync(file, JSON.stringify(job));
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [LOAD, file], { encoding: 'utf8' }, (err, stdout, stderr) => {
      rmSync(dir, { recursive: true, force: true });
      const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
      if (err || !line) reject(new Error(`load generator failed: ${err?.message ?? ''} ${stderr}`));
      else resolve(JSON.parse(line.slice('RESULT '.length)) as LoadResult);
    });
  });
}

describe('the fixed-rate load generator (bench/load.ts)', () => {
  let server: Server;
  let url: string;
  let bodiesFile: string;
  let dir: string;
  let answered = 0;
  let stopAt = Number.POSITIVE_INFINITY;
  let stopped = false;

  beforeAll(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        answered++;
        if (!stopped && answered >= stopAt) {
          // One stop of the whole server, as a long garbage collection or a descheduled vCPU would be.
          stopped = true;
          const until = performance.now() + STOP_MS;
          while (performance.now() < until);
        }
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(BODY.length) });
        res.end(BODY);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/decide`;
    dir = mkdtempSync(join(tmpdir(), 'fhir-pdp-load-bodies-'));
    bodiesFile = join(dir, 'bodies.json');
    writeFileSync(bodiesFile, JSON.stringify(['{"method":"GET","path":"/Patient/1"}']));
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it("reports a stop of the server as its longest silence, not as the sender's stall, and counts it in p99", async () => {
    const rate = 1000;
    // The stop falls in the measured period (after the 0.2 s warm-up), well before its end.
    stopAt = answered + rate * 0.2 + rate * 0.3;
    stopped = false;
    const result = await runLoad({ url, connections: 16, warmupSeconds: 0.2, durationSeconds: 1, overallRate: rate, bodiesFile, startAt: 0, expectInBody: '"allow"' });
    expect(stopped).toBe(true);
    expect(result.failures).toEqual({ non2xx: 0, errors: 0, timeouts: 0, mismatches: 0 });
    expect(result.longestSilenceMs).toBeGreaterThanOrEqual(STOP_MS * 0.9);
    // The sender ran its loop throughout (it is another process); the stop is the server's.
    expect(result.senderLongestStallMs).toBeLessThan(STOP_MS * 0.9);
    // 80 ms of a 1 s round at 1,000 req/s: about 80 requests, more than 1% of them, waited for it.
    expect(result.p99Ms).toBeGreaterThan(STOP_MS / 4);
  });
});
