import { describe, expect, it } from 'vitest';
import { clientIdOf, principalFromToken, type SmartApplication } from '../../src/identity/principal.js';
import type { VerifiedToken } from '../../src/identity/verify.js';
import { Trace } from '../../src/policy/trace.js';

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
    expect(entra({ oid: OID, scp: 'x', hasgroups: 'true' }).groupsOverage).toBe(true);
    expect(entra({ oid: OID, scp: 'x' })).not.toHaveProperty('groups');
  });

  it('ignores a groups claim that is not an array of strings', () => {
    expect(entra({ oid: OID, scp: 'x', groups: 'g1' })).not.toHaveProperty('groups');
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
