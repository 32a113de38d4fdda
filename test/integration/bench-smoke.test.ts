/**
 * The benchmarks are not tests, but their smoke run is: every suite runs end to end with tiny sizes
 * (`node dist/bench/run.js --smoke`, after `npm run build`), so the benchmarks never rot. Numbers are
 * not asserted; the shape of the report is: every figure has a baseline from the same run and a ratio.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RUNNER = join(ROOT, 'dist/bench/run.js');
const SMOKE_MD = join(ROOT, 'test-output/bench-smoke.md');
const SMOKE_JSON = join(ROOT, 'test-output/bench-smoke.json');
const RESULTS_MD = join(ROOT, 'bench/RESULTS.md');

interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
}
interface Measurement {
  id: string;
  label: string;
  unit: string;
  summary: Summary;
}
interface Figure {
  title: string;
  value: Measurement;
  baseline: Measurement;
  ratio: number;
  target?: { text: string; met: boolean };
}
interface Report {
  smoke: boolean;
  date: string;
  machine: { cores: number; node: string };
  suites: Array<{ suite: string; figures: Figure[]; measurements: Measurement[] }>;
}

function runBench(args: readonly string[]): Promise<{ code: number | null; stderr: string; ms: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, [RUNNER, ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr = (stderr + t).slice(-8000)));
  return new Promise((done) => child.once('exit', (code) => done({ code, stderr, ms: performance.now() - started })));
}

describe('bench:smoke', () => {
  let run: { code: number | null; stderr: string; ms: number };
  let resultsBefore: number | undefined;
  let report: Report;
  let markdown: string;

  beforeAll(async () => {
    if (!existsSync(RUNNER)) throw new Error(`${RUNNER} is missing: run \`npm run build\` first (npm test does)`);
    resultsBefore = existsSync(RESULTS_MD) ? statSync(RESULTS_MD).mtimeMs : undefined;
    run = await runBench(['--smoke']);
    if (run.code === 0) {
      report = JSON.parse(readFileSync(SMOKE_JSON, 'utf8')) as Report;
      markdown = readFileSync(SMOKE_MD, 'utf8');
    }
  }, 120_000);

  it('exits 0 and writes the smoke report, never bench/RESULTS.md', () => {
    expect(run.code, run.stderr).toBe(0);
    expect(report.smoke).toBe(true);
    expect(markdown).toMatch(/^# fhir-pdp benchmarks — SMOKE RUN/);
    expect(existsSync(RESULTS_MD) ? statSync(RESULTS_MD).mtimeMs : undefined).toBe(resultsBefore);
  });

  it('records the machine and the date', () => {
    expect(report.machine.cores).toBeGreaterThan(0);
    expect(report.machine.node).toBe(process.version);
    expect(Number.isNaN(Date.parse(report.date))).toBe(false);
    expect(markdown).toContain(`Node ${process.version}`);
  });

  it.each([
    ['in-process', ['subtle', 'jose', 'decide-miss', 'decide-hit', 'peer']],
    ['http', ['bare-rps', 'cached-rps', 'fresh-rps', 'half-cached-p99', 'half-bare-p99']],
    ['scale', ['latency-big-direct', 'latency-big-group', 'heap-total', 'decode', 'cold-warm', 'cold-bare']],
  ])('suite %s measures %j', (suite, ids) => {
    const s = report.suites.find((x) => x.suite === suite);
    expect(s, `suite ${suite}`).toBeDefined();
    expect(s!.measurements.map((m) => m.id)).toEqual(expect.arrayContaining(ids));
    expect(s!.figures.length).toBeGreaterThan(0);
  });

  it('gives every figure a baseline from the same run and a finite ratio, in the JSON and in the markdown', () => {
    const figures = report.suites.flatMap((s) => s.figures);
    expect(figures.length).toBeGreaterThanOrEqual(20);
    for (const f of figures) {
      expect(f.baseline.id, f.title).not.toBe(f.value.id);
      expect(f.value.summary.n, f.title).toBeGreaterThan(0);
      expect(f.baseline.summary.n, f.title).toBeGreaterThan(0);
      expect(Number.isFinite(f.value.summary.median), f.title).toBe(true);
      expect(f.baseline.summary.median, f.title).toBeGreaterThan(0);
      expect(Number.isFinite(f.ratio), f.title).toBe(true);
      expect(f.ratio, f.title).toBeCloseTo(f.value.summary.median / f.baseline.summary.median, 6);
      // The suite's table row: | figure | value | baseline (same run) | ratio | target |
      const row = markdown.split('\n').find((l) => l.startsWith(`| ${f.title} |`) && l.includes(`| ${f.baseline.label}: `));
      expect(row, f.title).toBeDefined();
      expect(row!.split(' | ')[3], f.title).toMatch(/^\d+(\.\d+)?×$/);
    }
  });

  it('--render writes a saved full report again with PROFILE.md, and refuses a smoke report', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-render-'));
    try {
      const full = join(dir, 'full.json');
      writeFileSync(full, JSON.stringify({ ...report, smoke: false }));
      const out = join(dir, 'RESULTS.md');
      const rendered = await runBench(['--render', full, '--out', out]);
      expect(rendered.code, rendered.stderr).toBe(0);
      const text = readFileSync(out, 'utf8');
      expect(text).toMatch(/^# fhir-pdp benchmarks\n/);
      expect(text).toContain(`- Date: ${report.date}`);
      expect(text).toContain(readFileSync(join(ROOT, 'bench/PROFILE.md'), 'utf8').trim());
      const refused = await runBench(['--render', SMOKE_JSON, '--out', join(dir, 'smoke.md')]);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(/smoke report/);
      expect(existsSync(join(dir, 'smoke.md'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reports fixed-rate latency from due time and from send, the second never above the first, with the generator's lateness", () => {
    const http = report.suites.find((s) => s.suite === 'http')!;
    const byId = (id: string): Summary => http.measurements.find((m) => m.id === id)!.summary;
    for (const server of ['bare', 'cached']) {
      const due = byId(`half-${server}-p99`);
      const fromSend = byId(`half-${server}-from-send-p99`);
      const late = byId(`half-${server}-sender-late-p99`);
      // Every request's latency from send is its latency from due less the generator's lateness.
      expect(fromSend.median).toBeGreaterThan(0);
      expect(fromSend.median).toBeLessThanOrEqual(due.median);
      expect(late.median).toBeGreaterThanOrEqual(0);
      expect(late.median).toBeLessThanOrEqual(due.median);
    }
    expect(markdown).toMatch(/Rounds at \d+ req\/s, in order \(p99 from due time \/ from send/);
  });

  it('measures the CPU each in-process operation takes, all threads counted, beside operations per second', () => {
    const inProcess = report.suites.find((s) => s.suite === 'in-process')!;
    const cpu = (id: string): Summary => inProcess.measurements.find((m) => m.id === `${id}-cpu`)!.summary;
    for (const id of ['subtle', 'jose', 'decide-miss', 'decide-hit', 'peer']) expect(cpu(id).median).toBeGreaterThan(0);
    // A verification on the thread pool costs more CPU than a decision answered from the cache.
    expect(cpu('jose').median).toBeGreaterThan(cpu('decide-hit').median);
    const titles = inProcess.figures.map((f) => f.title);
    expect(titles).toContain('CPU per operation: decide, cache misses vs jose.jwtVerify');
    expect(titles.some((t) => t.startsWith('CPU per operation: jose.jwtVerify vs decide, cache hits'))).toBe(true);
  });

  it('applies the p99 target to bare node:http at half of its own peak, and says how busy each server was', () => {
    const http = report.suites.find((s) => s.suite === 'http')!;
    const byId = (id: string): Summary | undefined => http.measurements.find((m) => m.id === id)?.summary;
    const own = byId('own-half-bare-p99')!;
    expect(own.n).toBeGreaterThan(0);
    expect(own.median).toBeGreaterThan(0);
    expect(byId('own-half-bare-from-send-p99')!.median).toBeLessThanOrEqual(own.median);
    // Half of the bare server's own peak is not the rate the service was held to.
    const rates = [...markdown.matchAll(/p99 at half of each server's own peak: decide \(cached tokens, (\d+) req\/s\) vs bare node:http \((\d+) req\/s\)/g)];
    expect(rates).toHaveLength(1);
    expect(markdown).toContain(`bare node:http at half of its own peak (${rates[0]![2]} req/s)`);
    if (process.platform === 'linux') {
      // CPU per request times the rate: a share of one core, above zero for a server that answered.
      for (const id of ['half-cached-busy', 'own-half-bare-busy']) expect(byId(id)!.median).toBeGreaterThan(0);
      expect(markdown).toMatch(/silent ≤ \d+\.\d\d ms \(sender ≤ \d+\.\d\d ms\), \d+% busy/);
    }
  });

  it('states every target of the issue with met or missed', () => {
    const targets = report.suites.flatMap((s) => s.figures.filter((f) => f.target).map((f) => f.target!.text));
    expect(targets).toEqual(
      expect.arrayContaining(['≥ 0.9×', '≥ 10×', '> 1× (ahead of the peer)', '≥ 0.6×', 'p99 < 5 ms', 'heap < 200 MB', '< 300 ms']),
    );
    expect(markdown).toMatch(/## Targets/);
  });
});
