/**
 * Summaries of repeated measurements and the shape every suite reports in. A figure is never a
 * number alone: it carries the baseline measured in the same run and the ratio to it, so a reader
 * sees "how far from the platform's limit" rather than a throughput that depends on the machine.
 */

export interface Summary {
  readonly n: number;
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly p10: number;
  readonly p90: number;
}

/** Linear interpolation between closest ranks (the "R-7" definition numpy and Excel use). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) throw new RangeError('quantile of no samples');
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function summarize(samples: readonly number[]): Summary {
  const finite = samples.filter((s) => Number.isFinite(s));
  if (finite.length === 0) throw new RangeError('summarize needs at least one finite sample');
  const sorted = [...finite].sort((a, b) => a - b);
  return {
    n: sorted.length,
    median: quantile(sorted, 0.5),
    min: sorted[0]!,
    max: sorted[sorted.length - 1]!,
    p10: quantile(sorted, 0.1),
    p90: quantile(sorted, 0.9),
  };
}

export type Unit = 'ops/s' | 'req/s' | 'ms' | 'µs' | 'MB' | 'B' | '% of a core';

/** One quantity measured repeatedly. */
export interface Measurement {
  readonly id: string;
  readonly label: string;
  readonly unit: Unit;
  /** Which way is better, so a ratio can be read (throughput: higher; latency, memory: lower). */
  readonly better: 'higher' | 'lower';
  readonly summary: Summary;
}

export interface Target {
  /** As the issue states it, e.g. "≥ 0.9× of jose.jwtVerify". */
  readonly text: string;
  readonly met: boolean;
}

/**
 * A measurement next to its baseline from the same run. `ratio` is figure ÷ baseline (medians), or,
 * when `roundRatios` is there, the median of the ratios taken within each interleaved round.
 */
export interface Figure {
  readonly title: string;
  readonly value: Measurement;
  readonly baseline: Measurement;
  readonly ratio: number;
  /** figure ÷ baseline within each round (the two measured back to back), summarized. */
  readonly roundRatios?: Summary;
  readonly target?: Target;
}

export interface SuiteResult {
  readonly suite: string;
  readonly title: string;
  /** How the numbers were taken, one line each. */
  readonly method: readonly string[];
  readonly measurements: readonly Measurement[];
  readonly figures: readonly Figure[];
  readonly notes: readonly string[];
}

export function measurement(id: string, label: string, unit: Unit, better: 'higher' | 'lower', samples: readonly number[]): Measurement {
  return { id, label, unit, better, summary: summarize(samples) };
}

export function ratioOf(value: Measurement, baseline: Measurement): number {
  return baseline.summary.median === 0 ? Number.NaN : value.summary.median / baseline.summary.median;
}

/**
 * A figure; `target` receives the ratio and the figure and says whether the target is met. With
 * `perRound` (figure ÷ baseline of each round, in order) the ratio is their median: a drift of the
 * machine in the middle of a suite moves both sides of a round alike, but splits two medians
 * taken over all rounds unevenly.
 */
export function figure(
  title: string,
  value: Measurement,
  baseline: Measurement,
  target?: { text: string; met: (ratio: number, value: Measurement) => boolean },
  perRound?: readonly number[],
): Figure {
  const roundRatios = perRound ? summarize(perRound) : undefined;
  const ratio = roundRatios ? roundRatios.median : ratioOf(value, baseline);
  return { title, value, baseline, ratio, ...(roundRatios ? { roundRatios } : {}), ...(target ? { target: { text: target.text, met: target.met(ratio, value) } } : {}) };
}

/** values[i] ÷ baselines[i]: the ratio within each round. */
export function ratiosByRound(values: readonly number[], baselines: readonly number[]): number[] {
  return values.map((v, i) => v / baselines[i]!);
}

/** A compact rendering: `12 345 ops/s (10 100 – 13 000)`; the spread is min–max of the repeats. */
export function formatSummary(m: Measurement): string {
  const s = m.summary;
  return `${formatNumber(s.median)} ${m.unit} (${formatNumber(s.min)}–${formatNumber(s.max)}, n=${s.n})`;
}

export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const abs = Math.abs(v);
  if (abs >= 1000) return Math.round(v).toLocaleString('en-US');
  if (abs >= 100) return v.toFixed(0);
  if (abs >= 10) return v.toFixed(1);
  if (abs >= 1) return v.toFixed(2);
  return v.toPrecision(2);
}

export function formatRatio(r: number): string {
  if (!Number.isFinite(r)) return 'n/a';
  return r >= 10 ? `${r.toFixed(1)}×` : `${r.toFixed(2)}×`;
}

/** A figure's ratio, and for a median of per-round ratios their spread: `0.95× (rounds 0.65–1.20×, n=7)`. */
export function formatFigureRatio(f: Figure): string {
  const r = f.roundRatios;
  return r ? `${formatRatio(f.ratio)} (rounds ${formatRatio(r.min).slice(0, -1)}–${formatRatio(r.max)}, n=${r.n})` : formatRatio(f.ratio);
}

/** Runs `op` with `concurrency` calls in flight until `durationMs` has passed; resolves ops per second. */
export async function throughput(op: () => Promise<unknown>, concurrency: number, durationMs: number): Promise<{ opsPerSecond: number; ops: number }> {
  let ops = 0;
  const started = performance.now();
  const deadline = started + durationMs;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      ops++;
      await op();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = performance.now() - started;
  return { opsPerSecond: (ops / elapsed) * 1000, ops };
}
