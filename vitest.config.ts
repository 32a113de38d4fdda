import { defineConfig } from 'vitest/config';

// Unit and integration tests: `npm test`. The end-to-end suites that need system packages
// (nginx, chromium) live in test/e2e and run from vitest.e2e.config.ts (`.ci/run` installs them).
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
