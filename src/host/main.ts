/**
 * `npm start`: the standalone host. Reads app settings and configuration (refusing to start, with
 * every problem listed, when either is invalid), starts the service and listens.
 */
import { pathToFileURL } from 'node:url';
import { ConfigError, loadConfigFromEnv } from '../config/load.js';
import { keyList, readSettings } from '../config/settings.js';
import { keyRefusalLogger } from '../http/key-refusals.js';
import { KeyRing } from '../http/keys.js';
import { decisionLine } from '../http/answer.js';
import { buildApp, type PdpService } from '../app.js';
import { startTelemetry, type StartTelemetryOptions } from '../telemetry/start.js';
import { createPdpServer, drainServer, listen, type DrainResult } from './server.js';

export interface StartedHost {
  readonly url: string;
  readonly service: PdpService;
  /** Writes the decision-log lines still waiting for their batch (they are written within LOG_FLUSH_MS anyway). */
  flushDecisionLog(): void;
  /**
   * Stops as a rolling deploy needs: timers stopped, no new connections, the requests in flight
   * answered (for at most PDP_DRAIN_TIMEOUT_SECONDS), idle keep-alive connections closed, the
   * decision log written.
   */
  close(): Promise<DrainResult>;
}

/** Bytes of decision lines held before a write. */
const LOG_BUFFER_BYTES = 64 * 1024;
/** Longest a decision line waits for its write. */
export const LOG_FLUSH_MS = 50;

export interface BatchedLines {
  /** Queues one line (a newline is added). */
  log(line: string): void;
  /** Writes what is queued now. */
  flush(): void;
  /** Writes what is queued, and stops: later lines are written one by one. */
  close(): void;
}

/**
 * Decision lines written in batches: every LOG_FLUSH_MS, or sooner when LOG_BUFFER_BYTES are
 * waiting. stdout to a file or a pipe is synchronous in Node and costs per write, so a write per
 * decision (or per event-loop turn, which holds one or two decisions at moderate load) costs the
 * host a large share of its CPU.
 * Each line is encoded into an off-heap buffer at once, so the strings die young: lines held as
 * strings for LOG_FLUSH_MS doubled the host's garbage-collection pauses. Lines still waiting are
 * written on close, on SIGTERM/SIGINT and at exit; a process killed outright (SIGKILL, out of
 * memory) loses at most LOG_FLUSH_MS of them.
 */
export function batchedLines(write: (chunk: Buffer) => void, flushMs = LOG_FLUSH_MS): BatchedLines {
  let buffer = Buffer.allocUnsafeSlow(LOG_BUFFER_BYTES);
  let used = 0;
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  const flush = (): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (used === 0) return;
    // The written buffer is handed over, not reused: a stream may still hold it after write returns.
    const full = buffer.subarray(0, used);
    buffer = Buffer.allocUnsafeSlow(LOG_BUFFER_BYTES);
    used = 0;
    write(full);
  };
  pendingFlushes.add(flush);
  if (!exitHooked) {
    exitHooked = true;
    process.once('exit', () => pendingFlushes.forEach((f) => f()));
  }
  return {
    log: (line) => {
      // UTF-8 takes at most 3 bytes per UTF-16 code unit.
      const most = line.length * 3 + 1;
      if (closed || most > LOG_BUFFER_BYTES) {
        flush();
        write(Buffer.from(`${line}\n`));
        return;
      }
      if (used + most > LOG_BUFFER_BYTES) flush();
      used += buffer.write(line, used);
      buffer[used++] = 0x0a;
      // The timer never keeps the process alive: the exit hook writes what is left.
      if (timer === undefined) timer = setTimeout(flush, flushMs).unref();
    },
    flush,
    close: () => {
      flush();
      closed = true;
      pendingFlushes.delete(flush);
    },
  };
}

/** One exit hook for every batched logger of the process. */
const pendingFlushes = new Set<() => void>();
let exitHooked = false;

export async function startHost(
  env: Record<string, string | undefined>,
  log: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
  telemetryOptions: StartTelemetryOptions = {},
): Promise<StartedHost> {
  const settings = readSettings(env);
  const config = loadConfigFromEnv(env);
  const keys = new KeyRing(keyList(settings.PDP_API_KEYS), keyList(settings.PDP_ADMIN_KEYS));
  // Without keys, anyone who can reach the port could ask; so bind loopback only, and say so.
  const host = settings.PDP_HOST ?? (keys.hasAnyKey ? '0.0.0.0' : '127.0.0.1');
  if (!keys.hasAnyKey && host !== '127.0.0.1' && host !== '::1' && host !== 'localhost')
    throw new ConfigError([{ path: 'PDP_HOST', message: `binding ${host} needs PDP_API_KEYS or PDP_ADMIN_KEYS` }], 'app settings');
  const decisionLog = settings.PDP_LOG_DECISIONS === 'true' ? batchedLines((chunk) => process.stdout.write(chunk)) : undefined;
  // Before the service: Azure Monitor, when configured, registers the providers its spans use.
  const telemetry = await startTelemetry(env, telemetryOptions);
  const service = buildApp(env, config, {
    telemetry,
    ...(decisionLog ? { logger: (event, decision) => decisionLog.log(decisionLine(event, decision.principal)) } : {}),
  });
  // A stored snapshot (Blob) is read before the first request: a warm instance then decides
  // without contacting any authority. Without one, the first refresh runs after listening.
  await service.loadStored();
  const server = createPdpServer(service, { keys, loopbackOnly: !keys.hasAnyKey, onKeyRefused: keyRefusalLogger(log), ...(settings.PDP_AUTHZEN_PDP_URL ? { authzenPdpUrl: settings.PDP_AUTHZEN_PDP_URL } : {}) });
  const address = await listen(server, settings.PORT, host);
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  if (!keys.hasAnyKey) log(`fhir-pdp: no PDP_API_KEYS or PDP_ADMIN_KEYS set: listening on loopback only (${url}); admin routes are disabled`);
  else log(`fhir-pdp: listening on ${url}`);
  // The first refresh runs in the background: decisions that arrive first load what they need.
  void service.start({ refreshIntervalMs: settings.PDP_REFRESH_INTERVAL_SECONDS * 1000 }).catch((err: Error) => log(`fhir-pdp: initial refresh failed: ${err.message}`));
  return {
    url,
    service,
    flushDecisionLog: () => decisionLog?.flush(),
    close: async () => {
      service.stop();
      const drained = await drainServer(server, settings.PDP_DRAIN_TIMEOUT_SECONDS * 1000);
      // After the last answer: the drained requests' decision lines are in the log too.
      decisionLog?.close();
      // Azure Monitor sends what it holds; the Prometheus reader just stops.
      await telemetry.shutdown().catch(() => undefined);
      return drained;
    },
  };
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  startHost(process.env).then(
    (host) => {
      // A container runtime or service manager stops with SIGTERM, a terminal with Ctrl-C (and a
      // Kubernetes rolling update sends SIGTERM while requests are still arriving): answer what was
      // received, write the decision-log lines still pending, exit 0.
      const drainSeconds = readSettings(process.env).PDP_DRAIN_TIMEOUT_SECONDS;
      const shutdown = (signal: NodeJS.Signals): void => {
        process.stderr.write(`fhir-pdp: ${signal}: stopping (answering the requests in flight, at most ${drainSeconds} s)\n`);
        void host.close().then((drained) => {
          const cut = drained.cutAtTimeout > 0 ? `; ${drained.cutAtTimeout} still open at the drain timeout were closed` : '';
          process.stderr.write(`fhir-pdp: stopped: ${drained.inFlightAtStart} request(s) were in flight${cut}\n`);
          process.exit(0);
        });
      };
      process.once('SIGTERM', shutdown);
      process.once('SIGINT', shutdown);
    },
    (err: unknown) => {
      process.stderr.write(`fhir-pdp: cannot start: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
