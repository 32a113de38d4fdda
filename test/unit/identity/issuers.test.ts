/**
 * The authority endpoints SMART discovery publishes, as the issuer registry keeps them: from a
 * snapshot written by another process, only https (or loopback http) endpoints survive, as for a
 * fetched document; Entra's `/v2.0` document is preferred.
 */
import { exportJWK, generateKeyPair } from 'jose';
import { describe, expect, it } from 'vitest';
import { IssuerRegistry } from '../../../src/identity/issuers.js';
import type { IssuerRecord } from '../../../src/core/records.js';

const AUTHORITY = 'https://login.example/tenant';

async function record(overrides: Partial<IssuerRecord>): Promise<IssuerRecord> {
  const { publicKey } = await generateKeyPair('RS256');
  return {
    authority: AUTHORITY,
    discoveryUrl: `${AUTHORITY}/.well-known/openid-configuration`,
    issuer: 'https://sts.example/tenant/',
    jwksUri: `${AUTHORITY}/discovery/keys`,
    algorithms: ['RS256'],
    keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', use: 'sig' }],
    fetchedAt: 0,
    ...overrides,
  };
}

function registry(): IssuerRegistry {
  return new IssuerRegistry({ authorities: [AUTHORITY], fetchTimeoutMs: 1000, jwksRefetchCooldownMs: 0, metadataRetryMs: 0, maxStaleMs: 1e12, clock: () => 0 });
}

describe('IssuerRegistry.discoveryOf', () => {
  it('prefers the /v2.0 document and keeps its endpoints', async () => {
    const r = registry();
    r.load([
      await record({ tokenEndpoint: `${AUTHORITY}/oauth2/token` }),
      await record({
        discoveryUrl: `${AUTHORITY}/v2.0/.well-known/openid-configuration`,
        issuer: `${AUTHORITY}/v2.0`,
        authorizationEndpoint: `${AUTHORITY}/oauth2/v2.0/authorize`,
        tokenEndpoint: `${AUTHORITY}/oauth2/v2.0/token`,
      }),
    ]);
    expect(r.discoveryOf(AUTHORITY)).toMatchObject({ issuer: `${AUTHORITY}/v2.0`, tokenEndpoint: `${AUTHORITY}/oauth2/v2.0/token`, authorizationEndpoint: `${AUTHORITY}/oauth2/v2.0/authorize` });
  });

  it('drops a snapshot endpoint that is not https, so discovery refuses rather than publish it', async () => {
    const r = registry();
    r.load([await record({ authorizationEndpoint: 'http://attacker.example/authorize', tokenEndpoint: `${AUTHORITY}/oauth2/token` })]);
    const d = r.discoveryOf(AUTHORITY);
    expect(d?.tokenEndpoint).toBe(`${AUTHORITY}/oauth2/token`);
    expect(d).not.toHaveProperty('authorizationEndpoint');
  });

  it('is undefined for an authority not loaded or not configured', () => {
    expect(registry().discoveryOf(AUTHORITY)).toBeUndefined();
    expect(registry().discoveryOf('https://other.example')).toBeUndefined();
  });
});
