/**
 * Reading configuration: the contract's JSON, or an Azure API for FHIR / Azure Health Data Services
 * ARM resource JSON, from `PDP_CONFIG` (inline) or `PDP_CONFIG_FILE`. A configuration that fails
 * validation is refused whole with every problem listed by JSON path; nothing is half-applied.
 */
import { readFileSync } from 'node:fs';
import { ConfigError, type ConfigProblem } from '../core/config-error.js';
import { configSchema, type PdpConfig } from './schema.js';

export { ConfigError, type ConfigProblem };

/** A configuration file or inline value is bounded: it is read whole before validation. */
const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

function jsonPath(path: ReadonlyArray<PropertyKey>): string {
  if (path.length === 0) return '$';
  return path
    .map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
    .join('');
}

/** Validates a parsed configuration object (contract JSON or ARM resource JSON). */
export function parseConfig(value: unknown, source = 'configuration'): PdpConfig {
  const candidate = isArmResource(value) ? fromArmResource(value) : value;
  const result = configSchema.safeParse(candidate);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => ({
      path: jsonPath(issue.path),
      message: issue.code === 'unrecognized_keys' ? `unknown setting(s): ${issue.keys.join(', ')}` : issue.message,
    }));
    throw new ConfigError(problems, source);
  }
  return result.data;
}

export function parseConfigText(text: string, source = 'configuration'): PdpConfig {
  if (Buffer.byteLength(text) > MAX_CONFIG_BYTES)
    throw new ConfigError([{ path: '$', message: `larger than ${MAX_CONFIG_BYTES} bytes` }], source);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError([{ path: '$', message: `not valid JSON (${(err as Error).message})` }], source);
  }
  return parseConfig(value, source);
}

export function loadConfigFile(file: string): PdpConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError([{ path: '$', message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }], file);
  }
  return parseConfigText(text, file);
}

/** `PDP_CONFIG` (inline JSON) or `PDP_CONFIG_FILE` (a path); exactly one of them. */
export function loadConfigFromEnv(env: Record<string, string | undefined>): PdpConfig {
  const inline = env.PDP_CONFIG?.trim();
  const file = env.PDP_CONFIG_FILE?.trim();
  if (inline && file)
    throw new ConfigError([{ path: '$', message: 'set PDP_CONFIG or PDP_CONFIG_FILE, not both' }], 'app settings');
  if (inline) return parseConfigText(inline, 'PDP_CONFIG');
  if (file) return loadConfigFile(file);
  throw new ConfigError(
    [{ path: '$', message: 'no configuration: set PDP_CONFIG (JSON) or PDP_CONFIG_FILE (a path); `npm run dev` runs a sandbox with a sample one' }],
    'app settings',
  );
}

// --- Azure ARM resource JSON (Microsoft.HealthcareApis/services and workspaces/fhirservices) ---

interface ArmResource {
  name?: unknown;
  type?: unknown;
  properties: { authenticationConfiguration?: Record<string, unknown>; accessPolicies?: unknown };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isArmResource(value: unknown): value is ArmResource {
  return isRecord(value) && isRecord(value.properties) && isRecord(value.properties.authenticationConfiguration);
}

/**
 * Maps the ARM shape onto ours: authority, audience and SMART identity providers from
 * `properties.authenticationConfiguration`, object ids from `properties.accessPolicies` (which grant
 * every data action, as in Azure). The FHIR URL follows Azure's naming when the type says which.
 */
function fromArmResource(arm: ArmResource): Record<string, unknown> {
  const auth = arm.properties.authenticationConfiguration ?? {};
  const out: Record<string, unknown> = { authority: auth.authority, audience: auth.audience };
  const type = typeof arm.type === 'string' ? arm.type.toLowerCase() : '';
  const name = typeof arm.name === 'string' ? arm.name : '';
  if (type === 'microsoft.healthcareapis/services' && name) out.fhirBaseUrl = `https://${name}.azurehealthcareapis.com`;
  if (type === 'microsoft.healthcareapis/workspaces/fhirservices' && name.includes('/')) {
    const [workspace, service] = name.split('/');
    out.fhirBaseUrl = `https://${workspace}-${service}.fhir.azurehealthcareapis.com`;
  }
  if (Array.isArray(arm.properties.accessPolicies))
    out.accessPolicies = arm.properties.accessPolicies.map((p) => (isRecord(p) ? { objectId: p.objectId } : p));
  if (Array.isArray(auth.smartIdentityProviders)) out.smartIdentityProviders = auth.smartIdentityProviders;
  return out;
}
