/**
 * Bundles the standalone host (`npm start`) into dist/bundle/ after `tsc` has compiled it.
 *
 * Why: a cold start spent most of its time in the ESM loader, resolving, reading and compiling
 * hundreds of small files (jose, zod, and @azure/storage-blob when a Blob snapshot is configured).
 * One file per part loads in a fraction of that (bench/PROFILE.md: warm-snapshot cold start).
 * `splitting` keeps the lazily loaded Azure SDK edges (src/lazy-edges.ts) in chunks of their own, so
 * a configuration without Graph or Blob still never loads them. tsc stays the compiler and type
 * checker; esbuild only joins its output.
 */
import { build } from 'esbuild';

await build({
  entryPoints: { main: 'dist/src/host/main.js' },
  outdir: 'dist/bundle',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Whitespace and syntax only: identifiers keep their names, so stack traces stay readable.
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  // CommonJS dependencies inside an ESM bundle call require() for Node's built-in modules.
  banner: { js: "import { createRequire as __pdpCreateRequire } from 'node:module'; const require = __pdpCreateRequire(import.meta.url);" },
  logLevel: 'warning',
  legalComments: 'linked',
  // Loaded only when APPLICATIONINSIGHTS_CONNECTION_STRING is set (src/telemetry/azure-monitor.ts),
  // from node_modules: the distro patches modules at load time and must not be inlined.
  external: ['@azure/monitor-opentelemetry'],
});
