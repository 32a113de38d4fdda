import { describe, expect, it } from 'vitest';
import {
  dataActionsFor,
  evaluateScopes,
  intersectScopeActions,
  parseSmartScopes,
  patientContextFrom,
  type SmartInteraction,
  type SmartScopeSet,
} from '../../../src/fhir/scopes.js';
import type { FhirRequest, Interaction } from '../../../src/fhir/types.js';
import { MAX_SCOPES } from '../../../src/core/scope-limits.js';
import { readScopeClaims } from '../../../src/identity/scope-claims.js';
import type { DataAction } from '../../../src/core/data-actions.js';

const AUDIENCES = ['https://fhir.example', 'api://11111111-2222-3333-4444-555555555555/'];

function scopeSetOf(scopes: string): SmartScopeSet {
  const parsed = parseSmartScopes(scopes.split(' ').filter(Boolean), { audiences: AUDIENCES });
  if (!parsed.ok) throw new Error(`expected scopes to parse: ${parsed.problem}`);
  return parsed.scopeSet;
}

type Fields = Partial<Omit<FhirRequest, 'method' | 'path' | 'query' | 'interaction'>>;

/** A FhirRequest built by hand (the parser lives in src/fhir/request.ts and is tested there). */
function req(method: string, target: string, interaction: Interaction, fields: Fields = {}): FhirRequest {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? [] : [...new URLSearchParams(target.slice(q + 1))];
  return { method, path, interaction, query, hardDelete: false, requires: [['read']], ...fields };
}

const read = (type: string, id: string, query = '') => req('GET', `/${type}/${id}${query}`, 'read', { resourceType: type, id });
const search = (type: string, query = '') => req('GET', `/${type}${query}`, 'search-type', { resourceType: type });

// ---------------------------------------------------------------------------------------------

describe('readScopeClaims', () => {
  it.each<[string, Record<string, unknown>, string[], string]>([
    ['raw_scope wins over scp and scope', { raw_scope: 'patient/Observation.rs', scp: 'user/*.read', scope: 'system/*.*' }, ['patient/Observation.rs'], 'raw_scope'],
    ['raw_scope as an array', { raw_scope: ['patient/Observation.rs', 'openid'], scp: 'x' }, ['patient/Observation.rs', 'openid'], 'raw_scope'],
    ['scp wins over scope', { scp: 'user/*.read', scope: 'system/*.*' }, ['user/*.read'], 'scp'],
    ['scp space-separated, runs of spaces tolerated', { scp: 'openid  patient/Observation.read ' }, ['openid', 'patient/Observation.read'], 'scp'],
    ['scp as an array', { scp: ['openid', 'patient/Observation.read'] }, ['openid', 'patient/Observation.read'], 'scp'],
    ['RFC 9068 scope', { scope: 'openid user/Patient.rs' }, ['openid', 'user/Patient.rs'], 'scope'],
    ['an undefined claim is absent', { raw_scope: undefined, scp: 'openid' }, ['openid'], 'scp'],
  ])('%s', (_name, claims, scopes, source) => {
    expect(readScopeClaims(claims)).toEqual({ ok: true, scopes, source });
  });

  it.each<[string, Record<string, unknown>, RegExp]>([
    ['no scope claim', { aud: 'x' }, /none of the claims raw_scope, scp, scope/],
    ['scp a number', { scp: 42 }, /^scp must be a space-separated string or an array/],
    ['raw_scope null does not fall through to scp', { raw_scope: null, scp: 'user/*.read' }, /^raw_scope must be/],
    ['scope as an array (RFC 9068 says string)', { scope: ['openid'] }, /^scope must be a space-separated string \(RFC 9068\)/],
    ['scp array with a non-string', { scp: ['openid', 7] }, /array of non-empty scope strings/],
    ['scp array with a space inside an item', { scp: ['openid patient/Observation.read'] }, /without spaces/],
    ['scp array with an empty item', { scp: [''] }, /non-empty/],
    ['empty scp', { scp: '   ' }, /^scp is empty$/],
    ['too many scopes (string)', { scp: Array.from({ length: MAX_SCOPES + 1 }, (_, i) => `s${i}`).join(' ') }, /more than 200 scopes/],
    ['too many scopes (array)', { scp: Array.from({ length: MAX_SCOPES + 1 }, (_, i) => `s${i}`) }, /more than 200 scopes/],
    ['too long (string)', { scp: 'a'.repeat(8193) }, /longer than 8192/],
    ['too long (array)', { scp: Array.from({ length: 100 }, () => 'a'.repeat(100)) }, /longer than 8192/],
  ])('%s', (_name, claims, problem) => {
    const result = readScopeClaims(claims);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.problem).toMatch(problem);
  });
});

// ---------------------------------------------------------------------------------------------

describe('parseSmartScopes: valid forms', () => {
  const ALL: SmartInteraction[] = ['create', 'readById', 'update', 'delete', 'search'];
  it.each<[string, 'patient' | 'user' | 'system', 1 | 2, string, SmartInteraction[], Record<string, string[]>]>([
    ['patient/Observation.read', 'patient', 1, 'Observation', ['readById', 'search'], {}],
    ['user/*.write', 'user', 1, '*', ['create', 'update', 'delete'], {}],
    ['system/*.*', 'system', 1, '*', ALL, {}],
    ['patient/Observation.rs', 'patient', 2, 'Observation', ['readById', 'search'], {}],
    ['user/Patient.cruds', 'user', 2, 'Patient', ALL, {}],
    ['user/Patient.c', 'user', 2, 'Patient', ['create'], {}],
    ['user/Patient.r', 'user', 2, 'Patient', ['readById'], {}],
    ['user/Patient.u', 'user', 2, 'Patient', ['update'], {}],
    ['user/Patient.d', 'user', 2, 'Patient', ['delete'], {}],
    ['user/Patient.s', 'user', 2, 'Patient', ['search'], {}],
    ['user/Patient.cud', 'user', 2, 'Patient', ['create', 'update', 'delete'], {}],
    ['system/*.rs', 'system', 2, '*', ['readById', 'search'], {}],
    ['patient/Observation.rs?category=laboratory', 'patient', 2, 'Observation', ['readById', 'search'], { category: ['laboratory'] }],
    [
      'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory',
      'patient',
      2,
      'Observation',
      ['readById', 'search'],
      { category: ['http://terminology.hl7.org/CodeSystem/observation-category|laboratory'] },
    ],
    ['user/Observation.rs?category=laboratory&status=final', 'user', 2, 'Observation', ['readById', 'search'], { category: ['laboratory'], status: ['final'] }],
    ['user/Observation.rs?category=laboratory,vital-signs', 'user', 2, 'Observation', ['readById', 'search'], { category: ['laboratory', 'vital-signs'] }],
    ['user/Observation.rs?code=http%3A%2F%2Floinc.org%7C1234-5', 'user', 2, 'Observation', ['readById', 'search'], { code: ['http://loinc.org|1234-5'] }],
    ['user/Observation.rs?_tag=research', 'user', 2, 'Observation', ['readById', 'search'], { _tag: ['research'] }],
    ['user/Observation.read?category=laboratory', 'user', 1, 'Observation', ['readById', 'search'], { category: ['laboratory'] }],
  ])('%s', (scope, context, version, resourceType, interactions, constraints) => {
    const parsed = parseSmartScopes([scope], { audiences: [] });
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.scopeSet.context).toBe(context);
    expect(parsed.scopeSet.version).toBe(version);
    expect(parsed.scopeSet.scopes).toHaveLength(1);
    const s = parsed.scopeSet.scopes[0]!;
    expect(s.scope).toBe(scope);
    expect(s.resourceType).toBe(resourceType);
    expect([...s.interactions].sort()).toEqual([...interactions].sort());
    expect(Object.fromEntries(s.constraints)).toEqual(constraints);
  });

  it('keeps several scopes of one context and version', () => {
    const grants = scopeSetOf('openid fhirUser patient/Observation.rs patient/Patient.r launch/patient');
    expect(grants.scopes.map((s) => s.resourceType)).toEqual(['Observation', 'Patient']);
    expect(grants.ignored).toEqual(['openid', 'fhirUser', 'launch/patient']);
  });
});

describe('parseSmartScopes: Entra spellings', () => {
  it.each<[string, string]>([
    ['patient.Observation.read', 'dot for slash'],
    ['patient$Observation.read', 'dollar for slash'],
    ['patient%2fObservation.read', 'lower-case %2f'],
    ['patient%2FObservation.read', 'upper-case %2F'],
    ['https://fhir.example/patient/Observation.read', 'audience prefix'],
    ['https://fhir.example/patient.Observation.read', 'audience prefix with dot'],
    ['https://fhir.example%2Fpatient%2FObservation.read', 'audience prefix, all encoded'],
    ['api://11111111-2222-3333-4444-555555555555/patient.Observation.read', 'audience configured with a trailing slash'],
    ['api://11111111-2222-3333-4444-555555555555/patient$Observation.read', 'audience prefix with dollar'],
  ])('%s (%s) means patient/Observation.read', (scope) => {
    const parsed = parseSmartScopes([scope], { audiences: AUDIENCES });
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.scopeSet.context).toBe('patient');
    expect(parsed.scopeSet.version).toBe(1);
    const s = parsed.scopeSet.scopes[0]!;
    expect(s.scope).toBe(scope);
    expect(s.resourceType).toBe('Observation');
    expect([...s.interactions].sort()).toEqual(['readById', 'search']);
  });

  it.each<[string, string, SmartInteraction[]]>([
    ['patient.*.read', '*', ['readById', 'search']],
    ['patient$Observation.rs', 'Observation', ['readById', 'search']],
    ['user.Patient.cruds', 'Patient', ['create', 'readById', 'update', 'delete', 'search']],
    ['system%2F*.rs', '*', ['readById', 'search']],
  ])('%s', (scope, type, interactions) => {
    const parsed = parseSmartScopes([scope], { audiences: AUDIENCES });
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.scopeSet.scopes[0]!.resourceType).toBe(type);
    expect([...parsed.scopeSet.scopes[0]!.interactions].sort()).toEqual([...interactions].sort());
  });

  it('a prefix that is not an accepted audience is not stripped: the scope is ignored', () => {
    const parsed = parseSmartScopes(['https://other.example/patient/Observation.read'], { audiences: AUDIENCES });
    expect(parsed).toEqual({ ok: true, scopeSet: { scopes: [], ignored: ['https://other.example/patient/Observation.read'] } });
  });
});

describe('parseSmartScopes: scopes that are not resource scopes are ignored', () => {
  it.each([
    'openid',
    'profile',
    'fhirUser',
    'launch',
    'launch/patient',
    'launch/encounter',
    'online_access',
    'offline_access',
    'user_impersonation',
    'User.Read',
    'user.read',
    'user.profile.read',
    'Patient/Observation.read',
    'patients/Observation.read',
  ])('%s', (scope) => {
    expect(parseSmartScopes([scope], { audiences: AUDIENCES })).toEqual({ ok: true, scopeSet: { scopes: [], ignored: [scope] } });
  });
});

describe('parseSmartScopes: malformed scopes refuse the token', () => {
  it.each<[string, string]>([
    ['user/Patient.rrs', "scope 'user/Patient.rrs' repeats the letter r"],
    ['patient/Observation.ss', "scope 'patient/Observation.ss' repeats the letter s"],
    ['patient/Observation.sr', "scope 'patient/Observation.sr' has its letters out of order: SMART v2 requires the order c, r, u, d, s"],
    ['patient/Observation.rc', "scope 'patient/Observation.rc' has its letters out of order: SMART v2 requires the order c, r, u, d, s"],
    ['patient/Observation', "scope 'patient/Observation' has no permission: expected Type.read, Type.write, Type.* or Type.cruds"],
    ['patient/', "scope 'patient/' has no permission: expected Type.read, Type.write, Type.* or Type.cruds"],
    ['patient/observation.read', "scope 'patient/observation.read' names 'observation', which is not a FHIR resource type or *"],
    ['patient/.read', "scope 'patient/.read' names '', which is not a FHIR resource type or *"],
    ['patient/Observation.rad', "scope 'patient/Observation.rad' has the permission 'rad': expected read, write, * (v1) or letters from cruds in that order (v2)"],
    ['patient/Observation.READ', "scope 'patient/Observation.READ' has the permission 'READ': expected read, write, * (v1) or letters from cruds in that order (v2)"],
    ['patient/Observation.crudsx', "scope 'patient/Observation.crudsx' has the permission 'crudsx': expected read, write, * (v1) or letters from cruds in that order (v2)"],
    ['patient/Observation.read.x', "scope 'patient/Observation.read.x' has the permission 'read.x': expected read, write, * (v1) or letters from cruds in that order (v2)"],
    ['patient/Observation.', "scope 'patient/Observation.' has the permission '': expected read, write, * (v1) or letters from cruds in that order (v2)"],
    ['patient/Observation.constructor', "scope 'patient/Observation.constructor' has the permission 'constructor': expected read, write, * (v1) or letters from cruds in that order (v2)"],
    ['patient.Observation.rrs', "scope 'patient.Observation.rrs' repeats the letter r"],
    ['patient$observation.rs', "scope 'patient$observation.rs' names 'observation', which is not a FHIR resource type or *"],
    ['patient/Observation.rs?', "scope 'patient/Observation.rs?' has an empty constraint after ?"],
    ['patient/Observation.rs?category=', "scope 'patient/Observation.rs?category=' has an empty value for category"],
    ['patient/Observation.rs?category=a,,b', "scope 'patient/Observation.rs?category=a,,b' has an empty value for category"],
    ['patient/Observation.rs?category', "scope 'patient/Observation.rs?category' has the constraint 'category', which is not param=value"],
    ['patient/Observation.rs?=laboratory', "scope 'patient/Observation.rs?=laboratory' has the constraint '=laboratory', which is not param=value"],
    ['patient/Observation.rs?category=a&', "scope 'patient/Observation.rs?category=a&' has the constraint '', which is not param=value"],
    ['patient/Observation.rs?subject.name=x', "scope 'patient/Observation.rs?subject.name=x' constrains by the chained parameter 'subject.name', which cannot be checked"],
    ['patient/Observation.rs?subject:Patient.name=x', "scope 'patient/Observation.rs?subject:Patient.name=x' constrains by the chained parameter 'subject:Patient.name', which cannot be checked"],
    ['patient/Observation.rs?code:text=x', "scope 'patient/Observation.rs?code:text=x' constrains by 'code:text', which uses a search modifier"],
    ['patient/Observation.rs?_include=Observation:subject', "scope 'patient/Observation.rs?_include=Observation:subject' constrains by _include, which reaches other resources"],
    ['patient/Observation.rs?_revinclude=Provenance:target', "scope 'patient/Observation.rs?_revinclude=Provenance:target' constrains by _revinclude, which reaches other resources"],
    ['patient/Observation.rs?_count=10', "scope 'patient/Observation.rs?_count=10' constrains by _count, which does not filter resources"],
    ['patient/Observation.rs?_has:Observation:patient:code=1', "scope 'patient/Observation.rs?_has:Observation:patient:code=1' constrains by '_has:Observation:patient:code', which uses a search modifier"],
    ['patient/Observation.rs?category=a&category=b', "scope 'patient/Observation.rs?category=a&category=b' constrains category twice"],
    ['patient/Observation.rs?category=%E0%A4%A', "scope 'patient/Observation.rs?category=%E0%A4%A' has a badly percent-encoded value for category"],
    ['patient/Observation.rs?cat$gory=a', "scope 'patient/Observation.rs?cat$gory=a' has the constraint parameter 'cat$gory', which is not a search parameter name"],
  ])('%s', (scope, problem) => {
    expect(parseSmartScopes(['openid', scope, 'patient/Patient.rs'], { audiences: AUDIENCES })).toEqual({ ok: false, scope, problem });
  });

  it('refuses v1 and v2 scopes in one token', () => {
    expect(parseSmartScopes(['patient/Observation.read', 'patient/Patient.rs'], { audiences: [] })).toEqual({
      ok: false,
      scope: 'patient/Patient.rs',
      problem:
        "scope 'patient/Patient.rs' uses SMART v2 syntax but 'patient/Observation.read' uses v1; one token may not mix v1 (.read/.write/.*) and v2 (.cruds) scopes",
    });
  });

  it('refuses v1 and v2 across Entra spellings too', () => {
    const parsed = parseSmartScopes(['patient.Observation.rs', 'patient$Patient.*'], { audiences: [] });
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.scope).toBe('patient$Patient.*');
  });

  it.each<[string, string]>([
    ['patient/Observation.rs', 'user/Patient.rs'],
    ['user/Observation.rs', 'system/Patient.rs'],
    ['system/*.read', 'patient/Patient.read'],
  ])('refuses mixed contexts: %s with %s', (a, b) => {
    const parsed = parseSmartScopes([a, b], { audiences: [] });
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) {
      expect(parsed.scope).toBe(b);
      expect(parsed.problem).toMatch(/one token may not mix patient\/, user\/ and system\/ scopes$/);
    }
  });

  it('refuses more than 200 scopes', () => {
    const many = Array.from({ length: MAX_SCOPES + 1 }, () => 'openid');
    expect(parseSmartScopes(many, { audiences: [] }).ok).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------

describe('patientContextFrom', () => {
  it.each<[string, { patient?: unknown; fhirUser?: unknown }, string | undefined]>([
    ['neither claim', {}, undefined],
    ['patient claim', { patient: '123' }, '123'],
    ['patient claim written as a reference', { patient: 'Patient/123' }, '123'],
    ['relative Patient fhirUser', { fhirUser: 'Patient/123' }, '123'],
    ['absolute Patient fhirUser', { fhirUser: 'https://fhir.example/r4/Patient/123' }, '123'],
    ['Practitioner fhirUser', { fhirUser: 'https://fhir.example/Practitioner/9' }, undefined],
    ['versioned Patient fhirUser is not a Patient reference', { fhirUser: 'Patient/123/_history/1' }, undefined],
    ['both, the same patient', { patient: '123', fhirUser: 'https://fhir.example/Patient/123' }, '123'],
    ['patient claim with a Practitioner fhirUser', { patient: '123', fhirUser: 'Practitioner/9' }, '123'],
  ])('%s', (_name, claims, patient) => {
    expect(patientContextFrom(claims)).toEqual(patient === undefined ? { ok: true } : { ok: true, patient });
  });

  it.each<[string, { patient?: unknown; fhirUser?: unknown }, RegExp]>([
    ['different patients', { patient: '123', fhirUser: 'Patient/456' }, /name different patients/],
    ['patient not a string', { patient: 123 }, /patient claim is not a string/],
    ['patient not an id', { patient: 'a b' }, /not a FHIR id/],
    ['fhirUser not a string', { fhirUser: { reference: 'Patient/1' } }, /fhirUser claim is not a string/],
  ])('%s', (_name, claims, problem) => {
    const result = patientContextFrom(claims);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.problem).toMatch(problem);
  });
});

// ---------------------------------------------------------------------------------------------

interface Case {
  readonly scopes: string;
  readonly request: FhirRequest;
  readonly patient?: string;
  readonly app?: boolean;
  readonly mode?: 'refuse' | 'delegate';
  /** Allowed: these actions must be in the verdict (and `without` must not). Refused: the hint must match. */
  readonly allow?: readonly DataAction[];
  readonly without?: readonly DataAction[];
  readonly delegateCompartment?: string;
  readonly refuse?: RegExp | string;
}

function check(c: Case): void {
  const verdict = evaluateScopes({
    scopeSet: scopeSetOf(c.scopes),
    request: c.request,
    ...(c.patient === undefined ? {} : { patientContext: c.patient }),
    isAppToken: c.app ?? false,
    compartmentMode: c.mode ?? 'refuse',
  });
  if (c.refuse !== undefined) {
    expect(verdict.ok).toBe(false);
    if (verdict.ok) return;
    expect(verdict.reason).toBe('insufficient_scope');
    if (typeof c.refuse === 'string') expect(verdict.hint).toBe(c.refuse);
    else expect(verdict.hint).toMatch(c.refuse);
    return;
  }
  expect(verdict).toMatchObject({ ok: true });
  if (!verdict.ok) return;
  for (const a of c.allow ?? []) expect(verdict.actions, `expected ${a}`).toContain(a);
  for (const a of c.without ?? []) expect(verdict.actions, `unexpected ${a}`).not.toContain(a);
  expect(verdict.delegateCompartment).toBe(c.delegateCompartment);
  // Constraints are never delegated: an allowed verdict carries nothing but actions and the compartment.
  expect(Object.keys(verdict).sort()).toEqual(['actions', 'ok', ...(c.delegateCompartment ? ['delegateCompartment'] : [])].sort());
}

const table = (cases: Record<string, Case>) => Object.entries(cases);

describe('evaluateScopes: preconditions', () => {
  it.each(
    table({
      'capabilities need no scope': { scopes: 'openid', request: req('GET', '/metadata', 'capabilities'), allow: ['read', 'readById', 'search'] },
      'no resource scope at all': {
        scopes: 'openid launch/patient',
        request: read('Patient', '1'),
        refuse: 'the token carries no patient/, user/ or system/ resource scope (it carries only openid, launch/patient)',
      },
      'system/ scopes in a user token': { scopes: 'system/*.read', request: read('Patient', '1'), app: false, refuse: /^system\/ scopes \(system\/\*\.read\) are only valid in an app/ },
      'system/ scopes in an app token': { scopes: 'system/*.read', request: read('Patient', '1'), app: true, allow: ['read', 'readById', 'search'], without: ['create'] },
      'patient/ scopes without a patient context': {
        scopes: 'patient/*.read',
        request: read('Patient', '1'),
        refuse: 'patient/ scopes need a patient context: the token has neither a patient claim nor a Patient fhirUser',
      },
      'patient/ scopes without a patient context, delegate mode too': {
        scopes: 'patient/*.read',
        request: read('Observation', '1'),
        mode: 'delegate',
        refuse: /^patient\/ scopes need a patient context/,
      },
      'a batch is decided per entry': { scopes: 'user/*.*', request: req('POST', '/', 'batch'), refuse: /decided entry by entry/ },
      'an unknown interaction': { scopes: 'user/*.*', request: req('GET', '/x/y/z/w', 'unknown'), refuse: /is not a FHIR interaction that SMART scopes cover/ },
      'a type-level interaction without a type': { scopes: 'user/*.*', request: req('POST', '/', 'create'), refuse: 'the request names no resource type' },
    }),
  )('%s', (_name, c) => check(c));
});

describe('evaluateScopes: FHIR interactions -> SMART interactions (user/ scopes)', () => {
  const create = req('POST', '/Observation', 'create', { resourceType: 'Observation' });
  const update = req('PUT', '/Observation/1', 'update', { resourceType: 'Observation', id: '1' });
  const patch = req('PATCH', '/Observation/1', 'patch', { resourceType: 'Observation', id: '1' });
  const del = req('DELETE', '/Observation/1', 'delete', { resourceType: 'Observation', id: '1' });
  const vread = req('GET', '/Observation/1/_history/2', 'vread', { resourceType: 'Observation', id: '1', versionId: '2' });
  const historyInstance = req('GET', '/Observation/1/_history', 'history-instance', { resourceType: 'Observation', id: '1' });
  const historyType = req('GET', '/Observation/_history', 'history-type', { resourceType: 'Observation' });
  const historySystem = req('GET', '/_history', 'history-system');
  const systemSearch = (q = '') => req('GET', `/${q}`, 'search-system');
  const condUpdate = req('PUT', '/Observation?identifier=x', 'conditional-update', { resourceType: 'Observation' });
  const condPatch = req('PATCH', '/Observation?identifier=x', 'conditional-patch', { resourceType: 'Observation' });
  const condDelete = req('DELETE', '/Observation?identifier=x', 'conditional-delete', { resourceType: 'Observation' });
  const compartmentSearch = req('GET', '/Patient/1/Observation', 'search-compartment', {
    resourceType: 'Patient',
    id: '1',
    compartment: { type: 'Patient', id: '1', targetType: 'Observation' },
  });

  it.each(
    table({
      'v2 rs: read': { scopes: 'user/Observation.rs', request: read('Observation', '1'), allow: ['readById', 'search', 'read'], without: ['create', 'write'] },
      'v2 rs: vread': { scopes: 'user/Observation.rs', request: vread, allow: ['readById'] },
      'v2 rs: history of an instance': { scopes: 'user/Observation.rs', request: historyInstance, allow: ['readById'] },
      'v2 rs: search': { scopes: 'user/Observation.rs', request: search('Observation', '?code=1'), allow: ['search', 'read'] },
      'v2 rs: compartment search': { scopes: 'user/Observation.rs', request: compartmentSearch, allow: ['search'] },
      'v2 rs: history of a type': { scopes: 'user/Observation.rs', request: historyType, allow: ['search'] },
      'v2 rs: create refused': { scopes: 'user/Observation.rs', request: create, refuse: 'scope user/Observation.rs does not allow create on Observation' },
      'v2 rs: update refused': { scopes: 'user/Observation.rs', request: update, refuse: 'scope user/Observation.rs does not allow update on Observation' },
      'v2 rs: patch refused': { scopes: 'user/Observation.rs', request: patch, refuse: 'scope user/Observation.rs does not allow update on Observation' },
      'v2 rs: delete refused': { scopes: 'user/Observation.rs', request: del, refuse: 'scope user/Observation.rs does not allow delete on Observation' },
      'v2 rs: another type refused': {
        scopes: 'user/Observation.rs openid',
        request: read('Patient', '1'),
        refuse: 'no scope allows read on Patient; the token\'s scopes are user/Observation.rs',
      },
      'v2 rs: history of the system needs *': { scopes: 'user/Observation.rs', request: historySystem, refuse: /^no scope allows search on all resource types \(\*\)/ },
      'v2 rs: system search needs *': { scopes: 'user/Observation.rs', request: systemSearch('?code=1'), refuse: /^no scope allows search on all resource types/ },
      'v2 rs: system search with _type covered': { scopes: 'user/Observation.rs', request: systemSearch('?_type=Observation'), allow: ['search'] },
      'v2 rs: system search with _type not covered': {
        scopes: 'user/Observation.rs',
        request: systemSearch('?_type=Observation,Condition'),
        refuse: /^no scope allows search on Condition/,
      },
      'v2 rs: system search with a bad _type': { scopes: 'user/*.rs', request: systemSearch('?_type=Observation,bad'), refuse: "_type lists 'bad', which is not a resource type" },
      'v2 r: read only': { scopes: 'user/Observation.r', request: read('Observation', '1'), allow: ['readById'], without: ['read', 'search'] },
      'v2 r: search refused': { scopes: 'user/Observation.r', request: search('Observation'), refuse: 'scope user/Observation.r does not allow search on Observation' },
      'v2 s: search only': { scopes: 'user/Observation.s', request: search('Observation'), allow: ['search'], without: ['read', 'readById'] },
      'v2 s: read refused': { scopes: 'user/Observation.s', request: read('Observation', '1'), refuse: 'scope user/Observation.s does not allow read on Observation' },
      'v2 c: create': { scopes: 'user/Observation.c', request: create, allow: ['create'], without: ['write', 'update'] },
      'v2 u: update': { scopes: 'user/Observation.u', request: update, allow: ['update'] },
      'v2 u: patch': { scopes: 'user/Observation.u', request: patch, allow: ['update'] },
      'v2 u: conditional update also searches': {
        scopes: 'user/Observation.u',
        request: condUpdate,
        refuse: 'scope user/Observation.u does not allow search on Observation (a conditional-update searches first)',
      },
      'v2 us: conditional update': { scopes: 'user/Observation.us', request: condUpdate, allow: ['update', 'search'] },
      'v2 u + s from two scopes: conditional patch': { scopes: 'user/Observation.u user/Observation.s', request: condPatch, allow: ['update', 'search'] },
      'v2 d: delete': { scopes: 'user/Observation.d', request: del, allow: ['delete', 'hardDelete'] },
      'v2 d: conditional delete refused': { scopes: 'user/Observation.d', request: condDelete, refuse: /does not allow search on Observation/ },
      'v2 ds: conditional delete': { scopes: 'user/Observation.ds', request: condDelete, allow: ['delete', 'search'] },
      'v2 cu: write': { scopes: 'user/Observation.cu', request: create, allow: ['create', 'update', 'write'], without: ['delete'] },
      'v1 read: read': { scopes: 'user/Observation.read', request: read('Observation', '1'), allow: ['read', 'readById', 'search'] },
      'v1 read: search': { scopes: 'user/Observation.read', request: search('Observation'), allow: ['read'] },
      'v1 read: create refused': { scopes: 'user/Observation.read', request: create, refuse: 'scope user/Observation.read does not allow create on Observation' },
      'v1 write: create': { scopes: 'user/Observation.write', request: create, allow: ['create', 'update', 'delete', 'write'], without: ['read'] },
      'v1 write: update': { scopes: 'user/Observation.write', request: update, allow: ['write'] },
      'v1 write: patch': { scopes: 'user/Observation.write', request: patch, allow: ['write'] },
      'v1 write: delete': { scopes: 'user/Observation.write', request: del, allow: ['delete'] },
      'v1 write: read refused': { scopes: 'user/Observation.write', request: read('Observation', '1'), refuse: 'scope user/Observation.write does not allow read on Observation' },
      'v1 *: everything on the type': { scopes: 'user/Observation.*', request: condDelete, allow: ['read', 'write', 'delete'] },
      'wildcard type: history of the system': { scopes: 'user/*.cruds', request: historySystem, allow: ['search'] },
      'wildcard type: system search': { scopes: 'user/*.read', request: systemSearch('?code=1'), allow: ['read'] },
      'wildcard type with a specific scope': {
        scopes: 'user/*.rs user/Observation.c',
        request: create,
        allow: ['create'],
      },
      'several scopes named in the hint': {
        scopes: 'user/*.rs user/Observation.s',
        request: create,
        refuse: 'scope user/*.rs, user/Observation.s do not allow create on Observation',
      },
    }),
  )('%s', (_name, c) => check(c));
});

describe('evaluateScopes: the patient compartment', () => {
  const P = 'patient/*.cruds';
  const compartment = (id: string, target: string, query = '') =>
    req('GET', `/Patient/${id}/${target}${query}`, 'search-compartment', { resourceType: 'Patient', id, compartment: { type: 'Patient', id, targetType: target } });
  const write = (method: string, type: string, id: string, interaction: Interaction) =>
    req(method, `/${type}/${id}`, interaction, { resourceType: type, id });

  it.each(
    table({
      'read of the context patient': { scopes: P, patient: '123', request: read('Patient', '123'), allow: ['read'] },
      'read of another patient': { scopes: P, patient: '123', request: read('Patient', '456'), refuse: 'Patient/456 is not the patient in context (Patient/123)' },
      'read of another patient, delegate mode too': { scopes: P, patient: '123', mode: 'delegate', request: read('Patient', '456'), refuse: /^Patient\/456 is not the patient in context/ },
      'vread of the context patient': {
        scopes: P,
        patient: '123',
        request: req('GET', '/Patient/123/_history/1', 'vread', { resourceType: 'Patient', id: '123', versionId: '1' }),
        allow: ['readById'],
      },
      'compartment search of the context patient': { scopes: P, patient: '123', request: compartment('123', 'Observation'), allow: ['search'] },
      'compartment search of every type': { scopes: P, patient: '123', request: compartment('123', '*'), allow: ['search'] },
      'compartment search of every type needs a * scope': {
        scopes: 'patient/Observation.rs',
        patient: '123',
        request: compartment('123', '*'),
        refuse: /^no scope allows search on all resource types/,
      },
      'compartment search of another patient': {
        scopes: P,
        patient: '123',
        mode: 'delegate',
        request: compartment('456', 'Observation'),
        refuse: 'the compartment of Patient/456 is not that of the patient in context (Patient/123)',
      },
      'compartment search of an Encounter is not provable': {
        scopes: P,
        patient: '123',
        request: req('GET', '/Encounter/9/Observation', 'search-compartment', { resourceType: 'Encounter', id: '9', compartment: { type: 'Encounter', id: '9', targetType: 'Observation' } }),
        refuse: /^a search in the compartment of Encounter\/9, so it cannot be proven/,
      },
      'search with patient=ctx': { scopes: P, patient: '123', request: search('Observation', '?patient=123&code=x'), allow: ['search'] },
      'search with patient=Patient/ctx': { scopes: P, patient: '123', request: search('Condition', '?patient=Patient/123'), allow: ['search'] },
      'search with subject=Patient/ctx': { scopes: P, patient: '123', request: search('Observation', '?subject=Patient/123'), allow: ['search'] },
      'search with subject=Patient/ctx on a type with no patient parameter': { scopes: P, patient: '123', request: search('AdverseEvent', '?subject=Patient/123'), allow: ['search'] },
      'search with patient= on a type that has none': {
        scopes: P,
        patient: '123',
        request: search('AdverseEvent', '?patient=123'),
        refuse: /^a search of AdverseEvent without subject=Patient\/123, so it cannot be proven/,
      },
      'search with subject=ctx (any type) is not proof': {
        scopes: P,
        patient: '123',
        request: search('Observation', '?subject=123'),
        refuse: /^a search of Observation without patient=123, so it cannot be proven to stay in the compartment of Patient\/123; with compartmentMode 'delegate'/,
      },
      'search with patient= of another patient': { scopes: P, patient: '123', request: search('Observation', '?patient=456'), refuse: 'patient=456 names another patient than the one in context (Patient/123)' },
      'search with subject= of another patient, delegate mode too': {
        scopes: P,
        patient: '123',
        mode: 'delegate',
        request: search('Observation', '?subject=Patient/456'),
        refuse: /^subject=Patient\/456 names another patient/,
      },
      'search with patient= listing two patients (OR)': { scopes: P, patient: '123', request: search('Observation', '?patient=123,456'), refuse: /cannot be proven/ },
      'search with patient= twice (AND), one the context': { scopes: P, patient: '123', request: search('Observation', '?patient=456&patient=123'), allow: ['search'] },
      'search with a patient modifier is not proof': { scopes: P, patient: '123', request: search('Observation', '?patient:missing=false'), refuse: /cannot be proven/ },
      'search on a type outside the compartment': {
        scopes: P,
        patient: '123',
        request: search('Practitioner', '?patient=123'),
        refuse: /^a search of Practitioner, which has no patient search parameter in the FHIR R4 Patient compartment/,
      },
      'search without a patient parameter': { scopes: P, patient: '123', request: search('Observation', '?code=x'), refuse: /^a search of Observation without patient=123/ },
      'search without a patient parameter, delegated': { scopes: P, patient: '123', mode: 'delegate', request: search('Observation', '?code=x'), allow: ['search'], delegateCompartment: 'Patient/123' },
      'Patient search by _id=ctx': { scopes: P, patient: '123', request: search('Patient', '?_id=123'), allow: ['search'] },
      'Patient search by another _id': { scopes: P, patient: '123', request: search('Patient', '?_id=456'), refuse: /^_id=456 names another patient/ },
      'Patient search without _id': { scopes: P, patient: '123', request: search('Patient', '?name=x'), refuse: /^a search of Patient without _id=123/ },
      '_include refused': {
        scopes: P,
        patient: '123',
        mode: 'delegate',
        request: search('Observation', '?patient=123&_include=Observation:performer'),
        refuse: '_include=Observation:performer reaches beyond the resources searched, which patient/ scopes do not allow (Patient/123)',
      },
      '_include:iterate refused': { scopes: P, patient: '123', request: search('Observation', '?patient=123&_include:iterate=Observation:performer'), refuse: /^_include:iterate=/ },
      '_revinclude refused': { scopes: P, patient: '123', request: search('Patient', '?_id=123&_revinclude=Provenance:target'), refuse: /^_revinclude=Provenance:target reaches beyond/ },
      'chained parameter refused': { scopes: P, patient: '123', mode: 'delegate', request: search('Observation', '?patient=123&performer.name=x'), refuse: /^performer\.name reaches beyond/ },
      'typed chained parameter refused': { scopes: P, patient: '123', request: search('Observation', '?subject:Patient.name=x'), refuse: /^subject:Patient\.name reaches beyond/ },
      '_has refused': { scopes: P, patient: '123', request: search('Patient', '?_id=123&_has:Observation:patient:code=1'), refuse: /^_has:Observation:patient:code reaches beyond/ },
      '_contained refused even with patient=': { scopes: P, patient: '123', mode: 'delegate', request: search('Observation', '?patient=123&_contained=true'), refuse: /^_contained=true reaches beyond/ },
      '_contained=both refused': { scopes: P, patient: '123', request: search('Observation', '?patient=123&_contained=both'), refuse: /^_contained=both reaches beyond/ },
      '_contained=false is the default and allowed': { scopes: P, patient: '123', request: search('Observation', '?patient=123&_contained=false'), allow: ['search'] },
      '_containedType refused': { scopes: P, patient: '123', request: search('Observation', '?patient=123&_containedType=contained'), refuse: /^_containedType=contained reaches beyond/ },
      '_query refused': { scopes: P, patient: '123', mode: 'delegate', request: search('Observation', '?patient=123&_query=everything'), refuse: /^_query=everything reaches beyond/ },
      '_filter refused': { scopes: P, patient: '123', mode: 'delegate', request: search('Observation', '?patient=123&_filter=subject%20re%20Patient%2F456'), refuse: /^_filter=subject re Patient\/456 reaches beyond/ },
      '_include in a compartment search refused': { scopes: P, patient: '123', request: compartment('123', 'Observation', '?_include=Observation:performer'), refuse: /^_include=/ },
      'read by id of another type refused': {
        scopes: P,
        patient: '123',
        request: read('Observation', '9'),
        refuse:
          "a read by id of Observation, so it cannot be proven to stay in the compartment of Patient/123; with compartmentMode 'delegate' it is allowed and the compartment is sent for the FHIR server to enforce",
      },
      'read by id of another type delegated': { scopes: P, patient: '123', mode: 'delegate', request: read('Observation', '9'), allow: ['readById'], delegateCompartment: 'Patient/123' },
      'update of the context patient': { scopes: P, patient: '123', request: write('PUT', 'Patient', '123', 'update'), allow: ['update'] },
      'patch of the context patient': { scopes: P, patient: '123', request: write('PATCH', 'Patient', '123', 'patch'), allow: ['update'] },
      'delete of the context patient': { scopes: P, patient: '123', request: write('DELETE', 'Patient', '123', 'delete'), allow: ['delete'] },
      'update of another patient': { scopes: P, patient: '123', mode: 'delegate', request: write('PUT', 'Patient', '456', 'update'), refuse: 'Patient/456 is not the patient in context (Patient/123)' },
      'delete of another patient': { scopes: P, patient: '123', request: write('DELETE', 'Patient', '456', 'delete'), refuse: /^Patient\/456 is not the patient in context/ },
      'update of an Observation refused': { scopes: P, patient: '123', request: write('PUT', 'Observation', '9', 'update'), refuse: /^a update of Observation by id, so it cannot be proven/ },
      'update of an Observation delegated': { scopes: P, patient: '123', mode: 'delegate', request: write('PUT', 'Observation', '9', 'update'), delegateCompartment: 'Patient/123', allow: ['update'] },
      'create refused': { scopes: P, patient: '123', request: req('POST', '/Observation', 'create', { resourceType: 'Observation' }), refuse: /^a create of Observation names its patient in the body/ },
      'create delegated': {
        scopes: P,
        patient: '123',
        mode: 'delegate',
        request: req('POST', '/Observation', 'create', { resourceType: 'Observation' }),
        delegateCompartment: 'Patient/123',
        allow: ['create'],
      },
      'create not allowed by the scope': {
        scopes: 'patient/Observation.rs',
        patient: '123',
        mode: 'delegate',
        request: req('POST', '/Observation', 'create', { resourceType: 'Observation' }),
        refuse: 'scope patient/Observation.rs does not allow create on Observation',
      },
      'conditional update of the patient is not provable': {
        scopes: P,
        patient: '123',
        request: req('PUT', '/Patient?_id=123', 'conditional-update', { resourceType: 'Patient' }),
        refuse: /^a conditional-update of Patient finds its target by a search/,
      },
      'POST search is not provable': {
        scopes: P,
        patient: '123',
        request: req('POST', '/Observation/_search?patient=123', 'search-type', { resourceType: 'Observation' }),
        refuse: /^a POST search carries its parameters in a form body fhir-pdp does not see/,
      },
      'POST search is refused under patient/ scopes in delegate mode too (its body could carry _include)': {
        scopes: P,
        patient: '123',
        mode: 'delegate',
        request: req('POST', '/Observation/_search', 'search-type', { resourceType: 'Observation' }),
        refuse: /^a POST search carries its parameters in a form body fhir-pdp does not see/,
      },
      'POST compartment search is refused under patient/ scopes': {
        scopes: P,
        patient: '123',
        mode: 'delegate',
        request: req('POST', '/Patient/123/Observation/_search', 'search-compartment', { resourceType: 'Observation', compartment: { type: 'Patient', id: '123', targetType: 'Observation' } }),
        refuse: /^a POST search carries its parameters/,
      },
      'history of a type is not provable': {
        scopes: P,
        patient: '123',
        request: req('GET', '/Observation/_history', 'history-type', { resourceType: 'Observation' }),
        refuse: /^the history of every Observation/,
      },
      'system search is not provable': { scopes: P, patient: '123', request: req('GET', '/?_type=Observation&patient=123', 'search-system'), refuse: /^a search across resource types/ },
      'a patient context does not narrow user/ scopes': { scopes: 'user/*.read', patient: '123', request: read('Patient', '456'), allow: ['read'] },
      'patient context from an app token': { scopes: P, patient: '123', app: true, request: read('Patient', '123'), allow: ['read'] },
    }),
  )('%s', (_name, c) => check(c));
});

describe('evaluateScopes: scope constraints', () => {
  const LAB = 'user/Observation.rs?category=laboratory';
  it.each(
    table({
      'query carries the allowed value': { scopes: LAB, request: search('Observation', '?category=laboratory'), allow: ['search'] },
      'query carries another value': {
        scopes: LAB,
        request: search('Observation', '?category=vital-signs'),
        refuse:
          "scope user/Observation.rs?category=laboratory allows search on Observation only with category=laboratory, and the request does not carry category=laboratory; a constraint must be proven from the request's query (compartmentMode 'delegate' does not delegate constraints): search with category=laboratory",
      },
      'query carries another value, delegate mode: still refused, never widened': {
        scopes: LAB,
        mode: 'delegate',
        request: search('Observation', '?category=vital-signs'),
        refuse: /does not carry category=laboratory/,
      },
      'query lacks the parameter': { scopes: LAB, request: search('Observation'), refuse: /does not carry category=laboratory/ },
      'query lacks the parameter, delegate mode: refused': { scopes: LAB, mode: 'delegate', request: search('Observation'), refuse: /does not carry category=laboratory/ },
      'OR of an allowed and another value': { scopes: LAB, request: search('Observation', '?category=laboratory,vital-signs'), refuse: /does not carry/ },
      'AND of an allowed and another value': { scopes: LAB, request: search('Observation', '?category=laboratory&category=vital-signs'), allow: ['search'] },
      'a modifier is not the parameter': { scopes: LAB, request: search('Observation', '?category:not=laboratory'), refuse: /does not carry/ },
      'a token value with a system is not the bare code': { scopes: LAB, request: search('Observation', '?category=http://x|laboratory'), refuse: /does not carry/ },
      'a read by id cannot show a constraint': {
        scopes: LAB,
        request: read('Observation', '1'),
        refuse:
          "scope user/Observation.rs?category=laboratory allows read on Observation only with category=laboratory, and this read of Observation cannot show it from the URL; a constraint must be proven from the request's query (compartmentMode 'delegate' does not delegate constraints): search with category=laboratory",
      },
      'a read by id, delegate mode: refused': { scopes: LAB, mode: 'delegate', request: read('Observation', '1'), refuse: /cannot show it from the URL/ },
      'a scope with OR values': { scopes: 'user/Observation.rs?category=laboratory,vital-signs', request: search('Observation', '?category=vital-signs'), allow: ['search'] },
      'a scope with OR values, the request with both': { scopes: 'user/Observation.rs?category=laboratory,vital-signs', request: search('Observation', '?category=laboratory,vital-signs'), allow: ['search'] },
      'two constraints, both needed': { scopes: 'user/Observation.rs?category=laboratory&status=final', request: search('Observation', '?category=laboratory'), refuse: /does not carry category=laboratory&status=final/ },
      'two constraints, both carried': { scopes: 'user/Observation.rs?category=laboratory&status=final', request: search('Observation', '?status=final&category=laboratory'), allow: ['search'] },
      'two constrained scopes, either holds': {
        scopes: `${LAB} user/Observation.rs?category=vital-signs`,
        request: search('Observation', '?category=vital-signs'),
        allow: ['search'],
      },
      'two constrained scopes, neither proven, delegate mode: refused': {
        scopes: `${LAB} user/Observation.rs?category=vital-signs`,
        mode: 'delegate',
        request: search('Observation'),
        refuse: /only with category=laboratory \(or the other scopes' constraints\)/,
      },
      'an unconstrained scope beside a constrained one': { scopes: `${LAB} user/Observation.s`, request: search('Observation'), allow: ['search'] },
      'a constraint on another type does not apply': { scopes: `${LAB} user/Condition.rs`, request: search('Condition'), allow: ['search'] },
      'constraint and compartment under patient/ scopes': {
        scopes: 'patient/Observation.rs?category=laboratory',
        patient: '123',
        request: search('Observation', '?patient=123&category=laboratory'),
        allow: ['search'],
      },
      'compartment proven, constraint not, delegate mode: refused': {
        scopes: 'patient/Observation.rs?category=laboratory',
        patient: '123',
        mode: 'delegate',
        request: search('Observation', '?patient=123'),
        refuse: /does not carry category=laboratory/,
      },
      'compartment delegated, constraint proven, delegate mode: allowed with the compartment': {
        scopes: 'patient/Observation.rs?category=laboratory',
        patient: '123',
        mode: 'delegate',
        request: search('Observation', '?category=laboratory'),
        delegateCompartment: 'Patient/123',
        allow: ['search'],
      },
      'a read by id under a constrained patient/ scope, delegate mode: refused, not delegated': {
        scopes: 'patient/Observation.rs?category=laboratory',
        patient: '123',
        mode: 'delegate',
        request: read('Observation', '1'),
        refuse: /cannot show it from the URL/,
      },
    }),
  )('%s', (_name, c) => check(c));

});

describe('evaluateScopes: parameters that reach other types under user/ scopes', () => {
  it.each(
    table({
      '_include of a typed target needs read on it': {
        scopes: 'user/Observation.rs',
        request: search('Observation', '?_include=Observation:subject:Patient'),
        refuse: "no scope allows read on Patient (for _include=Observation:subject:Patient); the token's scopes are user/Observation.rs",
      },
      '_include of a typed target with read on it': {
        scopes: 'user/Observation.rs user/Patient.r',
        request: search('Observation', '?_include=Observation:subject:Patient'),
        allow: ['search'],
        without: ['create'],
      },
      '_include of an untyped target needs *': { scopes: 'user/Observation.rs user/Patient.rs', request: search('Observation', '?_include=Observation:subject'), refuse: /^no scope allows read on all resource types \(\*\) \(for _include=Observation:subject\)/ },
      '_include of an untyped target with *': { scopes: 'user/*.rs', request: search('Observation', '?_include=Observation:subject'), allow: ['search'] },
      '_revinclude needs search on the source': { scopes: 'user/Patient.rs', request: search('Patient', '?_revinclude=Provenance:target'), refuse: /^no scope allows search on Provenance \(for _revinclude=Provenance:target\)/ },
      '_revinclude with search on the source': { scopes: 'user/Patient.rs user/Provenance.s', request: search('Patient', '?_revinclude=Provenance:target'), allow: ['search'] },
      'typed chain needs search on the type': { scopes: 'user/Observation.rs user/Patient.r', request: search('Observation', '?subject:Patient.name=x'), refuse: 'scope user/Patient.r does not allow search on Patient (for subject:Patient.name)' },
      'typed chain with search on the type': { scopes: 'user/Observation.rs user/Patient.s', request: search('Observation', '?subject:Patient.name=x'), allow: ['search'] },
      'untyped chain needs *': { scopes: 'user/Observation.rs user/Patient.s', request: search('Observation', '?subject.name=x'), refuse: /^no scope allows search on all resource types/ },
      '_has needs search on the type': { scopes: 'user/Patient.rs', request: search('Patient', '?_has:Observation:patient:code=1'), refuse: /^no scope allows search on Observation \(for _has:Observation:patient:code\)/ },
      '_has with search on the type': { scopes: 'user/Patient.rs user/Observation.s', request: search('Patient', '?_has:Observation:patient:code=1'), allow: ['search'] },
      '_filter under user/ scopes needs search on every type': { scopes: 'user/Observation.rs', request: search('Observation', '?_filter=code%20eq%201'), refuse: /^no scope allows search on all resource types \(\*\) \(for _filter=/ },
      '_filter with user/*.rs': { scopes: 'user/*.rs', request: search('Observation', '?_filter=code%20eq%201'), allow: ['search'] },
      'a constrained scope does not cover an _include': {
        scopes: 'user/Observation.rs user/Patient.rs?gender=female',
        request: search('Observation', '?_include=Observation:subject:Patient'),
        refuse: /^scope user\/Patient\.rs\?gender=female allows read on Patient only with gender=female, and this read of Patient cannot show it/,
      },
      'POST search needs *': {
        scopes: 'user/Observation.rs',
        request: req('POST', '/Observation/_search', 'search-type', { resourceType: 'Observation' }),
        refuse: /^no scope allows search on all resource types \(\*\) \(because a POST search may carry _include or chained parameters in its body \(use GET\)\)/,
      },
      'POST search with *': { scopes: 'user/*.rs', request: req('POST', '/Observation/_search', 'search-type', { resourceType: 'Observation' }), allow: ['search'] },
    }),
  )('%s', (_name, c) => check(c));
});

describe('evaluateScopes: operations', () => {
  const op = (method: string, target: string, operation: string, fields: Fields = {}) => req(method, target, 'operation', { operation, ...fields });
  const systemExport = (q = '') => op('GET', `/$export${q}`, '$export');
  const patientExport = (q = '') => op('GET', `/Patient/$export${q}`, '$export', { resourceType: 'Patient' });
  const groupExport = (q = '') => op('POST', `/Group/g1/$export${q}`, '$export', { resourceType: 'Group', id: 'g1' });

  it.each(
    table({
      'system export with system/*.read': { scopes: 'system/*.read', app: true, request: systemExport(), allow: ['export'], without: ['read'] },
      'system export with system/*.rs': { scopes: 'system/*.rs', app: true, request: systemExport(), allow: ['export'] },
      'system export needs read on every type': { scopes: 'system/Observation.read', app: true, request: systemExport(), refuse: /^no scope allows read on all resource types \(\*\) \(for \$export\)/ },
      'system export of listed types': { scopes: 'system/Observation.read', app: true, request: systemExport('?_type=Observation'), allow: ['export'] },
      'system export of a type not covered': { scopes: 'system/Observation.read', app: true, request: systemExport('?_type=Observation,Patient'), refuse: /^no scope allows read on Patient/ },
      'system export needs search too': { scopes: 'system/*.r', app: true, request: systemExport(), refuse: /^scope system\/\*\.r does not allow search on all resource types/ },
      'system export with user/ scopes': { scopes: 'user/*.read', request: systemExport(), refuse: '$export at system level needs system/ scopes, and this token has user/ scopes' },
      'system export with system/ scopes in a user token': { scopes: 'system/*.read', app: false, request: systemExport(), refuse: /^system\/ scopes .* are only valid in an app/ },
      'Patient/$export with user/ scopes on every type': { scopes: 'user/*.read', request: patientExport(), allow: ['export'] },
      'Patient/$export with Patient scopes and _type=Patient': { scopes: 'user/Patient.rs', request: patientExport('?_type=Patient'), allow: ['export'] },
      'Patient/$export with Patient scopes exports every type': { scopes: 'user/Patient.rs', request: patientExport(), refuse: /^no scope allows read on all resource types/ },
      'Patient/$export needs the Patient type': { scopes: 'user/Observation.rs', request: patientExport('?_type=Observation'), refuse: /^no scope allows read on Patient;/ },
      'Patient/$export with system/ scopes': { scopes: 'system/*.rs', app: true, request: patientExport(), allow: ['export'] },
      'Group/[id]/$export with Group and listed types': { scopes: 'user/Group.rs user/Patient.rs', request: groupExport('?_type=Patient'), allow: ['export'] },
      'Group/[id]/$export without Group': { scopes: 'user/Patient.rs', request: groupExport('?_type=Patient'), refuse: /^no scope allows read on Group/ },
      'Patient/$export under patient/ scopes': { scopes: 'patient/*.read', patient: '123', mode: 'delegate', request: patientExport(), refuse: "Patient/$export exports more than one patient's data, which patient/ scopes do not allow" },
      'export status with system/ scopes': { scopes: 'system/Patient.read', app: true, request: req('GET', '/_operations/export/42', 'export-status', { id: '42' }), allow: ['export'], without: ['read'] },
      'export cancel with user/ scopes': { scopes: 'user/Patient.rs', request: req('DELETE', '/job/42/status', 'export-status', { id: '42' }), allow: ['export'] },
      'export file with system/ scopes': { scopes: 'system/*.read', app: true, request: req('GET', '/_operations/export/42/Patient-1.ndjson', 'export-file', { id: '42', file: 'Patient-1.ndjson' }), allow: ['export'] },
      'export status under patient/ scopes': { scopes: 'patient/*.read', patient: '123', mode: 'delegate', request: req('GET', '/_operations/export/42', 'export-status', { id: '42' }), refuse: /belongs to a bulk export, which patient\/ scopes do not allow/ },
      'HAPI export poll status with system/ scopes': { scopes: 'system/*.read', app: true, request: op('GET', '/$export-poll-status?_jobId=42', '$export-poll-status'), allow: ['export'] },
      'HAPI export poll status under patient/ scopes': { scopes: 'patient/*.read', patient: '123', request: op('DELETE', '/$export-poll-status?_jobId=42', '$export-poll-status'), refuse: /patient\/ scopes do not allow/ },
      'Observation/$export is not a bulk export': { scopes: 'user/*.read', request: op('GET', '/Observation/$export', '$export', { resourceType: 'Observation' }), refuse: /^Observation\/\$export is not a bulk export/ },
      'Patient/[id]/$export is not a bulk export': { scopes: 'user/*.read', request: op('GET', '/Patient/1/$export', '$export', { resourceType: 'Patient', id: '1' }), refuse: /is not a bulk export/ },
      'export with a bad _type': { scopes: 'system/*.read', app: true, request: systemExport('?_type=x'), refuse: "_type lists 'x', which is not a resource type" },
      '$everything on the context patient': { scopes: 'patient/*.rs', patient: '123', request: op('GET', '/Patient/123/$everything', '$everything', { resourceType: 'Patient', id: '123' }), allow: ['read'] },
      '$everything on another patient': {
        scopes: 'patient/*.rs',
        patient: '123',
        mode: 'delegate',
        request: op('GET', '/Patient/456/$everything', '$everything', { resourceType: 'Patient', id: '456' }),
        refuse: 'Patient/456 is not the patient in context (Patient/123)',
      },
      '$everything needs read on every type': {
        scopes: 'patient/Patient.rs patient/Observation.rs',
        patient: '123',
        request: op('GET', '/Patient/123/$everything', '$everything', { resourceType: 'Patient', id: '123' }),
        refuse: /^no scope allows read on all resource types \(\*\) \(for Patient\/123\/\$everything\)/,
      },
      '$everything with _type': {
        scopes: 'patient/Patient.rs patient/Observation.rs',
        patient: '123',
        request: op('GET', '/Patient/123/$everything?_type=Observation', '$everything', { resourceType: 'Patient', id: '123' }),
        allow: ['read'],
      },
      'type-level $everything': { scopes: 'user/*.rs', request: op('GET', '/Patient/$everything', '$everything', { resourceType: 'Patient' }), refuse: /\$everything is allowed under SMART only on one Patient/ },
      '$everything under user/ scopes': { scopes: 'user/*.read', request: op('GET', '/Patient/9/$everything', '$everything', { resourceType: 'Patient', id: '9' }), allow: ['read'] },
      '$meta on an instance': { scopes: 'user/Observation.rs', request: op('GET', '/Observation/1/$meta', '$meta', { resourceType: 'Observation', id: '1' }), allow: ['read'] },
      '$meta on an instance needs search too': { scopes: 'user/Observation.r', request: op('GET', '/Observation/1/$meta', '$meta', { resourceType: 'Observation', id: '1' }), refuse: /does not allow search on Observation/ },
      '$meta under patient/ scopes on another type': {
        scopes: 'patient/*.rs',
        patient: '123',
        request: op('GET', '/Observation/1/$meta', '$meta', { resourceType: 'Observation', id: '1' }),
        refuse: /^Observation\/1\/\$meta, so it cannot be proven/,
      },
      '$meta at system level': { scopes: 'user/*.rs', request: op('GET', '/$meta', '$meta'), refuse: /^\$meta is not allowed under SMART scopes/ },
      '$lastn with patient=ctx': { scopes: 'patient/Observation.rs', patient: '123', request: op('GET', '/Observation/$lastn?patient=123', '$lastn', { resourceType: 'Observation' }), allow: ['read'] },
      '$lastn without patient': { scopes: 'patient/Observation.rs', patient: '123', request: op('GET', '/Observation/$lastn', '$lastn', { resourceType: 'Observation' }), refuse: /^a search of Observation without patient=123/ },
      '$lastn with _include': {
        scopes: 'patient/Observation.rs',
        patient: '123',
        request: op('GET', '/Observation/$lastn?patient=123&_include=Observation:performer', '$lastn', { resourceType: 'Observation' }),
        refuse: /^_include=Observation:performer reaches beyond/,
      },
      '$lastn with _include under user/ scopes needs the included type': {
        scopes: 'user/Observation.rs',
        request: op('GET', '/Observation/$lastn?_include=Observation:subject:Patient', '$lastn', { resourceType: 'Observation' }),
        refuse: /^no scope allows read on Patient \(for _include=Observation:subject:Patient\)/,
      },
      '$lastn by POST under user/ scopes needs *': {
        scopes: 'user/Observation.rs',
        request: op('POST', '/Observation/$lastn', '$lastn', { resourceType: 'Observation' }),
        refuse: /^no scope allows search on all resource types \(\*\) \(because Observation\/\$lastn by POST/,
      },
      '$lastn by POST under patient/ scopes is not provable': {
        scopes: 'patient/Observation.rs',
        patient: '123',
        request: op('POST', '/Observation/$lastn?patient=123', '$lastn', { resourceType: 'Observation' }),
        refuse: /^Observation\/\$lastn by POST carries its parameters in a body fhir-pdp does not see/,
      },
      '$stats under user/ scopes': { scopes: 'user/Observation.rs', request: op('GET', '/Observation/$stats?code=x', '$stats', { resourceType: 'Observation' }), allow: ['read'] },
      'terminology: ValueSet/$expand': { scopes: 'user/ValueSet.rs', request: op('GET', '/ValueSet/$expand?url=x', '$expand', { resourceType: 'ValueSet' }), allow: ['read'] },
      'terminology: CodeSystem/[id]/$lookup': { scopes: 'user/CodeSystem.read', request: op('POST', '/CodeSystem/1/$lookup', '$lookup', { resourceType: 'CodeSystem', id: '1' }), allow: ['read'] },
      'terminology without a scope for the type': { scopes: 'user/Observation.rs', request: op('GET', '/ValueSet/$expand', '$expand', { resourceType: 'ValueSet' }), refuse: /^no scope allows read on ValueSet/ },
      'terminology under patient/ scopes, refused': { scopes: 'patient/*.rs', patient: '123', request: op('GET', '/ValueSet/$expand', '$expand', { resourceType: 'ValueSet' }), refuse: /^ValueSet\/\$expand reads terminology, so it cannot be proven/ },
      'terminology under patient/ scopes, delegated': {
        scopes: 'patient/*.rs',
        patient: '123',
        mode: 'delegate',
        request: op('GET', '/ValueSet/$expand', '$expand', { resourceType: 'ValueSet' }),
        delegateCompartment: 'Patient/123',
      },
      'terminology operation on another type': { scopes: 'user/*.*', request: op('GET', '/Observation/$expand', '$expand', { resourceType: 'Observation' }), refuse: /^Observation\/\$expand is not allowed under SMART scopes/ },
      '$validate is refused': { scopes: 'user/*.*', request: op('POST', '/Observation/$validate', '$validate', { resourceType: 'Observation' }), refuse: /^Observation\/\$validate is not allowed under SMART scopes: only \$export/ },
      '$purge-history is refused': { scopes: 'system/*.*', app: true, request: op('DELETE', '/Patient/1/$purge-history', '$purge-history', { resourceType: 'Patient', id: '1' }), refuse: /^Patient\/1\/\$purge-history is not allowed/ },
    }),
  )('%s', (_name, c) => check(c));
});

describe('data actions', () => {
  it.each<[SmartInteraction[], DataAction[]]>([
    [['readById'], ['readById']],
    [['readById', 'search'], ['readById', 'search', 'read']],
    [['create', 'update'], ['create', 'update', 'write']],
    [['create', 'update', 'delete'], ['create', 'update', 'delete', 'write']],
    [['update', 'delete'], ['update', 'delete']],
  ])('dataActionsFor(%j)', (interactions, actions) => {
    expect([...dataActionsFor(new Set(interactions))].sort()).toEqual([...actions].sort());
  });

  it.each<[DataAction[], DataAction[], DataAction[]]>([
    [['read'], ['search'], ['search']],
    [['read'], ['readById', 'search', 'read'], ['read', 'readById', 'search']],
    [['search'], ['read', 'readById', 'search'], ['search']],
    [['write', 'delete'], ['create'], ['create']],
    [['write'], ['create', 'update', 'write'], ['create', 'update', 'write']],
    [['create'], ['write'], ['create']],
    [['read', 'export'], ['export'], ['export']],
    [['read'], ['export'], []],
    [['delete', 'hardDelete'], ['delete', 'hardDelete', 'update'], ['delete', 'hardDelete']],
  ])('intersectScopeActions(%j, %j)', (granted, allowed, expected) => {
    expect([...intersectScopeActions(new Set(granted), new Set(allowed))].sort()).toEqual([...expected].sort());
  });
});

describe('evaluateScopes with compartmentLookup', () => {
  const P = scopeSetOf('launch/patient patient/Observation.rs patient/Patient.rs patient/Device.rs patient/Condition.rs patient/Practitioner.rs');
  const ask = (request: FhirRequest, compartmentLookup: boolean, compartmentMode: 'refuse' | 'delegate' = 'refuse') =>
    evaluateScopes({ scopeSet: P, request, patientContext: 'A', isAppToken: false, compartmentMode, compartmentLookup });

  it.each<[string, FhirRequest, { parameter: 'patient' | 'subject' }]>([
    ['read of an Observation (patient)', read('Observation', 'o1'), { parameter: 'patient' }],
    ['vread of an Observation', req('GET', '/Observation/o1/_history/2', 'vread', { resourceType: 'Observation', id: 'o1', versionId: '2' }), { parameter: 'patient' }],
    ['read of a Condition', read('Condition', 'c-1.x'), { parameter: 'patient' }],
  ])('%s becomes a question for the FHIR server', (_name, request, { parameter }) => {
    const v = ask(request, true);
    expect(v.ok).toBe(true);
    if (!v.ok) return;
    expect(v.lookupCompartment).toEqual({ resourceType: request.resourceType, id: request.id, parameter, patient: 'A' });
    expect(v.delegateCompartment).toBeUndefined();
    expect([...v.actions]).toContain('readById');
  });

  it('wins over compartmentMode delegate: proven, not delegated', () => {
    const v = ask(read('Observation', 'o1'), true, 'delegate');
    expect(v.ok && v.lookupCompartment?.id).toBe('o1');
    expect(v.ok && v.delegateCompartment).toBeUndefined();
  });

  it.each<[string, FhirRequest, 'refused' | 'inside']>([
    ['the patient in context, read by id (the URL proves it)', read('Patient', 'A'), 'inside'],
    ['another patient, read by id (the URL disproves it)', read('Patient', 'B'), 'refused'],
    ['a history of an Observation (every version, not only the current one)', req('GET', '/Observation/o1/_history', 'history-instance', { resourceType: 'Observation', id: 'o1' }), 'refused'],
    ['a type outside the Patient compartment (Practitioner)', read('Practitioner', 'd1'), 'refused'],
    ['a type with neither patient nor subject (Device)', read('Device', 'd1'), 'refused'],
    ['a search without a patient parameter', search('Observation'), 'refused'],
  ])('asks nothing for %s', (_name, request, expected) => {
    const v = ask(request, true);
    expect(v.ok ? 'inside' : 'refused').toBe(expected);
    if (v.ok) expect(v.lookupCompartment).toBeUndefined();
  });

  it('without compartmentLookup a read by id stays refused (compartmentMode refuse) or delegated (delegate)', () => {
    const refused = ask(read('Observation', 'o1'), false);
    expect(refused).toMatchObject({ ok: false, reason: 'insufficient_scope' });
    const delegated = ask(read('Observation', 'o1'), false, 'delegate');
    expect(delegated.ok && delegated.delegateCompartment).toBe('Patient/A');
    expect(delegated.ok && delegated.lookupCompartment).toBeUndefined();
  });

  it('user/ scopes need no compartment, so nothing is asked', () => {
    const v = evaluateScopes({ scopeSet: scopeSetOf('user/Observation.rs'), request: read('Observation', 'o1'), isAppToken: false, compartmentMode: 'refuse', compartmentLookup: true });
    expect(v.ok && v.lookupCompartment).toBeUndefined();
  });
});
