#!/usr/bin/env node
/**
 * The `fhir-pdp` command (package.json `bin`):
 *   fhir-pdp explain [--config file] [--method GET] --path /Patient/123 [--json] [token | -]
 *   fhir-pdp check-config [file] [--offline] [--json]
 * Configuration is read as the service reads it: `--config` (or check-config's file argument),
 * else PDP_CONFIG / PDP_CONFIG_FILE. explain decides with the service's own code (PdpService,
 * Pdp.decide with a trace) after fetching the authorities' metadata, and prints the trace.
 * Exit codes: 0 allowed / no errors, 1 denied or indeterminate / errors found, 2 usage or
 * configuration error.
 */
import { readFileSync, realpathSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, loadConfigFile, loadConfigFromEnv } from '../config/load.js';
import type { PdpConfig } from '../config/schema.js';
import { explainEvaluationWith, explainQuestionWith, MAX_EXPLAIN_TOKEN_CHARS } from '../http/explain-api.js';
import { renderExplanation } from '../explain/render.js';
import { parseJsonStrict } from '../identity/strict-json.js';
import { Pdp } from '../decision/pipeline.js';

export const EXIT_ALLOWED = 0;
export const EXIT_REFUSED = 1;
export const EXIT_USAGE = 2;

const USAGE = `Usage:
  fhir-pdp explain [--config <file>] [--method <method>] --path <path> [--json] [<token> | -]
      Decides the request as the service would and prints every check: the decoded token,
      each step (issuer, key, signature, lifetime, audience, application, claims, principal,
      groups, data action, scopes, compartment) and, for the first failing one, what was
      expected, what was found and the fix. The token is read from stdin when not given.
  fhir-pdp explain [--config <file>] --authzen <file | -> [--json]
      The same, for an AuthZEN 1.0 evaluation request (subject with properties.token, action,
      resource; docs/authzen.md), read from the file or from stdin.
  fhir-pdp check-config [<file> | --config <file>] [--offline] [--json]
      Validates a configuration: schema and common mistakes offline; then each authority's
      discovery documents and keys, and (with "graph" configured) the access policies' object ids.

Configuration: --config <file>, else PDP_CONFIG (inline JSON) or PDP_CONFIG_FILE, as for the service.
Exit codes: 0 allowed / no errors; 1 denied or indeterminate / errors found; 2 usage or configuration error.
`;

export interface CliIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly readStdin: () => Promise<string>;
  readonly stdinIsTty: boolean;
  readonly stdoutIsTty: boolean;
  readonly env: Record<string, string | undefined>;
}

class UsageError extends Error {
  readonly code = 'usage' as const;
}

export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'explain':
        return await explainCommand(rest, io);
      case 'check-config':
        return await checkConfigCommand(rest, io);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        (command === undefined ? io.stderr : io.stdout)(USAGE);
        return command === undefined ? EXIT_USAGE : EXIT_ALLOWED;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`fhir-pdp: ${err.message}\n\n${USAGE}`);
      return EXIT_USAGE;
    }
    // GraphSettingsError, matched by its code: importing its class would load the Azure SDKs on every run.
    if (err instanceof ConfigError || (err as { code?: unknown } | null)?.code === 'graph_settings_invalid') {
      io.stderr(`fhir-pdp: ${(err as Error).message}\n`);
      return EXIT_USAGE;
    }
    throw err;
  }
}

/** The options every command takes. */
const COMMON_OPTIONS = {
  config: { type: 'string', short: 'c' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** A command's arguments: its own options and the common ones, positionals allowed, nothing unknown. */
function parseCommand<const O extends NonNullable<ParseArgsConfig['options']>>(args: readonly string[], options: O) {
  return parse({ args: [...args], allowPositionals: true, strict: true, options: { ...COMMON_OPTIONS, ...options } });
}

function parse<const T extends ParseArgsConfig>(config: T) {
  try {
    return parseArgs(config);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function loadConfig(file: string | undefined, env: CliIo['env']): PdpConfig {
  return file !== undefined ? loadConfigFile(file) : loadConfigFromEnv(env);
}

async function explainCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(args, {
    method: { type: 'string', short: 'X', default: 'GET' },
    path: { type: 'string', short: 'p' },
    authzen: { type: 'string' },
  });
  if (values.help) {
    io.stdout(USAGE);
    return EXIT_ALLOWED;
  }
  if (values.authzen !== undefined) return await explainAuthzen(values.authzen, values, positionals, io);
  const { method, path } = values;
  if (!path) throw new UsageError('--path is required (the FHIR request path, e.g. /Patient/123)');
  if (!/^[A-Za-z]{1,16}$/.test(method)) throw new UsageError(`--method "${method}" is not an HTTP method name`);
  if (positionals.length > 1) throw new UsageError('give one token (or none, or "-", to read it from stdin)');
  let token = positionals[0];
  if (token === undefined || token === '-') {
    if (token === undefined && io.stdinIsTty) throw new UsageError('no token: pass it as the last argument or on stdin');
    token = await io.readStdin();
  }
  token = token.trim();
  if (!token) throw new UsageError('the token is empty');
  if (token.length > MAX_EXPLAIN_TOKEN_CHARS) throw new UsageError(`the token is longer than ${MAX_EXPLAIN_TOKEN_CHARS} characters`);

  const config = loadConfig(values.config, io.env);
  const service = await pdpFor(config, io.env);
  try {
    for (const problem of await service.pdp.refreshIssuers()) io.stderr(`fhir-pdp: warning: ${problem}\n`);
    const explanation = await explainQuestionWith(service.pdp, { token, method, path });
    if (values.json) io.stdout(`${JSON.stringify(explanation, null, 2)}\n`);
    else io.stdout(`${renderExplanation(explanation, { color: io.stdoutIsTty && !io.env.NO_COLOR }).join('\n')}\n`);
    return explanation.decision.decision === 'allow' ? EXIT_ALLOWED : EXIT_REFUSED;
  } finally {
    service.stop();
  }
}

/** Most characters of an AuthZEN request file: a token and a few members. */
const MAX_AUTHZEN_REQUEST_CHARS = MAX_EXPLAIN_TOKEN_CHARS + 16_384;

async function explainAuthzen(source: string, values: { config?: string | undefined; json: boolean; path?: string | undefined }, positionals: readonly string[], io: CliIo): Promise<number> {
  if (values.path !== undefined || positionals.length > 0) throw new UsageError('--authzen takes the whole question (subject, action, resource): no --path and no token argument');
  let text: string;
  if (source === '-') text = await io.readStdin();
  else {
    try {
      if (statSync(source).size > MAX_AUTHZEN_REQUEST_CHARS) throw new UsageError(`${source} is larger than ${MAX_AUTHZEN_REQUEST_CHARS} bytes`);
      text = readFileSync(source, 'utf8');
    } catch (err) {
      if (err instanceof UsageError) throw err;
      throw new UsageError(`cannot read ${source}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  const raw = parseJsonStrict(text);
  if (!raw.ok) throw new UsageError(`the AuthZEN request is not JSON (${raw.problem})`);
  const config = loadConfig(values.config, io.env);
  const service = await pdpFor(config, io.env);
  try {
    for (const problem of await service.pdp.refreshIssuers()) io.stderr(`fhir-pdp: warning: ${problem}\n`);
    const answer = await explainEvaluationWith(service.pdp, raw.value);
    if ('problem' in answer) throw new UsageError(`the AuthZEN evaluation request is malformed: ${answer.problem}`);
    const explanation = answer.explanation;
    if (values.json) io.stdout(`${JSON.stringify(explanation, null, 2)}\n`);
    else io.stdout(`${renderExplanation(explanation, { color: io.stdoutIsTty && !io.env.NO_COLOR }).join('\n')}\n`);
    return explanation.decision.decision === 'allow' ? EXIT_ALLOWED : EXIT_REFUSED;
  } finally {
    service.stop();
  }
}

/**
 * The Pdp the service would run. With `graph` configured that is PdpService's wiring (Graph client
 * and membership resolver from the same settings), over a memory store: the CLI never reads or
 * writes a shared snapshot, so membership comes from the groups claim or Graph, as on a cold
 * instance. Without `graph` PdpService adds nothing to a Pdp, and the Azure SDKs it loads would
 * only slow the command down.
 */
async function pdpFor(config: PdpConfig, env: CliIo['env']): Promise<{ pdp: Pdp; stop(): void }> {
  if (!config.graph) return { pdp: new Pdp(config), stop: () => undefined };
  const [{ buildApp }, { MemorySnapshotStore }] = await Promise.all([import('../app.js'), import('../state/memory-store.js')]);
  const service = buildApp(env, config, { store: new MemorySnapshotStore() });
  return { pdp: service.pdp, stop: () => service.stop() };
}

async function checkConfigCommand(args: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(args, {
    offline: { type: 'boolean', default: false },
  });
  if (values.help) {
    io.stdout(USAGE);
    return EXIT_ALLOWED;
  }
  if (positionals.length > 1 || (positionals.length === 1 && values.config !== undefined))
    throw new UsageError('give one configuration file (as the argument or with --config)');
  const file = positionals[0] ?? values.config;
  const source = file ?? (io.env.PDP_CONFIG?.trim() ? 'PDP_CONFIG' : (io.env.PDP_CONFIG_FILE?.trim() ?? 'app settings'));
  const online = !values.offline;
  const { checkConfig, checkExitCode, formatConfigCheck } = await import('../explain/check-config.js');
  const report = await checkConfig(source, () => loadConfig(file, io.env), {
    online,
    // The Graph client the service would build, from the same settings.
    graphClientFor: async (graph) => {
      const { createGraphClient, credentialFromSettings } = await import('../directory/graph-client.js');
      return createGraphClient({ credential: credentialFromSettings(io.env), baseUrl: graph.baseUrl });
    },
  });
  if (values.json) io.stdout(`${JSON.stringify(report, null, 2)}\n`);
  else io.stdout(`${formatConfigCheck(report).join('\n')}\n`);
  return checkExitCode(report);
}

/** Bounded: a token is at most 64 KiB; a stream beyond that is a usage error, not a memory hog. */
async function readBoundedStdin(limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new UsageError(`stdin holds more than ${limit} bytes; a token is at most ${MAX_EXPLAIN_TOKEN_CHARS} characters`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** npm runs a bin through a symlink (node_modules/.bin/fhir-pdp), so compare real paths. */
function isMainModule(): boolean {
  const invoked = process.argv[1];
  if (invoked === undefined) return false;
  try {
    return realpathSync(invoked) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isMainModule()) {
  runCli(process.argv.slice(2), {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    readStdin: () => readBoundedStdin(MAX_EXPLAIN_TOKEN_CHARS + 1024),
    stdinIsTty: process.stdin.isTTY === true,
    stdoutIsTty: process.stdout.isTTY === true,
    env: process.env,
  }).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`fhir-pdp: internal error: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = EXIT_USAGE;
    },
  );
}
