import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfigFile, loadConfigFromEnv, parseConfig, parseConfigText } from '../../../src/config/load.js';
import { isLoopbackHost } from '../../../src/core/loopback.js';

const OID = 'C5A1E9D7-2B3F-4C8A-9D6E-0F1A2B3C4D5E';
const OTHER = '0b8c1a2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d';
const minimal = { authority: 'https://login.microsoftonline.com/8f6d2c1e-4b7a-4e39-9c5d-2a1b3c4d5e6f', audience: 'https://fhir.example.test' };

function problemsOf(value: unknown): { path: string; message: string }[] {
  try {
    parseConfig(value);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).code).toBe('invalid_config');
    return [...(err as ConfigError).problems];
  }
  throw new Error('expected a ConfigError');
}

describe('parseConfig: a valid configuration', () => {
  it('applies the documented defaults', () => {
    const c = parseConfig(minimal);
    expect(c).toMatchObject({
      audiences: [],
      accessPolicies: [],
      roles: [],
      smartIdentityProviders: [],
      compartmentMode: 'refuse',
      clockSkewSeconds: 300,
      maxTokenBytes: 16384,
      jwksRefetchCooldownSeconds: 30,
      metadataRetrySeconds: 10,
    });
    expect(c.graph).toBeUndefined();
    expect(c.compartmentLookup).toBeUndefined();
  });

  it('reads a compartment lookup with its bounded defaults, the URL without a trailing slash', () => {
    const c = parseConfig({ ...minimal, compartmentLookup: { fhirBaseUrl: 'https://ws-fhir.fhir.azurehealthcareapis.com/', credential: { kind: 'managedIdentity' } } });
    expect(c.compartmentLookup).toEqual({
      fhirBaseUrl: 'https://ws-fhir.fhir.azurehealthcareapis.com',
      credential: { kind: 'managedIdentity' },
      timeoutMs: 2000,
      cacheSeconds: 60,
      maxEntries: 10000,
      maxResponseBytes: 65536,
    });
    expect(parseConfig({ ...minimal, compartmentLookup: { fhirBaseUrl: 'http://127.0.0.1:8080/fhir', credential: { kind: 'none' } } }).compartmentLookup?.credential).toEqual({ kind: 'none' });
  });

  it('normalises the authority (no trailing slash) and object ids (lower case)', () => {
    const c = parseConfig({ ...minimal, authority: `${minimal.authority}//`, accessPolicies: [{ objectId: ` ${OID} ` }] });
    expect(c.authority).toBe(minimal.authority);
    expect(c.accessPolicies[0]!.objectId).toBe(OID.toLowerCase());
    expect(c.accessPolicies[0]!.dataActions).toBeUndefined();
  });

  it('matches data actions case-insensitively and accepts *', () => {
    const c = parseConfig({ ...minimal, accessPolicies: [{ objectId: OID, dataActions: ['Read', 'WRITE', '*'] }] });
    expect(c.accessPolicies[0]!.dataActions).toEqual(['Read', 'WRITE', '*']);
  });

  it('accepts fhirBaseUrl alone as the audience', () => {
    expect(() => parseConfig({ authority: minimal.authority, fhirBaseUrl: 'https://fhir.example.test/r4' })).not.toThrow();
  });

  it.each(['http://127.0.0.1:8080/tenant', 'http://127.10.20.30', 'http://localhost:9000', 'http://[::1]:9000/t'])(
    'accepts a plain-http loopback authority: %s',
    (authority) => {
      expect(parseConfig({ ...minimal, authority }).authority).toBe(authority);
    },
  );

  it('accepts a roles.json role with scopes ["/"] and defaults notDataActions to []', () => {
    const c = parseConfig({ ...minimal, roles: [{ name: 'globalReader', dataActions: ['read'], scopes: ['/'] }] });
    expect(c.roles[0]!.notDataActions).toEqual([]);
  });
});

describe('parseConfig: every problem, by JSON path', () => {
  it.each<[string, Record<string, unknown>, string]>([
    ['no authority', { audience: 'x' }, 'authority'],
    ['an authority that is not a URL', { ...minimal, authority: 'login.microsoftonline.com' }, 'authority'],
    ['plain http to a non-loopback host', { ...minimal, authority: 'http://login.example.test/t' }, 'authority'],
    ['plain http to a look-alike of loopback', { ...minimal, authority: 'http://127.0.0.1.nip.io/t' }, 'authority'],
    ['an authority with a query', { ...minimal, authority: 'https://idp.example.test/t?x=1' }, 'authority'],
    ['an authority with credentials', { ...minimal, authority: 'https://u:p@idp.example.test/t' }, 'authority'],
    ['an authority with a fragment', { ...minimal, authority: 'https://idp.example.test/t#f' }, 'authority'],
    ['neither audience nor fhirBaseUrl', { authority: minimal.authority }, 'audience'],
    ['an empty audience', { ...minimal, audience: '' }, 'audience'],
    ['a fhirBaseUrl that is not http(s)', { ...minimal, fhirBaseUrl: 'ftp://fhir.example.test' }, 'fhirBaseUrl'],
    ['an object id that is not a GUID', { ...minimal, accessPolicies: [{ objectId: 'alice@contoso.com' }] }, 'accessPolicies[0].objectId'],
    ['an unknown data action', { ...minimal, accessPolicies: [{ objectId: OID, dataActions: ['read', 'readAll'] }] }, 'accessPolicies[0].dataActions[1]'],
    ['an object id listed twice (any case)', { ...minimal, accessPolicies: [{ objectId: OID }, { objectId: OID.toLowerCase() }] }, 'accessPolicies[1].objectId'],
    ['a role defined twice', { ...minimal, roles: [{ name: 'r', dataActions: ['read'] }, { name: 'r', dataActions: ['write'] }] }, 'roles[1].name'],
    ['a role scope other than "/"', { ...minimal, roles: [{ name: 'r', dataActions: ['read'], scopes: ['/Patient'] }] }, 'roles[0].scopes[0]'],
    ['an unknown setting', { ...minimal, tokenLifetime: 5 }, '$'],
    ['an unknown member of an access policy', { ...minimal, accessPolicies: [{ objectId: OID, actions: ['read'] }] }, 'accessPolicies[0]'],
    ['a compartment lookup over plain http to a non-loopback host', { ...minimal, compartmentLookup: { fhirBaseUrl: 'http://fhir.example.test', credential: { kind: 'managedIdentity' } } }, 'compartmentLookup.fhirBaseUrl'],
    ['a compartment lookup URL with a query', { ...minimal, compartmentLookup: { fhirBaseUrl: 'https://fhir.example.test/?x=1', credential: { kind: 'managedIdentity' } } }, 'compartmentLookup.fhirBaseUrl'],
    ['a compartment lookup without a credential off loopback', { ...minimal, compartmentLookup: { fhirBaseUrl: 'https://fhir.example.test', credential: { kind: 'none' } } }, 'compartmentLookup.credential'],
    ['a compartment lookup with no credential at all', { ...minimal, compartmentLookup: { fhirBaseUrl: 'https://fhir.example.test' } }, 'compartmentLookup.credential'],
    ['a compartment lookup with a secret in the config JSON', { ...minimal, compartmentLookup: { fhirBaseUrl: 'https://fhir.example.test', credential: { kind: 'managedIdentity', clientSecret: 's' } } }, 'compartmentLookup.credential'],
    ['a compartment lookup timeout above 30 s', { ...minimal, compartmentLookup: { fhirBaseUrl: 'http://127.0.0.1:1', credential: { kind: 'none' }, timeoutMs: 60000 } }, 'compartmentLookup.timeoutMs'],
    ['maxTokenBytes below 1024', { ...minimal, maxTokenBytes: 100 }, 'maxTokenBytes'],
    ['maxTokenBytes above 64 KiB', { ...minimal, maxTokenBytes: 65537 }, 'maxTokenBytes'],
    ['a negative clock skew', { ...minimal, clockSkewSeconds: -1 }, 'clockSkewSeconds'],
    ['a fractional cooldown', { ...minimal, jwksRefetchCooldownSeconds: 1.5 }, 'jwksRefetchCooldownSeconds'],
    ['a fetch timeout below 100 ms', { ...minimal, fetchTimeoutMs: 10 }, 'fetchTimeoutMs'],
    ['an unknown compartment mode', { ...minimal, compartmentMode: 'allow' }, 'compartmentMode'],
    [
      'a SMART provider with the primary authority',
      { ...minimal, smartIdentityProviders: [{ authority: `${minimal.authority}/`, applications: [{ clientId: 'a', audience: 'x', allowedDataActions: ['read'] }] }] },
      'smartIdentityProviders[0].authority',
    ],
    [
      'a SMART provider with no applications',
      { ...minimal, smartIdentityProviders: [{ authority: 'https://idp.example.test', applications: [] }] },
      'smartIdentityProviders[0].applications',
    ],
    [
      'a client id used by two providers',
      {
        ...minimal,
        smartIdentityProviders: [
          { authority: 'https://a.example.test', applications: [{ clientId: 'portal', audience: 'x', allowedDataActions: ['read'] }] },
          { authority: 'https://b.example.test', applications: [{ clientId: 'portal', audience: 'x', allowedDataActions: ['read'] }] },
        ],
      },
      'smartIdentityProviders[1].applications[0].clientId',
    ],
    [
      'a SMART application without allowedDataActions',
      { ...minimal, smartIdentityProviders: [{ authority: 'https://idp.example.test', applications: [{ clientId: 'a', audience: 'x', allowedDataActions: [] }] }] },
      'smartIdentityProviders[0].applications[0].allowedDataActions',
    ],
  ])('%s -> %s', (_what, value, path) => {
    expect(problemsOf(value).map((p) => p.path)).toContain(path);
  });

  it('names the unknown settings', () => {
    const [problem] = problemsOf({ ...minimal, tokenLifetime: 5 });
    expect(problem!.message).toContain('tokenLifetime');
  });

  it('lists every problem at once, never the first only', () => {
    const problems = problemsOf({
      authority: 'http://idp.example.test',
      accessPolicies: [{ objectId: 'nope' }, { objectId: OTHER, dataActions: ['fly'] }],
      maxTokenBytes: 1,
    });
    expect(problems.map((p) => p.path)).toEqual(
      expect.arrayContaining(['authority', 'accessPolicies[0].objectId', 'accessPolicies[1].dataActions[0]', 'maxTokenBytes']),
    );
    expect(problems.length).toBeGreaterThanOrEqual(4);
  });

  it.each([null, 42, 'text', []])('refuses a configuration that is not an object: %j', (value) => {
    expect(problemsOf(value).length).toBeGreaterThan(0);
  });
});

describe('parseConfigText, loadConfigFile, loadConfigFromEnv', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-pdp-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses text that is not JSON at $', () => {
    try {
      parseConfigText('{"authority": ');
      expect.unreachable();
    } catch (err) {
      expect((err as ConfigError).problems[0]!.path).toBe('$');
    }
  });

  it('refuses text larger than 4 MiB before parsing it', () => {
    const big = JSON.stringify({ ...minimal, audiences: ['x'.repeat(4 * 1024 * 1024)] });
    expect(() => parseConfigText(big)).toThrow(ConfigError);
    try {
      parseConfigText(big);
    } catch (err) {
      expect((err as ConfigError).problems).toEqual([{ path: '$', message: expect.stringContaining('larger than') }]);
    }
  });

  it('reads PDP_CONFIG inline', () => {
    expect(loadConfigFromEnv({ PDP_CONFIG: JSON.stringify(minimal) }).audience).toBe(minimal.audience);
  });

  it('reads PDP_CONFIG_FILE', () => {
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify(minimal));
    expect(loadConfigFromEnv({ PDP_CONFIG_FILE: file }).authority).toBe(minimal.authority);
    expect(loadConfigFile(file).authority).toBe(minimal.authority);
  });

  it.each<[string, Record<string, string | undefined>]>([
    ['neither setting', {}],
    ['both settings', { PDP_CONFIG: JSON.stringify(minimal), PDP_CONFIG_FILE: '/x.json' }],
    ['a file that does not exist', { PDP_CONFIG_FILE: '/nonexistent/fhir-pdp.json' }],
    ['an invalid inline configuration', { PDP_CONFIG: '{"authority":"x"}' }],
  ])('refuses %s with a ConfigError', (_what, env) => {
    expect(() => loadConfigFromEnv(env)).toThrow(ConfigError);
  });

  it('names the file that fails validation as the source', () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ authority: 'nope' }));
    try {
      loadConfigFile(file);
      expect.unreachable();
    } catch (err) {
      expect((err as ConfigError).source).toBe(file);
      expect((err as ConfigError).message).toContain('authority');
    }
  });
});

describe('parseConfig: Azure ARM resource JSON', () => {
  const authenticationConfiguration = { authority: minimal.authority, audience: 'https://contoso.azurehealthcareapis.com', smartProxyEnabled: false };

  it('maps Microsoft.HealthcareApis/services: authority, audience, fhirBaseUrl, access policies (all actions)', () => {
    const c = parseConfig({
      type: 'Microsoft.HealthcareApis/services',
      name: 'contoso',
      properties: { authenticationConfiguration, accessPolicies: [{ objectId: OID }] },
    });
    expect(c.authority).toBe(minimal.authority);
    expect(c.audience).toBe('https://contoso.azurehealthcareapis.com');
    expect(c.fhirBaseUrl).toBe('https://contoso.azurehealthcareapis.com');
    expect(c.accessPolicies).toEqual([{ objectId: OID.toLowerCase() }]);
  });

  it('maps workspaces/fhirservices names to the workspace-service URL', () => {
    const c = parseConfig({
      type: 'Microsoft.HealthcareApis/workspaces/fhirservices',
      name: 'ws/fhir1',
      properties: { authenticationConfiguration },
    });
    expect(c.fhirBaseUrl).toBe('https://ws-fhir1.fhir.azurehealthcareapis.com');
  });

  it('carries SMART identity providers over and still validates them', () => {
    const smartIdentityProviders = [{ authority: 'https://idp.example.test', applications: [{ clientId: 'portal', audience: 'x', allowedDataActions: ['Read'] }] }];
    const c = parseConfig({ properties: { authenticationConfiguration: { ...authenticationConfiguration, smartIdentityProviders } } });
    expect(c.smartIdentityProviders[0]!.applications[0]!.clientId).toBe('portal');
    const bad = [{ authority: 'http://idp.example.test', applications: [{ clientId: 'p', audience: 'x', allowedDataActions: ['Read'] }] }];
    expect(problemsOf({ properties: { authenticationConfiguration: { ...authenticationConfiguration, smartIdentityProviders: bad } } }).map((p) => p.path)).toContain(
      'smartIdentityProviders[0].authority',
    );
  });

  it('reports an ARM object id that is not a GUID by its mapped path', () => {
    expect(problemsOf({ properties: { authenticationConfiguration, accessPolicies: [{ objectId: 'x' }] } }).map((p) => p.path)).toContain('accessPolicies[0].objectId');
  });
});

describe('isLoopbackHost', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.255.0.9', true],
    ['localhost', true],
    ['LOCALHOST', true],
    ['[::1]', true],
    ['::1', true],
    ['128.0.0.1', false],
    ['127.0.0.1.example.test', false],
    ['0.0.0.0', false],
    ['localhost.example.test', false],
  ])('%s -> %s', (host, expected) => {
    expect(isLoopbackHost(host)).toBe(expected);
  });
});
