/**
 * Starts Azurite's Blob service in memory on 127.0.0.1 and an ephemeral port, for integration
 * tests. The port is read from Azurite's "successfully listens on http://127.0.0.1:PORT" line.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';

// Azurite's documented well-known development account; not a secret.
const ACCOUNT = 'devstoreaccount1';
const ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const STARTUP_TIMEOUT_MS = 30_000;

export interface RunningAzurite {
  readonly connectionString: string;
  readonly blobEndpoint: string;
  stop(): Promise<void>;
}

export async function startAzurite(): Promise<RunningAzurite> {
  const require = createRequire(import.meta.url);
  const blobMain = join(dirname(require.resolve('azurite/package.json')), 'dist/src/blob/main.js');
  // 3.35 is pinned because 3.36+ needs Node 21+; --skipApiVersionCheck lets @azure/storage-blob
  // send a newer x-ms-version than this Azurite knows.
  const child = spawn(
    process.execPath,
    [
      blobMain,
      '--blobHost', '127.0.0.1',
      '--blobPort', '0',
      '--inMemoryPersistence',
      '--disableTelemetry',
      '--skipApiVersionCheck',
      '--loose',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr = (stderr + text).slice(-4_000);
  });

  const origin = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => fail(new Error(`Azurite did not start within ${STARTUP_TIMEOUT_MS} ms`)), STARTUP_TIMEOUT_MS);
    const onExit = (code: number | null): void => fail(new Error(`Azurite exited (${code}) before listening: ${stderr}`));
    function fail(error: Error): void {
      clearTimeout(timer);
      lines.close();
      child.kill('SIGKILL');
      reject(error);
    }
    child.once('error', fail);
    child.once('exit', onExit);
    lines.on('line', (line) => {
      const match = /listens on (http:\/\/127\.0\.0\.1:\d+)/.exec(line);
      if (!match) return;
      clearTimeout(timer);
      child.off('exit', onExit);
      // Keep draining stdout so Azurite never blocks on a full pipe.
      lines.removeAllListeners('line');
      child.stdout.resume();
      resolve(match[1]!);
    });
  });

  const blobEndpoint = `${origin}/${ACCOUNT}`;
  return {
    blobEndpoint,
    connectionString:
      `DefaultEndpointsProtocol=http;AccountName=${ACCOUNT};AccountKey=${ACCOUNT_KEY};BlobEndpoint=${blobEndpoint};`,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      // A graceful close that hangs must not hang the suite.
      const forceKill = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(forceKill);
    },
  };
}
