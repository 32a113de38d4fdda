/**
 * The benchmarks are not tests, but their smoke run is: every suite runs end to end with tiny sizes
 * (`node dist/bench/run.js --smoke`, after `npm run build:dev`), so the benchmarks never rot. Numbers are
 * not asserted; the shape of the report is: every figure has a baseline from the same run and a ratio.
 */
import { spawn, spawnSync } from 'node:child_process';
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
  roundRatios?: Summary;
  target?: { text: string; met: boolean };
}
interface Report {
  smoke: boolean;
  date: string;
  machine: { cores: number; node: string };
  suites: Array<{ suite: string; figures: Figure[]; measurements: Measurement[]; notes: string[] }>;
}

/** Whether wrk is on PATH here: the HTTP suite then measures peak with it too, else says it skipped it. */
const WRK_INSTALLED = spawnSync('wrk', ['--version']).error === undefined;

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
    if (!existsSync(RUNNER)) throw new Error(`${RUNNER} is missing: run \`npm run build:dev\` first (npm test does)`);
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
    ['in-process', ['subtle', 'jose', 'decide-miss', 'decide-hit', 'peer', 'authzen-batch', 'authzen-singles', 'decide-hit-metrics']],
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
      // A ratio of medians, or the median of the ratios within each round.
      expect(f.ratio, f.title).toBeCloseTo(f.roundRatios ? f.roundRatios.median : f.value.summary.median / f.baseline.summary.median, 6);
      // The suite's table row: | figure | value | baseline (same run) | ratio | target |
      const row = markdown.split('\n').find((l) => l.startsWith(`| ${f.title} |`) && l.includes(`| ${f.baseline.label}: `));
      expect(row, f.title).toBeDefined();
      expect(row!.split(' | ')[3], f.title).toMatch(f.roundRatios ? /^\d+(\.\d+)?× \(rounds \d+(\.\d+)?–\d+(\.\d+)?×, n=\d+\)$/ : /^\d+(\.\d+)?×$/);
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

  it("reports the load generator's lateness beside fixed-rate p99 from due time, never above it", () => {
    const http = report.suites.find((s) => s.suite === 'http')!;
    const byId = (id: string): Summary => http.measurements.find((m) => m.id === id)!.summary;
    for (const server of ['bare', 'cached']) {
      const due = byId(`half-${server}-p99`);
      const late = byId(`half-${server}-sender-late-p99`);
      // Every request's latency from its due time includes how late the generator got to it.
      expect(late.median).toBeGreaterThanOrEqual(0);
      expect(late.median).toBeLessThanOrEqual(due.median);
    }
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

  it("judges p99 at half of the service's peak by the median of per-round ratios to bare node:http at the same rate", () => {
    const http = report.suites.find((s) => s.suite === 'http')!;
    const byId = (id: string): Measurement => http.measurements.find((m) => m.id === id)!;
    const f = http.figures.find((x) => x.target?.text === '≤ 2× (median of per-round ratios)')!;
    expect(f.value.id).toBe('half-cached-p99');
    expect(f.baseline.id).toBe('half-bare-p99');
    expect(f.roundRatios!.n).toBe(f.value.summary.n);
    expect(f.target!.met).toBe(f.ratio <= 2);
    // One rate for both servers: half of the service's cached peak, wrk's where wrk ran.
    const rate = Number(/at (\d+) req\/s/.exec(f.baseline.label)![1]);
    expect(f.value.label).toContain(`at ${rate} req/s`);
    const peak = byId(WRK_INSTALLED ? 'wrk-cached-rps' : 'cached-rps').summary.median;
    expect(rate).toBe(Math.max(64, Math.round(peak / 2)));
    // The note lists each pair of rounds with its ratio, and their median is the figure's.
    const note = http.notes.find((n) => n.startsWith(`Rounds at ${rate} req/s, in order`))!;
    const pairs = [...note.matchAll(/: (\d+\.\d\d)×/g)].map((x) => Number(x[1]));
    expect(pairs).toHaveLength(f.roundRatios!.n);
    expect(note).toMatch(/silent ≤ \d+\.\d\d, sender stalled ≤ \d+\.\d\d\)/);
    const sorted = pairs.sort((a, b) => a - b);
    const mid = sorted.length / 2;
    const median = sorted.length % 2 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
    expect(Math.abs(median - f.ratio)).toBeLessThan(0.01 + f.ratio * 0.01);
  });

  it('judges cache misses against jose.jwtVerify by the median of the ratios within each round', () => {
    const inProcess = report.suites.find((s) => s.suite === 'in-process')!;
    const f = inProcess.figures.find((x) => x.title === 'decide, cache misses vs jose.jwtVerify')!;
    expect(f.target!.text).toBe('≥ 0.9× (median of per-round ratios)');
    expect(f.roundRatios!.n).toBe(f.baseline.summary.n);
    expect(f.roundRatios!.min).toBeLessThanOrEqual(f.ratio);
    expect(f.roundRatios!.max).toBeGreaterThanOrEqual(f.ratio);
    expect(f.target!.met).toBe(f.ratio >= 0.9);
  });

  it('measures peak with wrk where it is installed, and says it skipped it where not', () => {
    const http = report.suites.find((s) => s.suite === 'http')!;
    const ids = http.measurements.map((m) => m.id);
    const f = http.figures.find((x) => x.target?.text === '≥ 0.5× (median of per-round ratios)');
    if (WRK_INSTALLED) {
      expect(ids).toEqual(expect.arrayContaining(['wrk-bare-rps', 'wrk-cached-rps']));
      expect(f!.value.id).toBe('wrk-cached-rps');
      expect(f!.baseline.id).toBe('wrk-bare-rps');
      expect(f!.roundRatios!.n).toBe(f!.value.summary.n);
      expect(markdown).toMatch(/Peak also with wrk \S+ \[\w+\]/);
    } else {
      expect(ids).not.toContain('wrk-cached-rps');
      expect(f).toBeUndefined();
      expect(http.notes.some((n) => n.startsWith('wrk is not installed'))).toBe(true);
    }
  });

  it('states every target of the issue with met or missed', () => {
    const targets = report.suites.flatMap((s) => s.figures.filter((f) => f.target).map((f) => f.target!.text));
    expect(targets).toEqual(
      expect.arrayContaining([
        '≥ 0.9× (median of per-round ratios)',
        '≥ 10×',
        '> 1× (ahead of the peer)',
        '≤ 2× (median of per-round ratios)',
        ...(WRK_INSTALLED ? ['≥ 0.5× (median of per-round ratios)'] : []),
        'heap < 200 MB',
        '< 300 ms',
      ]),
    );
    expect(markdown).toMatch(/## Targets/);
  });
});
