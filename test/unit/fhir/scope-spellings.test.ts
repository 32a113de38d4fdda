/**
 * The scope spellings of the Microsoft stack, against microsoft/fhir-server's
 * SmartClinicalScopesMiddleware (its ClinicalScopeRegEx, ParseScopePermissions and the constraint
 * checks) and the cases of its SmartClinicalScopesMiddlewareTests. Each row: the scope, what
 * fhir-pdp reads it as, and what fhir-server does with it. A row where the two differ names the
 * spelling that docs/security.md ("Scope spellings") explains.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseFhirRequest } from '../../../src/fhir/request.js';
import { evaluateScopes, parseSmartScopes, type SmartInteraction } from '../../../src/fhir/scopes.js';
import { readScopeClaims } from '../../../src/identity/scope-claims.js';

const AUDIENCE = 'https://fhir.example';
const READ: SmartInteraction[] = ['readById', 'search'];
const WRITE: SmartInteraction[] = ['create', 'update', 'delete'];
const ALL: SmartInteraction[] = ['create', 'readById', 'update', 'delete', 'search'];

type Granted = { readonly context: 'patient' | 'user' | 'system'; readonly type: string; readonly interactions: SmartInteraction[] };
/** What fhir-pdp does with one scope. */
type Outcome = Granted | 'rejected' | 'ignored';
/** What fhir-server does: the same, or (where fhir-pdp differs on purpose) what it does instead. */
type Reference = 'same' | { readonly fhirServer: 'accepted' | 'ignored' | 'rejected'; readonly documentedAs: string };

const g = (context: Granted['context'], type: string, interactions: SmartInteraction[]): Granted => ({ context, type, interactions });

const TABLE: ReadonlyArray<readonly [scope: string, outcome: Outcome, reference: Reference]> = [
  // The SMART grammar itself.
  ['patient/Patient.read', g('patient', 'Patient', READ), 'same'],
  ['patient/Patient.write', g('patient', 'Patient', WRITE), 'same'],
  ['user/Encounter.*', g('user', 'Encounter', ALL), 'same'],
  ['user/*.*', g('user', '*', ALL), 'same'],
  ['patient/Patient.rs', g('patient', 'Patient', READ), 'same'],
  ['patient/Patient.r', g('patient', 'Patient', ['readById']), 'same'],
  ['patient/Patient.s', g('patient', 'Patient', ['search']), 'same'],
  ['patient/Patient.c', g('patient', 'Patient', ['create']), 'same'],
  ['patient/Patient.cruds', g('patient', 'Patient', ALL), 'same'],
  ['user/*.rs', g('user', '*', READ), 'same'],
  ['system/Patient.rs?active=true', g('system', 'Patient', READ), 'same'],
  // `all` for the resource type and for the permission.
  ['patient.all.read', g('patient', '*', READ), 'same'],
  ['user.all.write', g('user', '*', WRITE), 'same'],
  ['user.all.read', g('user', '*', READ), 'same'],
  ['user/all.*', g('user', '*', ALL), 'same'],
  ['user/all.all', g('user', '*', ALL), 'same'],
  ['system.all.all', g('system', '*', ALL), 'same'],
  ['patient/*.all', g('patient', '*', ALL), 'same'],
  ['patient.Patient.all', g('patient', 'Patient', ALL), 'same'],
  ['patient/all.c', g('patient', '*', ['create']), 'same'],
  ['patient.all.c', g('patient', '*', ['create']), 'same'],
  // The separators Entra forces.
  ['patient.Patient.read', g('patient', 'Patient', READ), 'same'],
  ['system.Patient.read', g('system', 'Patient', READ), 'same'],
  ['patient.*.read', g('patient', '*', READ), 'same'],
  ['patient$Patient.read', g('patient', 'Patient', READ), 'same'],
  ['patient$Patient.rd', g('patient', 'Patient', ['readById', 'delete']), 'same'],
  ['patient%2fObservation.read', g('patient', 'Observation', READ), 'same'],
  ['patient%2FObservation.rs', g('patient', 'Observation', READ), 'same'],
  ['system%2F%2A.rs', g('system', '*', READ), 'same'],
  ['user%2Fall.read', g('user', '*', READ), 'same'],
  // The resource in front (a proxy that copies the requested scope into raw_scope).
  [`${AUDIENCE}/patient.Observation.read`, g('patient', 'Observation', READ), { fhirServer: 'ignored', documentedAs: '{audience}/patient.Observation.read' }],
  [`${AUDIENCE}/patient/Observation.read`, g('patient', 'Observation', READ), { fhirServer: 'ignored', documentedAs: '{audience}/patient.Observation.read' }],
  [`${AUDIENCE}%2Fpatient%2FObservation.read`, g('patient', 'Observation', READ), { fhirServer: 'ignored', documentedAs: '{audience}/patient.Observation.read' }],
  ['https://other.example/patient.Observation.read', 'ignored', 'same'],
  // Not clinical scopes.
  ['openid', 'ignored', 'same'],
  ['launch/patient', 'ignored', 'same'],
  ['offline_access', 'ignored', 'same'],
  ['user.read', 'ignored', 'same'],
  ['user.profile', 'ignored', 'same'],
  ['practitioner/Observation.write', 'ignored', 'same'],
  ['Patient/Observation.read', 'ignored', 'same'],
  // Refused by both (fhir-server: 400 Bad Request; fhir-pdp: the token's scopes are refused).
  ['patient/Observation.read-only', 'rejected', 'same'],
  ['patient/Observation.rsXYZ', 'rejected', 'same'],
  ['patient/Observation.rs?active', 'rejected', 'same'],
  ['patient/Observation.rs?subject.name=x', 'rejected', 'same'],
  ['patient/Observation.rs?_has:Observation:patient:code=1', 'rejected', 'same'],
  ['patient/Observation.rs?code:exact=x', 'rejected', 'same'],
  ['patient/Observation.rs?category:not=x', 'rejected', 'same'],
  ['patient/Observation.rs?_include=Observation:subject', 'rejected', 'same'],
  ['patient/Observation.rs?_revinclude=Provenance:target', 'rejected', 'same'],
  ['patient/Observation.rs?code:exact=a=b', 'rejected', 'same'],
  ['patient/Observation.rs?identifier=x=y', 'rejected', 'same'],
  // Where fhir-pdp is stricter (docs/security.md says why).
  ['patient.patient.read', 'ignored', { fhirServer: 'rejected', documentedAs: 'patient.patient.read' }],
  ['patient/Observation.sr', 'rejected', { fhirServer: 'accepted', documentedAs: 'patient/Observation.sr' }],
  ['patient/Observation.rrs', 'rejected', { fhirServer: 'accepted', documentedAs: 'patient/Observation.rrs' }],
  ['patient/Observation.READ', 'rejected', { fhirServer: 'ignored', documentedAs: 'patient/Observation.READ' }],
  ['patient/Observation', 'rejected', { fhirServer: 'ignored', documentedAs: 'patient/Observation' }],
  ['patient/Observation.rs?subject:Patient=Patient/1', 'rejected', { fhirServer: 'accepted', documentedAs: 'subject:Patient' }],
  ['patient/Observation.rs?_count=10', 'rejected', { fhirServer: 'accepted', documentedAs: '_count' }],
  ['patient/Observation.rs?category=a&category=b', 'rejected', { fhirServer: 'accepted', documentedAs: 'category=a&category=b' }],
  ['patient%2FObservation.rs%3Fcategory%3Dlaboratory', 'rejected', { fhirServer: 'accepted', documentedAs: '%3F' }],
  // Where fhir-pdp does not keep a list of resource types: a misspelt type grants a type no FHIR server has.
  ['patient/Observaton.read', g('patient', 'Observaton', READ), { fhirServer: 'rejected', documentedAs: 'patient/Observaton.read' }],
  ['patient%2FObservation.r%E0%A4%A', 'rejected', { fhirServer: 'ignored', documentedAs: 'badly percent-encoded' }],
];

function outcomeOf(scope: string): Outcome {
  const parsed = parseSmartScopes([scope], { audiences: [AUDIENCE] });
  if (!parsed.ok) return 'rejected';
  const s = parsed.scopeSet.scopes[0];
  if (s === undefined) return 'ignored';
  return { context: parsed.scopeSet.context!, type: s.resourceType, interactions: [...s.interactions] };
}

describe('scope spellings, against microsoft/fhir-server', () => {
  it.each(TABLE.map(([scope, outcome, reference]) => ({ scope, outcome, reference })))('$scope', ({ scope, outcome }) => {
    const got = outcomeOf(scope);
    if (typeof outcome === 'string') expect(got).toBe(outcome);
    else {
      expect(got).toMatchObject({ context: outcome.context, type: outcome.type });
      expect([...(got as Granted).interactions].sort()).toEqual([...outcome.interactions].sort());
    }
  });

  it('docs/security.md names every spelling where fhir-pdp differs from fhir-server', () => {
    const doc = readFileSync(new URL('../../../docs/security.md', import.meta.url), 'utf8');
    const section = doc.slice(doc.indexOf('### Scope spellings'));
    expect(section.length).toBeLessThan(doc.length);
    for (const [, , reference] of TABLE) if (reference !== 'same') expect(section).toContain(reference.documentedAs);
  });

  it('mixing v1 and v2 is refused, as fhir-server refuses it (GetMixedTestScopes)', () => {
    for (const scopes of [
      'patient/Patient.read patient/Observation.r',
      'patient$Patient.rd patient/Observation.write',
      'patient/Patient.all patient/Patient.cruds',
      'patient.all.read patient/Observation.rs',
    ]) {
      expect(parseSmartScopes(scopes.split(' '), { audiences: [] }).ok, scopes).toBe(false);
    }
  });

  it('mixing contexts is refused, where fhir-server reads each scope on its own', () => {
    // fhir-server accepts "patient.Patient.read user.Observation.write"; docs/security.md says why not.
    expect(parseSmartScopes(['patient.Patient.read', 'user.Observation.write'], { audiences: [] }).ok).toBe(false);
  });
});

describe('decisions under the Microsoft spellings', () => {
  function verdict(scopes: string, method: string, target: string, patient = 'p1') {
    const parsed = parseSmartScopes(scopes.split(' '), { audiences: [AUDIENCE] });
    if (!parsed.ok) throw new Error(parsed.problem);
    const request = parseFhirRequest(method, target);
    if (!request.ok) throw new Error(request.problem);
    return evaluateScopes({ scopeSet: parsed.scopeSet, request: request.request, patientContext: patient, isAppToken: false, compartmentMode: 'refuse' });
  }

  it.each<[string, string, string, boolean]>([
    // fhir-server: ScopeRestriction(All, Read|Search, patient): reads and searches of every type in the compartment.
    ['patient.all.read', 'GET', '/Observation?patient=p1', true],
    ['patient.all.read', 'GET', '/Patient/p1', true],
    ['patient.all.read', 'POST', '/Observation', false],
    ['patient.all.read', 'GET', '/Observation?patient=p2', false],
    // ScopeRestriction(All, Write|Create|Update|Delete, user): writes, no reads.
    ['user.all.write', 'PUT', '/Observation/o1', true],
    ['user.all.write', 'GET', '/Observation/o1', false],
    ['user%2FPatient.all', 'DELETE', '/Patient/p9', true],
    [`${AUDIENCE}/patient.Observation.read`, 'GET', '/Observation?patient=p1', true],
    [`${AUDIENCE}/patient.Observation.read`, 'GET', '/Condition?patient=p1', false],
  ])('%s: %s %s allowed=%s', (scopes, method, target, allowed) => {
    expect(verdict(scopes, method, target).ok).toBe(allowed);
  });
});

describe('raw_scope precedence', () => {
  it('raw_scope wins over scp, as in fhir-server ("If the raw_Scope is non empty then use that")', () => {
    expect(readScopeClaims({ raw_scope: 'patient/Observation.rs?category=laboratory', scp: 'patient.Observation.rs' })).toEqual({
      ok: true,
      scopes: ['patient/Observation.rs?category=laboratory'],
      source: 'raw_scope',
    });
  });

  it('an empty raw_scope is refused, where fhir-server falls back to scp', () => {
    expect(readScopeClaims({ raw_scope: '', scp: 'patient.Observation.rs' })).toMatchObject({ ok: false });
  });
});
