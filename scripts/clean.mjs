/**
 * Empties dist/ before `npm run build`. Why: `files` in package.json publishes dist/src and
 * dist/functions whole, so a file compiled there by an older tree (a module since moved to
 * testkit/, say) would otherwise ship in the package although no source holds it any more.
 */
import { rmSync } from 'node:fs';

rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });
