/**
 * `npm start`: the standalone host. Reads app settings and configuration (refusing to start, with
 * every problem listed, when either is invalid), starts the service and listens.
 */
import { pathToFileURL } from 'node:url';
import { ConfigError, loadConfigFromEnv } from '../config/load.js';
import { keyList, readSettings } from '../config/settings.js';
import { KeyRing } from '../http/keys.js';
import { decisionLine } from '../decision-json.js';
import { PdpService } from '../runtime.js';
import { createPdpServer, listen } from './server.js';

export interface StartedHost {
  readonly url: string;
  readonly service: PdpService;
  close(): Promise<void>;
}

/** Most decision lines held before a write; a burst never holds more. */
const MAX_PENDING_LINES = 1024;

/**
 * One write per turn of the event loop instead of one per decision: stdout to a file or a pipe is
 * synchronous in Node, and a write system call per decision cost about a quarter of the host's CPU
 * under load (bench/PROFILE.md). Lines still pending when the process exits are written then.
 */
export function batchedLines(write: (text: string) => void): { log: (line: string) => void; flush: () => void } {
  let pending: string[] = [];
  const flush = (): void => {
    if (pending.length === 0) return;
    const text = `${pending.join('\n')}\n`;
    pending = [];
    write(text);
  };
  pendingFlushes.add(flush);
  if (!exitHooked) {
    exitHooked = true;
    process.once('exit', () => pendingFlushes.forEach((f) => f()));
  }
  return {
    log: (line) => {
      if (pending.push(line) === 1) setImmediate(flush);
      else if (pending.length >= MAX_PENDING_LINES) flush();
    },
    flush: () => {
      flush();
      pendingFlushes.delete(flush);
    },
  };
}

/** One exit hook for every batched logger of the process. */
const pendingFlushes = new Set<() => void>();
let exitHooked = false;

export async function startHost(env: Record<string, string | undefined>, log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<StartedHost> {
  const settings = readSettings(env);
  const config = loadConfigFromEnv(env);
  const keys = new KeyRing(keyList(settings.PDP_API_KEYS), keyList(settings.PDP_ADMIN_KEYS));
  // Without keys, anyone who can reach the port could ask; so bind loopback only, and say so.
  const host = settings.PDP_HOST ?? (keys.hasAnyKey ? '0.0.0.0' : '127.0.0.1');
  if (!keys.hasAnyKey && host !== '127.0.0.1' && host !== '::1' && host !== 'localhost')
    throw new ConfigError([{ path: 'PDP_HOST', message: `binding ${host} needs PDP_API_KEYS or PDP_ADMIN_KEYS` }], 'app settings');
  const decisionLog = settings.PDP_LOG_DECISIONS === 'true' ? batchedLines((text) => process.stdout.write(text)) : undefined;
  const service = new PdpService({
    config,
    env,
    ...(decisionLog ? { logger: (event, decision) => decisionLog.log(decisionLine(event, decision.principal)) } : {}),
    snapshotPollMs: settings.PDP_SNAPSHOT_POLL_SECONDS * 1000,
  });
  // A stored snapshot (Blob) is read before the first request: a warm instance then decides
  // without contacting any authority. Without one, the first refresh runs after listening.
  await service.loadStored();
  const server = createPdpServer(service, { keys });
  const address = await listen(server, settings.PORT, host);
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  if (!keys.hasAnyKey) log(`fhir-pdp: no PDP_API_KEYS or PDP_ADMIN_KEYS set: listening on loopback only (${url}); admin routes are disabled`);
  else log(`fhir-pdp: listening on ${url}`);
  // The first refresh runs in the background: decisions that arrive first load what they need.
  void service.start({ refreshIntervalMs: settings.PDP_REFRESH_INTERVAL_SECONDS * 1000 }).catch((err: Error) => log(`fhir-pdp: initial refresh failed: ${err.message}`));
  return {
    url,
    service,
    close: () =>
      new Promise<void>((resolve) => {
        service.stop();
        decisionLog?.flush();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  startHost(process.env).then(
    (host) => {
      // A container runtime or service manager stops with SIGTERM, a terminal with Ctrl-C: stop
      // the timers and the server, write the decision-log lines still pending, exit 0.
      const shutdown = (signal: NodeJS.Signals): void => {
        process.stderr.write(`fhir-pdp: ${signal}: stopping\n`);
        void host.close().then(() => process.exit(0));
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
