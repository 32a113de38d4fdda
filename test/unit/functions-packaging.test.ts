/**
 * What the Functions package holds and how the host is tuned: .funcignore keeps tests, benchmarks,
 * sources and tooling out while the files the host loads stay in; host.json's HTTP throttles are
 * the ones docs/azure-functions.md explains.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const root = new URL('../../', import.meta.url);
const read = (file: string): string => readFileSync(new URL(file, root), 'utf8');

/** The .funcignore patterns this repository uses: anchored paths (`/x`, `/x/`) and unanchored globs on a name. */
function ignored(patterns: readonly string[], path: string): boolean {
  const segments = path.split('/');
  return patterns.some((p) => {
    if (p.startsWith('/')) {
      const anchored = p.slice(1);
      return anchored.endsWith('/') ? `${path}/`.startsWith(anchored) : path === anchored;
    }
    const re = new RegExp(`^${p.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`);
    return segments.some((s) => re.test(s));
  });
}

describe('.funcignore', () => {
  const patterns = read('.funcignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));

  it.each(['test/integration/functions-host.test.ts', 'bench/run.ts', 'dist/bench/run.js', 'testkit/dev-idp.ts', 'dist/testkit/dev-idp.js', 'dist/testkit/dev.js', 'tsconfig.dev.json', 'src/decision/pipeline.ts', 'functions/decide.ts', 'local.settings.json', 'scripts/bundle.mjs', 'docs/state.md'])(
    'leaves out %s',
    (path) => expect(ignored(patterns, path)).toBe(true),
  );

  it.each(['host.json', 'package.json', 'package-lock.json', 'config.json', 'dist/functions/decide.js', 'dist/src/http/azure.js', 'node_modules/@azure/functions/dist/azure-functions.js', 'node_modules/jose/dist/webapi/index.js'])(
    'keeps %s',
    (path) => expect(ignored(patterns, path)).toBe(false),
  );

  it('keeps every file package.json main loads', () => {
    const main = (JSON.parse(read('package.json')) as { main: string }).main;
    expect(main).toBe('dist/functions/*.js');
    expect(ignored(patterns, 'dist/functions/lifecycle.js')).toBe(false);
  });
});

describe('host.json', () => {
  it('sets the HTTP throttles docs/azure-functions.md explains', () => {
    const http = (JSON.parse(read('host.json')) as { extensions: { http: Record<string, unknown> } }).extensions.http;
    expect(http).toEqual({ routePrefix: 'api', maxConcurrentRequests: 500, maxOutstandingRequests: 1000, dynamicThrottlesEnabled: false });
    const doc = read('docs/azure-functions.md');
    for (const [name, value] of Object.entries(http)) expect(doc).toContain(`\`${name}\`: ${JSON.stringify(value)}`);
  });
});
