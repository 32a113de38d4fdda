import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../../src/config/load.js';
import type { PdpConfigInput } from '../../../src/config/schema.js';
import { parseFhirRequest } from '../../../src/fhir/request.js';
import type { FhirRequest } from '../../../src/fhir/types.js';
import type { Principal } from '../../../src/core/principal.js';
import { ALL_BUT_SMART } from '../../../src/core/data-actions.js';
import {
  acceptedAudiences,
  compilePolicy,
  decideAccess,
  directGrants,
  groupCandidates,
  needsMembership,
  withGroupGrants,
  type CompiledPolicy,
  type Grants,
} from '../../../src/policy/decide.js';
import { Trace } from '../../../src/core/trace.js';

const AUTHORITY = 'https://login.microsoftonline.com/8f6d2c1e-4b7a-4e39-9c5d-2a1b3c4d5e6f';
const USER = 'c5a1e9d7-2b3f-4c8a-9d6e-0f1a2b3c4d5e';
const SP = '7d1c9e2b-4a3f-4e8d-9c1b-2a3e4f5a6b7c';
const APP = '3b9e7c2a-1d4f-4a6b-8e5c-7f0a1b2c3d4e';
const GROUP = 'a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d';
const GROUP2 = 'b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e';
const SMART_AUTHORITY = 'https://idp.example.test/realms/fhir';

function policy(overrides: Partial<PdpConfigInput>): CompiledPolicy {
  return compilePolicy(parseConfig({ authority: AUTHORITY, audience: 'https://fhir.example.test', ...overrides }));
}

function entra(p: Partial<Principal> = {}): Principal {
  return {
    kind: 'entra',
    issuer: `${AUTHORITY}/v2.0`,
    authority: AUTHORITY,
    objectId: USER,
    applicationId: APP,
    isAppToken: false,
    roles: [],
    scopes: ['user_impersonation'],
    groupsOverage: false,
    expiresAt: 2_000_000_000,
    ...p,
  };
}

function req(method: string, target: string): FhirRequest {
  const r = parseFhirRequest(method, target);
  if (!r.ok) throw new Error(r.problem);
  return r.request;
}

function decide(principal: Principal, p: CompiledPolicy, request: FhirRequest, grants: Grants = directGrants(principal, p)) {
  return decideAccess({ principal, request, grants, policy: p });
}

describe('compilePolicy', () => {
  it('grants every action but smart to an access policy without dataActions', () => {
    const p = policy({ accessPolicies: [{ objectId: USER }] });
    expect([...p.byObject.get(USER)!].sort()).toEqual([...ALL_BUT_SMART].sort());
    expect(p.byObject.get(USER)!.has('smart')).toBe(false);
  });

  it('expands * and matches names case-insensitively', () => {
    const p = policy({ accessPolicies: [{ objectId: USER, dataActions: ['Read', 'EXPORT'] }] });
    expect([...p.byObject.get(USER)!].sort()).toEqual(['export', 'read']);
  });

  it('subtracts notDataActions inside their own role only', () => {
    const p = policy({
      roles: [
        { name: 'writerNoDelete', dataActions: ['*'], notDataActions: ['delete', 'hardDelete'] },
        { name: 'deleter', dataActions: ['delete'] },
      ],
    });
    expect(p.byRole.get('writerNoDelete')!.has('delete')).toBe(false);
    expect(p.byRole.get('writerNoDelete')!.has('write')).toBe(true);
    // Another role's delete is not taken away by writerNoDelete's notDataActions.
    const both = directGrants(entra({ roles: ['writerNoDelete', 'deleter'] }), p);
    expect(both.actions.has('delete')).toBe(true);
    expect(both.actions.has('hardDelete')).toBe(false);
    expect(decide(entra({ roles: ['writerNoDelete'] }), p, req('DELETE', '/Patient/1'))).toMatchObject({ reason: 'action_not_permitted' });
    expect(decide(entra({ roles: ['writerNoDelete', 'deleter'] }), p, req('DELETE', '/Patient/1'))).toMatchObject({ ok: true });
  });

  it("does not let a role's notDataActions take away an access policy's grant", () => {
    const p = policy({ accessPolicies: [{ objectId: USER, dataActions: ['delete'] }], roles: [{ name: 'r', dataActions: ['read'], notDataActions: ['delete'] }] });
    expect(directGrants(entra({ roles: ['r'] }), p).actions.has('delete')).toBe(true);
  });

  it('compiles SMART applications per authority', () => {
    const p = policy({ smartIdentityProviders: [{ authority: SMART_AUTHORITY, applications: [{ clientId: 'portal', audience: 'a', allowedDataActions: ['Read'] }] }] });
    expect([...p.smartApplications.get(SMART_AUTHORITY)!.get('portal')!]).toEqual(['read']);
  });
});

describe('acceptedAudiences', () => {
  it('accepts audience, audiences, and fhirBaseUrl with and without its trailing slash', () => {
    const c = parseConfig({ authority: AUTHORITY, audience: 'https://fhir.example.test', audiences: [`api://${APP}`, APP], fhirBaseUrl: 'https://fhir.contoso.example/r4/' });
    expect(acceptedAudiences(c).sort()).toEqual(
      ['https://fhir.example.test', `api://${APP}`, APP, 'https://fhir.contoso.example/r4', 'https://fhir.contoso.example/r4/'].sort(),
    );
  });
});

describe('directGrants, groupCandidates, withGroupGrants, needsMembership', () => {
  const p = policy({
    accessPolicies: [
      { objectId: USER, dataActions: ['read'] },
      { objectId: GROUP, dataActions: ['write'] },
      { objectId: GROUP2, dataActions: ['delete'] },
    ],
    roles: [{ name: 'exporter', dataActions: ['export'] }],
  });

  it('unions the oid and every defined role, naming the sources', () => {
    const g = directGrants(entra({ roles: ['exporter', 'undefinedRole'] }), p);
    expect([...g.actions].sort()).toEqual(['export', 'read']);
    expect(g.sources).toEqual([`oid ${USER}`, 'role exporter']);
  });

  it('grants nothing to an unlisted oid without roles', () => {
    expect(directGrants(entra({ objectId: SP }), p).actions.size).toBe(0);
  });

  it('lists every listed id but the own oid as a group candidate', () => {
    expect(groupCandidates(entra(), p)).toEqual([GROUP, GROUP2]);
  });

  it('adds the grants of the groups the principal belongs to', () => {
    const g = withGroupGrants(directGrants(entra(), p), new Set([GROUP, 'unlisted']), p);
    expect([...g.actions].sort()).toEqual(['read', 'write']);
    expect(g.sources).toEqual([`oid ${USER}`, `group ${GROUP}`]);
  });

  it('needs membership only when direct grants do not already decide', () => {
    expect(needsMembership(entra(), req('GET', '/Patient/1'), directGrants(entra(), p), p)).toBe(false);
    expect(needsMembership(entra(), req('PUT', '/Patient/1'), directGrants(entra(), p), p)).toBe(true);
  });

  it('never looks up groups for a SMART principal', () => {
    const smart = entra({ kind: 'smart', authority: SMART_AUTHORITY, applicationId: 'portal' });
    expect(groupCandidates(smart, p)).toEqual([]);
    expect(needsMembership(smart, req('PUT', '/Patient/1'), { actions: new Set(), sources: [] }, p)).toBe(false);
  });
});

describe('decideAccess', () => {
  const p = policy({
    accessPolicies: [
      { objectId: USER, dataActions: ['read'] },
      { objectId: APP, dataActions: ['read'] }, // the application (client) id, a common mistake
    ],
    roles: [{ name: 'globalWriter', dataActions: ['write'] }],
  });

  it('allows what the grants cover, returning the actions sorted', () => {
    const r = decide(entra({ roles: ['globalWriter'] }), p, req('GET', '/Patient/1'));
    expect(r).toEqual({ ok: true, dataActions: ['read', 'write'] });
  });

  it('refuses a principal with no grants as principal_not_allowed, naming the oid', () => {
    const r = decide(entra({ objectId: SP, applicationId: 'other-app', roles: ['unknownRole'] }), p, req('GET', '/Patient/1'));
    expect(r).toMatchObject({ reason: 'principal_not_allowed' });
    if ('reason' in r) {
      expect(r.hint).toContain(SP);
      expect(r.hint).toContain('unknownRole');
    }
  });

  it("says when the application (client) id is listed instead of the service principal's object id", () => {
    const r = decide(entra({ objectId: SP, applicationId: APP, isAppToken: true, roles: [], scopes: [] }), p, req('GET', '/Patient/1'));
    expect(r).toMatchObject({ reason: 'principal_not_allowed' });
    if ('reason' in r) {
      expect(r.hint).toContain('application (client) id');
      expect(r.hint).toContain(APP);
      expect(r.hint).toContain(SP);
    }
  });

  it('matches the listed application id case-insensitively for that hint', () => {
    const r = decide(entra({ objectId: SP, applicationId: APP.toUpperCase() }), p, req('GET', '/Patient/1'));
    expect('reason' in r && r.hint.includes('application (client) id')).toBe(true);
  });

  it('reports how group membership was checked', () => {
    const r = decideAccess({
      principal: entra({ objectId: SP, applicationId: 'x' }),
      request: req('GET', '/Patient/1'),
      grants: { actions: new Set(), sources: [] },
      policy: p,
      membership: { checked: 2, source: 'graph' },
    });
    expect('reason' in r && r.hint).toContain('none of the 2 listed object id(s)');
    expect('reason' in r && r.hint).toContain('graph');
  });

  it.each<[string, string, string]>([
    ['DELETE', '/Patient/1', 'delete'],
    ['PUT', '/Patient/1', 'write'],
    ['GET', '/$export', 'export'],
    ['POST', '/Patient', 'write'],
  ])('refuses %s %s to a reader as action_not_permitted, naming %s and the grants', (method, path, needed) => {
    const r = decide(entra(), p, req(method, path));
    expect(r).toMatchObject({ reason: 'action_not_permitted' });
    if ('reason' in r) {
      expect(r.hint).toContain(needed);
      expect(r.hint).toContain('granted [read]');
      expect(r.hint).toContain(`oid ${USER}`);
    }
  });

  it('narrows an Entra principal holding `smart` by its SMART scopes (insufficient_scope)', () => {
    const sp = policy({ roles: [{ name: 'smartUser', dataActions: ['read', 'smart'] }] });
    const principal = entra({ roles: ['smartUser'], scopes: ['user/Observation.rs'] });
    expect(decide(principal, sp, req('GET', '/Observation/1'))).toMatchObject({ ok: true });
    expect(decide(principal, sp, req('GET', '/Patient/1'))).toMatchObject({ reason: 'insufficient_scope' });
  });

  it('grants a SMART application its allowedDataActions narrowed by scopes', () => {
    const sp = policy({ smartIdentityProviders: [{ authority: SMART_AUTHORITY, applications: [{ clientId: 'portal', audience: 'a', allowedDataActions: ['read'] }] }] });
    const smart = entra({ kind: 'smart', authority: SMART_AUTHORITY, objectId: undefined, applicationId: 'portal', scopes: ['user/*.cruds'], fhirUser: 'Practitioner/1' });
    expect(decide(smart, sp, req('GET', '/Patient/1'))).toMatchObject({ ok: true });
    // The scopes allow delete; the application does not.
    expect(decide(smart, sp, req('DELETE', '/Patient/1'))).toMatchObject({ reason: 'action_not_permitted' });
  });

  it('writes the principal and dataAction steps into a trace', () => {
    const trace = new Trace();
    decideAccess({ principal: entra(), request: req('DELETE', '/Patient/1'), grants: directGrants(entra(), p), policy: p, trace });
    expect(trace.steps.map((s) => [s.id, s.outcome])).toEqual([
      ['principal', 'pass'],
      ['dataAction', 'fail'],
    ]);
  });
});

describe('decideAccess with compartmentLookup', () => {
  const LOOKUP = { fhirBaseUrl: 'http://127.0.0.1:8080/fhir', credential: { kind: 'none' as const } };
  const smartUser = (scopes: string[]) => entra({ scopes, fhirUser: 'Patient/A' });
  const withLookup = policy({ accessPolicies: [{ objectId: USER, dataActions: ['read', 'smart'] }], compartmentLookup: LOOKUP });

  it('leaves a read by id the URL cannot place to the FHIR server, with the allow it earns if found', () => {
    const trace = new Trace();
    const principal = smartUser(['patient/Observation.rs']);
    const r = decideAccess({ principal, request: req('GET', '/Observation/o1'), grants: directGrants(principal, withLookup), policy: withLookup, trace });
    expect(r).toMatchObject({ ok: 'lookup', question: { resourceType: 'Observation', id: 'o1', parameter: 'patient', patient: 'A' } });
    expect('question' in r && r.allowed.dataActions).toContain('readById');
    expect(trace.steps.find((s) => s.id === 'compartment')).toMatchObject({ outcome: 'pass', found: expect.stringMatching(/to be proven by the FHIR server/) });
  });

  it('asks nothing when another check refuses first: scopes and data actions are decided before the lookup', () => {
    expect(decide(smartUser(['patient/Condition.rs']), withLookup, req('GET', '/Observation/o1'))).toMatchObject({ reason: 'insufficient_scope' });
    const reader = policy({ accessPolicies: [{ objectId: USER, dataActions: ['write', 'smart'] }], compartmentLookup: LOOKUP });
    expect(decide(smartUser(['patient/Observation.rs']), reader, req('GET', '/Observation/o1'))).toMatchObject({ reason: 'action_not_permitted' });
  });

  it('without compartmentLookup the read stays refused as before', () => {
    const without = policy({ accessPolicies: [{ objectId: USER, dataActions: ['read', 'smart'] }] });
    expect(without.compartmentLookup).toBe(false);
    expect(decide(smartUser(['patient/Observation.rs']), without, req('GET', '/Observation/o1'))).toMatchObject({ reason: 'insufficient_scope' });
  });
});
