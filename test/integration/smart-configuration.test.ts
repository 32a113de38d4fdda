/**
 * GET /api/smart-configuration through the standalone host (createPdpServer + PdpService): built
 * from the config and the discovery document of a real OpenID provider (npm oidc-provider) or of
 * the Entra look-alike; an authority whose discovery lacks token_endpoint gives a 503 with its
 * reason, never a document without it.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PdpConfigInput } from '../../src/config/schema.js';
import { DevIdentityProvider } from '../../testkit/dev-idp.js';
import { startOidcProvider, type RunningOidcProvider } from '../../testkit/oidc-provider.js';
import { E2E_ADMIN_KEY, E2E_AUDIENCE, startE2ePdp, type E2ePdp } from '../../testkit/service.js';

let entra: DevIdentityProvider;
let provider: RunningOidcProvider;
/** An OpenID provider whose discovery document has no token_endpoint (and no authorization_endpoint). */
let bare: Server;
let bareAuthority: string;
const pdps: E2ePdp[] = [];

async function start(config: Partial<PdpConfigInput>): Promise<E2ePdp> {
  const pdp = await startE2ePdp({ authority: entra.authority, audience: E2E_AUDIENCE, ...config });
  pdps.push(pdp);
  return pdp;
}

async function get(pdp: E2ePdp, headers: Record<string, string> = {}, method = 'GET') {
  const res = await fetch(`${pdp.url}/api/smart-configuration`, { method, headers });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as Record<string, unknown>) : undefined };
}

beforeAll(async () => {
  entra = await DevIdentityProvider.start();
  provider = await startOidcProvider({ clients: [{ client_id: 'portal', client_secret: 'secret' }], resource: E2E_AUDIENCE });
  const { publicKey } = await generateKeyPair('RS256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
  bare = createServer((req, res) => {
    const origin = `http://127.0.0.1:${(bare.address() as AddressInfo).port}`;
    const body =
      req.url === '/.well-known/openid-configuration' ? { issuer: origin, jwks_uri: `${origin}/jwks` } : req.url === '/jwks' ? { keys: [jwk] } : undefined;
    res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(body ?? {}));
  });
  await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
  bareAuthority = `http://127.0.0.1:${(bare.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await Promise.all(pdps.map((p) => p.close()));
  await provider.close();
  await entra.close();
  bare.closeAllConnections();
  await new Promise((resolve) => bare.close(resolve));
});

describe('GET /api/smart-configuration', () => {
  it('serves, without a key, the document built from a real OpenID provider with sso-openid-connect', async () => {
    const pdp = await start({
      smartIdentityProviders: [{ authority: provider.issuer, applications: [{ clientId: 'portal', audience: E2E_AUDIENCE, allowedDataActions: ['read'] }] }],
      smartConfiguration: { authority: provider.issuer, capabilities: ['launch-standalone', 'client-confidential-symmetric', 'sso-openid-connect', 'permission-v2'], scopesSupported: ['openid', 'patient/*.rs'] },
    });
    const res = await get(pdp);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const discovery = (await (await fetch(provider.discoveryUrl)).json()) as Record<string, string>;
    const d = res.body!;
    expect(d.authorization_endpoint).toBe(discovery.authorization_endpoint);
    expect(d.token_endpoint).toBe(provider.tokenEndpoint);
    expect(d.issuer).toBe(provider.issuer);
    expect(d.jwks_uri).toBe(discovery.jwks_uri);
    expect(d.capabilities).toEqual(['launch-standalone', 'client-confidential-symmetric', 'sso-openid-connect', 'permission-v2']);
    expect(d.grant_types_supported).toContain('authorization_code');
    expect(d.code_challenge_methods_supported).toContain('S256');
    expect(d.code_challenge_methods_supported).not.toContain('plain');
    expect(d.scopes_supported).toEqual(['openid', 'patient/*.rs']);
    const head = await get(pdp, {}, 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBeUndefined();
  });

  it('uses the Entra authority\'s v2.0 endpoints by default', async () => {
    const pdp = await start({ smartConfiguration: {} });
    const res = await get(pdp);
    expect(res.status).toBe(200);
    expect(res.body!.authorization_endpoint).toMatch(/\/oauth2\/v2\.0\/authorize$/);
    expect(res.body!.token_endpoint).toMatch(/\/oauth2\/v2\.0\/token$/);
    expect(res.body).not.toHaveProperty('issuer');
  });

  it('answers 503 issuer_unavailable, not a document without token_endpoint, when the discovery lacks it', async () => {
    const pdp = await start({
      smartIdentityProviders: [{ authority: bareAuthority, applications: [{ clientId: 'bare', audience: E2E_AUDIENCE, allowedDataActions: ['read'] }] }],
      smartConfiguration: { authority: bareAuthority },
    });
    const anonymous = await get(pdp);
    expect(anonymous.status).toBe(503);
    expect(anonymous.body).toEqual({ error: 'issuer_unavailable', message: expect.any(String) });
    const admin = await get(pdp, { 'x-functions-key': E2E_ADMIN_KEY });
    expect(admin.status).toBe(503);
    expect(admin.body).toMatchObject({ error: 'issuer_unavailable', hint: expect.stringContaining('token_endpoint') });
  });

  it('is 404 when smartConfiguration is not set (the FHIR server serves discovery), and 405 for POST', async () => {
    const pdp = await start({});
    expect((await get(pdp)).status).toBe(404);
    const configured = await start({ smartConfiguration: {} });
    expect((await get(configured, {}, 'POST')).status).toBe(405);
  });
});
