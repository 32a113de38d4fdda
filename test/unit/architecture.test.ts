/**
 * The arrows of the house (docs/architecture.md): every import in src/ points from a layer to one
 * it may depend on. core ← fhir ← policy ← decision ← app ← {http, host, cli}; config sits on core;
 * identity, directory and state import only core (the pipeline reaches them, never the reverse);
 * authzen (the AuthZEN 1.0 mapping, pure) sits on decision and is read by http and above.
 * telemetry imports core and config, and only app, http and host import it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** What each layer may import, besides itself. */
const MAY_IMPORT: Readonly<Record<string, readonly string[]>> = {
  core: [],
  config: ['core'],
  fhir: ['core'],
  policy: ['core', 'config', 'fhir'],
  identity: ['core'],
  directory: ['core'],
  state: ['core'],
  /** The compartment lookup: an edge that asks the FHIR server, like directory asks Graph. */
  lookup: ['core'],
  decision: ['core', 'config', 'fhir', 'policy', 'identity', 'directory', 'state', 'lookup'],
  /** The AuthZEN 1.0 request and answer spelled in the decision's vocabulary (pure); a token field read as identity/extract.ts reads it. */
  authzen: ['core', 'identity', 'decision'],
  // Metrics and traces: an edge like identity, which also reads app settings (PDP_METRICS,
  // APPLICATIONINSIGHTS_CONNECTION_STRING). The pipeline and the edges never import it: app.ts
  // feeds it through their callbacks (decision logger, onKeyFetch, Graph observer, onPoll).
  telemetry: ['core', 'config'],
  explain: ['core', 'config', 'fhir', 'policy', 'identity', 'directory', 'state', 'lookup', 'decision'],
  app: ['core', 'config', 'fhir', 'policy', 'identity', 'directory', 'state', 'lookup', 'decision', 'telemetry'],
  http: ['core', 'config', 'fhir', 'policy', 'identity', 'directory', 'state', 'lookup', 'decision', 'authzen', 'explain', 'app', 'telemetry'],
  host: ['core', 'config', 'fhir', 'policy', 'identity', 'directory', 'state', 'lookup', 'decision', 'authzen', 'explain', 'app', 'http', 'telemetry'],
  cli: ['core', 'config', 'fhir', 'policy', 'identity', 'directory', 'state', 'lookup', 'decision', 'authzen', 'explain', 'app', 'http'],
};

/** Files directly in src/ belong to the composition root's layer. */
const ROOT_FILES: Readonly<Record<string, string>> = { 'app.ts': 'app', 'lazy-edges.ts': 'app' };

export function layerOf(file: string): string | undefined {
  const parts = file.split('/');
  return parts.length === 1 ? ROOT_FILES[parts[0]!] : parts[0];
}

/** `from` → `to` pairs (paths relative to src/) that break the arrows, with the reason. */
export function violations(imports: ReadonlyArray<readonly [from: string, to: string]>): string[] {
  const found: string[] = [];
  for (const [from, to] of imports) {
    const a = layerOf(from);
    const b = layerOf(to);
    if (a === undefined) found.push(`${from}: not in any layer (add it to MAY_IMPORT or ROOT_FILES)`);
    else if (b === undefined) found.push(`${from} imports ${to}, which is not in any layer`);
    else if (a !== b && !MAY_IMPORT[a]?.includes(b)) found.push(`${from} (${a}) imports ${to} (${b}); ${a} may import only ${MAY_IMPORT[a]?.join(', ') || 'itself'}`);
  }
  return found;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** Static imports, re-exports and dynamic import() of relative specifiers. */
const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"](\.{1,2}\/[^'"]+)['"]/gm;

function importsOfSrc(): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (const file of sourceFiles(SRC)) {
    const from = relative(SRC, file);
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
      const to = relative(SRC, resolve(dirname(file), m[1]!)).replace(/\.js$/, '.ts');
      if (to.startsWith('..')) pairs.push([from, `(outside src) ${to}`]);
      else pairs.push([from, to]);
    }
  }
  return pairs;
}

describe('import arrows', () => {
  it('every import in src/ follows the arrows', () => {
    const pairs = importsOfSrc();
    expect(pairs.length).toBeGreaterThan(100);
    expect(violations(pairs)).toEqual([]);
  });

  it('src/ imports nothing outside src/ (tests, bench and test tooling never ship)', () => {
    expect(importsOfSrc().filter(([, to]) => to.startsWith('(outside src)'))).toEqual([]);
  });

  it('reports an edge importing up the chain, a pure core importing an edge, and an unplaced file', () => {
    expect(violations([['identity/verify.ts', 'policy/decide.ts']])).toHaveLength(1);
    expect(violations([['fhir/request.ts', 'policy/decide.ts']])).toHaveLength(1);
    expect(violations([['policy/decide.ts', 'directory/types.ts']])).toHaveLength(1);
    expect(violations([['state/snapshot-signature.ts', 'identity/issuers.ts']])).toHaveLength(1);
    expect(violations([['app.ts', 'http/routes.ts']])).toHaveLength(1);
    expect(violations([['core/reasons.ts', 'fhir/types.ts']])).toHaveLength(1);
    expect(violations([['stray.ts', 'core/reasons.ts']])).toHaveLength(1);
    expect(violations([['authzen/request.ts', 'http/types.ts']])).toHaveLength(1);
    expect(violations([['decision/pipeline.ts', 'authzen/response.ts']])).toHaveLength(1);
    expect(violations([['decision/pipeline.ts', 'telemetry/metrics.ts']])).toHaveLength(1);
    expect(violations([['identity/issuers.ts', 'telemetry/metrics.ts']])).toHaveLength(1);
    expect(violations([['telemetry/metrics.ts', 'decision/types.ts']])).toHaveLength(1);
    expect(violations([['http/routes.ts', 'app.ts'], ['decision/pipeline.ts', 'identity/verify.ts'], ['policy/decide.ts', 'fhir/scopes.ts'], ['http/authzen.ts', 'authzen/request.ts'], ['authzen/request.ts', 'decision/types.ts']])).toEqual([]);
  });
});
