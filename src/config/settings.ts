/**
 * App settings (environment variables): how the service is hosted, as opposed to the policy JSON
 * of schema.ts. Same rule: each setting is described where its default is defined;
 * local.settings.sample.json and docs/configuration.md list exactly these
 * (test/unit/docs-sync.test.ts keeps them in sync).
 */
import { z } from 'zod';
import { ConfigError } from './load.js';

const optionalString = z.string().trim().min(1).optional();

export const SETTINGS = {
  PDP_CONFIG: { schema: optionalString, description: 'The configuration JSON, inline (or use PDP_CONFIG_FILE).' },
  PDP_CONFIG_FILE: { schema: optionalString, description: 'Path of the configuration JSON file (contract JSON or ARM resource JSON); a relative path is read from the function app root (where host.json is) on Azure Functions, from the working directory otherwise.' },
  PORT: { schema: z.coerce.number().int().min(0).max(65535).default(7071), description: 'Standalone host: port to listen on (default 7071).' },
  PDP_HOST: {
    schema: optionalString,
    description: 'Standalone host: address to bind. Default 0.0.0.0 when keys are set, else 127.0.0.1 (loopback only).',
  },
  PDP_API_KEYS: { schema: optionalString, description: 'Comma-separated keys that may call /api/decide (x-functions-key header or code parameter).' },
  PDP_ADMIN_KEYS: { schema: optionalString, description: 'Comma-separated admin keys: /api/refresh, /api/explain, and operator hints in answers.' },
  PDP_AUTHZEN_PDP_URL: {
    schema: z
      .string()
      .trim()
      .min(1)
      .refine(isPdpIdentifier, 'an https URL without query or fragment (http only for a loopback host), e.g. https://pdp.contoso.example/api')
      .optional(),
    description:
      'AuthZEN: the policy decision point identifier the metadata document names, the public URL of /api (e.g. https://pdp.contoso.example/api). Unset: made from the request\'s Host header.',
  },
  PDP_LOG_DECISIONS: { schema: z.enum(['true', 'false']).default('true'), description: 'Write one JSON line per decision (never the token).' },
  PDP_METRICS: {
    schema: z.enum(['on', 'off']).default('on'),
    description: 'Metrics (GET /api/metrics on the standalone host; Azure Monitor when APPLICATIONINSIGHTS_CONNECTION_STRING is set): on (default) or off.',
  },
  APPLICATIONINSIGHTS_CONNECTION_STRING: {
    schema: optionalString,
    description: 'Application Insights connection string: when set, metrics and traces go to Azure Monitor (@azure/monitor-opentelemetry); unset, nothing is loaded or sent.',
  },
  PDP_REFRESH_SCHEDULE: {
    schema: z.string().trim().min(1).default('0 */5 * * * *'),
    description: 'NCRONTAB schedule of the refresh timer function (default every 5 minutes).',
  },
  PDP_REFRESH_INTERVAL_SECONDS: {
    schema: z.coerce.number().int().min(10).max(86400).default(300),
    description: 'Standalone host: seconds between in-process refreshes (default 300).',
  },
  PDP_DRAIN_TIMEOUT_SECONDS: {
    schema: z.coerce.number().int().min(0).max(600).default(10),
    description: 'Standalone host: on SIGTERM/SIGINT, seconds to finish the requests in flight before their connections are closed (default 10).',
  },
  PDP_SNAPSHOT_STORE: {
    schema: z.enum(['memory', 'blob']).default('memory'),
    description: 'Where the refreshed snapshot lives: memory (each instance refreshes itself) or blob (shared by all instances).',
  },
  PDP_SNAPSHOT_ACCOUNT_URL: {
    schema: optionalString,
    description: 'Blob store by identity (no shared key): the Blob service URL, https://<account>.blob.core.windows.net. Not with PDP_SNAPSHOT_CONNECTION.',
  },
  PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID: {
    schema: optionalString,
    description: 'Blob store by identity: client id of the user-assigned managed identity (ManagedIdentityCredential); unset: DefaultAzureCredential.',
  },
  PDP_SNAPSHOT_CONNECTION: { schema: optionalString, description: 'Blob store connection string (account key or SAS); default AzureWebJobsStorage. Prefer PDP_SNAPSHOT_ACCOUNT_URL.' },
  PDP_SNAPSHOT_CONTAINER: { schema: optionalString, description: 'Blob container of the snapshot (default fhir-pdp).' },
  PDP_SNAPSHOT_BLOB: { schema: optionalString, description: 'Blob name of the snapshot (default snapshot.json).' },
  PDP_SNAPSHOT_SIGNING_KEYS: {
    schema: optionalString,
    description:
      'Blob store: HMAC keys that sign and verify the snapshot, comma-separated kid:base64secret entries of 32+ bytes (openssl rand -base64 32); the first signs, all verify. In Azure, a Key Vault reference.',
  },
  PDP_SNAPSHOT_SIGNING_PRIVATE_KEY: {
    schema: optionalString,
    description:
      'Blob store: an asymmetric key that signs the snapshot instead of the first HMAC key: a private JWK (JSON) or PEM (RSA 2048+, EC P-256/384/521, Ed25519); its public part verifies. In Azure, a Key Vault reference.',
  },
  PDP_SNAPSHOT_VERIFY_KEYS: {
    schema: optionalString,
    description: 'Blob store: a JWK Set (JSON) of public keys that also verify the snapshot: a key being rotated out, or instances that only read.',
  },
  PDP_SNAPSHOT_TRUST_UNSIGNED: {
    schema: z.enum(['true', 'false']).default('false'),
    description:
      'Blob store: true accepts an unsigned snapshot, for a container only this app can write (anyone who can write it can then hand every instance issuer keys). Default false: the Blob store needs a signing key.',
  },
  PDP_SNAPSHOT_POLL_SECONDS: {
    schema: z.coerce.number().int().min(1).max(3600).default(30),
    description: 'Blob store: seconds between conditional reads of the snapshot (default 30).',
  },
  AzureWebJobsStorage: { schema: optionalString, description: 'The Functions host storage (connection string); also the snapshot store unless PDP_SNAPSHOT_CONNECTION or PDP_SNAPSHOT_ACCOUNT_URL is set.' },
  PDP_GRAPH_BREAKER_FAILURES: {
    schema: z.coerce.number().int().min(1).max(1000).default(5),
    description: 'Graph circuit breaker: consecutive failed Graph calls (5xx, 429, timeout, unreachable) that open it (default 5).',
  },
  PDP_GRAPH_BREAKER_OPEN_SECONDS: {
    schema: z.coerce.number().int().min(1).max(3600).default(30),
    description: 'Graph circuit breaker: seconds it stays open (calls fail at once) before one probe call is let through (default 30).',
  },
  PDP_GRAPH_TENANT_ID: { schema: optionalString, description: 'Graph credential: tenant id for a client secret or certificate (else DefaultAzureCredential: managed identity, workload identity, Azure CLI).' },
  PDP_GRAPH_CLIENT_ID: { schema: optionalString, description: 'Graph credential: application (client) id for a client secret or certificate; with managed identity, a user-assigned identity\'s client id.' },
  PDP_GRAPH_CLIENT_SECRET: { schema: optionalString, description: 'Graph credential: client secret (prefer a certificate or managed identity).' },
  PDP_GRAPH_CLIENT_CERTIFICATE_PATH: { schema: optionalString, description: 'Graph credential: path of a PEM certificate with its private key.' },
  PDP_GRAPH_CLIENT_CERTIFICATE_PASSWORD: { schema: optionalString, description: 'Graph credential: password of the certificate, when it has one.' },
  PDP_GRAPH_MANAGED_IDENTITY_CLIENT_ID: { schema: optionalString, description: 'Graph credential: client id of a user-assigned managed identity (DefaultAzureCredential).' },
} as const;

/** AuthZEN 1.0 "Endpoint Parameters": "a URL that uses the https scheme and has no query or fragment components". */
function isPdpIdentifier(value: string): boolean {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  if (url.search || url.hash || value.includes('?') || value.includes('#') || url.username || url.password) return false;
  if (url.protocol === 'https:') return true;
  return url.protocol === 'http:' && (url.hostname === 'localhost' || url.hostname === '[::1]' || /^127\./.test(url.hostname));
}

export type SettingName = keyof typeof SETTINGS;

const settingsSchema = z.object(
  Object.fromEntries(Object.entries(SETTINGS).map(([k, v]) => [k, v.schema])) as { [K in SettingName]: (typeof SETTINGS)[K]['schema'] },
);

export type AppSettings = z.output<typeof settingsSchema>;

/** Reads and validates the app settings; every problem is listed (nothing is half-applied). */
export function readSettings(env: Record<string, string | undefined>): AppSettings {
  const picked: Record<string, string | undefined> = {};
  for (const k of Object.keys(SETTINGS)) picked[k] = env[k] === '' ? undefined : env[k];
  const result = settingsSchema.safeParse(picked);
  if (!result.success)
    throw new ConfigError(
      result.error.issues.map((i) => ({ path: String(i.path[0] ?? '$'), message: i.message })),
      'app settings',
    );
  return result.data;
}

export function keyList(value: string | undefined): string[] {
  return (value ?? '').split(',').map((s) => s.trim()).filter(Boolean);
}

/**
 * One app setting, validated by its own schema (with its default): for code that needs a single
 * setting before the rest are read, such as a Functions registration file. Throws ConfigError
 * naming the setting when its value is invalid.
 */
export function readSetting<K extends SettingName>(env: Record<string, string | undefined>, name: K): AppSettings[K] {
  const result = SETTINGS[name].schema.safeParse(env[name] === '' ? undefined : env[name]);
  if (!result.success) throw new ConfigError(result.error.issues.map((i) => ({ path: name, message: i.message })), 'app settings');
  return result.data as AppSettings[K];
}
