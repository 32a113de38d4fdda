/**
 * Security tests: one describe per reason code of the contract's table, each asserting
 * `{ reason, status }` (never message text) and, where the hint must help an operator, that it
 * names the value found and the value expected. Attacks from RFC 8725 and the issue: `alg: none`,
 * HMAC keyed with the public key, keys named by the token (jwk, jku, x5u, x5c), another trusted
 * issuer's key, the leniencies of jose (base64url, duplicate members, exp), oversize and garbage.
 */
import { createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { compactVerify, importJWK, jwtVerify, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_APP_ID, DevIdentityProvider, signJwt } from '../../testkit/dev-idp.js';
import { DirectoryUnavailableError, type GroupMembershipResolver } from '../../src/directory/types.js';
import { Pdp } from '../../src/decision/pipeline.js';
import type { Decision } from '../../src/decision/types.js';
import { REASONS, type ReasonCode } from '../../src/core/reasons.js';
import {
  ADMIN_KEY,
  API_KEY,
  FHIR_AUDIENCE,
  READER_OID,
  askForwardAuth,
  b64url,
  claimsOf,
  configFor,
  nonCanonicalVariants,
  rawHeader,
  rawHttp,
  rawJson,
  startPdpWithDevIdp,
  startRequestCounter,
  startSigningAuthority,
  type RequestCounter,
  type RunningPdp,
  type SigningAuthority,
} from '../../testkit/service.js';

const SMART_TENANT = '5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c';
const OTHER_TENANT = '0b8c1a2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d';
const UNLISTED_OID = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
const OTHER_CLIENT_ID = '2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f';

let pdp: RunningPdp;
let smartIdp: DevIdentityProvider;
let signer: SigningAuthority;
let signerPdp: Pdp;
let counter: RequestCounter;

function expectReason(d: Pick<Decision, 'reason' | 'status'>, reason: ReasonCode): void {
  expect({ reason: d.reason, status: d.status }).toEqual({ reason, status: REASONS[reason].status });
}

/** pdp.decide with exactly these Authorization values. */
function decideWith(authorization: string[], method = 'GET', path = '/Patient/123'): Promise<Decision> {
  return pdp.service.pdp.decide({ method, target: path, credentials: { authorization } });
}

function decideSigned(token: string): Promise<Decision> {
  return signerPdp.decide({ method: 'GET', target: '/Patient/123', credentials: { authorization: [`Bearer ${token}`] } });
}

function headerOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** A token with the primary IdP's claims and header, re-signed with `key` after the overrides. */
async function forged(key: KeyObject | Uint8Array | null, header: Record<string, unknown>, claims: Record<string, unknown> = {}, alg?: string): Promise<string> {
  const good = await pdp.mint();
  return signJwt(key, { ...headerOf(good), ...header }, { ...claimsOf(good), ...claims }, alg ? { alg } : {});
}

function rsaKeyPair(bits = 2048): { privateKey: KeyObject; publicJwk: JWK } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  return { privateKey, publicJwk: publicKey.export({ format: 'jwk' }) as JWK };
}

const attacker = rsaKeyPair();

beforeAll(async () => {
  counter = await startRequestCounter();
  smartIdp = await DevIdentityProvider.start({ tenantId: SMART_TENANT });
  signer = await startSigningAuthority();
  pdp = await startPdpWithDevIdp(
    {
      audiences: [`api://${DEV_APP_ID}`, DEV_APP_ID],
      accessPolicies: [
        { objectId: READER_OID, dataActions: ['read'] },
        // The application (client) id, listed where the service principal's object id belongs.
        { objectId: DEV_APP_ID, dataActions: ['read'] },
      ],
      roles: [{ name: 'globalReader', dataActions: ['read'] }],
      smartIdentityProviders: [{ authority: smartIdp.authority, applications: [{ clientId: 'portal', audience: FHIR_AUDIENCE, allowedDataActions: ['read'] }] }],
      jwksRefetchCooldownSeconds: 0,
    },
    { apiKeys: [API_KEY], adminKeys: [ADMIN_KEY] },
  );
  signerPdp = new Pdp(configFor(signer.authority, { jwksRefetchCooldownSeconds: 0 }));
  await signerPdp.refreshIssuers();
});

afterAll(async () => {
  await pdp?.close();
  await smartIdp?.close();
  await signer?.close();
  await counter?.close();
});

describe('allowed', () => {
  it.each<[string, 1 | 2, string | string[]]>([
    ['v1 issuer, aud = the client id', 1, DEV_APP_ID],
    ['v1 issuer, aud = the App ID URI', 1, `api://${DEV_APP_ID}`],
    ['v1 issuer, aud = the resource URL', 1, FHIR_AUDIENCE],
    ['v2 issuer, aud = the client id', 2, DEV_APP_ID],
    ['v2 issuer, aud = the App ID URI', 2, `api://${DEV_APP_ID}`],
    ['v2 issuer, aud an array holding one accepted value', 2, ['https://other.example', FHIR_AUDIENCE]],
  ])('an Entra-shaped token: %s', async (_what, version, audience) => {
    const d = await pdp.decide(await pdp.mint({ version, audience }));
    expectReason(d, 'allowed');
    expect(d.principal).toMatchObject({ objectId: READER_OID, applicationId: DEV_APP_ID });
    expect(d.dataActions).toEqual(['read']);
  });

  it('a token whose role is granted', async () => {
    expectReason(await pdp.decide(await pdp.mint({ oid: UNLISTED_OID, roles: ['globalReader'] })), 'allowed');
  });

  it('a SMART provider token of a configured application with covering scopes', async () => {
    const token = await smartIdp.mint({ audience: FHIR_AUDIENCE, appId: 'portal', fhirUser: 'Practitioner/7', scp: 'user/Patient.rs' });
    const d = await pdp.decide(token);
    expectReason(d, 'allowed');
    expect(d.principal).toMatchObject({ applicationId: 'portal', fhirUser: 'Practitioner/7' });
  });

  it('an expired token still inside the clock skew', async () => {
    expectReason(await pdp.decide(await pdp.mint({ expiresInSeconds: -200, issuedAtOffsetSeconds: -3600, notBeforeSeconds: -3600 })), 'allowed');
  });

  it('a signed token just under maxTokenBytes', async () => {
    const base = await pdp.mint();
    const pad = 'x'.repeat(Math.floor(((16384 - base.length - 200) * 3) / 4));
    const token = await pdp.mint({ extraClaims: { pad } });
    expect(token.length).toBeLessThanOrEqual(16384);
    expect(token.length).toBeGreaterThan(16000);
    expectReason(await pdp.decide(token), 'allowed');
  });

  // Contract: `missing_claim` for the primary authority needs `oid` and ONE OF `scp`/`roles`;
  // Entra client-credentials tokens carry roles and no scp.
  it('an Entra app-only token (roles, no scp)', async () => {
    const token = await pdp.idp.mint({ audience: FHIR_AUDIENCE, oid: UNLISTED_OID, roles: ['globalReader'], idtyp: 'app' });
    expectReason(await pdp.decide(token), 'allowed');
  });
});

describe('missing_token', () => {
  it.each<[string, string[]]>([
    ['no Authorization header', []],
    ['the Basic scheme', ['Basic dXNlcjpwYXNz']],
    ['the Negotiate scheme', ['Negotiate YIIB']],
    ['an empty header', ['']],
  ])('%s', async (_what, authorization) => {
    expectReason(await decideWith(authorization), 'missing_token');
  });

  it('an empty token field (JSON mode)', async () => {
    const d = await pdp.service.pdp.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [], token: ' ' } });
    expectReason(d, 'missing_token');
  });

  it('a token only in the access_token query parameter (RFC 6750 §2.3), over HTTP', async () => {
    const token = await pdp.mint();
    const res = await fetch(`${pdp.url}/api/decide`, {
      headers: { 'x-original-uri': `/Patient/123?access_token=${token}`, 'x-original-method': 'GET', 'x-functions-key': API_KEY },
    });
    expect(res.status).toBe(401);
    expect(res.headers.get('x-decision-reason')).toBe('missing_token');
    // RFC 6750 §3.1: no error code when the request carried no usable credentials.
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="fhir-pdp"');
  });
});

describe('malformed_token', () => {
  const garbage: Array<[string, string]> = [
    ['a word', 'garbage'],
    ['one dot', '.'],
    ['two dots', '..'],
    ['three tiny parts', 'a.b.c'],
    ['random base64url parts', `${b64url(randomBytes(40))}.${b64url(randomBytes(80))}.${b64url(randomBytes(256))}`],
    ['a JSON header that is a number', `${b64url('42')}.${b64url('{}')}.${b64url('sig')}`],
    ['a header that is not UTF-8', `${b64url(Buffer.from([0xc3, 0x28]))}.${b64url('{}')}.${b64url('sig')}`],
    ['six parts', 'a.b.c.d.e.f'],
    ['a very long run of dots', '.'.repeat(5000)],
    ['a megabyte of letters', 'A'.repeat(1024 * 1024)],
    ['a token of 16 KiB + 1', 'A'.repeat(16385)],
  ];
  it.each(garbage)('garbage: %s', async (_what, token) => {
    expectReason(await decideWith([`Bearer ${token}`]), 'malformed_token');
  });

  it.each<[string, string]>([
    ['non-ASCII after the scheme', 'Bearer ééé'],
    ['a quoted token', 'Bearer "abc.def.ghi"'],
    ['a token with a space inside', 'Bearer abc def'],
    ['a token with a NUL', 'Bearer abc\u0000def'],
    ['a header of 100 KiB', `Bearer ${'a'.repeat(100 * 1024)}`],
  ])('garbage in the header: %s', async (_what, header) => {
    expectReason(await decideWith([header]), 'malformed_token');
  });

  it('a signed, otherwise valid token just over maxTokenBytes (16 KiB + 1)', async () => {
    // Grow a claim one character at a time from just under the limit until the token passes it.
    let padLength = Math.floor(((16384 - (await pdp.mint()).length) * 3) / 4) - 8;
    let token = '';
    for (;;) {
      token = await pdp.mint({ extraClaims: { pad: 'x'.repeat(padLength) } });
      if (token.length > 16384) break;
      padLength++;
    }
    expect(token.length).toBeLessThanOrEqual(16386);
    const d = await pdp.decide(token);
    expectReason(d, 'malformed_token');
    expect(d.hint).toContain('16384');
  });

  it('a 16 KiB + 1 token over HTTP (forward-auth header and JSON field): a reason, not a crash or a 431', async () => {
    const token = 'A'.repeat(16385);
    const fa = await askForwardAuth(pdp.url, { token, key: API_KEY });
    expect(fa.status).toBe(401);
    expect(fa.headers.get('x-decision-reason')).toBe('malformed_token');
    const json = await pdp.ask({ token, key: API_KEY });
    expect(json.status).toBe(200);
    expect(json.body).toMatchObject({ reason: 'malformed_token', status: 401 });
    const big = await askForwardAuth(pdp.url, { token: 'A'.repeat(60 * 1024), key: API_KEY });
    expect(big.status).toBe(401);
    expect(big.headers.get('x-decision-reason')).toBe('malformed_token');
  });

  it('two Authorization headers (Node keeps only the first in req.headers): raw HTTP over node:net', async () => {
    const good = await pdp.mint();
    const raw = (auth: string[]) =>
      rawHttp(
        pdp.url,
        [
          'GET /api/decide HTTP/1.1',
          'Host: 127.0.0.1',
          'X-Original-Method: GET',
          'X-Original-URI: /Patient/123',
          `X-Functions-Key: ${API_KEY}`,
          ...auth.map((a) => `Authorization: ${a}`),
          'Connection: close',
          '',
          '',
        ].join('\r\n'),
      );
    const control = await raw([`Bearer ${good}`]);
    expect(control.status).toBe(200);
    expect(rawHeader(control, 'x-decision-reason')).toBe('allowed');
    for (const pair of [
      [`Bearer ${good}`, `Bearer ${good}`],
      [`Bearer ${good}`, 'Bearer garbage'],
      ['Bearer garbage', `Bearer ${good}`],
      [`Bearer ${good}`, 'Basic dXNlcjpwYXNz'],
    ]) {
      const answer = await raw(pair);
      expect(answer.status).toBe(401);
      expect(rawHeader(answer, 'x-decision-reason')).toBe('malformed_token');
      expect(rawJson(answer)).toMatchObject({ reason: 'malformed_token', status: 401 });
    }
  });

  it('two Authorization headers sent by http.request with an array value', async () => {
    const good = await pdp.mint();
    const { hostname, port } = new URL(pdp.url);
    const status = await new Promise<{ status: number; reason: string | undefined }>((resolve, reject) => {
      const req = httpRequest(
        { host: hostname, port, path: '/api/decide', headers: { 'x-original-method': 'GET', 'x-original-uri': '/Patient/123', 'x-functions-key': API_KEY } },
        (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, reason: res.headers['x-decision-reason'] as string | undefined }));
        },
      );
      req.on('error', reject);
      req.setHeader('authorization', [`Bearer ${good}`, `Bearer ${good}`]);
      req.end();
    });
    expect(status).toEqual({ status: 401, reason: 'malformed_token' });
  });

  it('a header credential and a JSON token field together', async () => {
    const good = await pdp.mint();
    const d = await pdp.service.pdp.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${good}`], token: good } });
    expectReason(d, 'malformed_token');
  });

  it('every non-canonical variant of a valid signature (jose alone accepts them)', async () => {
    const good = await pdp.mint();
    const [h, p, s] = good.split('.') as [string, string, string];
    const key = await importJWK(pdp.idp.publicJwk(pdp.idp.signingKid), 'RS256');
    const variants = nonCanonicalVariants(s);
    expect(variants.length).toBeGreaterThan(0);
    for (const v of variants) {
      const token = `${h}.${p}.${v}`;
      await expect(compactVerify(token, key)).resolves.toBeDefined();
      expectReason(await pdp.decide(token), 'malformed_token');
    }
    expectReason(await pdp.decide(good), 'allowed');
  });

  describe('validly signed lenient encodings, from an authority whose key the test holds', () => {
    let key: Awaited<ReturnType<typeof importJWK>>;
    beforeAll(async () => {
      key = await importJWK(signer.publicJwk, 'RS256');
    });

    it('control: the canonical form is allowed', async () => {
      expectReason(await decideSigned(signer.signJsonText(signer.header, JSON.stringify(signer.claims()))), 'allowed');
    });

    it.each<[string, (h: string, p: string) => [string, string], boolean]>([
      ['a padded header', (h, p) => [`${h}=`, p], false],
      ['a padded payload', (h, p) => [h, `${p}==`], false],
      ['whitespace inside the payload', (h, p) => [h, `${p.slice(0, 8)} ${p.slice(8)}`], true],
      ['a newline inside the header', (h, p) => [`${h.slice(0, 8)}\n${h.slice(8)}`, p], true],
    ])('%s', async (_what, bend, joseAccepts) => {
      const [h, p] = bend(b64url(signer.header), b64url(JSON.stringify(signer.claims())));
      const token = signer.signSegments(h, p);
      if (joseAccepts) await expect(jwtVerify(token, key)).resolves.toBeDefined();
      expectReason(await decideSigned(token), 'malformed_token');
    });

    it('non-canonical trailing bits in the header and the payload', async () => {
      const h = b64url(`${signer.header.slice(0, -1)},"x":"ab"}`);
      const claims = JSON.stringify(signer.claims());
      // Pick a payload length with unused bits.
      const p = [claims, `${claims.slice(0, -1)},"x":"a"}`, `${claims.slice(0, -1)},"x":"ab"}`].map(b64url).find((s) => s.length % 4 !== 0)!;
      for (const hv of nonCanonicalVariants(h)) expectReason(await decideSigned(signer.signSegments(hv, p)), 'malformed_token');
      for (const pv of nonCanonicalVariants(p)) expectReason(await decideSigned(signer.signSegments(h, pv)), 'malformed_token');
    });

    it('duplicate claim names (jose keeps the last: here the accepted audience)', async () => {
      const c = signer.claims();
      const text = JSON.stringify(c).replace('"aud":', '"aud":"https://evil.example","aud":');
      const token = signer.signJsonText(signer.header, text);
      const { payload } = await jwtVerify(token, key);
      expect(payload.aud).toBe(FHIR_AUDIENCE);
      expectReason(await decideSigned(token), 'malformed_token');
    });

    it('duplicate header names', async () => {
      const text = signer.header.replace('"alg":"RS256"', '"alg":"none","alg":"RS256"');
      expectReason(await decideSigned(signer.signJsonText(text, JSON.stringify(signer.claims()))), 'malformed_token');
    });

    it('duplicate names spelled with escapes', async () => {
      const text = JSON.stringify(signer.claims()).replace('"oid":', '"\\u006fid":"00000000-0000-0000-0000-000000000000","oid":');
      expectReason(await decideSigned(signer.signJsonText(signer.header, text)), 'malformed_token');
    });
  });
});

describe('unsupported_token', () => {
  // RFC 7519 §6.1: an Unsecured JWT is "header.payload." with an empty signature. The contract maps
  // `alg: none` to unsupported_token; compact-jws.ts:58 refuses the empty part first (malformed_token).
  it('alg none with the empty signature of an Unsecured JWT', async () => {
    const token = await forged(null, { alg: 'none' }, {}, 'none');
    expect(token.endsWith('.')).toBe(true);
    expectReason(await pdp.decide(token), 'unsupported_token');
  });

  it.each(['none', 'None', 'NONE', 'nOnE'])('alg %s with a signature present', async (alg) => {
    const good = await pdp.mint();
    const token = `${b64url(JSON.stringify({ ...headerOf(good), alg }))}.${good.split('.')[1]}.${good.split('.')[2]}`;
    expectReason(await pdp.decide(token), 'unsupported_token');
  });

  it('a JWE (five parts)', async () => {
    const h = b64url(JSON.stringify({ alg: 'RSA-OAEP-256', enc: 'A256GCM' }));
    expectReason(await decideWith([`Bearer ${h}.${b64url(randomBytes(256))}.${b64url(randomBytes(12))}.${b64url(randomBytes(64))}.${b64url(randomBytes(16))}`]), 'unsupported_token');
  });

  it.each<[string, Record<string, unknown>]>([
    ['crit naming an unknown extension', { crit: ['http://example.com/ext'], 'http://example.com/ext': true }],
    ['crit naming exp', { crit: ['exp'], exp: 1 }],
    ['b64: false (RFC 7797)', { b64: false, crit: ['b64'] }],
    ['enc in a three-part token', { enc: 'A128GCM' }],
  ])('a validly signed token with %s', async (_what, header) => {
    expectReason(await pdp.decide(await pdp.mint({ header })), 'unsupported_token');
  });
});

describe('untrusted_issuer', () => {
  it('an iss no authority publishes; nothing is fetched from it; the hint names it and the trusted issuers', async () => {
    const before = counter.count();
    const d = await pdp.decide(await pdp.mint({ extraClaims: { iss: `${counter.url}/tenant/v2.0` } }));
    expectReason(d, 'untrusted_issuer');
    expect(d.hint).toContain(`${counter.url}/tenant/v2.0`);
    expect(d.hint).toContain(pdp.idp.v1Issuer);
    expect(d.hint).toContain(pdp.idp.v2Issuer);
    expect(counter.count()).toBe(before);
  });

  it('another tenant: the hint names both tenants', async () => {
    const d = await pdp.decide(await pdp.mint({ extraClaims: { iss: `https://login.microsoftonline.com/${OTHER_TENANT}/v2.0` } }));
    expectReason(d, 'untrusted_issuer');
    expect(d.hint).toContain(OTHER_TENANT);
    expect(d.hint).toContain(pdp.idp.tenantId);
  });

  it.each<[string, (iss: string) => string]>([
    ['with a trailing slash added', (iss) => `${iss}/`],
    ['in upper case', (iss) => iss.toUpperCase()],
    ['with a prefix space', (iss) => ` ${iss}`],
  ])('the configured issuer %s (exact comparison)', async (_what, bend) => {
    expectReason(await pdp.decide(await pdp.mint({ extraClaims: { iss: bend(pdp.idp.v2Issuer) } })), 'untrusted_issuer');
  });
});

describe('algorithm_not_allowed', () => {
  const forms: Array<[string, () => Uint8Array]> = [
    ['the public key PEM (SPKI)', () => Buffer.from(createPublicKey({ key: pdp.idp.publicJwk(pdp.idp.signingKid), format: 'jwk' }).export({ type: 'spki', format: 'pem' }) as string)],
    ['the public key PEM (PKCS#1)', () => Buffer.from(createPublicKey({ key: pdp.idp.publicJwk(pdp.idp.signingKid), format: 'jwk' }).export({ type: 'pkcs1', format: 'pem' }) as string)],
    ['the public JWK as JSON', () => Buffer.from(JSON.stringify(pdp.idp.publicJwk(pdp.idp.signingKid)))],
    ['the modulus bytes', () => Buffer.from(pdp.idp.publicJwk(pdp.idp.signingKid).n!, 'base64url')],
  ];
  it.each(forms)('an RS256 token re-signed with HS256 keyed by %s', async (_what, secret) => {
    const d = await pdp.decide(await forged(secret(), { alg: 'HS256' }));
    expectReason(d, 'algorithm_not_allowed');
    expect(d.hint).toContain('HS256');
    expect(d.hint).toContain('RS256');
  });

  it.each(['HS384', 'HS512'])('%s keyed by the public key', async (alg) => {
    expectReason(await pdp.decide(await forged(forms[0]![1](), { alg })), 'algorithm_not_allowed');
  });

  it('PS256 with the real key, not advertised by the issuer', async () => {
    const d = await pdp.decide(await pdp.mint({ alg: 'PS256' }));
    expectReason(d, 'algorithm_not_allowed');
    expect(d.hint).toContain('PS256');
  });

  it('an HMAC token naming a published oct key (the key is never used)', async () => {
    const secret = randomBytes(32);
    pdp.idp.publishExtraJwk({ kty: 'oct', kid: 'oct-hs', k: b64url(secret), alg: 'HS256', use: 'sig' });
    expectReason(await pdp.decide(await forged(secret, { alg: 'HS256', kid: 'oct-hs' })), 'algorithm_not_allowed');
  });

  describe('the algorithm list is per key, not global (an issuer advertising RS256 and ES256)', () => {
    let perKey: RunningPdp;
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const ecJwk = { ...(ec.publicKey.export({ format: 'jwk' }) as JWK), kid: 'ec-1', use: 'sig' };
    beforeAll(async () => {
      perKey = await startPdpWithDevIdp(
        {},
        {
          beforeStart: (idp) => {
            idp.overrideResponse('v2-discovery', { body: { ...idp.discovery(2), id_token_signing_alg_values_supported: ['RS256', 'ES256'] } });
            idp.publishExtraJwk(ecJwk);
          },
        },
      );
    });
    afterAll(() => perKey?.close());

    const claims = async () => claimsOf(await perKey.mint());

    it('control: ES256 with the EC key is allowed, and RS256 with the RSA key', async () => {
      expectReason(await perKey.decide(signJwt(ec.privateKey, { alg: 'ES256', typ: 'JWT', kid: 'ec-1' }, await claims())), 'allowed');
      expectReason(await perKey.decide(await perKey.mint()), 'allowed');
    });

    it('ES256 naming the RSA key', async () => {
      const d = await perKey.decide(signJwt(ec.privateKey, { alg: 'ES256', typ: 'JWT', kid: perKey.idp.signingKid }, await claims()));
      expectReason(d, 'algorithm_not_allowed');
      expect(d.hint).toContain('ES256');
    });

    it('RS256 naming the EC key', async () => {
      const d = await perKey.decide(await perKey.mint({ header: { kid: 'ec-1' } }));
      expectReason(d, 'algorithm_not_allowed');
      expect(d.hint).toContain('ec-1');
    });
  });
});

describe('unknown_key', () => {
  it('a kid the issuer does not publish, even after a refetch; the hint names the kid', async () => {
    const d = await pdp.decide(await pdp.mint({ header: { kid: 'no-such-kid' } }));
    expectReason(d, 'unknown_key');
    expect(d.hint).toContain('no-such-kid');
  });

  it("a token signed by another trusted issuer's key, claiming this issuer", async () => {
    const claims = claimsOf(await pdp.mint());
    const foreign = await smartIdp.mint({ audience: FHIR_AUDIENCE, extraClaims: claims });
    expect(claimsOf(foreign).iss).toBe(pdp.idp.v2Issuer);
    expectReason(await pdp.decide(foreign), 'unknown_key');
  });

  it.each<[string, () => { privateKey: KeyObject; publicJwk: JWK }, Partial<JWK>]>([
    ['an RSA key of 1024 bits', () => rsaKeyPair(1024), {}],
    ['an encryption key (use: enc)', () => rsaKeyPair(), { use: 'enc' }],
    ['a key whose key_ops lack verify', () => rsaKeyPair(), { key_ops: ['encrypt'] }],
  ])('a published %s is never used', async (what, make, extra) => {
    const pair = make();
    const kid = `weak-${what.length}-${randomBytes(4).toString('hex')}`;
    pdp.idp.publishExtraJwk({ ...pair.publicJwk, ...extra, kid });
    const d = await pdp.decide(await forged(pair.privateKey, { alg: 'RS256', kid }));
    expectReason(d, 'unknown_key');
    expect(d.hint).toContain(kid);
  });

  it('an RS256 token naming a published oct key', async () => {
    pdp.idp.publishExtraJwk({ kty: 'oct', kid: 'oct-rs', k: b64url(randomBytes(32)) });
    expectReason(await pdp.decide(await forged(attacker.privateKey, { alg: 'RS256', kid: 'oct-rs' })), 'unknown_key');
  });

  it.each<[string, () => Record<string, unknown>]>([
    ['an embedded jwk', () => ({ jwk: { ...attacker.publicJwk, kid: 'attacker' }, kid: 'attacker' })],
    ['a jku at the attacker', () => ({ jku: `${counter.url}/jwks.json`, kid: 'attacker' })],
    ['an x5u at the attacker', () => ({ x5u: `${counter.url}/cert.pem`, kid: 'attacker' })],
    ['an x5c chain', () => ({ x5c: [b64url(randomBytes(300)).replace(/-/g, '+').replace(/_/g, '/')], kid: 'attacker' })],
  ])("the attacker's key named by %s: never used, never fetched", async (_what, header) => {
    const before = counter.count();
    expectReason(await pdp.decide(await forged(attacker.privateKey, header())), 'unknown_key');
    expect(counter.count()).toBe(before);
  });

  describe('a token without kid', () => {
    let single: RunningPdp;
    beforeAll(async () => {
      single = await startPdpWithDevIdp({ jwksRefetchCooldownSeconds: 0 });
    });
    afterAll(() => single?.close());

    it('is accepted when exactly one key fits, and refused when several do', async () => {
      expectReason(await single.decide(await single.mint({ header: { kid: undefined } })), 'allowed');
      single.idp.rotateKey();
      await single.service.refresh();
      expectReason(await single.decide(await single.mint({ header: { kid: undefined } })), 'unknown_key');
    });
  });

  describe(`at most 100 keys per issuer are used`, () => {
    let many: RunningPdp;
    beforeAll(async () => {
      many = await startPdpWithDevIdp(
        { jwksRefetchCooldownSeconds: 0 },
        {
          beforeStart: (idp) => {
            const jwk = idp.publicJwk(idp.signingKid);
            const body = { keys: Array.from({ length: 150 }, (_, i) => ({ ...jwk, kid: `k-${i}` })) };
            idp.overrideResponse('v1-jwks', { body });
            idp.overrideResponse('v2-jwks', { body });
          },
        },
      );
    });
    afterAll(() => many?.close());

    it('key 50 verifies, key 120 is unknown', async () => {
      expectReason(await many.decide(await many.mint({ header: { kid: 'k-50' } })), 'allowed');
      expectReason(await many.decide(await many.mint({ header: { kid: 'k-120' } })), 'unknown_key');
    });
  });
});

describe('invalid_signature', () => {
  it('a payload changed after signing', async () => {
    const good = await pdp.mint();
    const [h, , s] = good.split('.');
    const p = b64url(JSON.stringify({ ...claimsOf(good), oid: UNLISTED_OID, roles: ['globalReader'] }));
    const d = await pdp.decide(`${h}.${p}.${s}`);
    expectReason(d, 'invalid_signature');
    expect(d.hint).toContain(pdp.idp.signingKid);
  });

  it("another trusted issuer's key, with this issuer's kid", async () => {
    const good = await pdp.mint();
    const foreign = await smartIdp.mint({ audience: FHIR_AUDIENCE, extraClaims: claimsOf(good), header: { kid: pdp.idp.signingKid } });
    expectReason(await pdp.decide(foreign), 'invalid_signature');
  });

  it("the attacker's key embedded as jwk, with this issuer's kid", async () => {
    const d = await pdp.decide(await forged(attacker.privateKey, { jwk: attacker.publicJwk }));
    expectReason(d, 'invalid_signature');
  });

  it('the signature of another token', async () => {
    const a = await pdp.mint();
    const b = await pdp.mint({ oid: UNLISTED_OID });
    expectReason(await pdp.decide(`${a.split('.').slice(0, 2).join('.')}.${b.split('.')[2]}`), 'invalid_signature');
  });

  it('a truncated signature', async () => {
    const good = await pdp.mint();
    const sig = Buffer.from(good.split('.')[2]!, 'base64url').subarray(0, 255);
    expectReason(await pdp.decide(`${good.split('.').slice(0, 2).join('.')}.${b64url(sig)}`), 'invalid_signature');
  });

  it('a Microsoft Graph token (header nonce): the hint says so', async () => {
    const good = await pdp.mint();
    const h = b64url(JSON.stringify({ ...headerOf(good), nonce: 'abc' }));
    const d = await pdp.decide(`${h}.${good.split('.')[1]}.${good.split('.')[2]}`);
    expectReason(d, 'invalid_signature');
    expect(d.hint).toContain('Microsoft Graph');
  });
});

describe('token_expired', () => {
  it('exp beyond the clock skew; the hint names exp and the skew', async () => {
    const token = await pdp.mint({ expiresInSeconds: -400, issuedAtOffsetSeconds: -3600, notBeforeSeconds: -3600 });
    const d = await pdp.decide(token);
    expectReason(d, 'token_expired');
    expect(d.hint).toContain(new Date((claimsOf(token).exp as number) * 1000).toISOString());
    expect(d.hint).toContain('300');
  });

  it('a token allowed from the cache is refused once it expires', async () => {
    const token = await pdp.mint({ expiresInSeconds: 5 });
    expectReason(await pdp.decide(token), 'allowed');
    expect((await pdp.decide(token)).cacheHit).toBe(true);
    pdp.clock.advance(400);
    try {
      expectReason(await pdp.decide(token), 'token_expired');
    } finally {
      pdp.clock.advance(-400);
    }
  });
});

describe('token_not_yet_valid', () => {
  it('nbf beyond the clock skew', async () => {
    const d = await pdp.decide(await pdp.mint({ notBeforeSeconds: 400 }));
    expectReason(d, 'token_not_yet_valid');
    expect(d.hint).toContain('nbf');
  });

  it('iat in the future beyond the clock skew (jose alone accepts it)', async () => {
    const token = signer.signJsonText(signer.header, JSON.stringify(signer.claims({ iat: Math.floor(Date.now() / 1000) + 4000, nbf: undefined })));
    await expect(jwtVerify(token, await importJWK(signer.publicJwk, 'RS256'))).resolves.toBeDefined();
    const d = await decideSigned(token);
    expectReason(d, 'token_not_yet_valid');
    expect(d.hint).toContain('iat');
  });

  it('control: nbf inside the clock skew is allowed', async () => {
    expectReason(await pdp.decide(await pdp.mint({ notBeforeSeconds: 200 })), 'allowed');
  });
});

describe('audience_mismatch', () => {
  it.each<[string, string | string[], string[]]>([
    ['another resource', 'https://other.example.test', ['https://other.example.test', FHIR_AUDIENCE]],
    ['Microsoft Graph', 'https://graph.microsoft.com', ['Microsoft Graph', FHIR_AUDIENCE]],
    ['a trailing slash', `${FHIR_AUDIENCE}/`, [`${FHIR_AUDIENCE}/`, 'trailing slash']],
    ['another client id', OTHER_CLIENT_ID, [OTHER_CLIENT_ID, FHIR_AUDIENCE]],
    ['the accepted audience in upper case', FHIR_AUDIENCE.toUpperCase(), [FHIR_AUDIENCE.toUpperCase(), FHIR_AUDIENCE]],
    ['an array of unaccepted values', ['urn:a', 'urn:b'], ['urn:a', 'urn:b', FHIR_AUDIENCE]],
  ])('aud is %s: the hint names the aud and the accepted audiences', async (_what, audience, named) => {
    const d = await pdp.decide(await pdp.mint({ audience }));
    expectReason(d, 'audience_mismatch');
    for (const n of named) expect(d.hint).toContain(n);
  });

  it("a SMART token for an audience that is not its application's", async () => {
    const d = await pdp.decide(await smartIdp.mint({ audience: 'https://other.example.test', appId: 'portal', fhirUser: 'Practitioner/7', scp: 'user/Patient.rs' }));
    expectReason(d, 'audience_mismatch');
  });
});

describe('unknown_application', () => {
  it('a SMART token whose client id is not configured; the hint names it and the configured ones', async () => {
    const d = await pdp.decide(await smartIdp.mint({ audience: FHIR_AUDIENCE, appId: 'intruder', fhirUser: 'Practitioner/7', scp: 'user/Patient.rs' }));
    expectReason(d, 'unknown_application');
    expect(d.hint).toContain('intruder');
    expect(d.hint).toContain('portal');
  });

  it('a SMART token without any client id', async () => {
    const d = await pdp.decide(await smartIdp.mint({ audience: FHIR_AUDIENCE, fhirUser: 'Practitioner/7', scp: 'x', extraClaims: { azp: undefined } }));
    expectReason(d, 'unknown_application');
  });
});

describe('missing_claim', () => {
  it.each<[string, Record<string, unknown>]>([
    ['no exp (jose treats it as optional)', { exp: undefined }],
    ['exp as a string', { exp: '2099-01-01' }],
    ['a negative exp', { exp: -1 }],
    ['exp beyond year 9999', { exp: 1e12 }],
    ['no oid', { oid: undefined }],
    ['no iss', { iss: undefined }],
    ['a numeric iss', { iss: 5 }],
    ['no aud', { aud: undefined }],
    ['an empty aud array', { aud: [] }],
    ['an aud array holding a number', { aud: [FHIR_AUDIENCE, 1] }],
  ])('%s', async (_what, extraClaims) => {
    expectReason(await pdp.decide(await pdp.mint({ extraClaims })), 'missing_claim');
  });

  // nbf and iat are optional: present with another type is a token no trusted issuer made.
  it.each<[string, Record<string, unknown>]>([
    ['nbf as a string', { nbf: 'now' }],
    ['iat as a boolean', { iat: true }],
  ])('%s is malformed_token', async (_what, extraClaims) => {
    expectReason(await pdp.decide(await pdp.mint({ extraClaims })), 'malformed_token');
  });

  it('an ID token (no scp, no roles) is never an access token', async () => {
    expectReason(await pdp.decide(await pdp.idp.mint({ audience: FHIR_AUDIENCE, extraClaims: { nonce: 'n', amr: ['pwd'] } })), 'missing_claim');
  });

  it('exp of 1e400 (Infinity to JSON.parse; jose accepts it)', async () => {
    const text = JSON.stringify(signer.claims()).replace(/"exp":\d+/, '"exp":1e400');
    const token = signer.signJsonText(signer.header, text);
    await expect(jwtVerify(token, await importJWK(signer.publicJwk, 'RS256'))).resolves.toBeDefined();
    expectReason(await decideSigned(token), 'missing_claim');
  });

  it('no exp, validly signed (jose accepts it)', async () => {
    const token = signer.signJsonText(signer.header, JSON.stringify(signer.claims({ exp: undefined })));
    await expect(jwtVerify(token, await importJWK(signer.publicJwk, 'RS256'))).resolves.toBeDefined();
    expectReason(await decideSigned(token), 'missing_claim');
  });

  it('a SMART token without fhirUser', async () => {
    expectReason(await pdp.decide(await smartIdp.mint({ audience: FHIR_AUDIENCE, appId: 'portal', scp: 'user/Patient.rs' })), 'missing_claim');
  });
});

describe('principal_not_allowed', () => {
  it('an oid that is not listed and no role; the hint names the oid', async () => {
    const d = await pdp.decide(await pdp.mint({ oid: UNLISTED_OID, appId: OTHER_CLIENT_ID }));
    expectReason(d, 'principal_not_allowed');
    expect(d.hint).toContain(UNLISTED_OID);
  });

  it("the application (client) id listed instead of the service principal's object id", async () => {
    const d = await pdp.decide(await pdp.mint({ oid: UNLISTED_OID, appId: DEV_APP_ID }));
    expectReason(d, 'principal_not_allowed');
    expect(d.hint).toContain('application (client) id');
    expect(d.hint).toContain(DEV_APP_ID);
    expect(d.hint).toContain(UNLISTED_OID);
  });

  it('a role that is not defined', async () => {
    const d = await pdp.decide(await pdp.mint({ oid: UNLISTED_OID, appId: OTHER_CLIENT_ID, roles: ['globalAdmin'] }));
    expectReason(d, 'principal_not_allowed');
    expect(d.hint).toContain('globalAdmin');
  });
});

describe('action_not_permitted', () => {
  it.each<[string, string, string]>([
    ['DELETE', '/Patient/123', 'delete'],
    ['PUT', '/Patient/123', 'write'],
    ['GET', '/$export', 'export'],
  ])('a reader asking %s %s; the hint names %s and what is granted', async (method, path, needed) => {
    const d = await pdp.decide(await pdp.mint(), method, path);
    expectReason(d, 'action_not_permitted');
    expect(d.hint).toContain(needed);
    expect(d.hint).toContain('read');
  });

  it.each(['/Patient/../Observation/1', '/Patient/%2e%2e/x', 'Patient/1', '/Patient/1#frag'])('a target no FHIR server would see as authorised: %s', async (path) => {
    expectReason(await pdp.decide(await pdp.mint(), 'GET', path), 'action_not_permitted');
  });
});

describe('insufficient_scope', () => {
  it('SMART scopes that do not cover the resource type', async () => {
    const d = await pdp.decide(await smartIdp.mint({ audience: FHIR_AUDIENCE, appId: 'portal', fhirUser: 'Practitioner/7', scp: 'user/Observation.rs' }));
    expectReason(d, 'insufficient_scope');
    expect(d.hint).toContain('Patient');
  });

  it('system/ scopes in a token that has a user', async () => {
    const d = await pdp.decide(await smartIdp.mint({ audience: FHIR_AUDIENCE, appId: 'portal', fhirUser: 'Practitioner/7', scp: 'system/Patient.rs' }));
    expectReason(d, 'insufficient_scope');
  });
});

describe('issuer_unavailable', () => {
  it('an authority that cannot be reached and nothing cached; the hint names the authority', async () => {
    const gone = await startRequestCounter();
    const authority = `${gone.url}/tenant`;
    await gone.close();
    const down = new Pdp(configFor(authority, { fetchTimeoutMs: 500 }));
    const token = await pdp.mint({ extraClaims: { iss: `${authority}/v2.0` } });
    const d = await down.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${token}`] } });
    expectReason(d, 'issuer_unavailable');
    expect(d.hint).toContain(authority);
  });
});

describe('directory_unavailable', () => {
  const GROUP = 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d';
  let calls = 0;
  const failing: GroupMembershipResolver = {
    checkMemberGroups: () => {
      calls++;
      return Promise.reject(new DirectoryUnavailableError('Graph answered 503'));
    },
  };
  let withGraph: Pdp;
  beforeAll(async () => {
    withGraph = new Pdp(configFor(pdp.idp.authority, { accessPolicies: [{ objectId: GROUP, dataActions: ['read'] }] }), { membership: failing });
    await withGraph.refreshIssuers();
  });
  const ask = async (token: string) => withGraph.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${token}`] } });

  it('group membership is needed and Graph cannot answer', async () => {
    const d = await ask(await pdp.mint({ oid: UNLISTED_OID }));
    expectReason(d, 'directory_unavailable');
    expect(d.hint).toContain(UNLISTED_OID);
    expect(calls).toBe(1);
  });

  it('control: a groups claim answers without Graph', async () => {
    const before = calls;
    expectReason(await ask(await pdp.mint({ oid: UNLISTED_OID, groups: [GROUP] })), 'allowed');
    expect(calls).toBe(before);
  });

  it('a membership lookup that never answers ends at decisionBudgetMs, named as the directory stage', async () => {
    let asked = 0;
    const silent: GroupMembershipResolver = {
      checkMemberGroups: () => {
        asked++;
        return new Promise(() => undefined);
      },
    };
    const budgetMs = 150;
    const hanging = new Pdp(configFor(pdp.idp.authority, { accessPolicies: [{ objectId: GROUP, dataActions: ['read'] }], decisionBudgetMs: budgetMs }), { membership: silent });
    await hanging.refreshIssuers();
    const token = await pdp.mint({ oid: UNLISTED_OID });
    const started = performance.now();
    const d = await hanging.decide({ method: 'GET', target: '/Patient/1', credentials: { authorization: [`Bearer ${token}`] } });
    const elapsed = performance.now() - started;
    expectReason(d, 'directory_unavailable');
    expect(d.hint).toContain(`decisionBudgetMs (${budgetMs} ms) during directory`);
    expect(asked).toBe(1);
    expect(elapsed).toBeGreaterThanOrEqual(budgetMs - 20);
    // A lookup that never answered is not remembered as an answer: the next decision asks again.
    const again = await hanging.decide({ method: 'GET', target: '/Patient/2', credentials: { authorization: [`Bearer ${token}`] } });
    expectReason(again, 'directory_unavailable');
    expect(asked).toBe(2);
    // The 503 still names who was waiting, and that the token came from the cache.
    expect([again.principal?.objectId, again.cacheHit]).toEqual([UNLISTED_OID, true]);
  });
});

describe('invalid_request', () => {
  it('JSON mode: a body that is not JSON; the hint only for the admin key', async () => {
    for (const key of [API_KEY, ADMIN_KEY]) {
      const res = await fetch(`${pdp.url}/api/decide`, { method: 'POST', headers: { 'x-functions-key': key }, body: '{"method":' });
      expect(res.status).toBe(400);
      const body = (await res.json()) as Record<string, unknown>;
      expect(body).toMatchObject({ reason: 'invalid_request', status: 400 });
      expect('hint' in body).toBe(key === ADMIN_KEY);
    }
  });
});

describe('never dereference anything a token names', () => {
  it('jku, x5u, x5c, embedded jwk, an overage endpoint and an unknown iss cause no request', async () => {
    const start = counter.count();
    const at = (p: string) => `${counter.url}${p}`;
    const tokens = [
      await forged(attacker.privateKey, { jku: at('/jku'), kid: 'attacker' }),
      await forged(attacker.privateKey, { jku: at('/jku') }),
      await forged(attacker.privateKey, { x5u: at('/x5u'), kid: 'attacker' }),
      await forged(attacker.privateKey, { x5u: at('/x5u') }),
      await forged(attacker.privateKey, { jwk: attacker.publicJwk, jku: at('/jku2'), x5u: at('/x5u2') }),
      await forged(attacker.privateKey, {}, { iss: counter.url }),
      await forged(attacker.privateKey, {}, { iss: at('/tenant/v2.0') }),
      await pdp.mint({ extraClaims: { iss: `${counter.url}/` } }),
      // Group overage (Entra: `_claim_names` + `_claim_sources` endpoint): resolved only through Graph.
      await pdp.mint({
        oid: UNLISTED_OID,
        appId: OTHER_CLIENT_ID,
        extraClaims: { _claim_names: { groups: 'src1' }, _claim_sources: { src1: { endpoint: at('/overage') } }, hasgroups: true },
      }),
    ];
    const reasons: string[] = [];
    for (const t of tokens) reasons.push((await pdp.decide(t)).reason);
    expect(reasons.every((r) => r !== 'allowed')).toBe(true);
    expect(reasons.at(-1)).toBe('principal_not_allowed');
    expect(counter.count()).toBe(start);
    expect(start).toBe(0);
  });
});

describe('the suite itself', () => {
  it('has one describe per reason code of the catalogue', async () => {
    const { readFileSync } = await import('node:fs');
    const text = readFileSync(new URL(import.meta.url), 'utf8');
    const missing = Object.keys(REASONS).filter((code) => !text.includes(`describe('${code}',`));
    expect(missing).toEqual([]);
  });
});
