/**
 * Scale: a configuration listing 100k object ids and a snapshot whose group index holds 1M
 * memberships. Decide latency against a small configuration (O(1) lookups: no change expected),
 * heap of the loaded state, encode/decode time of the Blob-format snapshot, and cold start of the
 * standalone host to its first allowed decision with a warm snapshot.
 *
 * The measurements that need a clean heap run in a child (`node --expose-gc scale.js --child`), so
 * nothing the parent holds counts. Cold start shares a snapshot across processes through Blob
 * Storage: Azurite (the repository's dev dependency) on loopback, seeded by a PdpService of the
 * parent exactly as the refresh timer would; the host then starts with PDP_SNAPSHOT_STORE=blob.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseConfig } from '../src/config/load.js';
import type { PdpConfigInput } from '../src/config/schema.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../testkit/dev-idp.js';
import { PdpService } from '../src/app.js';
import { BlobSnapshotStore } from '../src/state/blob-store.js';
import { decodeSnapshot, encodeSnapshot, newRevision, DEFAULT_SNAPSHOT_MAX_BYTES } from '../src/state/codec.js';
import { MemorySnapshotStore } from '../src/state/memory-store.js';
import { SnapshotSignature } from '../src/state/snapshot-signature.js';
import { SNAPSHOT_SCHEMA_VERSION, type GroupRecord, type IssuerRecord, type SnapshotData } from '../src/state/types.js';
import { startAzurite } from '../testkit/azurite.js';
import { cleanEnv, type RunningChild } from '../testkit/child.js';
import { askDecision, startBareServer, startHostProcess } from './http.js';
import { bearerHeader, decisionInput } from './in-process.js';
import { figure, measurement, throughput, type Measurement, type SuiteResult } from './stats.js';

export const AUDIENCE = 'https://fhir.example.test';

export interface ScaleOptions {
  readonly smoke: boolean;
  readonly log: (line: string) => void;
}

interface Plan {
  readonly listedIds: number;
  readonly groups: number;
  readonly membersPerGroup: number;
  readonly repeats: number;
  /** Time per latency sample (decisions one after another). */
  readonly latencyMs: number;
  readonly coldStarts: number;
}

const FULL: Plan = { listedIds: 100_000, groups: 1_000, membersPerGroup: 1_000, repeats: 5, latencyMs: 400, coldStarts: 5 };
const SMOKE: Plan = { listedIds: 10_000, groups: 100, membersPerGroup: 1_000, repeats: 2, latencyMs: 40, coldStarts: 1 };

/** A GUID that encodes (kind, n), so ids are distinct, deterministic and valid object ids. */
export function syntheticObjectId(kind: 'user' | 'group' | 'member', n: number): string {
  const k = kind === 'user' ? 'a' : kind === 'group' ? 'b' : 'c';
  return `${k}${n.toString(16).padStart(7, '0')}-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;
}

interface ChildSamples {
  readonly sizes: { listedIds: number; groups: number; memberships: number; snapshotBytes: number };
  readonly encodeMs: number[];
  readonly stringifyMs: number[];
  readonly decodeMs: number[];
  readonly parseMs: number[];
  readonly serviceStartMs: number[];
  readonly heapTotalMb: number[];
  readonly heapSnapshotMb: number[];
  readonly latencyUs: { smallDirect: number[]; bigDirect: number[]; smallGroup: number[]; bigGroup: number[] };
}

function heapAfterGc(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run the scale child with --expose-gc');
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

const MB = 1024 * 1024;

function timed<T>(work: () => T): { value: T; ms: number } {
  const t0 = performance.now();
  const value = work();
  return { value, ms: performance.now() - t0 };
}

async function child(plan: Plan): Promise<ChildSamples> {
  const idp = await DevIdentityProvider.start();
  try {
    const directOid = DEV_OBJECT_ID;
    const groupIds = Array.from({ length: plan.groups }, (_, g) => syntheticObjectId('group', g));
    // The member the group principal is: in a group in the middle of the list, listed nowhere itself.
    const groupMember = syntheticObjectId('member', Math.floor(plan.groups / 2) * plan.membersPerGroup + 7);
    const tokens = {
      direct: await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', oid: directOid }),
      group: await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', oid: groupMember }),
    };

    const configInput = (listed: readonly string[]): PdpConfigInput => ({
      authority: idp.authority,
      audience: AUDIENCE,
      accessPolicies: listed.map((objectId) => ({ objectId, dataActions: ['read'] })),
    });
    // Issuer records as a refresh writes them, so the snapshot is warm: no authority is contacted.
    const seed = new PdpService({ config: parseConfig(configInput([directOid])), store: new MemorySnapshotStore() });
    await seed.start();
    const issuers: IssuerRecord[] = seed.pdp.registry.records();
    seed.stop();

    const snapshotOf = (groups: readonly string[], memberBase: (g: number) => number): SnapshotData => {
      const records: Record<string, GroupRecord> = {};
      const now = Date.now();
      groups.forEach((id, g) => {
        records[id] = { members: Array.from({ length: plan.membersPerGroup }, (_, i) => syntheticObjectId('member', memberBase(g) + i)), fetchedAt: now };
      });
      return { schemaVersion: SNAPSHOT_SCHEMA_VERSION, revision: newRevision(), createdAt: now, issuers, groups: records };
    };
    const bigListed = [directOid, ...groupIds, ...Array.from({ length: plan.listedIds - 1 - plan.groups }, (_, i) => syntheticObjectId('user', i))];
    const smallGroup = groupIds[Math.floor(plan.groups / 2)]!;
    const smallListed = [directOid, smallGroup];

    // --- encode / decode of the Blob-format snapshot, against JSON.stringify / JSON.parse of the same data.
    let bigBytes: Buffer;
    const encodeMs: number[] = [];
    const stringifyMs: number[] = [];
    const decodeMs: number[] = [];
    const parseMs: number[] = [];
    {
      const data = snapshotOf(groupIds, (g) => g * plan.membersPerGroup);
      bigBytes = encodeSnapshot(data);
      const text = JSON.stringify(data);
      for (let r = 0; r < plan.repeats; r++) {
        encodeMs.push(timed(() => encodeSnapshot(data)).ms);
        stringifyMs.push(timed(() => JSON.stringify(data)).ms);
        decodeMs.push(timed(() => decodeSnapshot(bigBytes, DEFAULT_SNAPSHOT_MAX_BYTES)).ms);
        parseMs.push(timed(() => JSON.parse(text) as unknown).ms);
      }
    }
    const smallBytes = encodeSnapshot(snapshotOf([smallGroup], () => (plan.groups / 2) * plan.membersPerGroup));

    // --- heap: what a running service holds for the large configuration and snapshot.
    const heapTotalMb: number[] = [];
    const heapSnapshotMb: number[] = [];
    const serviceStartMs: number[] = [];
    const serviceFor = async (listed: readonly string[], bytes: Buffer): Promise<{ service: PdpService; beforeStart: number; startMs: number }> => {
      const store = new MemorySnapshotStore();
      store.writeRawBytes(bytes);
      const service = new PdpService({ config: parseConfig(configInput(listed)), store });
      const beforeStart = heapAfterGc();
      const t0 = performance.now();
      await service.start();
      return { service, beforeStart, startMs: performance.now() - t0 };
    };
    // One call per sample: an async function's frame keeps its locals alive across awaits, so a
    // service of the previous sample would otherwise still be reachable when `empty` is taken.
    const heapSample = async (): Promise<void> => {
      const empty = heapAfterGc();
      const { service, beforeStart, startMs } = await serviceFor(bigListed, bigBytes);
      const loaded = heapAfterGc();
      heapTotalMb.push((loaded - empty) / MB);
      heapSnapshotMb.push((loaded - beforeStart) / MB);
      serviceStartMs.push(startMs);
      if (service.pdp.groups.memberships !== plan.groups * plan.membersPerGroup) throw new Error('scale: the group index did not load');
      service.stop();
    };
    for (let r = 0; r < Math.min(plan.repeats, 3); r++) await heapSample();

    // --- decide latency, one decision at a time, small and large state alternating.
    const small = (await serviceFor(smallListed, smallBytes)).service;
    const big = (await serviceFor(bigListed, bigBytes)).service;
    const one = (s: PdpService, token: string) => {
      const authorization = bearerHeader(token);
      return async (): Promise<void> => {
        const d = await s.pdp.decide(decisionInput(authorization));
        if (d.reason !== 'allowed') throw new Error(`scale: ${d.reason} (${d.hint ?? ''})`);
      };
    };
    const cases = {
      smallDirect: one(small, tokens.direct),
      bigDirect: one(big, tokens.direct),
      smallGroup: one(small, tokens.group),
      bigGroup: one(big, tokens.group),
    };
    const latencyUs = { smallDirect: [] as number[], bigDirect: [] as number[], smallGroup: [] as number[], bigGroup: [] as number[] };
    for (const op of Object.values(cases)) await throughput(op, 1, plan.latencyMs / 2);
    for (let r = 0; r < plan.repeats; r++) {
      for (const [name, op] of Object.entries(cases) as Array<[keyof typeof cases, () => Promise<void>]>) {
        const { opsPerSecond } = await throughput(op, 1, plan.latencyMs);
        latencyUs[name].push(1e6 / opsPerSecond);
      }
    }
    small.stop();
    big.stop();
    return {
      sizes: { listedIds: bigListed.length, groups: plan.groups, memberships: plan.groups * plan.membersPerGroup, snapshotBytes: bigBytes.byteLength },
      encodeMs,
      stringifyMs,
      decodeMs,
      parseMs,
      serviceStartMs,
      heapTotalMb,
      heapSnapshotMb,
      latencyUs,
    };
  } finally {
    await idp.close();
  }
}

async function runChild(smoke: boolean, log: (line: string) => void): Promise<ChildSamples> {
  const self = fileURLToPath(import.meta.url);
  const proc = spawn(process.execPath, ['--expose-gc', self, '--child', smoke ? 'smoke' : 'full'], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv({}) });
  let out = '';
  let err = '';
  proc.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
  proc.stderr.setEncoding('utf8').on('data', (t: string) => {
    err = (err + t).slice(-4000);
    for (const line of t.split('\n')) if (line.startsWith('scale:')) log(line);
  });
  const code = await new Promise<number | null>((resolve) => proc.once('exit', resolve));
  const line = out.split('\n').find((l) => l.startsWith('RESULT '));
  if (code !== 0 || !line) throw new Error(`scale child failed (exit ${code}): ${err}`);
  return JSON.parse(line.slice('RESULT '.length)) as ChildSamples;
}

interface ColdStarts {
  readonly warmMs: number[];
  readonly warmListeningMs: number[];
  readonly noSnapshotMs: number[];
  readonly noSnapshotListeningMs: number[];
  readonly bareMs: number[];
  /** Requests the host made to the authority during the warm starts (0: the snapshot was used). */
  readonly authorityRequestsWarm: number;
}

/**
 * Spawn to first allowed decision (asked as soon as the host prints its address, again until
 * allowed), and spawn to that address line.
 */
async function coldStart(env: Record<string, string>, token: string): Promise<{ decidedMs: number; listeningMs: number }> {
  const host = await startHostProcess(env);
  try {
    for (let attempt = 0; attempt < 200; attempt++) {
      const reason = await askDecision(host.match[1]!, token);
      if (reason === 'allowed') return { decidedMs: performance.now() - host.spawnedAt, listeningMs: host.matchedAt - host.spawnedAt };
    }
    throw new Error('cold start: no allowed decision after 200 attempts');
  } finally {
    await host.stop();
  }
}

async function coldStarts(plan: Plan, log: (line: string) => void): Promise<ColdStarts> {
  const idp = await DevIdentityProvider.start();
  const azurite = await startAzurite();
  try {
    const token = await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation' });
    const config = { authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }] };
    // Signed as production needs it: the host verifies the snapshot before it serves from it.
    const signingSecret = randomBytes(32);
    const signature = SnapshotSignature.fromHmacKeys([{ kid: 'bench', secret: signingSecret }]);
    const store = new BlobSnapshotStore({ connectionString: azurite.connectionString, signature });
    const seeder = new PdpService({ config: parseConfig(config), store });
    await seeder.start();
    seeder.stop();
    const blobEnv = {
      PDP_CONFIG: JSON.stringify(config),
      PDP_LOG_DECISIONS: 'true',
      PDP_SNAPSHOT_STORE: 'blob',
      PDP_SNAPSHOT_CONNECTION: azurite.connectionString,
      PDP_SNAPSHOT_SIGNING_KEYS: `bench:${signingSecret.toString('base64')}`,
    };
    const memoryEnv = { PDP_CONFIG: JSON.stringify(config), PDP_LOG_DECISIONS: 'true' };
    const out: ColdStarts = { warmMs: [], warmListeningMs: [], noSnapshotMs: [], noSnapshotListeningMs: [], bareMs: [], authorityRequestsWarm: 0 };
    let authorityRequests = 0;
    for (let r = 0; r < plan.coldStarts; r++) {
      const bare: RunningChild = await startBareServer();
      const res = await fetch(bare.match[1]!, { method: 'POST', body: '{}' });
      await res.arrayBuffer();
      out.bareMs.push(performance.now() - bare.spawnedAt);
      await bare.stop();
      const before = idp.requestCount();
      const warm = await coldStart(blobEnv, token);
      authorityRequests += idp.requestCount() - before;
      const none = await coldStart(memoryEnv, token);
      out.warmMs.push(warm.decidedMs);
      out.warmListeningMs.push(warm.listeningMs);
      out.noSnapshotMs.push(none.decidedMs);
      out.noSnapshotListeningMs.push(none.listeningMs);
      log(`scale: cold start ${r + 1}/${plan.coldStarts}: warm snapshot ${Math.round(out.warmMs.at(-1)!)} ms, no snapshot ${Math.round(out.noSnapshotMs.at(-1)!)} ms, bare node ${Math.round(out.bareMs.at(-1)!)} ms`);
    }
    return { ...out, authorityRequestsWarm: authorityRequests };
  } finally {
    await azurite.stop();
    await idp.close();
  }
}

export async function runScale(options: ScaleOptions): Promise<SuiteResult> {
  const plan = options.smoke ? SMOKE : FULL;
  options.log(`scale: ${plan.listedIds} listed ids, ${plan.groups * plan.membersPerGroup} memberships (child with --expose-gc)`);
  const c = await runChild(options.smoke, options.log);
  const cold = await coldStarts(plan, options.log);
  const mb = (c.sizes.snapshotBytes / MB).toFixed(1);
  const lat = (id: string, label: string, s: number[]): Measurement => measurement(id, label, 'µs', 'lower', s);
  const ms = (id: string, label: string, s: number[]): Measurement => measurement(id, label, 'ms', 'lower', s);
  const m = {
    smallDirect: lat('latency-small-direct', 'decide, small config, listed object id', c.latencyUs.smallDirect),
    bigDirect: lat('latency-big-direct', `decide, ${c.sizes.listedIds} listed ids, listed object id`, c.latencyUs.bigDirect),
    smallGroup: lat('latency-small-group', 'decide, small config, member of a listed group (index)', c.latencyUs.smallGroup),
    bigGroup: lat('latency-big-group', `decide, ${c.sizes.listedIds} listed ids + ${c.sizes.memberships} memberships, member of a listed group`, c.latencyUs.bigGroup),
    heapTotal: measurement('heap-total', 'heap of config + compiled policy + snapshot + group index, after gc', 'MB', 'lower', c.heapTotalMb),
    heapSnapshot: measurement('heap-snapshot', 'of which snapshot + group index (service start)', 'MB', 'lower', c.heapSnapshotMb),
    snapshotSize: measurement('snapshot-size', 'stored snapshot (Blob format)', 'MB', 'lower', [c.sizes.snapshotBytes / MB]),
    encode: ms('encode', `encodeSnapshot (${mb} MB)`, c.encodeMs),
    stringify: ms('stringify', 'JSON.stringify of the same data', c.stringifyMs),
    decode: ms('decode', `decodeSnapshot (${mb} MB)`, c.decodeMs),
    parse: ms('parse', 'JSON.parse of the same data', c.parseMs),
    serviceStart: ms('service-start', 'PdpService.start(): read, decode and apply the snapshot', c.serviceStartMs),
    coldWarm: ms('cold-warm', 'npm start to first allowed decision, warm snapshot in Blob (Azurite)', cold.warmMs),
    coldWarmListen: ms('cold-warm-listen', 'npm start to listening, warm snapshot in Blob (Azurite)', cold.warmListeningMs),
    coldNone: ms('cold-none', 'npm start to first allowed decision, no snapshot (memory store)', cold.noSnapshotMs),
    coldNoneListen: ms('cold-none-listen', 'npm start to listening, no snapshot (memory store)', cold.noSnapshotListeningMs),
    coldBare: ms('cold-bare', 'bare node:http process to first answer', cold.bareMs),
  };
  const flat = (r: number): boolean => r <= 1.5;
  return {
    suite: 'scale',
    title: `Scale: ${c.sizes.listedIds.toLocaleString('en-US')} listed ids, ${c.sizes.memberships.toLocaleString('en-US')} group memberships`,
    method: [
      `Large state: ${c.sizes.listedIds} access policies (${c.sizes.groups} of them groups) and a snapshot whose groups hold ${c.sizes.memberships} memberships of distinct member ids (the worst case for memory); small state: the same principal and one group.`,
      `Latency: decisions one at a time with a cached token (GET /Patient/123, allowed), small and large state alternating, ${plan.repeats} samples of ${plan.latencyMs} ms each; a "listed" principal is granted through its own object id, a "member" through the group index.`,
      'Heap: process.memoryUsage().heapUsed after two gc() calls, in a child run with --expose-gc, before and after building a PdpService on a memory store holding the encoded snapshot (the stored bytes are off-heap and not counted).',
      'Encode/decode: src/state/codec.ts on the large snapshot, against JSON.stringify / JSON.parse of the same data in the same process.',
      `Cold start: ${plan.coldStarts}× spawn of npm start (dist/bundle/main.js) until POST /api/decide answers allowed (asked as soon as it prints its address, again until allowed); warm snapshot = PDP_SNAPSHOT_STORE=blob on Azurite, seeded by a PdpService refresh; baseline = spawn of bare-server.js until its first answer.`,
    ],
    measurements: Object.values(m),
    figures: [
      figure('decide latency, listed principal: large vs small state', m.bigDirect, m.smallDirect, { text: '≈ 1× (≤ 1.5×): O(1) lookups', met: flat }),
      figure('decide latency, group member: large vs small state', m.bigGroup, m.smallGroup, { text: '≈ 1× (≤ 1.5×): O(1) lookups', met: flat }),
      figure('heap of the loaded large state vs its stored size', m.heapTotal, m.snapshotSize, { text: 'heap < 200 MB', met: (_r, v) => v.summary.median < 200 }),
      figure('encodeSnapshot vs JSON.stringify', m.encode, m.stringify),
      figure('decodeSnapshot (load from Blob-format JSON) vs JSON.parse', m.decode, m.parse),
      figure('PdpService.start() with the large snapshot vs JSON.parse', m.serviceStart, m.parse),
      figure('cold start, warm snapshot vs bare node process', m.coldWarm, m.coldBare, { text: '< 300 ms', met: (_r, v) => v.summary.median < 300 }),
      figure('cold start, no snapshot vs bare node process', m.coldNone, m.coldBare),
      figure('cold start to listening, warm snapshot vs bare node process', m.coldWarmListen, m.coldBare),
      figure('cold start to listening, no snapshot vs bare node process', m.coldNoneListen, m.coldBare),
    ],
    notes: [
      `During the warm-snapshot cold starts the host made ${cold.authorityRequestsWarm} request(s) to the authority (0 means the first decision was served from the snapshot alone).`,
    ],
  };
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain && process.argv[2] === '--child') {
  child(process.argv[3] === 'smoke' ? SMOKE : FULL).then(
    (samples) => process.stdout.write(`RESULT ${JSON.stringify(samples)}\n`),
    (err: unknown) => {
      process.stderr.write(`scale child: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
