/**
 * What `npm pack` ships: the compiled service (dist/src, dist/functions), the standalone host's bundle
 * that `npm start` runs (dist/bundle), host.json and the files npm
 * always adds, and no test tooling. The development identity provider can forge `alg:none` and HMAC
 * tokens; the fake Graph, the harnesses in testkit/ and the benchmarks have no business on a
 * production machine either. Runs against what `npm test` built (`npm run build:dev` first, so
 * dist/testkit and dist/bench exist beside the package's output and must still be left out).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface PackResult {
  readonly files: readonly { readonly path: string }[];
}

function packedFiles(): string[] {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  });
  const [result] = JSON.parse(out) as PackResult[];
  return result!.files.map((f) => f.path).sort();
}

/** Files under `dir` (relative to the repository) whose names end in one of `extensions`. */
function filesUnder(dir: string, extensions: readonly string[]): string[] {
  const abs = join(ROOT, dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs, { recursive: true, encoding: 'utf8' })
    .filter((name) => extensions.some((ext) => name.endsWith(ext)))
    .map((name) => join(dir, name));
}

/** Module specifiers of static imports, re-exports and dynamic imports in a JS or TS text. */
function specifiers(text: string): string[] {
  const found: string[] = [];
  for (const m of text.matchAll(/\b(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)) found.push(m[1]!);
  return found;
}

const TOOLING = /(^|\/)(testkit|bench|test)\//;

describe('npm pack', () => {
  const files = packedFiles();

  it('holds only the compiled service, host.json and the files npm always adds', () => {
    const shipped = (path: string) =>
      /^dist\/(src|functions|bundle)\//.test(path) || ['host.json', 'package.json', 'README.md'].includes(path) || /^LICEN[CS]E(\.|$)/i.test(path);
    expect(files.filter((path) => !shipped(path))).toEqual([]);
    // What package.json's main (the Functions entry points) and bin name must be in it.
    expect(files).toEqual(expect.arrayContaining(['package.json', 'host.json', 'dist/functions/decide.js', 'dist/src/cli/fhir-pdp.js', 'dist/src/host/main.js', 'dist/bundle/main.js']));
  });

  it('ships no test tooling by any name', () => {
    expect(files.filter((path) => /testkit|dev-idp|fake-graph|oidc-provider|functions-host|bench|(^|\/)test\//.test(path))).toEqual([]);
    expect(files).not.toContain('dist/src/host/dev.js');
  });
});

describe('the package build never reaches test tooling', () => {
  it('no source under src/ or functions/ imports testkit/, bench/ or test/', () => {
    const sources = [...filesUnder('src', ['.ts']), ...filesUnder('functions', ['.ts'])];
    expect(sources.length).toBeGreaterThan(20);
    const offending = sources.flatMap((file) =>
      specifiers(readFileSync(join(ROOT, file), 'utf8'))
        .filter((s) => s.startsWith('.') && TOOLING.test(s))
        .map((s) => `${file}: ${s}`),
    );
    expect(offending).toEqual([]);
  });

  it('nothing compiled under dist/src, dist/functions or the dist/bundle of `npm start` holds testkit code', () => {
    const compiled = [...filesUnder('dist/src', ['.js']), ...filesUnder('dist/functions', ['.js']), ...filesUnder('dist/bundle', ['.js'])];
    expect(compiled).toContain(join('dist/bundle', 'main.js'));
    const offending = compiled.filter((file) => {
      const text = readFileSync(join(ROOT, file), 'utf8');
      return specifiers(text).some((s) => TOOLING.test(s)) || text.includes('DevIdentityProvider');
    });
    expect(offending).toEqual([]);
  });
});
