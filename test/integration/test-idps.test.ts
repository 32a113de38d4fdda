import { generateKeyPairSync } from 'node:crypto';
import {
  compactVerify,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWK,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DEV_APP_ID,
  DEV_OBJECT_ID,
  DEV_TENANT_ID,
  DevIdentityProvider,
  signJwt,
} from '../../testkit/dev-idp.js';
import { startOidcProvider, type RunningOidcProvider } from '../../testkit/oidc-provider.js';

const FHIR_AUDIENCE = 'https://fhir.example.test';

interface DiscoveryDocument {
  issuer: string;
  jwks_uri: string;
  id_token_signing_alg_values_supported: string[];
  [name: string]: unknown;
}

async function fetchJson<T>(url: string): Promise<T> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  expect(response.status).toBe(200);
  return (await response.json()) as T;
}

async function servedKids(jwksUri: string): Promise<string[]> {
  const { keys } = await fetchJson<{ keys: JWK[] }>(jwksUri);
  return keys.map((key) => key.kid ?? '');
}

describe('DevIdentityProvider', () => {
  let idp: DevIdentityProvider;

  beforeAll(async () => {
    idp = await DevIdentityProvider.start();
  });
  afterAll(async () => {
    await idp.close();
  });

  it('serves Entra-shaped v1 and v2 discovery on loopback', async () => {
    const origin = idp.origin;
    expect(origin).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(idp.authority).toBe(`${origin}/${DEV_TENANT_ID}`);

    const v1 = await fetchJson<DiscoveryDocument>(`${idp.authority}/.well-known/openid-configuration`);
    const v2 = await fetchJson<DiscoveryDocument>(`${idp.authority}/v2.0/.well-known/openid-configuration`);
    expect(v1).toMatchObject({
      issuer: `${origin}/sts/${DEV_TENANT_ID}/`,
      jwks_uri: `${origin}/${DEV_TENANT_ID}/discovery/keys`,
      id_token_signing_alg_values_supported: ['RS256'],
    });
    expect(v2).toMatchObject({
      issuer: `${origin}/${DEV_TENANT_ID}/v2.0`,
      jwks_uri: `${origin}/${DEV_TENANT_ID}/discovery/v2.0/keys`,
      id_token_signing_alg_values_supported: ['RS256'],
    });
    for (const doc of [v1, v2]) {
      expect(doc).toHaveProperty('authorization_endpoint');
      expect(doc).toHaveProperty('token_endpoint');
      expect(doc).toHaveProperty('response_types_supported');
      expect(doc).toHaveProperty('subject_types_supported');
    }
    expect(await servedKids(v1.jwks_uri)).toEqual(await servedKids(v2.jwks_uri));
  });

  it.each([
    { version: 1 as const, appClaim: 'appid', ver: '1.0', discovery: '/.well-known/openid-configuration' },
    { version: 2 as const, appClaim: 'azp', ver: '2.0', discovery: '/v2.0/.well-known/openid-configuration' },
  ])('mints a v$version token that verifies against its discovered issuer and keys', async ({ version, appClaim, ver, discovery }) => {
    const doc = await fetchJson<DiscoveryDocument>(`${idp.authority}${discovery}`);
    const token = await idp.mint({ version, audience: FHIR_AUDIENCE, roles: ['globalReader'], idtyp: 'app' });

    const { payload, protectedHeader } = await jwtVerify(token, createRemoteJWKSet(new URL(doc.jwks_uri)), {
      issuer: doc.issuer,
      audience: FHIR_AUDIENCE,
      algorithms: ['RS256'],
    });
    expect(protectedHeader).toMatchObject({ alg: 'RS256', typ: 'JWT', kid: idp.signingKid });
    expect(payload).toMatchObject({
      ver,
      [appClaim]: DEV_APP_ID,
      oid: DEV_OBJECT_ID,
      sub: DEV_OBJECT_ID,
      tid: DEV_TENANT_ID,
      roles: ['globalReader'],
      idtyp: 'app',
    });
    expect(payload).not.toHaveProperty(appClaim === 'appid' ? 'azp' : 'appid');
    expect(payload.exp! - payload.iat!).toBe(3600);
  });

  it('applies claim and header overrides, including removals', async () => {
    const token = await idp.mint({
      audience: [FHIR_AUDIENCE, 'api://other'],
      scp: 'user_impersonation',
      fhirUser: 'Practitioner/1',
      extraClaims: { oid: undefined, name: 'Dev User' },
      header: { typ: 'at+jwt', jku: 'http://127.0.0.1:1/keys' },
      expiresInSeconds: -120,
      now: new Date('2030-01-01T00:00:00Z'),
    });
    const header = decodeProtectedHeader(token);
    const claims = decodeJwt(token);
    expect(header).toMatchObject({ typ: 'at+jwt', jku: 'http://127.0.0.1:1/keys' });
    expect(claims).not.toHaveProperty('oid');
    expect(claims).toMatchObject({
      aud: [FHIR_AUDIENCE, 'api://other'],
      scp: 'user_impersonation',
      fhirUser: 'Practitioner/1',
      name: 'Dev User',
      iat: Date.UTC(2030, 0, 1) / 1000,
      exp: Date.UTC(2030, 0, 1) / 1000 - 120,
    });
  });

  it('rotateKey and removeKey change the served key set', async () => {
    const firstKid = idp.signingKid;
    const rotatedKid = idp.rotateKey();
    expect(rotatedKid).not.toBe(firstKid);
    expect(idp.signingKid).toBe(rotatedKid);
    expect(await servedKids(idp.v2JwksUri)).toEqual([firstKid, rotatedKid]);

    const verifyOptions = { issuer: idp.v2Issuer, audience: FHIR_AUDIENCE };
    const rotatedToken = await idp.mint({ audience: FHIR_AUDIENCE });
    expect(decodeProtectedHeader(rotatedToken).kid).toBe(rotatedKid);
    await expect(jwtVerify(rotatedToken, createRemoteJWKSet(new URL(idp.v2JwksUri)), verifyOptions)).resolves.toBeDefined();

    expect(idp.removeKey(firstKid)).toBe(true);
    expect(await servedKids(idp.v1JwksUri)).toEqual([rotatedKid]);
    const removedKeyToken = await idp.mint({ audience: FHIR_AUDIENCE, kid: firstKid });
    await expect(
      jwtVerify(removedKeyToken, createRemoteJWKSet(new URL(idp.v2JwksUri)), verifyOptions),
    ).rejects.toBeInstanceOf(errors.JWKSNoMatchingKey);
  });

  it('publishes extra JWKs as given and removes them by kid', async () => {
    const badKeys: JWK[] = [
      { kty: 'oct', kid: 'oct-key', k: 'c2VjcmV0' },
      { ...(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' }) as JWK), kid: 'enc-key', use: 'enc' },
      { ...(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' }) as JWK), kid: 'rsa-1024' },
    ];
    for (const jwk of badKeys) idp.publishExtraJwk(jwk);
    const { keys } = await fetchJson<{ keys: JWK[] }>(idp.v1JwksUri);
    expect(keys.slice(-3)).toEqual(badKeys);

    for (const jwk of badKeys) expect(idp.removeKey(jwk.kid!)).toBe(true);
    expect(await servedKids(idp.v1JwksUri)).toEqual([idp.signingKid]);
  });

  it('serves an override in place of a route until it is cleared', async () => {
    idp.overrideResponse('v2-discovery', { body: '{"issuer":' });
    const response = await fetch(idp.v2DiscoveryUrl);
    expect(await response.text()).toBe('{"issuer":');
    idp.overrideResponse('v2-discovery');
    expect((await fetchJson<DiscoveryDocument>(idp.v2DiscoveryUrl)).issuer).toBe(idp.v2Issuer);
  });

  it.each([
    {
      mode: 'unavailable' as const,
      outcome: async (url: string) => expect((await fetch(url)).status).toBe(503),
    },
    {
      mode: 'reset' as const,
      outcome: (url: string) => expect(fetch(url)).rejects.toThrow(TypeError),
    },
    {
      mode: 'hang' as const,
      outcome: (url: string) => expect(fetch(url, { signal: AbortSignal.timeout(100) })).rejects.toThrow(/aborted|timeout/i),
    },
  ])('down($mode) fails discovery and JWKS; up() restores them', async ({ mode, outcome }) => {
    idp.down(mode);
    try {
      await outcome(idp.v1DiscoveryUrl);
      await outcome(idp.v2JwksUri);
    } finally {
      idp.up();
    }
    expect((await fetchJson<DiscoveryDocument>(idp.v1DiscoveryUrl)).issuer).toBe(idp.v1Issuer);
  });

  it('counts requests by path prefix', async () => {
    idp.resetRequestCounts();
    await fetchJson(idp.v2JwksUri);
    await fetchJson(idp.v2JwksUri);
    await fetchJson(idp.v1DiscoveryUrl);
    expect(idp.requestCount(`/${DEV_TENANT_ID}/discovery/`)).toBe(2);
    expect(idp.requestCount(`/${DEV_TENANT_ID}/.well-known/`)).toBe(1);
    expect(idp.requestCount()).toBe(3);
  });

  it('refuses to bind a non-loopback host', async () => {
    await expect(DevIdentityProvider.start({ host: '0.0.0.0' })).rejects.toMatchObject({ code: 'invalid_option' });
  });
});

describe('signJwt', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ed = generateKeyPairSync('ed25519');
  const secret = new TextEncoder().encode('a shared secret of at least thirty-two bytes');

  it.each([
    { alg: 'RS256', signingKey: rsa.privateKey, verifyKey: rsa.publicKey },
    { alg: 'PS384', signingKey: rsa.privateKey, verifyKey: rsa.publicKey },
    { alg: 'ES256', signingKey: ec.privateKey, verifyKey: ec.publicKey },
    { alg: 'EdDSA', signingKey: ed.privateKey, verifyKey: ed.publicKey },
    { alg: 'HS256', signingKey: secret, verifyKey: secret },
  ])('produces a signature jose verifies for $alg', async ({ alg, signingKey, verifyKey }) => {
    const token = signJwt(signingKey, { alg, crit: ['x-unknown'], 'x-unknown': true }, { sub: 'a' });
    const { protectedHeader } = await compactVerify(token, verifyKey, { crit: { 'x-unknown': false } });
    expect(protectedHeader.alg).toBe(alg);
  });

  it('signs exactly the given text, and nothing for alg none', () => {
    const token = signJwt(null, '{"alg":"none"}', '{"sub":"a","sub":"b"}');
    const [header, payload, signature] = token.split('.');
    expect(Buffer.from(header!, 'base64url').toString()).toBe('{"alg":"none"}');
    expect(Buffer.from(payload!, 'base64url').toString()).toBe('{"sub":"a","sub":"b"}');
    expect(signature).toBe('');
  });
});

describe('startOidcProvider (npm oidc-provider)', () => {
  let op: RunningOidcProvider;
  const claimsByClient: Record<string, Record<string, unknown>> = {
    portal: { fhirUser: 'Practitioner/123', patient: 'Patient/9' },
    backend: { oid: DEV_OBJECT_ID, roles: ['globalReader'] },
  };

  beforeAll(async () => {
    op = await startOidcProvider({
      clients: [
        { client_id: 'portal', client_secret: 'portal-secret' },
        { client_id: 'backend', client_secret: 'backend-secret' },
      ],
      resource: FHIR_AUDIENCE,
      scopes: ['system/Patient.rs', 'system/Observation.rs'],
      extraTokenClaims: (_ctx, token) => claimsByClient[token.clientId ?? ''],
    });
  });
  afterAll(async () => {
    await op.close();
  });

  it('discovery names the loopback issuer and its RS256 keys', async () => {
    expect(op.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const doc = await fetchJson<DiscoveryDocument>(`${op.issuer}/.well-known/openid-configuration`);
    expect(doc).toMatchObject({
      issuer: op.issuer,
      jwks_uri: `${op.issuer}/jwks`,
      token_endpoint: op.tokenEndpoint,
    });
    expect(doc.id_token_signing_alg_values_supported).toContain('RS256');
    expect(doc['grant_types_supported']).toContain('client_credentials');
  });

  it.each([
    { clientId: 'portal', secret: 'portal-secret', scope: 'system/Patient.rs system/Unknown.rs' },
    { clientId: 'backend', secret: 'backend-secret', scope: undefined },
  ])('issues an RFC 9068 JWT access token to $clientId by client credentials', async ({ clientId, secret, scope }) => {
    const token = await op.getToken(clientId, secret, scope);
    const doc = await fetchJson<DiscoveryDocument>(op.discoveryUrl);
    const { payload, protectedHeader } = await jwtVerify(token, createRemoteJWKSet(new URL(doc.jwks_uri)), {
      issuer: doc.issuer,
      audience: FHIR_AUDIENCE,
      typ: 'at+jwt',
      algorithms: ['RS256'],
    });
    expect(protectedHeader.typ).toBe('at+jwt');
    expect(payload).toMatchObject({ client_id: clientId, sub: clientId, aud: FHIR_AUDIENCE, ...claimsByClient[clientId] });
    if (scope === undefined) expect(payload).not.toHaveProperty('scope');
    else expect(payload['scope']).toBe('system/Patient.rs');
  });

  it('rejects a wrong client secret', async () => {
    await expect(op.getToken('portal', 'wrong')).rejects.toMatchObject({ code: 'token_request_failed' });
  });
});
