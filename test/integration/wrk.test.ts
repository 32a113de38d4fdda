/**
 * wrk as the HTTP benchmark runs it (bench/wrk.ts), against a node:http server in this process:
 * the Lua script must POST every body of the file in turn, as JSON, on every connection, and the
 * report must count what the server answered. Skipped where wrk is not installed (the benchmark
 * then skips its wrk rounds and says so).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runWrk, WRK_SCRIPT, wrkVersion } from '../../bench/wrk.js';

const version = await wrkVersion();

describe.runIf(version !== undefined)('wrk with the benchmark\'s Lua script', () => {
  let server: Server;
  let url: string;
  let dir: string;
  const seen = new Map<string, number>();
  let wrongType = 0;
  let refuse = false;

  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (t: string) => (body += t));
      req.on('end', () => {
        if (req.method !== 'POST' || req.headers['content-type'] !== 'application/json') wrongType++;
        seen.set(body, (seen.get(body) ?? 0) + 1);
        res.writeHead(refuse ? 403 : 200, { 'content-type': 'application/json', 'content-length': '2' });
        res.end('{}');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/decide`;
    dir = mkdtempSync(join(tmpdir(), 'fhir-pdp-wrk-'));
    writeFileSync(join(dir, 'decide.lua'), WRK_SCRIPT);
    writeFileSync(join(dir, 'bodies.lines'), ['{"n":1}', '{"n":2}', '{"n":3}'].join('\n'));
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  it('cycles every body of the file as a JSON POST, and reports what was answered', async () => {
    const r = await runWrk({ url, connections: 4, seconds: 1, scriptFile: join(dir, 'decide.lua'), bodiesFile: join(dir, 'bodies.lines') });
    expect(r.failures).toBe(0);
    expect(r.requests).toBeGreaterThan(30);
    expect(r.requestsPerSecond).toBeGreaterThan(0);
    expect(wrongType).toBe(0);
    expect([...seen.keys()].sort()).toEqual(['{"n":1}', '{"n":2}', '{"n":3}']);
    // In turn: no body is sent far more often than another.
    const counts = [...seen.values()];
    expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(4);
    // The server answered at least what wrk counted (its last requests may be cut off unanswered).
    expect(counts.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(r.requests);
  });

  it('counts refused answers as failures', async () => {
    refuse = true;
    try {
      const r = await runWrk({ url, connections: 2, seconds: 1, scriptFile: join(dir, 'decide.lua'), bodiesFile: join(dir, 'bodies.lines') });
      expect(r.requests).toBeGreaterThan(0);
      expect(r.failures).toBeGreaterThanOrEqual(r.requests);
    } finally {
      refuse = false;
    }
  });
});

describe('wrkVersion', () => {
  it('says undefined, without throwing, when wrk is not on PATH', async () => {
    const path = process.env.PATH;
    const empty = mkdtempSync(join(tmpdir(), 'fhir-pdp-no-wrk-'));
    process.env.PATH = empty;
    try {
      expect(await wrkVersion()).toBeUndefined();
    } finally {
      process.env.PATH = path;
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it.runIf(version !== undefined)("names wrk's version when it is installed", () => {
    expect(version).toMatch(/^wrk \S+ \[\w+\]$/);
  });
});
