/**
 * The refresh timer function (functions/refresh.ts) run the way the Functions host runs it, through
 * @azure/functions in test mode: the handler functions/refresh.ts registers, a real InvocationContext
 * and a Timer object, the worker built from app settings (PDP_CONFIG, the snapshot store settings).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { InvocationContext, type Timer, type TimerFunctionOptions } from '@azure/functions';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { PdpService } from '../../src/app.js';
import { parseConfig } from '../../src/config/load.js';
import { startAzurite, type RunningAzurite } from '../../testkit/azurite.js';

/** What functions/*.ts register; @azure/functions in test mode only warns and skips registration. */
const registered = vi.hoisted(() => ({ timers: new Map<string, TimerFunctionOptions>() }));

vi.mock('@azure/functions', async (importOriginal) => {
  const original = await importOriginal<typeof import('@azure/functions')>();
  return {
    ...original,
    app: {
      ...original.app,
      timer: (name: string, options: TimerFunctionOptions) => {
        registered.timers.set(name, options);
        original.app.timer(name, options);
      },
      http: () => {},
    },
  };
});

const AUDIENCE = 'https://fhir.example.test';
const SETTINGS = ['PDP_CONFIG', 'PDP_CONFIG_FILE', 'PDP_SNAPSHOT_STORE', 'PDP_SNAPSHOT_CONNECTION', 'PDP_SNAPSHOT_CONTAINER', 'PDP_SNAPSHOT_SIGNING_KEYS', 'PDP_REFRESH_SCHEDULE', 'PDP_LOG_DECISIONS', 'AzureWebJobsStorage'] as const;
const SIGNING_KEYS = `timer-test:${randomBytes(32).toString('base64')}`;
const saved = Object.fromEntries(SETTINGS.map((k) => [k, process.env[k]]));

let idp: DevIdentityProvider;
let azurite: RunningAzurite;

beforeAll(async () => {
  [idp, azurite] = await Promise.all([DevIdentityProvider.start(), startAzurite()]);
});

afterAll(async () => {
  await Promise.all([idp?.close(), azurite?.stop()]);
});

type AzureAdapter = typeof import('../../src/http/azure.js');
let azure: AzureAdapter | undefined;

/**
 * Loads functions/refresh.ts afresh (as a new worker process would, reading PDP_REFRESH_SCHEDULE)
 * and the adapter instance its handler uses.
 */
async function loadFunctions(): Promise<{ options: TimerFunctionOptions; azure: AzureAdapter }> {
  azure?.resetFunctionsApp();
  registered.timers.clear();
  vi.resetModules();
  await import('../../functions/refresh.js');
  azure = await import('../../src/http/azure.js');
  const options = registered.timers.get('refreshTimer');
  if (!options) throw new Error('functions/refresh.ts registered no refreshTimer');
  return { options, azure };
}

afterEach(() => {
  azure?.resetFunctionsApp();
  idp.up();
  for (const k of SETTINGS) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

function configJson(): string {
  return JSON.stringify({ authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }] });
}

function setSettings(settings: Partial<Record<(typeof SETTINGS)[number], string>>): void {
  for (const k of SETTINGS) delete process.env[k];
  Object.assign(process.env, { PDP_LOG_DECISIONS: 'false', ...settings });
}

function timer(isPastDue = false): Timer {
  const now = Date.now();
  return {
    isPastDue,
    schedule: { adjustForDST: true },
    scheduleStatus: {
      last: new Date(now - 300_000).toISOString(),
      next: new Date(now + 300_000).toISOString(),
      lastUpdated: new Date(now - 300_000).toISOString(),
    },
  };
}

interface RefreshLog {
  type: string;
  outcome: string;
  revision: string;
  durationMs: number;
  stored: string;
  problems: string[];
}

/** Runs the registered timer handler once; returns the refresh line it logged. */
async function fire(options: TimerFunctionOptions, t: Timer = timer()): Promise<RefreshLog> {
  const lines: string[] = [];
  const context = new InvocationContext({
    invocationId: randomUUID(),
    functionName: 'refreshTimer',
    logHandler: (_level, ...args) => lines.push(args.map(String).join(' ')),
  });
  await options.handler(t, context);
  const refreshLines = lines.map((l) => JSON.parse(l) as RefreshLog).filter((l) => l.type === 'refresh');
  expect(refreshLines).toHaveLength(1);
  return refreshLines[0]!;
}

function revisionOf(service: PdpService): string | null {
  return (service.health().snapshot as { revision: string | null }).revision;
}

describe('functions/refresh.ts', () => {
  it('registers the timer on PDP_REFRESH_SCHEDULE, every 5 minutes by default, not on start-up', async () => {
    setSettings({});
    expect((await loadFunctions()).options).toMatchObject({ schedule: '0 */5 * * * *', runOnStartup: false });
    setSettings({ PDP_REFRESH_SCHEDULE: '0 */1 * * * *' });
    expect((await loadFunctions()).options).toMatchObject({ schedule: '0 */1 * * * *' });
  });

  it('refreshes in process with the memory store and logs the outcome', async () => {
    setSettings({ PDP_CONFIG: configJson() });
    const { options, azure } = await loadFunctions();
    const first = await fire(options);
    expect(first).toMatchObject({ outcome: 'ok', stored: 'written', problems: [] });
    const { service } = azure.functionsAppOf();
    expect(service.store.kind).toBe('memory');
    expect(revisionOf(service)).toBe(first.revision);

    const kid = idp.rotateKey();
    const second = await fire(options, timer(true));
    expect(second.revision).not.toBe(first.revision);
    expect(revisionOf(service)).toBe(second.revision);
    const stored = await service.store.read();
    const kids = stored && stored !== 'not-modified' ? stored.data.issuers.flatMap((i) => i.keys.map((k) => k.kid)) : [];
    expect(kids).toContain(kid);
  });

  it('writes the snapshot to Blob Storage, where another instance reads it', async () => {
    const container = `t-${randomUUID()}`;
    setSettings({ PDP_CONFIG: configJson(), PDP_SNAPSHOT_STORE: 'blob', PDP_SNAPSHOT_CONNECTION: azurite.connectionString, PDP_SNAPSHOT_CONTAINER: container, PDP_SNAPSHOT_SIGNING_KEYS: SIGNING_KEYS });
    const { options, azure } = await loadFunctions();
    const report = await fire(options);
    expect(report).toMatchObject({ outcome: 'ok', stored: 'written' });
    expect(azure.functionsAppOf().service.store.kind).toBe('blob');

    const other = new PdpService({
      config: parseConfig(JSON.parse(configJson())),
      env: { PDP_SNAPSHOT_STORE: 'blob', PDP_SNAPSHOT_CONNECTION: azurite.connectionString, PDP_SNAPSHOT_CONTAINER: container, PDP_SNAPSHOT_SIGNING_KEYS: SIGNING_KEYS },
    });
    try {
      expect(await other.pollSnapshot()).toBe('changed');
      expect(revisionOf(other)).toBe(report.revision);
    } finally {
      other.stop();
    }
  });

  it('logs a partial refresh and keeps serving when the authority is down', async () => {
    setSettings({ PDP_CONFIG: configJson() });
    const { options, azure } = await loadFunctions();
    const first = await fire(options);
    idp.down();
    const report = await fire(options);
    expect(report.outcome).toBe('partial');
    expect(report.problems.length).toBeGreaterThan(0);
    // The keys of the first refresh are kept in the new snapshot.
    const { service } = azure.functionsAppOf();
    expect(revisionOf(service)).toBe(report.revision);
    expect(report.revision).not.toBe(first.revision);
    const token = await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation' });
    const decision = await service.pdp.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${token}`] } });
    expect(decision.reason).toBe('allowed');
  });

  it('fails the invocation with every problem listed when the configuration is invalid', async () => {
    setSettings({ PDP_CONFIG: JSON.stringify({ authority: 'http://login.example.com/tenant' }) });
    const { options } = await loadFunctions();
    await expect(fire(options)).rejects.toMatchObject({ problems: expect.arrayContaining([expect.objectContaining({ path: expect.any(String) })]) });
  });
});
