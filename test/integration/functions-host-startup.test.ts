/**
 * A bad configuration fails the Functions app's start-up (the appStart hook), as the worker's
 * initialisation would fail in Azure, rather than surfacing on the first request. Its own file:
 * one Functions test host per process (testkit/functions-host.ts).
 */
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { FunctionsHostError, FunctionsTestHost } from '../../testkit/functions-host.js';

const APP_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SETTINGS = ['PDP_CONFIG', 'PDP_CONFIG_FILE', 'PDP_LOG_DECISIONS'] as const;
const saved = Object.fromEntries(SETTINGS.map((k) => [k, process.env[k]]));

afterAll(() => {
  for (const k of SETTINGS) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

it('an invalid configuration fails start-up with every problem listed; no request is ever served', async () => {
  for (const k of SETTINGS) delete process.env[k];
  process.env.PDP_LOG_DECISIONS = 'false';
  process.env.PDP_CONFIG = JSON.stringify({ authority: 'http://idp.example.test', accessPolicies: [{ objectId: 'x' }] });
  const err = await FunctionsTestHost.start({ appRoot: APP_ROOT }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(FunctionsHostError);
  expect((err as FunctionsHostError).code).toBe('app_start_failed');
  // The cause comes from the app's own module graph (native ESM), so it is matched by code, not class.
  const cause = (err as FunctionsHostError).cause as { code?: string; problems?: Array<{ path: string }>; message: string };
  expect(cause.code).toBe('invalid_config');
  expect(cause.problems?.map((p) => p.path)).toEqual(expect.arrayContaining(['authority', 'audience', 'accessPolicies[0].objectId']));
  expect(cause.message).toContain('accessPolicies[0].objectId');
});
