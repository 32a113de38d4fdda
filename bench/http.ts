/**
 * Over HTTP on loopback: the standalone host answering /api/decide in JSON mode against a bare
 * node:http server answering a fixed JSON body (the platform's limit). Server, service and load
 * generator (autocannon, wrk, or load.ts at a fixed rate) each run in a process of their own;
 * rounds alternate between the bare server and the service so that drift of the machine falls on
 * both, and the targets compare the two within a run.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../testkit/dev-idp.js';
import { cleanEnv, startNode, type RunningChild } from '../testkit/child.js';
import type { LoadJob, LoadResult } from './load.js';
import { processCpuSeconds } from './machine-cpu.js';
import { figure, measurement, ratiosByRound, summarize, type Figure, type Measurement, type SuiteResult } from './stats.js';
import { runWrk, WRK_SCRIPT, wrkVersion } from './wrk.js';

export const AUDIENCE = 'https://fhir.example.test';
export const CONNECTIONS = 64;
/** The service's verified-token cache in the fresh-token rounds: the token pool is larger, so every decision misses. */
const SERVICE_CACHE_ENTRIES = 256;

export const BARE_SERVER = fileURLToPath(new URL('./bare-server.js', import.meta.url));
/** What `npm start` runs: the bundled standalone host (scripts/bundle.mjs). */
export const HOST_MAIN = fileURLToPath(new URL('../bundle/main.js', import.meta.url));
const LOAD = fileURLToPath(new URL('./load.js', import.meta.url));

export interface HttpOptions {
  readonly smoke: boolean;
  readonly log: (line: string) => void;
}

interface Plan {
  readonly repeats: number;
  /** Fixed-rate rounds of each server: the noisiest figure on a shared machine gets more of them. */
  readonly halfRepeats: number;
  readonly warmupSeconds: number;
  readonly durationSeconds: number;
  readonly freshPool: number;
  readonly cachedPool: number;
  /** Rounds of metrics on vs off, each with a fresh pair of host processes. */
  readonly metricsRepeats: number;
}

const FULL: Plan = { repeats: 5, halfRepeats: 7, warmupSeconds: 1, durationSeconds: 5, freshPool: 4096, cachedPool: CONNECTIONS, metricsRepeats: 5 };
const SMOKE: Plan = { repeats: 1, halfRepeats: 1, warmupSeconds: 0.1, durationSeconds: 0.3, freshPool: 1280, cachedPool: CONNECTIONS, metricsRepeats: 1 };
/**
 * A token comes back after `freshPool` bodies; between, up to CONNECTIONS are still in flight (not yet
 * cached), and a connection that autocannon opens late sends the body it built at start-up hundreds
 * of requests after its neighbours. The rest must outnumber the cache for every decision to miss.
 */
const MIN_FRESH_POOL = 4 * SERVICE_CACHE_ENTRIES + 4 * CONNECTIONS;

/** `npm start` in a child; `nodeArgs` go before the script (e.g. --cpu-prof to profile the host under load). */
export function startHostProcess(env: Record<string, string>, nodeArgs: readonly string[] = []): Promise<RunningChild> {
  return startNode([...nodeArgs, HOST_MAIN], {
    env: cleanEnv({ PORT: '0', PDP_HOST: '127.0.0.1', ...env }),
    stream: 'stderr',
    pattern: /(http:\/\/127\.0\.0\.1:\d+)/,
    discardStdout: true,
  });
}

export function startBareServer(): Promise<RunningChild> {
  return startNode([BARE_SERVER], { env: cleanEnv({}), stream: 'stdout', pattern: /listening (http:\/\/127\.0\.0\.1:\d+)/ });
}

export function decideBody(token: string): string {
  return JSON.stringify({ method: 'GET', path: '/Patient/123', headers: { authorization: `Bearer ${token}` } });
}

/** One JSON-mode question; resolves the decision's reason. */
export async function askDecision(baseUrl: string, token: string): Promise<string> {
  const res = await fetch(`${baseUrl}/api/decide`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: decideBody(token) });
  const body = (await res.json()) as { reason?: string };
  return body.reason ?? `http ${res.status}`;
}

async function runLoad(dir: string, job: LoadJob): Promise<LoadResult> {
  const jobFile = join(dir, `job-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(jobFile, JSON.stringify(job));
  const child = spawn(process.execPath, [LOAD, jobFile], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv({}) });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
  child.stderr.setEncoding('utf8').on('data', (t: string) => (err = (err + t).slice(-4000)));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const line = out.split('\n').find((l) => l.startsWith('RESULT '));
  if (code !== 0 || !line) throw new Error(`load generator failed (exit ${code}): ${err}`);
  return JSON.parse(line.slice('RESULT '.length)) as LoadResult;
}

async function counters(baseUrl: string): Promise<{ hit: number; miss: number }> {
  const res = await fetch(`${baseUrl}/api/health`);
  const body = (await res.json()) as { counters?: Record<string, number> };
  return { hit: body.counters?.token_cache_hit ?? 0, miss: body.counters?.token_cache_miss ?? 0 };
}

/**
 * CPU seconds (user + system, all threads) a process has used, from /proc (Linux; clock ticks of
 * 1/100 s). CPU per request moves far less than requests/s when other work shares the machine.
 */
async function cpuSeconds(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  try {
    return processCpuSeconds(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * One load.ts run against the server process `pid`: its result, and the server's CPU per request
 * answered over the run (warm-up included, as `answered` is), undefined without /proc. A failed
 * request or no answer at all is an error named `label`.
 */
async function loadRound(dir: string, pid: number | undefined, job: LoadJob, label: string): Promise<{ result: LoadResult; cpuPerRequest?: number }> {
  const before = await cpuSeconds(pid);
  const result = await runLoad(dir, job);
  const after = await cpuSeconds(pid);
  if (failuresOf(result) > 0 || result.completed === 0) throw new Error(`${label}: ${JSON.stringify(result.failures)} failed requests, ${result.completed} answered`);
  if (before === undefined || after === undefined) return { result };
  return { result, cpuPerRequest: ((after - before) * 1e6) / Math.max(1, result.answered) };
}

/**
 * A pair of fixed-rate rounds at one rate in a line: each server's p99, and what explains a high one
 * (the sender's own lateness, p99; the server's longest silence; the sender's longest stall), then
 * the ratio the target is judged on.
 */
function fixedRatePair(bare: LoadResult, cached: LoadResult): string {
  const f = (v: number | undefined): string => (v === undefined ? '?' : v.toFixed(2));
  const side = (r: LoadResult): string => `${f(r.p99Ms)} ms (sender late ${f(r.senderLateP99Ms)}, silent ≤ ${f(r.longestSilenceMs)}, sender stalled ≤ ${f(r.senderLongestStallMs)})`;
  return `bare ${side(bare)}, cached ${side(cached)}: ${(cached.p99Ms / bare.p99Ms).toFixed(2)}×`;
}

function failuresOf(r: LoadResult): number {
  return r.failures.non2xx + r.failures.errors + r.failures.timeouts + r.failures.mismatches;
}

type Scenario = 'bare' | 'cached' | 'fresh';

export async function runHttp(options: HttpOptions): Promise<SuiteResult> {
  const plan = options.smoke ? SMOKE : FULL;
  if (plan.freshPool < MIN_FRESH_POOL) throw new Error(`freshPool must be at least ${MIN_FRESH_POOL}`);
  const dir = await mkdtemp(join(tmpdir(), 'fhir-pdp-bench-'));
  const idp = await DevIdentityProvider.start();
  const children: RunningChild[] = [];
  const notes: string[] = [];
  try {
    options.log(`http: minting ${plan.cachedPool + plan.freshPool} tokens`);
    const bodies: string[] = [];
    for (let i = 0; i < plan.cachedPool + plan.freshPool; i++) bodies.push(decideBody(await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation' })));
    // Disjoint pools: a fresh round must never meet a token a cached round left in the cache.
    const cached = bodies.slice(0, plan.cachedPool);
    const fresh = bodies.slice(plan.cachedPool);
    const files: Record<Scenario, string> = { bare: join(dir, 'bare.json'), cached: join(dir, 'cached.json'), fresh: join(dir, 'fresh.json') };
    await writeFile(files.bare, JSON.stringify(cached));
    await writeFile(files.cached, JSON.stringify(cached));
    await writeFile(files.fresh, JSON.stringify(fresh));
    const wrk = await wrkVersion();
    const wrkFiles = { script: join(dir, 'decide.lua'), bodies: join(dir, 'cached.lines') };
    await writeFile(wrkFiles.script, WRK_SCRIPT);
    await writeFile(wrkFiles.bodies, cached.join('\n'));

    const config = {
      authority: idp.authority,
      audience: AUDIENCE,
      accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }],
      tokenCacheMaxEntries: SERVICE_CACHE_ENTRIES,
    };
    const bare = await startBareServer();
    children.push(bare);
    const host = await startHostProcess({ PDP_CONFIG: JSON.stringify(config), PDP_LOG_DECISIONS: 'true' });
    children.push(host);
    const urls: Record<Scenario, string> = { bare: `${bare.match[1]}/api/decide`, cached: `${host.match[1]}/api/decide`, fresh: `${host.match[1]}/api/decide` };
    const hostUrl = host.match[1]!;
    const first = await askDecision(hostUrl, JSON.parse(cached[0]!).headers.authorization.slice('Bearer '.length));
    if (first !== 'allowed') throw new Error(`the host did not allow the first decision: ${first}`);

    const cursor: Record<Scenario, number> = { bare: 0, cached: 0, fresh: 0 };
    const freshHits: number[] = [];
    const pids: Record<Scenario, number | undefined> = { bare: bare.child.pid, cached: host.child.pid, fresh: host.child.pid };
    const cpuPerRequest: Record<Scenario, number[]> = { bare: [], cached: [], fresh: [] };
    /** The host's cache counters over a round: a cached round that verified, or a fresh round that hit, measured the wrong thing. */
    const checkCache = async (s: Scenario, before: { hit: number; miss: number } | undefined): Promise<void> => {
      if (!before) return;
      const after = await counters(hostUrl);
      const hits = after.hit - before.hit;
      const misses = after.miss - before.miss;
      // The fresh pool cycles through more tokens than the cache holds: a hit would mean the round measured the cache.
      if (s === 'fresh') freshHits.push(hits / Math.max(1, hits + misses));
      if (s === 'fresh' && hits > 2 * CONNECTIONS) throw new Error(`fresh: ${hits} cache hits; the pool must exceed the cache`);
      if (s === 'cached' && misses > 2 * CONNECTIONS) throw new Error(`cached: ${misses} cache misses`);
    };
    const round = async (s: Scenario, overallRate?: number): Promise<LoadResult> => {
      const before = s === 'bare' ? undefined : await counters(hostUrl);
      const job: LoadJob = {
        url: urls[s],
        connections: CONNECTIONS,
        warmupSeconds: plan.warmupSeconds,
        durationSeconds: plan.durationSeconds,
        ...(overallRate ? { overallRate } : {}),
        bodiesFile: files[s],
        startAt: cursor[s],
        expectInBody: '"decision":"allow"',
      };
      const { result: r, cpuPerRequest: cpu } = await loadRound(dir, pids[s], job, s);
      cursor[s] += r.sent;
      if (!overallRate && cpu !== undefined) cpuPerRequest[s].push(cpu);
      await checkCache(s, before);
      options.log(`http: ${s}${overallRate ? ` @${Math.round(overallRate)}/s` : ''}: ${Math.round(r.requestsPerSecond)} req/s, p50 ${r.p50Ms.toFixed(2)} ms, p99 ${r.p99Ms.toFixed(2)} ms`);
      return r;
    };
    // In JSON mode only an allow is a 200, so wrk's count of other statuses is the check autocannon's verifyBody makes.
    const wrkRound = async (s: 'bare' | 'cached'): Promise<number> => {
      const before = s === 'bare' ? undefined : await counters(hostUrl);
      const job = { url: urls[s], connections: CONNECTIONS, scriptFile: wrkFiles.script, bodiesFile: wrkFiles.bodies };
      const warm = plan.warmupSeconds >= 1 ? await runWrk({ ...job, seconds: plan.warmupSeconds }) : undefined;
      const r = await runWrk({ ...job, seconds: plan.durationSeconds });
      if (r.failures + (warm?.failures ?? 0) > 0 || r.requests === 0) throw new Error(`wrk ${s}: ${r.failures + (warm?.failures ?? 0)} failed requests, ${r.requests} answered`);
      await checkCache(s, before);
      options.log(`http: wrk ${s}: ${Math.round(r.requestsPerSecond)} req/s`);
      return r.requestsPerSecond;
    };

    const peak: Record<Scenario, LoadResult[]> = { bare: [], cached: [], fresh: [] };
    const wrkPeak: Record<'bare' | 'cached', number[]> = { bare: [], cached: [] };
    for (let r = 0; r < plan.repeats; r++) {
      // A B A C: every service round sits between two rounds of the bare server; then A B with wrk.
      for (const s of ['bare', 'cached', 'bare', 'fresh'] as const) peak[s].push(await round(s));
      if (wrk) for (const s of ['bare', 'cached'] as const) wrkPeak[s].push(await wrkRound(s));
    }
    // Half of the service's own peak: wrk's when it ran, since autocannon's CPU caps what it measures.
    const servicePeak = summarize(wrk ? wrkPeak.cached : peak.cached.map((x) => x.requestsPerSecond)).median;
    const halfRate = Math.max(CONNECTIONS, Math.round(servicePeak / 2));
    const half: Record<'bare' | 'cached', LoadResult[]> = { bare: [], cached: [] };
    for (let r = 0; r < plan.halfRepeats; r++) for (const s of ['bare', 'cached'] as const) half[s].push(await round(s, halfRate));

    // Metrics on vs off: CPU per cached decision of the host as it runs, at the same fixed rate.
    // Each round starts a fresh pair of processes (order alternating): a host process can be a few
    // per cent slower than another for its whole life (bench/PROFILE.md, sixth pass), which one
    // pair of long-lived processes would put on one side only.
    const metricsCpu: Record<'on' | 'off', number[]> = { on: [], off: [] };
    for (let r = 0; r < plan.metricsRepeats; r++) {
      for (const side of r % 2 === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const)) {
        const pair = await startHostProcess({ PDP_CONFIG: JSON.stringify(config), PDP_LOG_DECISIONS: 'true', ...(side === 'off' ? { PDP_METRICS: 'off' } : {}) });
        try {
          const url = `${pair.match[1]}/api/decide`;
          const job: LoadJob = { url, connections: CONNECTIONS, warmupSeconds: plan.warmupSeconds, durationSeconds: plan.durationSeconds, overallRate: halfRate, bodiesFile: files.cached, startAt: 0, expectInBody: '"decision":"allow"' };
          // Warmed at the same rate first: JIT, caches and the token cache filled before the CPU is counted.
          await loadRound(dir, undefined, { ...job, durationSeconds: plan.warmupSeconds }, `metrics ${side} warm-up`);
          const { cpuPerRequest: cpu } = await loadRound(dir, pair.child.pid, job, `metrics ${side}`);
          if (cpu === undefined) throw new Error(`metrics ${side}: no CPU time for the host process`);
          const cache = await counters(pair.match[1]!);
          if (cache.miss > 2 * CONNECTIONS) throw new Error(`metrics ${side}: ${cache.miss} cache misses in a cached-token round`);
          metricsCpu[side].push(cpu);
          options.log(`http: metrics ${side} @${halfRate}/s: ${metricsCpu[side].at(-1)!.toFixed(1)} µs CPU per request`);
        } finally {
          await pair.stop();
        }
      }
    }

    const rps = (id: string, label: string, rs: LoadResult[]): Measurement => measurement(id, label, 'req/s', 'higher', rs.map((x) => x.requestsPerSecond));
    const ms = (id: string, label: string, rs: LoadResult[], which: 'p50Ms' | 'p99Ms' | 'senderLateP99Ms'): Measurement =>
      measurement(id, label, 'ms', 'lower', rs.map((x) => x[which] ?? Number.NaN));
    const m = {
      bareRps: rps('bare-rps', 'bare node:http, requests/s (autocannon)', peak.bare),
      cachedRps: rps('cached-rps', 'decide, cached tokens, requests/s (autocannon)', peak.cached),
      freshRps: rps('fresh-rps', 'decide, fresh tokens, requests/s (autocannon)', peak.fresh),
      ...(wrk
        ? {
            wrkBareRps: measurement('wrk-bare-rps', 'bare node:http, requests/s (wrk)', 'req/s', 'higher', wrkPeak.bare),
            wrkCachedRps: measurement('wrk-cached-rps', 'decide, cached tokens, requests/s (wrk)', 'req/s', 'higher', wrkPeak.cached),
          }
        : {}),
      bareP50: ms('bare-p50', 'bare node:http, p50 at peak', peak.bare, 'p50Ms'),
      bareP99: ms('bare-p99', 'bare node:http, p99 at peak', peak.bare, 'p99Ms'),
      cachedP50: ms('cached-p50', 'decide, cached tokens, p50 at peak', peak.cached, 'p50Ms'),
      cachedP99: ms('cached-p99', 'decide, cached tokens, p99 at peak', peak.cached, 'p99Ms'),
      freshP50: ms('fresh-p50', 'decide, fresh tokens, p50 at peak', peak.fresh, 'p50Ms'),
      freshP99: ms('fresh-p99', 'decide, fresh tokens, p99 at peak', peak.fresh, 'p99Ms'),
      halfBareP50: ms('half-bare-p50', `bare node:http, p50 at ${halfRate} req/s`, half.bare, 'p50Ms'),
      halfBareP99: ms('half-bare-p99', `bare node:http, p99 at ${halfRate} req/s`, half.bare, 'p99Ms'),
      halfCachedP50: ms('half-cached-p50', `decide, cached tokens, p50 at ${halfRate} req/s`, half.cached, 'p50Ms'),
      halfCachedP99: ms('half-cached-p99', `decide, cached tokens, p99 at ${halfRate} req/s`, half.cached, 'p99Ms'),
      halfBareSenderLate: ms('half-bare-sender-late-p99', `load generator's own lateness (p99) in the bare rounds at ${halfRate} req/s`, half.bare, 'senderLateP99Ms'),
      halfCachedSenderLate: ms('half-cached-sender-late-p99', `load generator's own lateness (p99) in the cached rounds at ${halfRate} req/s`, half.cached, 'senderLateP99Ms'),
      metricsOnCpu: measurement('metrics-on-cpu', `decide, cached tokens, metrics on, server CPU per request at ${halfRate} req/s`, 'µs', 'lower', metricsCpu.on),
      metricsOffCpu: measurement('metrics-off-cpu', `decide, cached tokens, metrics off (PDP_METRICS=off), server CPU per request at ${halfRate} req/s`, 'µs', 'lower', metricsCpu.off),
      ...(cpuPerRequest.bare.length && cpuPerRequest.cached.length && cpuPerRequest.fresh.length
        ? {
            bareCpu: measurement('bare-cpu', 'bare node:http, server CPU per request', 'µs', 'lower', cpuPerRequest.bare),
            cachedCpu: measurement('cached-cpu', 'decide, cached tokens, server CPU per request', 'µs', 'lower', cpuPerRequest.cached),
            freshCpu: measurement('fresh-cpu', 'decide, fresh tokens, server CPU per request (all threads)', 'µs', 'lower', cpuPerRequest.fresh),
          }
        : {}),
    };
    const figures: Figure[] = [figure('decide (cached tokens) vs bare node:http, requests/s (autocannon)', m.cachedRps, m.bareRps)];
    if (m.wrkCachedRps && m.wrkBareRps)
      figures.push(
        figure('decide (cached tokens) vs bare node:http, requests/s (wrk)', m.wrkCachedRps, m.wrkBareRps, { text: '≥ 0.5× (median of per-round ratios)', met: (r) => r >= 0.5 }, ratiosByRound(wrkPeak.cached, wrkPeak.bare)),
      );
    figures.push(
      figure('decide (fresh tokens) vs bare node:http, requests/s (autocannon)', m.freshRps, m.bareRps),
      figure('decide (cached tokens) vs bare, p50 at peak', m.cachedP50, m.bareP50),
      figure('decide (cached tokens) vs bare, p99 at peak', m.cachedP99, m.bareP99),
      figure('decide (fresh tokens) vs bare, p50 at peak', m.freshP50, m.bareP50),
      figure('decide (fresh tokens) vs bare, p99 at peak', m.freshP99, m.bareP99),
      figure(`decide (cached tokens) vs bare, p50 at half of the service's peak (${halfRate} req/s)`, m.halfCachedP50, m.halfBareP50),
      figure(
        `decide (cached tokens) vs bare, p99 at half of the service's peak (${halfRate} req/s)`,
        m.halfCachedP99,
        m.halfBareP99,
        { text: '≤ 2× (median of per-round ratios)', met: (r) => r <= 2 },
        ratiosByRound(half.cached.map((x) => x.p99Ms), half.bare.map((x) => x.p99Ms)),
      ),
    );
    if (m.bareCpu && m.cachedCpu && m.freshCpu)
      figures.push(
        figure('server CPU per request: decide (cached tokens) vs bare', m.cachedCpu, m.bareCpu),
        figure('server CPU per request: decide (fresh tokens) vs bare', m.freshCpu, m.bareCpu),
      );
    figures.push(
      figure(
        `server CPU per cached decision at ${halfRate} req/s: metrics on vs off`,
        m.metricsOnCpu,
        m.metricsOffCpu,
        { text: '≤ 1.05× (median of per-round ratios)', met: (r) => r <= 1.05 },
        ratiosByRound(metricsCpu.on, metricsCpu.off),
      ),
    );
    notes.push(`Rounds at ${halfRate} req/s, in order (p99; in parentheses the load generator's own lateness p99, the server's longest silence and the generator's longest stall, ms): ${half.cached.map((c, i) => fixedRatePair(half.bare[i]!, c)).join('. ')}.`);
    if (!wrk)
      notes.push('wrk is not installed (no `wrk` on PATH): its peak rounds and the target "cached ≥ 0.5× bare with wrk" were skipped, and half of the service\'s peak is autocannon\'s. Debian: `apt-get install wrk`.');
    notes.push(`Fresh-token rounds: at most ${(Math.max(...freshHits) * 100).toFixed(2)}% of decisions were cache hits (first requests of connections autocannon opened late).`);
    return {
      suite: 'http',
      title: 'Over HTTP on loopback (autocannon, wrk)',
      method: [
        `${CONNECTIONS} keep-alive connections; at peak, autocannon ${plan.warmupSeconds} s warm-up then ${plan.durationSeconds} s measured, in a process of its own; server and service in processes of their own.`,
        wrk
          ? `Peak also with ${wrk} (C, one thread, a Lua script cycling pre-built requests; ${plan.warmupSeconds >= 1 ? `${plan.warmupSeconds} s warm-up, ` : ''}${Math.max(1, Math.round(plan.durationSeconds))} s measured): on 2 cores autocannon's own CPU caps the bare server and flatters every ratio to it.`
          : 'Peak with wrk: skipped, wrk is not installed.',
        `Rounds alternate bare, cached, bare, fresh with autocannon${wrk ? ', then bare, cached with wrk' : ''} (${plan.repeats}×), then bare and cached at a fixed ${halfRate} req/s, half of the service's cached peak (${wrk ? 'wrk' : 'autocannon'}), ${plan.halfRepeats}×, sent open-loop at even intervals by load.ts (autocannon's overallRate spends each connection's per-second quota in a burst, which is peak load again; see bench/README.md).`,
        "Fixed-rate latency counts from when each request was due (wrk2's model, no coordinated omission), so it includes the load generator's own lateness, which on 2 cores shared with the servers no run can rule out: the p99 target is therefore the service's p99 over bare node:http's at the same rate, within each pair of rounds, median over the pairs.",
        'Every request is POST /api/decide with a JSON question (GET /Patient/123, Authorization: Bearer); the bare server reads the same body and answers a fixed decision-shaped JSON.',
        `Cached: ${plan.cachedPool} tokens cycled. Fresh: ${plan.freshPool} distinct tokens cycled against a service whose token cache holds ${SERVICE_CACHE_ENTRIES}, so every decision verifies (checked through /api/health counters).`,
        'The service runs `npm start` (dist/bundle/main.js) with PDP_LOG_DECISIONS=true (the default; stdout to /dev/null).',
        'Server CPU per request: user + system time of the server process (all threads, /proc/<pid>/stat) over an autocannon peak round, divided by the requests it answered; it moves less than requests/s when the machine is shared.',
        `Metrics on vs off: ${plan.metricsRepeats} rounds, each starting a fresh host with metrics on (the default) and one with PDP_METRICS=off, in alternating order; each is warmed for ${plan.warmupSeconds} s, then sent cached-token questions at a fixed ${halfRate} req/s for ${plan.warmupSeconds} + ${plan.durationSeconds} s (load.ts), and its CPU over that run is divided by the requests it answered.`,
        `Every answer must be 200 with "decision":"allow"${wrk ? ' (wrk: 200, which in JSON mode only an allow is)' : ''}; p50/p99 are exact percentiles of every response time of the measured period (autocannon's own histogram counts whole ms).`,
      ],
      measurements: Object.values(m),
      figures,
      notes,
    };
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    await idp.close();
    await rm(dir, { recursive: true, force: true });
  }
}
