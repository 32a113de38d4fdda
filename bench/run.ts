/**
 * `npm run bench`: runs the suites in bench/ and writes bench/RESULTS.md (and the same report as JSON
 * in test-output/bench-results.json). `--smoke` runs every suite with tiny sizes and durations so they never rot, and writes
 * test-output/bench-smoke.md (and .json) instead: a smoke run never overwrites RESULTS.md.
 *
 *   node dist/bench/run.js [--smoke] [--only in-process,http,scale] [--cases decide-hit,...] [--out FILE]
 *   node dist/bench/run.js --render test-output/bench-results.json   (RESULTS.md again, with the current PROFILE.md)
 *
 * `--only` / `--cases` (for profiling one path, e.g. under `node --cpu-prof`) write
 * test-output/bench-partial.md unless `--out` says otherwise. Missed targets are reported, not
 * failures: the exit code is non-zero only when a benchmark could not run.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg, platform, release, totalmem } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runHttp } from './http.js';
import { runInProcess } from './in-process.js';
import { runScale } from './scale.js';
import { formatFigureRatio, formatNumber, formatSummary, type Figure, type SuiteResult } from './stats.js';

const SUITES = ['in-process', 'http', 'scale'] as const;
type SuiteName = (typeof SUITES)[number];

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface MachineInfo {
  readonly cores: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly node: string;
  readonly os: string;
  readonly commit?: string;
  readonly loadAverageStart: readonly number[];
  loadAverageEnd?: readonly number[];
}

export interface BenchReport {
  readonly smoke: boolean;
  readonly date: string;
  readonly durationSeconds: number;
  readonly machine: MachineInfo;
  readonly suites: readonly SuiteResult[];
}

function machine(): MachineInfo {
  let commit: string | undefined;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    commit = undefined;
  }
  return {
    cores: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    node: process.version,
    os: `${platform()} ${release()}`,
    ...(commit ? { commit } : {}),
    loadAverageStart: loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

function figureRow(f: Figure): string {
  const target = f.target ? `${f.target.text}: **${f.target.met ? 'met' : 'missed'}**` : '—';
  return `| ${f.title} | ${formatSummary(f.value)} | ${f.baseline.label}: ${formatSummary(f.baseline)} | ${formatFigureRatio(f)} | ${target} |`;
}

export function renderMarkdown(report: BenchReport, profileNotes: string | undefined): string {
  const m = report.machine;
  const lines: string[] = [];
  lines.push(report.smoke ? '# fhir-pdp benchmarks — SMOKE RUN (sizes and durations too small for the numbers to mean anything)' : '# fhir-pdp benchmarks');
  lines.push('');
  lines.push(`Written by \`npm run bench${report.smoke ? ':smoke' : ''}\` (bench/run.ts); how to read it: bench/README.md.`);
  lines.push('');
  lines.push(`- Date: ${report.date} (run took ${Math.round(report.durationSeconds)} s)`);
  lines.push(`- Machine: ${m.cores} cores (${m.cpuModel}), ${m.memoryGiB} GiB, ${m.os}`);
  lines.push(`- Node ${m.node}${m.commit ? `, commit ${m.commit}` : ''}`);
  lines.push(`- Load average (1/5/15 min) at start ${m.loadAverageStart.join(' / ')}${m.loadAverageEnd ? `, at end ${m.loadAverageEnd.join(' / ')}` : ''}: a busy machine moves every figure; the ratios move less, since each baseline is measured in the same run, interleaved.`);
  lines.push('');
  lines.push('Every value is the median of the repeats with (min–max, n). "Ratio" is figure ÷ baseline, both medians of this run; a ratio followed by "(rounds …)" is instead the median of the ratios taken within each interleaved round, with their spread.');
  lines.push('');
  const targets = report.suites.flatMap((s) => s.figures.filter((f) => f.target));
  if (targets.length) {
    lines.push('## Targets');
    lines.push('');
    lines.push('| figure | value | ratio to baseline | target | |');
    lines.push('| --- | --- | --- | --- | --- |');
    for (const f of targets)
      lines.push(`| ${f.title} | ${formatNumber(f.value.summary.median)} ${f.value.unit} | ${formatFigureRatio(f)} | ${f.target!.text} | ${f.target!.met ? 'met' : '**missed**'} |`);
    lines.push('');
  }
  for (const s of report.suites) {
    lines.push(`## ${s.title}`);
    lines.push('');
    for (const how of s.method) lines.push(`- ${how}`);
    lines.push('');
    lines.push('| figure | value | baseline (same run) | ratio | target |');
    lines.push('| --- | --- | --- | --- | --- |');
    for (const f of s.figures) lines.push(figureRow(f));
    lines.push('');
    lines.push('<details><summary>All measurements</summary>');
    lines.push('');
    lines.push('| id | measurement | median | min | max | p10 | p90 | n |');
    lines.push('| --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const x of s.measurements) {
      const v = x.summary;
      lines.push(`| ${x.id} | ${x.label} (${x.unit}, ${x.better} is better) | ${formatNumber(v.median)} | ${formatNumber(v.min)} | ${formatNumber(v.max)} | ${formatNumber(v.p10)} | ${formatNumber(v.p90)} | ${v.n} |`);
    }
    lines.push('');
    lines.push('</details>');
    lines.push('');
    for (const n of s.notes) lines.push(`Note: ${n}`, '');
  }
  if (profileNotes) {
    lines.push(profileNotes.trim());
    lines.push('');
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      smoke: { type: 'boolean', default: false },
      only: { type: 'string' },
      cases: { type: 'string' },
      out: { type: 'string' },
      render: { type: 'string' },
    },
    strict: true,
  });
  if (values.render) {
    // Re-renders a saved full report (test-output/bench-results.json) with the current PROFILE.md,
    // without measuring again: the figures stay those of the run, commit and date included.
    const report = JSON.parse(await readFile(values.render, 'utf8')) as BenchReport;
    if (report.smoke) throw new Error('a smoke report is never rendered into bench/RESULTS.md');
    const out = resolve(values.out ?? join(REPO_ROOT, 'bench/RESULTS.md'));
    const profileNotes = await readFile(join(REPO_ROOT, 'bench/PROFILE.md'), 'utf8').catch(() => undefined);
    await writeFile(out, renderMarkdown(report, profileNotes));
    process.stderr.write(`bench: rendered ${relative(process.cwd(), out)} from ${values.render}\n`);
    return;
  }
  const only = values.only ? values.only.split(',').map((s) => s.trim()) : [...SUITES];
  for (const s of only) if (!SUITES.includes(s as SuiteName)) throw new Error(`unknown suite ${s}; one of ${SUITES.join(', ')}`);
  const cases = values.cases?.split(',').map((s) => s.trim());
  const partial = values.only !== undefined || cases !== undefined;
  const out = resolve(values.out ?? join(REPO_ROOT, values.smoke ? 'test-output/bench-smoke.md' : partial ? 'test-output/bench-partial.md' : 'bench/RESULTS.md'));
  if (values.smoke && out === join(REPO_ROOT, 'bench/RESULTS.md')) throw new Error('a smoke run never writes bench/RESULTS.md');

  const log = (line: string): void => void process.stderr.write(`${line}\n`);
  const started = performance.now();
  const info = machine();
  const suites: SuiteResult[] = [];
  const options = { smoke: values.smoke, log };
  for (const name of only as SuiteName[]) {
    log(`bench: ${name}${values.smoke ? ' (smoke)' : ''}`);
    const t0 = performance.now();
    if (name === 'in-process') suites.push(await runInProcess({ ...options, ...(cases ? { only: cases } : {}) }));
    if (name === 'http') suites.push(await runHttp(options));
    if (name === 'scale') suites.push(await runScale(options));
    log(`bench: ${name} took ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  info.loadAverageEnd = loadavg().map((l) => Math.round(l * 100) / 100);
  const report: BenchReport = { smoke: values.smoke, date: new Date().toISOString(), durationSeconds: (performance.now() - started) / 1000, machine: info, suites };
  const profileNotes = await readFile(join(REPO_ROOT, 'bench/PROFILE.md'), 'utf8').catch(() => undefined);
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, renderMarkdown(report, values.smoke ? undefined : profileNotes));
  // The same report for tools, kept out of the repository (test-output/ is ignored) unless --out puts it elsewhere.
  const jsonOut = values.out ? out.replace(/\.md$/, '') + '.json' : join(REPO_ROOT, `test-output/${values.smoke ? 'bench-smoke' : partial ? 'bench-partial' : 'bench-results'}.json`);
  await mkdir(dirname(jsonOut), { recursive: true });
  await writeFile(jsonOut, `${JSON.stringify(report, null, 2)}\n`);
  log(`bench: wrote ${relative(process.cwd(), out)} in ${Math.round(report.durationSeconds)} s`);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
