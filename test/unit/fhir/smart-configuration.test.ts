import { describe, expect, it } from 'vitest';
import { configSchema } from '../../../src/config/schema.js';
import { buildSmartConfiguration } from '../../../src/fhir/smart-configuration.js';

const AUTHORITY = 'https://login.example/tenant';
const DISCOVERY = {
  issuer: 'https://login.example/tenant/v2.0',
  jwksUri: 'https://login.example/tenant/discovery/v2.0/keys',
  authorizationEndpoint: 'https://login.example/tenant/oauth2/v2.0/authorize',
  tokenEndpoint: 'https://login.example/tenant/oauth2/v2.0/token',
};

function settings(smartConfiguration: Record<string, unknown> = {}) {
  return configSchema.parse({ authority: AUTHORITY, audience: 'https://fhir.example', smartConfiguration }).smartConfiguration!;
}

describe('buildSmartConfiguration (SMART App Launch 2.x, Metadata)', () => {
  it('carries every required field, S256 and never plain', () => {
    const built = buildSmartConfiguration(settings(), AUTHORITY, DISCOVERY);
    expect(built.ok).toBe(true);
    if (!built.ok) return;
    const d = built.document;
    expect(d.authorization_endpoint).toBe(DISCOVERY.authorizationEndpoint);
    expect(d.token_endpoint).toBe(DISCOVERY.tokenEndpoint);
    expect(d.grant_types_supported).toContain('authorization_code');
    expect(d.code_challenge_methods_supported).toContain('S256');
    expect(d.code_challenge_methods_supported).not.toContain('plain');
    expect(d.capabilities).toEqual(expect.arrayContaining(['launch-standalone', 'permission-v1', 'permission-v2']));
    // Without sso-openid-connect, issuer and jwks_uri are not claimed.
    expect(d).not.toHaveProperty('issuer');
    expect(d).not.toHaveProperty('jwks_uri');
  });

  it('adds issuer and jwks_uri when sso-openid-connect is listed, and the optional lists when set', () => {
    const built = buildSmartConfiguration(
      settings({ capabilities: ['launch-ehr', 'sso-openid-connect'], scopesSupported: ['openid', 'patient/*.rs'], responseTypesSupported: ['code'], tokenEndpointAuthMethodsSupported: ['private_key_jwt'] }),
      AUTHORITY,
      DISCOVERY,
    );
    expect(built).toEqual({
      ok: true,
      document: {
        issuer: DISCOVERY.issuer,
        jwks_uri: DISCOVERY.jwksUri,
        authorization_endpoint: DISCOVERY.authorizationEndpoint,
        token_endpoint: DISCOVERY.tokenEndpoint,
        grant_types_supported: ['authorization_code'],
        scopes_supported: ['openid', 'patient/*.rs'],
        response_types_supported: ['code'],
        token_endpoint_auth_methods_supported: ['private_key_jwt'],
        capabilities: ['launch-ehr', 'sso-openid-connect'],
        code_challenge_methods_supported: ['S256'],
      },
    });
  });

  it('refuses to publish (issuer_unavailable) when the authority gives no token_endpoint', () => {
    const { tokenEndpoint: _, ...noToken } = DISCOVERY;
    const built = buildSmartConfiguration(settings(), AUTHORITY, noToken);
    expect(built).toMatchObject({ ok: false, reason: 'issuer_unavailable', hint: expect.stringContaining('token_endpoint') });
  });

  it('refuses to publish when a launch capability is listed and there is no authorization_endpoint', () => {
    const { authorizationEndpoint: _, ...noAuthorize } = DISCOVERY;
    expect(buildSmartConfiguration(settings(), AUTHORITY, noAuthorize)).toMatchObject({ ok: false, reason: 'issuer_unavailable', hint: expect.stringContaining('authorization_endpoint') });
    // A backend-services-only server needs no authorization endpoint.
    const backend = buildSmartConfiguration(settings({ capabilities: ['client-confidential-asymmetric', 'permission-v2'], grantTypesSupported: ['authorization_code', 'client_credentials'] }), AUTHORITY, noAuthorize);
    expect(backend.ok).toBe(true);
  });

  it('refuses to publish before the authority has been loaded', () => {
    expect(buildSmartConfiguration(settings(), AUTHORITY, undefined)).toMatchObject({ ok: false, reason: 'issuer_unavailable' });
  });
});

describe('smartConfiguration in the config schema', () => {
  const parse = (smartConfiguration: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    configSchema.safeParse({ authority: AUTHORITY, audience: 'https://fhir.example', smartConfiguration, ...extra });

  it.each<[string, Record<string, unknown>, string]>([
    ['plain', { codeChallengeMethodsSupported: ['S256', 'plain'] }, 'codeChallengeMethodsSupported'],
    ['no S256', { codeChallengeMethodsSupported: ['S512'] }, 'codeChallengeMethodsSupported'],
    ['no authorization_code', { grantTypesSupported: ['client_credentials'] }, 'grantTypesSupported'],
    ['an unknown capability', { capabilities: ['launch-everything'] }, 'capabilities.0'],
    ['no capability', { capabilities: [] }, 'capabilities'],
    ['an authority not configured', { authority: 'https://elsewhere.example' }, 'authority'],
    ['an unknown key', { tokenEndpoint: 'https://x.example/token' }, ''],
  ])('refuses %s', (_name, value, path) => {
    const parsed = parse(value);
    expect(parsed.success).toBe(false);
    if (!parsed.success && path) expect(parsed.error.issues.map((i) => i.path.join('.'))).toContain(`smartConfiguration.${path}`);
  });

  it('accepts a SMART identity provider as the authority', () => {
    const provider = 'https://smart.example';
    expect(parse({ authority: provider }, { smartIdentityProviders: [{ authority: provider, applications: [{ clientId: 'c', audience: 'a', allowedDataActions: ['read'] }] }] }).success).toBe(true);
  });
});
