/**
 * Every claim fhir-pdp reads, of every wrong JSON type, through `/api/decide` on the standalone
 * host: refused with the reason docs/security.md gives (never allowed with the claim read as
 * absent), or ignored where that authority kind does not read the claim. Then Entra app-only
 * tokens without `roles`/`scp`, from minted keys and from a real OpenID provider (npm
 * oidc-provider, client credentials).
 *
 * The expected reasons are written out here, not taken from src/identity/claim-types.ts, so the
 * table cannot drift from what a caller gets.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_APP_ID, DEV_TENANT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';
import { startOidcProvider, type RunningOidcProvider } from '../../testkit/oidc-provider.js';
import {
  ADMIN_KEY,
  E2E_ADMIN_KEY,
  FHIR_AUDIENCE,
  READER_OID,
  askForwardAuth,
  askJson,
  outcome,
  startE2ePdp,
  startPdpWithDevIdp,
  type E2ePdp,
  type RunningPdp,
} from '../../testkit/service.js';

const SMART_TENANT = '5e4d3c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c';
const OTHER_TENANT = '0b7c6a5d-4e3f-4a2b-9c1d-0e9f8a7b6c5d';
const UNLISTED_OID = '9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a';

/** One value of each JSON type, and the empty string. */
const WRONG_VALUES = { number: 5, boolean: true, null: null, object: {}, array: [], 'empty string': '' } as const;
type Sample = keyof typeof WRONG_VALUES;

type Expected = 'missing_claim' | 'malformed_token' | 'allowed';
/** Per claim: the reason for the primary authority and for a SMART provider, and the samples that are of its type. */
const CASES: Record<string, { entra: Expected; smart: Expected; ofType?: readonly Sample[] }> = {
  iss: { entra: 'missing_claim', smart: 'missing_claim' },
  aud: { entra: 'missing_claim', smart: 'missing_claim' },
  exp: { entra: 'missing_claim', smart: 'missing_claim', ofType: ['number'] },
  nbf: { entra: 'malformed_token', smart: 'malformed_token', ofType: ['number'] },
  iat: { entra: 'malformed_token', smart: 'malformed_token', ofType: ['number'] },
  sub: { entra: 'malformed_token', smart: 'malformed_token' },
  oid: { entra: 'missing_claim', smart: 'malformed_token' },
  tid: { entra: 'malformed_token', smart: 'malformed_token' },
  azp: { entra: 'malformed_token', smart: 'malformed_token' },
  appid: { entra: 'malformed_token', smart: 'malformed_token' },
  client_id: { entra: 'malformed_token', smart: 'malformed_token' },
  cid: { entra: 'malformed_token', smart: 'malformed_token' },
  azpacr: { entra: 'malformed_token', smart: 'allowed' },
  appidacr: { entra: 'malformed_token', smart: 'allowed' },
  ver: { entra: 'malformed_token', smart: 'allowed' },
  idtyp: { entra: 'malformed_token', smart: 'allowed' },
  nonce: { entra: 'malformed_token', smart: 'allowed' },
  roles: { entra: 'missing_claim', smart: 'allowed', ofType: ['array'] },
  groups: { entra: 'malformed_token', smart: 'allowed', ofType: ['array'] },
  hasgroups: { entra: 'malformed_token', smart: 'allowed', ofType: ['boolean'] },
  _claim_names: { entra: 'malformed_token', smart: 'allowed', ofType: ['object'] },
  // An empty array is of the type, and still no scopes: missing_claim either way.
  scp: { entra: 'missing_claim', smart: 'missing_claim' },
  scope: { entra: 'missing_claim', smart: 'missing_claim' },
  raw_scope: { entra: 'missing_claim', smart: 'missing_claim' },
  fhirUser: { entra: 'malformed_token', smart: 'missing_claim' },
  extension_fhirUser: { entra: 'malformed_token', smart: 'missing_claim' },
  patient: { entra: 'malformed_token', smart: 'malformed_token' },
  jti: { entra: 'malformed_token', smart: 'malformed_token' },
  sid: { entra: 'malformed_token', smart: 'malformed_token' },
};

let pdp: RunningPdp;
let smartIdp: DevIdentityProvider;

const entraToken = (extraClaims: Record<string, unknown> = {}) => pdp.mint({ extraClaims });
const smartToken = (extraClaims: Record<string, unknown> = {}) =>
  smartIdp.mint({ audience: FHIR_AUDIENCE, appId: 'portal', fhirUser: 'Practitioner/7', scp: 'user/Patient.rs', extraClaims });
const ask = (token: string) => askJson(pdp.url, { token, key: ADMIN_KEY });

beforeAll(async () => {
  smartIdp = await DevIdentityProvider.start({ tenantId: SMART_TENANT });
  pdp = await startPdpWithDevIdp(
    {
      audiences: [DEV_APP_ID],
      smartIdentityProviders: [{ authority: smartIdp.authority, applications: [{ clientId: 'portal', audience: FHIR_AUDIENCE, allowedDataActions: ['read'] }] }],
    },
    { adminKeys: [ADMIN_KEY] },
  );
});

afterAll(async () => {
  await pdp?.close();
  await smartIdp?.close();
});

describe('every claim × every wrong JSON type, through /api/decide', () => {
  it('controls: both baseline tokens are allowed', async () => {
    expect((await ask(await entraToken())).body).toMatchObject({ reason: 'allowed', principal: { tenantId: DEV_TENANT_ID } });
    expect((await ask(await smartToken())).body).toMatchObject({ reason: 'allowed', principal: { applicationId: 'portal' } });
  });

  it('the table here covers every claim docs/security.md lists', async () => {
    const { CLAIM_NAMES } = await import('../../src/identity/claim-types.js');
    expect(Object.keys(CASES).sort()).toEqual([...CLAIM_NAMES].sort());
  });

  it.each(Object.entries(CASES))('%s', async (claim, expected) => {
    const seen: string[] = [];
    const want: string[] = [];
    for (const [sample, value] of Object.entries(WRONG_VALUES) as Array<[Sample, unknown]>) {
      if (expected.ofType?.includes(sample)) continue;
      for (const [kind, mint] of [['entra', entraToken], ['smart', smartToken]] as const) {
        const answer = await ask(await mint({ [claim]: value }));
        seen.push(`${kind} ${sample}: ${String(answer.body.reason)} ${String(answer.body.status)}`);
        want.push(`${kind} ${sample}: ${expected[kind]} ${expected[kind] === 'allowed' ? 200 : 401}`);
        if (expected[kind] !== 'allowed') expect(answer.body.hint, `${kind} ${sample}`).toContain(claim);
      }
    }
    expect(seen).toEqual(want);
  });

  // The attack: a numeric tid was allowed and the tenant vanished from X-Auth-Tenant.
  it('a numeric tid is refused in forward-auth mode, and no identity header reaches the upstream', async () => {
    const fa = await askForwardAuth(pdp.url, { token: await entraToken({ tid: 5 }), key: ADMIN_KEY });
    expect(fa.status).toBe(401);
    expect(fa.headers.get('x-decision-reason')).toBe('malformed_token');
    expect(fa.headers.get('x-auth-principal')).toBeNull();
    expect(fa.headers.get('x-auth-tenant')).toBeNull();
    const good = await askForwardAuth(pdp.url, { token: await entraToken(), key: ADMIN_KEY });
    expect(good.headers.get('x-auth-tenant')).toBe(DEV_TENANT_ID);
  });

  it('a client id written twice with different values is malformed_token', async () => {
    const answer = await ask(await entraToken({ appid: UNLISTED_OID }));
    expect(answer.body).toMatchObject({ reason: 'malformed_token', status: 401 });
    expect(answer.body.hint).toContain(DEV_APP_ID);
    expect(answer.body.hint).toContain(UNLISTED_OID);
  });
});

describe('tid and the tenant of iss (primary authority)', () => {
  it.each<[string, 1 | 2]>([
    ['v1', 1],
    ['v2', 2],
  ])('a %s token whose tid is another tenant is untrusted_issuer, naming both', async (_v, version) => {
    const answer = await ask(await pdp.mint({ version, tid: OTHER_TENANT }));
    expect(answer.body).toMatchObject({ reason: 'untrusted_issuer', status: 401 });
    expect(answer.body.hint).toContain(OTHER_TENANT);
    expect(answer.body.hint).toContain(DEV_TENANT_ID);
  });

  it('a token without tid is allowed (the tenant is not invented)', async () => {
    const answer = await ask(await entraToken({ tid: undefined }));
    expect(answer.body).toMatchObject({ reason: 'allowed' });
    expect(answer.body.principal).not.toHaveProperty('tenantId');
  });
});

describe('Entra app-only tokens without roles or scp (minted keys)', () => {
  // The development IdP writes Entra's claims: azp + azpacr (v2) or appid + appidacr (v1), and
  // sub = oid unless told otherwise.
  it.each<[string, Parameters<RunningPdp['mint']>[0]]>([
    ['v2 without idtyp (azp + azpacr, sub = oid)', {}],
    ['v1 without idtyp (appid + appidacr, sub = oid)', { version: 1 }],
    ['v2 with idtyp app and a sub of its own', { idtyp: 'app', sub: 'opaque-subject' }],
  ])('a listed service principal is allowed: %s', async (_what, options) => {
    const answer = await ask(await pdp.idp.mint({ audience: FHIR_AUDIENCE, ...options }));
    expect(answer.body).toMatchObject({ reason: 'allowed', status: 200, principal: { objectId: READER_OID, applicationId: DEV_APP_ID }, dataActions: ['read'] });
  });

  it('an unlisted one is principal_not_allowed: matched by object id as usual', async () => {
    const answer = await ask(await pdp.idp.mint({ audience: FHIR_AUDIENCE, oid: UNLISTED_OID }));
    expect(answer.body).toMatchObject({ reason: 'principal_not_allowed', status: 403 });
    expect(answer.body.hint).toContain(UNLISTED_OID);
  });

  it.each<[string, Parameters<RunningPdp['mint']>[0], string]>([
    ['sub differs from oid and no idtyp', { sub: 'opaque-subject' }, 'sub differs from oid'],
    ['no azpacr', { extraClaims: { azpacr: undefined } }, '`azpacr`'],
    ['idtyp user', { idtyp: 'user' }, 'idtyp is "user"'],
    // An Entra v2 ID token of the API's own app registration: aud is the client id (accepted
    // here through `audiences`), pairwise sub, nonce, no azp/azpacr.
    ['an ID token', { audience: DEV_APP_ID, sub: 'pairwise', extraClaims: { azp: undefined, azpacr: undefined, nonce: 'n', aio: 'x', preferred_username: 'a@example.test' } }, 'an ID token is never one'],
  ])('%s is missing_claim; the hint says what was found, not that it is an ID token', async (_what, options, named) => {
    const answer = await ask(await pdp.idp.mint({ audience: FHIR_AUDIENCE, ...options }));
    expect(answer.body).toMatchObject({ reason: 'missing_claim', status: 401 });
    expect(answer.body.hint).toContain(named);
    expect(answer.body.hint).toContain('app-only');
  });
});

describe('Entra app-only tokens without roles or scp (oidc-provider, client credentials)', () => {
  const SP_OID = '2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d';
  let op: RunningOidcProvider;
  let e2e: E2ePdp;

  beforeAll(async () => {
    op = await startOidcProvider({
      clients: [
        { client_id: 'daemon', client_secret: 'daemon-secret' },
        { client_id: 'daemon-without-idtyp', client_secret: 'other-secret' },
      ],
      resource: FHIR_AUDIENCE,
      issuerPath: `/${DEV_TENANT_ID}/v2.0`,
      // Entra's claims for an app without an app-role assignment: no roles, no scp. RFC 9068
      // makes oidc-provider's sub the client id, which is not the object id.
      extraTokenClaims: (_ctx, token) =>
        token.clientId === 'daemon'
          ? { oid: SP_OID, tid: DEV_TENANT_ID, ver: '2.0', azp: 'daemon', azpacr: '1', idtyp: 'app' }
          : { oid: SP_OID, tid: DEV_TENANT_ID, ver: '2.0', azp: 'daemon-without-idtyp', azpacr: '1' },
    });
    e2e = await startE2ePdp({ authority: op.issuer, audience: FHIR_AUDIENCE, accessPolicies: [{ objectId: SP_OID, dataActions: ['read'] }], fetchTimeoutMs: 2000 });
  });

  afterAll(async () => {
    await e2e?.close();
    await op?.close();
  });

  it('idtyp app: allowed for the listed service principal, in JSON and forward-auth mode', async () => {
    const token = await op.getToken('daemon', 'daemon-secret');
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    expect(claims).not.toHaveProperty('roles');
    expect(claims).not.toHaveProperty('scp');
    expect(claims).not.toHaveProperty('scope');
    const json = await e2e.ask({ path: '/Patient/1', token });
    expect(outcome(json)).toEqual({ reason: 'allowed', status: 200 });
    expect(json.body.principal).toMatchObject({ objectId: SP_OID, tenantId: DEV_TENANT_ID, applicationId: 'daemon' });
    const fa = await e2e.forward({ uri: '/Patient/1', token });
    expect(fa.httpStatus).toBe(200);
    expect(fa.headers.get('x-auth-principal')).toBe(SP_OID);
    expect(fa.headers.get('x-auth-tenant')).toBe(DEV_TENANT_ID);
    expect(outcome(await e2e.ask({ method: 'DELETE', path: '/Patient/1', token }))).toEqual({ reason: 'action_not_permitted', status: 403 });
  });

  it('without idtyp and with sub (the client id) not the oid: missing_claim', async () => {
    const answer = await e2e.ask({ path: '/Patient/1', token: await op.getToken('daemon-without-idtyp', 'other-secret'), key: E2E_ADMIN_KEY });
    expect(outcome(answer)).toEqual({ reason: 'missing_claim', status: 401 });
    expect(answer.body.hint).toContain('sub differs from oid');
  });
});
