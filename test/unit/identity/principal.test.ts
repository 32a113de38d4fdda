import { describe, expect, it } from 'vitest';
import { tenantOfIssuer } from '../../../src/identity/entra-token.js';
import type { SmartApplication } from '../../../src/core/principal.js';
import { clientIdOf, principalFromToken } from '../../../src/identity/principal.js';
import type { VerifiedToken } from '../../../src/identity/verify.js';
import { Trace } from '../../../src/core/trace.js';

const TENANT = '8f6d2c1e-4b7a-4e39-9c5d-2a1b3c4d5e6f';
const OID = 'C5A1E9D7-2B3F-4C8A-9D6E-0F1A2B3C4D5E';
const APP = '3b9e7c2a-1d4f-4a6b-8e5c-7f0a1b2c3d4e';
const AUTHORITY = `https://login.microsoftonline.com/${TENANT}`;
const V1_ISS = `https://sts.windows.net/${TENANT}/`;
const V2_ISS = `${AUTHORITY}/v2.0`;
const EXP = 1_900_000_000;

function verified(claims: Record<string, unknown>, o: { issuer?: string; authority?: string; audiences?: string[] } = {}): VerifiedToken {
  const issuer = o.issuer ?? V2_ISS;
  const full = { iss: issuer, exp: EXP, ...claims };
  return {
    jws: { token: 'x.y.z', header: { alg: 'RS256', kid: 'k' }, payload: full, alg: 'RS256', kid: 'k' },
    issuer,
    authority: o.authority ?? AUTHORITY,
    claims: full,
    audiences: o.audiences ?? ['https://fhir.example.test'],
    expiresAt: EXP,
    kid: 'k',
  };
}

function entra(claims: Record<string, unknown>) {
  const r = principalFromToken(verified(claims), undefined);
  if ('reason' in r) throw new Error(`refused: ${r.reason} ${r.hint}`);
  return r.principal;
}

function refusalOf(v: VerifiedToken, apps?: ReadonlyMap<string, SmartApplication>): string | undefined {
  const r = principalFromToken(v, apps);
  return 'reason' in r ? r.reason : undefined;
}

describe('principalFromToken: the primary (Entra) authority', () => {
  it('normalises a v1 delegated token (appid, ver 1.0, scp)', () => {
    const p = principalFromToken(
      verified({ appid: APP, ver: '1.0', oid: OID, tid: TENANT, sub: 's', scp: 'user_impersonation  patient/*.read' }, { issuer: V1_ISS }),
      undefined,
    );
    expect(p).toMatchObject({
      ok: true,
      principal: {
        kind: 'entra',
        issuer: V1_ISS,
        authority: AUTHORITY,
        objectId: OID.toLowerCase(),
        tenantId: TENANT,
        applicationId: APP,
        version: '1.0',
        subject: 's',
        isAppToken: false,
        roles: [],
        scopes: ['user_impersonation', 'patient/*.read'],
        groupsOverage: false,
        expiresAt: EXP,
      },
    });
  });

  it('normalises a v2 token (azp, ver 2.0) to the same shape', () => {
    const p = entra({ azp: APP, ver: '2.0', oid: OID, tid: TENANT, scp: 'user_impersonation' });
    expect(p).toMatchObject({ kind: 'entra', applicationId: APP, version: '2.0', objectId: OID.toLowerCase(), isAppToken: false });
  });

  it('marks idtyp app as an app token even with a scope claim', () => {
    expect(entra({ oid: OID, roles: ['r'], scp: 'x', idtyp: 'app' }).isAppToken).toBe(true);
  });

  it('lower-cases groups and reads overage from _claim_names and hasgroups', () => {
    expect(entra({ oid: OID, scp: 'x', groups: ['AA-BB'] })).toMatchObject({ groups: ['aa-bb'], groupsOverage: false });
    expect(entra({ oid: OID, scp: 'x', _claim_names: { groups: 'src1' }, _claim_sources: { src1: { endpoint: 'https://graph.example/x' } } }).groupsOverage).toBe(true);
    expect(entra({ oid: OID, scp: 'x', hasgroups: true }).groupsOverage).toBe(true);
    expect(entra({ oid: OID, scp: 'x' })).not.toHaveProperty('groups');
  });

  it.each<[string, Record<string, unknown>]>([
    ['groups as a string', { groups: 'g1' }],
    ['groups holding a number', { groups: ['g1', 2] }],
    ['hasgroups as the string "true"', { hasgroups: 'true' }],
    ['_claim_names as an array', { _claim_names: ['groups'] }],
    ['tid as a number', { tid: 5 }],
    ['idtyp "application"', { idtyp: 'application' }],
    ['azp and appid naming different clients', { azp: APP, appid: 'another' }],
  ])('refuses %s as malformed_token (never read as absent)', (_what, claims) => {
    expect(refusalOf(verified({ oid: OID, scp: 'x', ...claims }))).toBe('malformed_token');
  });

  it('reads scopes from raw_scope before scp before scope', () => {
    expect(entra({ oid: OID, raw_scope: 'a', scp: 'b', scope: 'c' }).scopes).toEqual(['a']);
    expect(entra({ oid: OID, scp: 'b', scope: 'c' }).scopes).toEqual(['b']);
    expect(entra({ oid: OID, scope: 'c d' }).scopes).toEqual(['c', 'd']);
  });

  // Contract: missing_claim when "for the primary authority `oid` and one of `scp`/`roles`" is
  // absent. An Entra client-credentials token carries `roles` and no `scp`: it must be accepted.
  it('accepts an app-only token with roles and no scp (Entra client credentials)', () => {
    const p = entra({ azp: APP, oid: OID, roles: ['globalReader'], idtyp: 'app' });
    expect(p).toMatchObject({ isAppToken: true, roles: ['globalReader'], scopes: [] });
  });

  it.each<[string, Record<string, unknown>]>([
    ['no oid', { scp: 'x' }],
    ['an empty oid', { oid: '', scp: 'x' }],
    ['a numeric oid', { oid: 7, scp: 'x' }],
    ['neither scp nor roles (an ID token)', { oid: OID, nonce: 'n', amr: ['pwd'] }],
    ['an empty roles array and no scp', { oid: OID, roles: [] }],
    ['roles as a string', { oid: OID, roles: 'admin' }],
    ['roles with a non-string', { oid: OID, roles: ['a', 1] }],
    ['scp of the wrong type', { oid: OID, scp: 42 }],
    ['an empty scp', { oid: OID, scp: '' }],
    ['scope as an array (RFC 9068 says a string)', { oid: OID, scope: ['a'] }],
  ])('refuses %s as missing_claim', (_what, claims) => {
    expect(refusalOf(verified(claims))).toBe('missing_claim');
  });

  it('records the claims step in a trace', () => {
    const trace = new Trace();
    principalFromToken(verified({ scp: 'x' }), undefined, trace);
    expect(trace.steps.find((s) => s.id === 'claims')).toMatchObject({ outcome: 'fail', reason: 'missing_claim' });
  });
});

describe('clientIdOf', () => {
  it.each<[Record<string, unknown>, string | undefined]>([
    [{ azp: 'a', appid: 'b', client_id: 'c', cid: 'd' }, 'a'],
    [{ appid: 'b', client_id: 'c', cid: 'd' }, 'b'],
    [{ client_id: 'c', cid: 'd' }, 'c'],
    [{ cid: 'd' }, 'd'],
    [{ azp: '', appid: 'b' }, 'b'],
    [{ azp: 5 }, undefined],
    [{}, undefined],
  ])('%j -> %s', (claims, expected) => {
    expect(clientIdOf(claims)).toBe(expected);
  });
});

describe('principalFromToken: a SMART identity provider', () => {
  const SMART_AUTHORITY = 'https://idp.example.test/realms/fhir';
  const apps = new Map<string, SmartApplication>([
    ['portal', { clientId: 'portal', audience: 'https://fhir.example.test', allowedDataActions: ['read'] }],
    ['backend', { clientId: 'backend', audience: 'api://backend-fhir', allowedDataActions: ['read', 'write'] }],
  ]);
  const smart = (claims: Record<string, unknown>, audiences = ['https://fhir.example.test']) =>
    verified(claims, { issuer: SMART_AUTHORITY, authority: SMART_AUTHORITY, audiences });

  it.each<[string, Record<string, unknown>]>([
    ['azp', { azp: 'portal' }],
    ['client_id (RFC 9068)', { client_id: 'portal' }],
    ['cid (Okta)', { cid: 'portal' }],
    ['appid', { appid: 'portal' }],
  ])('matches the application by %s', (_what, id) => {
    const r = principalFromToken(smart({ ...id, fhirUser: 'Practitioner/7', scope: 'user/Patient.rs', patient: '9' }), apps);
    expect(r).toMatchObject({
      ok: true,
      principal: { kind: 'smart', applicationId: 'portal', fhirUser: 'Practitioner/7', patient: '9', scopes: ['user/Patient.rs'], isAppToken: false, application: apps.get('portal') },
    });
  });

  it('accepts extension_fhirUser (Azure AD B2C) for fhirUser', () => {
    const r = principalFromToken(smart({ azp: 'portal', extension_fhirUser: 'Patient/1', scp: ['patient/*.rs'] }), apps);
    expect(r).toMatchObject({ ok: true, principal: { fhirUser: 'Patient/1', scopes: ['patient/*.rs'] } });
  });

  it('refuses an unknown client id as unknown_application and names it and the configured ones', () => {
    const r = principalFromToken(smart({ azp: 'intruder', fhirUser: 'Patient/1', scope: 'x' }), apps);
    expect(r).toMatchObject({ reason: 'unknown_application' });
    if (!('reason' in r)) return;
    expect(r.hint).toContain('intruder');
    expect(r.hint).toContain('portal');
    expect(r.hint).toContain('backend');
  });

  it('refuses a token with no client id as unknown_application', () => {
    expect(refusalOf(smart({ fhirUser: 'Patient/1', scope: 'x' }), apps)).toBe('unknown_application');
  });

  it("refuses a token for another application's audience as audience_mismatch, naming both", () => {
    const r = principalFromToken(smart({ azp: 'backend', fhirUser: 'Patient/1', scope: 'x' }), apps);
    expect(r).toMatchObject({ reason: 'audience_mismatch' });
    if ('reason' in r) {
      expect(r.hint).toContain('api://backend-fhir');
      expect(r.hint).toContain('https://fhir.example.test');
    }
  });

  it.each<[string, Record<string, unknown>]>([
    ['no fhirUser', { azp: 'portal', scope: 'user/Patient.rs' }],
    ['a numeric fhirUser', { azp: 'portal', fhirUser: 5, scope: 'user/Patient.rs' }],
    ['no scopes', { azp: 'portal', fhirUser: 'Patient/1' }],
    ['an empty scope', { azp: 'portal', fhirUser: 'Patient/1', scope: '' }],
    ['a numeric scope', { azp: 'portal', fhirUser: 'Patient/1', scope: 1 }],
  ])('refuses %s as missing_claim', (_what, claims) => {
    expect(refusalOf(smart(claims), apps)).toBe('missing_claim');
  });
});

describe('principalFromToken: Entra app-only tokens without roles or scp', () => {
  // Entra issues a client-credentials token without `roles` when the application has no app role
  // assignment; the service principal is then matched by object id through accessPolicies.
  const V2_APP_ONLY = { ver: '2.0', azp: APP, azpacr: '1', oid: OID, sub: OID, tid: TENANT };
  const V1_APP_ONLY = { ver: '1.0', appid: APP, appidacr: '2', oid: OID, sub: OID, tid: TENANT };

  it.each<[string, Record<string, unknown>, { issuer?: string }]>([
    ['v2 with idtyp app', { ver: '2.0', azp: APP, azpacr: '1', oid: OID, sub: 'pairwise', idtyp: 'app' }, {}],
    ['v2 without idtyp: azp + azpacr, sub = oid', V2_APP_ONLY, {}],
    ['v1 without idtyp: appid + appidacr, sub = oid', V1_APP_ONLY, { issuer: V1_ISS }],
    ['sub = oid in another case', { ...V2_APP_ONLY, sub: OID.toLowerCase() }, {}],
  ])('accepts %s', (_what, claims, o) => {
    const r = principalFromToken(verified(claims, o), undefined);
    expect(r).toMatchObject({ ok: true, principal: { kind: 'entra', objectId: OID.toLowerCase(), applicationId: APP, isAppToken: true, roles: [], scopes: [] } });
  });

  it.each<[string, Record<string, unknown>, string, { issuer?: string }]>([
    ['sub differs from oid', { ...V2_APP_ONLY, sub: 'pairwise-sub' }, 'sub differs from oid', {}],
    ['no azpacr', { ...V2_APP_ONLY, azpacr: undefined }, '`azpacr`', {}],
    ['a v2 token with the v1 pair', { ver: '2.0', appid: APP, appidacr: '1', oid: OID, sub: OID }, '`azp`', {}],
    ['a v1 token with the v2 pair', { ver: '1.0', azp: APP, azpacr: '1', oid: OID, sub: OID }, '`appid`', { issuer: V1_ISS }],
    ['no ver', { ...V2_APP_ONLY, ver: undefined }, 'no `ver`', {}],
    ['idtyp user', { ...V2_APP_ONLY, idtyp: 'user' }, 'idtyp is "user"', {}],
    ['a nonce, even with idtyp app', { ...V2_APP_ONLY, idtyp: 'app', nonce: 'n' }, '`nonce`', {}],
    // Entra's v2 ID token: aud is the client id, pairwise sub, nonce, no azp/azpacr.
    ['an Entra ID token', { ver: '2.0', oid: OID, sub: 'pairwise', tid: TENANT, nonce: 'n', aio: 'x', preferred_username: 'a@b' }, 'an ID token is never one', {}],
  ])('refuses %s as missing_claim, naming what was found', (_what, claims, named, o) => {
    const r = principalFromToken(verified(claims, o), undefined);
    expect(r).toMatchObject({ reason: 'missing_claim' });
    if ('reason' in r) {
      expect(r.hint).toContain(named);
      expect(r.hint).toContain('app-only');
    }
  });
});

describe('principalFromToken: tid against the tenant of iss (primary authority)', () => {
  const OTHER_TENANT = '0b7c6a5d-4e3f-4a2b-9c1d-0e9f8a7b6c5d';

  it.each<[string, string]>([
    ['v1', V1_ISS],
    ['v2', V2_ISS],
  ])('accepts tid equal to the tenant of a %s issuer (any case)', (_v, issuer) => {
    expect(principalFromToken(verified({ oid: OID, scp: 'x', tid: TENANT.toUpperCase() }, { issuer }), undefined)).toMatchObject({ ok: true, principal: { tenantId: TENANT.toUpperCase() } });
  });

  it.each<[string, string]>([
    ['v1', V1_ISS],
    ['v2', V2_ISS],
  ])('refuses tid of another tenant than a %s issuer as untrusted_issuer, naming both', (_v, issuer) => {
    const r = principalFromToken(verified({ oid: OID, scp: 'x', tid: OTHER_TENANT }, { issuer }), undefined);
    expect(r).toMatchObject({ reason: 'untrusted_issuer' });
    if ('reason' in r) {
      expect(r.hint).toContain(OTHER_TENANT);
      expect(r.hint).toContain(TENANT);
    }
  });

  it('refuses a tid when iss names no tenant', () => {
    const r = principalFromToken(verified({ oid: OID, scp: 'x', tid: TENANT }, { issuer: 'http://127.0.0.1:9999' }), undefined);
    expect(r).toMatchObject({ reason: 'untrusted_issuer' });
    if ('reason' in r) expect(r.hint).toContain('names no tenant');
  });

  it('does not compare tid for a SMART identity provider', () => {
    const apps = new Map<string, SmartApplication>([['portal', { clientId: 'portal', audience: 'https://fhir.example.test', allowedDataActions: ['read'] }]]);
    const v = verified({ azp: 'portal', fhirUser: 'Patient/1', scope: 'x', tid: OTHER_TENANT }, { issuer: 'https://idp.example.test/realms/fhir', authority: 'https://idp.example.test/realms/fhir' });
    expect(principalFromToken(v, apps)).toMatchObject({ ok: true, principal: { tenantId: OTHER_TENANT } });
  });
});

describe('tenantOfIssuer', () => {
  it.each<[string, string | undefined]>([
    [`https://sts.windows.net/${TENANT}/`, TENANT],
    [`https://login.microsoftonline.com/${TENANT}/v2.0`, TENANT],
    [`https://login.microsoftonline.us/${TENANT.toUpperCase()}/v2.0/`, TENANT],
    [`http://127.0.0.1:7200/sts/${TENANT}/`, TENANT],
    [`http://127.0.0.1:7200/${TENANT}/v2.0/extra`, undefined],
    ['http://127.0.0.1:7200', undefined],
    ['https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0', undefined],
    ['not a url', undefined],
  ])('%s -> %s', (iss, tenant) => {
    expect(tenantOfIssuer(iss)).toBe(tenant);
  });
});
