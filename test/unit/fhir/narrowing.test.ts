/**
 * SMART search narrowing: the rules of docs/security.md ("Narrowed searches"), table-driven through
 * evaluateScopes with the real request parser, plus the helpers of src/fhir/narrowing.ts.
 */
import { describe, expect, it } from 'vitest';
import { appendedNames, encodeQueryAppend, MAX_QUERY_APPEND, paramUse } from '../../../src/fhir/narrowing.js';
import { parseFhirRequest } from '../../../src/fhir/request.js';
import { evaluateScopes, parseSmartScopes } from '../../../src/fhir/scopes.js';

const PATIENT = 'pa';

interface Case {
  readonly scopes: string;
  readonly method?: string;
  readonly target: string;
  /** The patient in context; default PATIENT for patient/ scopes. */
  readonly patient?: string | null;
  readonly compartmentMode?: 'refuse' | 'delegate';
  /** Expected: the queryAppend (`''`: allowed with nothing to add), or a refusal hint pattern. */
  readonly append?: string;
  readonly refused?: RegExp;
  /** Expected delegateCompartment, when one. */
  readonly delegate?: string;
}

function evaluate(c: Case, narrow: boolean) {
  const parsed = parseSmartScopes(c.scopes.split(' '), { audiences: [] });
  if (!parsed.ok) throw new Error(parsed.problem);
  const request = parseFhirRequest(c.method ?? 'GET', c.target);
  if (!request.ok) throw new Error(request.problem);
  const patient = c.patient === null ? undefined : (c.patient ?? (parsed.scopeSet.context === 'patient' ? PATIENT : undefined));
  return evaluateScopes({
    scopeSet: parsed.scopeSet,
    request: request.request,
    ...(patient ? { patientContext: patient } : {}),
    isAppToken: false,
    compartmentMode: c.compartmentMode ?? 'refuse',
    narrow,
  });
}

const LAB = 'patient/Observation.rs?category=laboratory';
const VITALS = 'patient/Observation.rs?category=vital-signs';

const CASES: Record<string, Case> = {
  // Into the compartment: the parameter searchCompartment accepts as proof, for the type.
  'a search without its patient gets patient=Patient/{id}': { scopes: 'patient/Observation.rs', target: '/Observation?code=1234-5', append: 'patient=Patient/pa' },
  'a Patient search gets _id': { scopes: 'patient/Patient.rs', target: '/Patient?name=Doe', append: '_id=pa' },
  'a type with only subject gets subject=Patient/{id}': { scopes: 'patient/AdverseEvent.rs', target: '/AdverseEvent', append: 'subject=Patient/pa' },
  'a type outside the Patient compartment is refused as before': { scopes: 'patient/Practitioner.rs', target: '/Practitioner', refused: /no patient search parameter/ },
  'patient=Patient/{id} already there: nothing to add': { scopes: 'patient/Observation.rs', target: '/Observation?patient=Patient/pa', append: '' },
  'patient={id} already there: nothing to add': { scopes: 'patient/Observation.rs', target: '/Observation?patient=pa', append: '' },
  'subject=Patient/{id} already proves it': { scopes: 'patient/Observation.rs', target: '/Observation?subject=Patient/pa', append: '' },
  'another patient is still refused': { scopes: 'patient/Observation.rs', target: '/Observation?patient=Patient/pb', refused: /names another patient/ },
  'another patient through subject is still refused': { scopes: 'patient/Observation.rs', target: '/Observation?subject=Patient/pb', refused: /names another patient/ },
  'a list of patients is not narrowed': { scopes: 'patient/Observation.rs', target: '/Observation?patient=pa,pb', refused: /cannot be proven to stay in the compartment/ },
  'a patient modifier is not narrowed': { scopes: 'patient/Observation.rs', target: '/Observation?patient:missing=true', refused: /cannot be proven to stay in the compartment/ },
  'the parameter in another letter case is not narrowed': { scopes: 'patient/Observation.rs', target: '/Observation?Patient=Patient/pb', refused: /cannot be proven to stay in the compartment/ },
  'a list of Patient ids is not narrowed': { scopes: 'patient/Patient.rs', target: '/Patient?_id=pa,pb', refused: /cannot be proven to stay in the compartment/ },
  'a subject of another type is narrowed (the parameters AND)': { scopes: 'patient/Observation.rs', target: '/Observation?subject=Group/g1', append: 'patient=Patient/pa' },
  'repeated client parameters stay (AND narrows more)': { scopes: 'patient/Observation.rs', target: '/Observation?code=a&code=b', append: 'patient=Patient/pa' },
  // Constraints.
  'a constraint is added': { scopes: LAB, target: '/Observation?patient=pa', append: 'category=laboratory' },
  'compartment and constraint are both added': { scopes: LAB, target: '/Observation', append: 'patient=Patient/pa&category=laboratory' },
  'the constraint already there: nothing to add': { scopes: LAB, target: '/Observation?patient=pa&category=laboratory', append: '' },
  'another category is still refused': { scopes: LAB, target: '/Observation?category=vital-signs', refused: /already uses category otherwise than with laboratory/ },
  'a category list wider than the scope is refused': { scopes: LAB, target: '/Observation?category=laboratory,vital-signs', refused: /already uses category otherwise/ },
  'a category modifier is refused': { scopes: LAB, target: '/Observation?category:not=vital-signs', refused: /already uses category otherwise/ },
  'two scopes on one parameter: the OR of both': { scopes: `${LAB} ${VITALS}`, target: '/Observation', append: 'patient=Patient/pa&category=laboratory,vital-signs' },
  'two scopes: a client list within the union is enough': { scopes: `${LAB} ${VITALS}`, target: '/Observation?category=vital-signs,laboratory', append: 'patient=Patient/pa' },
  'two scopes on different parameters are refused': {
    scopes: `${LAB} patient/Observation.rs?status=final`,
    target: '/Observation',
    refused: /constrain different parameters/,
  },
  'one scope with two parameters adds both': {
    scopes: 'patient/Observation.rs?category=laboratory&status=final',
    target: '/Observation?status=final',
    append: 'patient=Patient/pa&category=laboratory',
  },
  'an unconstrained scope beside a constrained one: nothing to add': { scopes: `${LAB} patient/Observation.rs`, target: '/Observation?patient=pa', append: '' },
  'a value with a system is percent-encoded': {
    scopes: 'patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory',
    target: '/Observation?patient=pa',
    append: 'category=http://terminology.hl7.org/CodeSystem/observation-category%7Claboratory',
  },
  'a value with a space and an ampersand is percent-encoded': {
    scopes: 'patient/Observation.rs?code=a%20b%26c',
    target: '/Observation?patient=pa',
    append: 'code=a%20b%26c',
  },
  'user/ scopes: only the constraint': { scopes: 'user/Observation.rs?category=laboratory', target: '/Observation?code=x', append: 'category=laboratory' },
  // What is never narrowed.
  '_include stays refused': { scopes: LAB, target: '/Observation?_include=Observation:performer', refused: /reaches beyond/ },
  'a chain stays refused': { scopes: 'patient/Observation.rs', target: '/Observation?subject.name=x', refused: /reaches beyond/ },
  '_has stays refused': { scopes: 'patient/Patient.rs', target: '/Patient?_has:Observation:patient:code=x', refused: /reaches beyond/ },
  'a POST search stays refused': { scopes: 'patient/Observation.rs', method: 'POST', target: '/Observation/_search', refused: /POST search/ },
  'a POST search under user/ scopes is not narrowed': { scopes: 'user/*.s?category=laboratory', method: 'POST', target: '/Observation/_search', refused: /only with category=laboratory, and the request does not carry category=laboratory;[^;]*search with category=laboratory$/ },
  'a read by id is not narrowed': { scopes: 'patient/Observation.rs', target: '/Observation/o1', refused: /a read by id of Observation/ },
  'a read by id under a constraint is not narrowed': { scopes: 'user/Observation.rs?category=laboratory', target: '/Observation/o1', refused: /cannot show it from the URL/ },
  'a compartment search is not narrowed': { scopes: 'patient/Observation.rs', target: '/Patient/pb/Observation', refused: /compartment of Patient\/pb/ },
  'a system-level search is not narrowed': { scopes: 'patient/Observation.rs', target: '/?_type=Observation', refused: /across resource types/ },
  'the type history is not narrowed': { scopes: 'patient/Observation.rs', target: '/Observation/_history', refused: /history/ },
  'a conditional delete is not narrowed': { scopes: 'user/Observation.cruds?category=laboratory', method: 'DELETE', target: '/Observation?code=x', refused: /only with category=laboratory/ },
  '$lastn is not narrowed': { scopes: 'patient/Observation.rs', target: '/Observation/$lastn', refused: /cannot be proven to stay in the compartment/ },
  // compartmentMode delegate: narrowing enforces at the gateway where it can, else delegation as before.
  'delegate: narrowed instead of delegated': { scopes: 'patient/Observation.rs', target: '/Observation', compartmentMode: 'delegate', append: 'patient=Patient/pa' },
  'delegate: a type without a patient parameter is still delegated': {
    scopes: 'patient/Practitioner.rs',
    target: '/Practitioner',
    compartmentMode: 'delegate',
    append: '',
    delegate: 'Patient/pa',
  },
  'delegate: a conflicting patient modifier is delegated as before': {
    scopes: 'patient/Observation.rs',
    target: '/Observation?patient:missing=false',
    compartmentMode: 'delegate',
    append: '',
    delegate: 'Patient/pa',
  },
};

describe('evaluateScopes with narrowing', () => {
  it.each(Object.entries(CASES))('%s', (_name, c) => {
    const verdict = evaluate(c, true);
    if (c.refused) {
      expect(verdict.ok).toBe(false);
      if (!verdict.ok) expect(verdict.hint).toMatch(c.refused);
      return;
    }
    expect(verdict.ok, verdict.ok ? '' : verdict.hint).toBe(true);
    if (!verdict.ok) return;
    expect(verdict.queryAppend ?? '').toBe(c.append);
    expect(verdict.delegateCompartment).toBe(c.delegate);
  });

  it.each(Object.entries(CASES).filter(([, c]) => c.append))('without narrowing, %s is decided as before (no queryAppend)', (_name, c) => {
    const verdict = evaluate(c, false);
    if (verdict.ok) expect(verdict.queryAppend).toBeUndefined();
    // Every narrowed case was a refusal before, or (delegate) a delegation.
    if (verdict.ok) expect(verdict.delegateCompartment).toBe(`Patient/${PATIENT}`);
    else expect(verdict.reason).toBe('insufficient_scope');
  });

  it('the appended query, parsed as the FHIR server parses it, is exactly the scope constraint and the patient', () => {
    const scopes = 'patient/Observation.rs?category=http://loinc.org|a%2Cb,c patient/Observation.rs?category=d';
    const verdict = evaluate({ scopes, target: '/Observation' }, true);
    expect(verdict.ok).toBe(true);
    if (!verdict.ok) return;
    const parsed = parseFhirRequest('GET', `/Observation?${verdict.queryAppend}`);
    expect(parsed.ok && parsed.request.query).toEqual([
      ['patient', 'Patient/pa'],
      ['category', 'http://loinc.org|a,b,c,d'],
    ]);
  });

  it('refuses rather than offer an append longer than MAX_QUERY_APPEND', () => {
    const long = 'x'.repeat(MAX_QUERY_APPEND);
    const verdict = evaluate({ scopes: `patient/Observation.rs?code=${long}`, target: '/Observation?patient=pa' }, true);
    expect(verdict.ok).toBe(false);
    if (!verdict.ok) expect(verdict.hint).toMatch(/more than the 2048/);
  });
});

describe('paramUse', () => {
  const accepts = (v: string) => v === 'ok';
  it.each<[string, string, ReturnType<typeof paramUse>]>([
    ['', 'absent'],
    ['other=1', 'absent'],
    ['p=ok', 'satisfied'],
    ['p=no&p=ok', 'satisfied'],
    ['p=no', 'conflict'],
    ['p:not=ok', 'conflict'],
    ['p.name=x', 'conflict'],
    ['P=ok', 'conflict'],
    ['pp=ok', 'absent'],
  ].map(([q, want]) => [q!, 'p', want as ReturnType<typeof paramUse>]))('%s', (q, param, want) => {
    expect(paramUse([...new URLSearchParams(q)], param, accepts)).toBe(want);
  });
});

describe('encodeQueryAppend and appendedNames', () => {
  it('encodes each value part and joins them with a literal comma', () => {
    const text = encodeQueryAppend([
      { param: 'patient', values: ['Patient/1'] },
      { param: 'code', values: ['http://x|1', 'a\\,b', 'c d'] },
    ]);
    expect(text).toBe('patient=Patient/1&code=http://x%7C1,a%5C%2Cb,c%20d');
    expect(appendedNames(text)).toBe('patient,code');
  });
});
