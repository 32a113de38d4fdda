/**
 * `npm start`: the standalone host. Reads app settings and configuration (refusing to start, with
 * every problem listed, when either is invalid), starts the service and listens.
 */
import { pathToFileURL } from 'node:url';
import { ConfigError, loadConfigFromEnv } from '../config/load.js';
import { keyList, readSettings } from '../config/settings.js';
import { KeyRing } from '../http/keys.js';
import { PdpService } from '../runtime.js';
import { createPdpServer, listen } from './server.js';

export interface StartedHost {
  readonly url: string;
  readonly service: PdpService;
  close(): Promise<void>;
}

export async function startHost(env: Record<string, string | undefined>, log: (line: string) => void = (l) => process.stderr.write(`${l}\n`)): Promise<StartedHost> {
  const settings = readSettings(env);
  const config = loadConfigFromEnv(env);
  const keys = new KeyRing(keyList(settings.PDP_API_KEYS), keyList(settings.PDP_ADMIN_KEYS));
  // Without keys, anyone who can reach the port could ask; so bind loopback only, and say so.
  const host = settings.PDP_HOST ?? (keys.hasAnyKey ? '0.0.0.0' : '127.0.0.1');
  if (!keys.hasAnyKey && host !== '127.0.0.1' && host !== '::1' && host !== 'localhost')
    throw new ConfigError([{ path: 'PDP_HOST', message: `binding ${host} needs PDP_API_KEYS or PDP_ADMIN_KEYS` }], 'app settings');
  const service = new PdpService({
    config,
    env,
    ...(settings.PDP_LOG_DECISIONS === 'true' ? { logger: (e) => process.stdout.write(`${JSON.stringify({ type: 'decision', ...e })}\n`) } : {}),
    snapshotPollMs: settings.PDP_SNAPSHOT_POLL_SECONDS * 1000,
  });
  await service.prepare();
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
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  startHost(process.env).catch((err: unknown) => {
    process.stderr.write(`fhir-pdp: cannot start: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
