/**
 * buildApp, the one composition root: settings are read through readSettings (a bad one is refused
 * at build time, naming it), and its decide is the decision entry point modes and APIs plug into.
 */
import { describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { ConfigError, parseConfig } from '../../src/config/load.js';

const config = parseConfig({
  authority: 'https://login.microsoftonline.com/8f6d2c1e-0000-4000-8000-000000000000/v2.0',
  audience: 'api://fhir-pdp-app-test',
  accessPolicies: [{ objectId: '0b7c4a52-0000-4000-8000-000000000001', dataActions: ['read'] }],
});

describe('buildApp', () => {
  it('decides through the app: a question without a token is 401 missing_token, with no network', async () => {
    const app = buildApp({}, config);
    try {
      const d = await app.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [] } });
      expect({ decision: d.decision, status: d.status, reason: d.reason }).toEqual({ decision: 'deny', status: 401, reason: 'missing_token' });
      expect(app.health().ready).toBe(false);
    } finally {
      app.stop();
    }
  });

  it('refuses an invalid app setting when it is built, naming the setting', () => {
    let caught: unknown;
    try {
      buildApp({ PDP_SNAPSHOT_POLL_SECONDS: 'soon' }, config);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).problems.map((p) => p.path)).toContain('PDP_SNAPSHOT_POLL_SECONDS');
  });
});
