/**
 * Azurite's Blob service in memory on 127.0.0.1 and an ephemeral port, read from its "listens on
 * http://127.0.0.1:PORT" line: the Blob Storage of the scale benchmark and of the integration tests.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { cleanEnv, startNode } from './child.js';

// Azurite's documented well-known development account; not a secret.
const ACCOUNT = 'devstoreaccount1';
const ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface RunningAzurite {
  readonly connectionString: string;
  readonly blobEndpoint: string;
  stop(): Promise<void>;
}

export interface AzuriteOptions {
  /**
   * Serve HTTPS with this certificate and key (PEM files) and accept Microsoft Entra bearer tokens
   * (`--oauth basic`: Azurite checks a token's shape, issuer prefix, audience and lifetime, not its
   * signature). Storage accepts bearer tokens over HTTPS only, so the two come together.
   */
  readonly oauthHttps?: { readonly certPath: string; readonly keyPath: string };
}

export async function startAzurite(options: AzuriteOptions = {}): Promise<RunningAzurite> {
  const blobMain = join(dirname(createRequire(import.meta.url).resolve('azurite/package.json')), 'dist/src/blob/main.js');
  // 3.35 is pinned because 3.36+ needs Node 21+; --skipApiVersionCheck lets @azure/storage-blob
  // send a newer x-ms-version than this Azurite knows.
  const tls = options.oauthHttps;
  const running = await startNode(
    [
      blobMain, '--blobHost', '127.0.0.1', '--blobPort', '0', '--inMemoryPersistence', '--disableTelemetry', '--skipApiVersionCheck', '--loose',
      ...(tls ? ['--oauth', 'basic', '--cert', tls.certPath, '--key', tls.keyPath] : []),
    ],
    { env: cleanEnv({}), stream: 'stdout', pattern: /listens on (https?:\/\/127\.0\.0\.1:\d+)/ },
  );
  const blobEndpoint = `${running.match[1]}/${ACCOUNT}`;
  return {
    blobEndpoint,
    connectionString: `DefaultEndpointsProtocol=${tls ? 'https' : 'http'};AccountName=${ACCOUNT};AccountKey=${ACCOUNT_KEY};BlobEndpoint=${blobEndpoint};`,
    stop: () => running.stop(),
  };
}
