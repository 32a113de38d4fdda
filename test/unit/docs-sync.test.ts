import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SETTINGS } from '../../src/config/settings.js';
import { configSchema } from '../../src/config/schema.js';

const root = new URL('../../', import.meta.url);
const read = (p: string) => readFileSync(new URL(p, root), 'utf8');

describe('documentation stays in sync with the code', () => {
  it('local.settings.sample.json lists every app setting with its description', () => {
    const sample = JSON.parse(read('local.settings.sample.json')) as { Values: Record<string, string>; Descriptions: Record<string, string> };
    for (const [name, def] of Object.entries(SETTINGS)) {
      expect(sample.Values, name).toHaveProperty(name);
      expect(sample.Descriptions[name], name).toBe(def.description);
    }
    for (const name of Object.keys(sample.Values)) {
      if (name === 'FUNCTIONS_WORKER_RUNTIME' || name === 'AzureWebJobsFeatureFlags') continue;
      expect(Object.keys(SETTINGS), `${name} is in the sample but not in SETTINGS`).toContain(name);
    }
  });

  it('docs/configuration.md is what scripts/gen-config-docs.mjs generates from the schemas', () => {
    const before = read('docs/configuration.md');
    // The generator reads the built schemas; the test suite runs after `npm run build`.
    execFileSync(process.execPath, ['scripts/gen-config-docs.mjs'], { cwd: root });
    expect(read('docs/configuration.md')).toBe(before);
    for (const key of Object.keys(configSchema.shape)) expect(before).toContain(`| \`${key}\` |`);
  });

  it('the README starts with the two commands of the quick start', () => {
    const firstScreen = read('README.md').split('\n').slice(0, 25).join('\n');
    expect(firstScreen).toContain('npm install && npm run dev');
    expect(firstScreen).toContain('npm test');
  });

  it('the project keeps the shared decision contract verbatim', () => {
    const shared = new URL('../../../shared/docs/decision-contract.md', import.meta.url);
    let contract: string;
    try {
      contract = readFileSync(shared, 'utf8');
    } catch {
      return; // a clone without ../shared beside it: nothing to compare against
    }
    expect(read('docs/decision-contract.md')).toBe(contract);
  });
});
