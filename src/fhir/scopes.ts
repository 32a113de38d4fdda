/**
 * SMART on FHIR scopes: reading them from a token, parsing them, and deciding what they allow for
 * one FhirRequest. Pure; never throws on input.
 *
 * Grammar (SMART App Launch 2.x, "Scopes for requesting clinical data"):
 *   ( 'patient' | 'user' | 'system' ) '/' ( fhir-resource-type | '*' )
 *     [ '.' ( 'read' | 'write' | '*' ) | '.' ['c']['r']['u']['d']['s'] ]
 *     [ '?' param '=' value ( '&' param '=' value )* ]
 * v1 `read` = read + search, `write` = create + update + delete, `*` = both.
 * v2 letters: c = create, r = read (by id), u = update, d = delete, s = search.
 *
 * What this module decides, strictly (fail closed: nothing is allowed that was not proven):
 * - A token's resource scopes are all v1 or all v2, all in one context (patient/, user/ or system/).
 *   Anything malformed refuses the whole token, so a typo never silently widens or narrows rights.
 * - patient/ scopes need a patient context and allow only what the URL proves is inside that
 *   patient's compartment; with compartmentMode 'delegate', what the URL cannot prove (a read by id
 *   of an Observation, a create) is allowed with the compartment handed to the FHIR server.
 * - Scope constraints (`?category=laboratory`) hold when the request's query carries the parameter
 *   with an allowed value; otherwise refused, in every compartmentMode (never silently widened).
 * - Operations: `$export` (system/, or Patient/$export and Group/[id]/$export with scopes covering
 *   read of Patient/Group and of every exported type), `$everything` on a Patient (read of every
 *   type, or of `_type`), `$meta` on an instance, `$lastn`/`$stats` on Observation, and the
 *   read-only terminology operations. Every other operation is refused under SMART.
 * - Bulk Data status and output file URLs (and HAPI's `$export-poll-status`): user/ or system/
 *   scopes, as for the kick-off; which job is the caller's, the server decides.
 * - Batches are refused here: the caller decides each entry as its own request.
 */
import type { CompartmentQuestion } from '../core/compartment-question.js';
import { ALL_BUT_SMART, type DataAction } from '../core/data-actions.js';
import { MAX_SCOPES } from '../core/scope-limits.js';
import { FHIR_ID, RESOURCE_TYPE } from './request.js';
import { MAX_QUERY_APPEND, encodeQueryAppend, paramUse, type QueryAddition } from './narrowing.js';
import { readScopeSpelling } from './scope-spellings.js';
import type { FhirRequest, Interaction } from './types.js';

export type SmartContextKind = 'patient' | 'user' | 'system';
export type SmartInteraction = 'create' | 'readById' | 'update' | 'delete' | 'search';

export interface SmartScope {
  /** The scope as the token spelled it (for hints). */
  readonly scope: string;
  /** A resource type, or `*` for all. */
  readonly resourceType: string;
  readonly interactions: ReadonlySet<SmartInteraction>;
  /** Search parameter -> allowed values (a comma in the scope's value is FHIR's OR). Empty: none. */
  readonly constraints: ReadonlyMap<string, readonly string[]>;
}

export interface SmartScopeSet {
  /** Absent when the token carries no resource scope at all. */
  readonly context?: SmartContextKind;
  readonly version?: 1 | 2;
  readonly scopes: readonly SmartScope[];
  /** Scopes that are not resource scopes (openid, launch/patient, ...), kept for hints. */
  readonly ignored: readonly string[];
}

export type ScopeVerdict =
  | {
      readonly ok: true;
      /**
       * What the scopes allow for this request, as data actions: the SMART interactions of the
       * scopes that cover it (readById, search, create, update, delete), plus `read` when both
       * readById and search are allowed and `write` when both create and update are; `export` for
       * an allowed $export; every action for capabilities. For writes, the server-side extras that
       * scopes do not speak to (hardDelete, searchParameter, editProfileDefinitions) are included
       * so that the principal's own grants decide them.
       */
      readonly actions: Set<DataAction>;
      /** Set when the compartment could not be proven from the URL: `Patient/{id}` for the server to enforce. */
      readonly delegateCompartment?: string;
      /**
       * Set when the search is allowed only narrowed (ScopeEvaluationInput.narrow): the `&`-joined,
       * percent-encoded `param=value` pairs the gateway must append to the query.
       */
      readonly queryAppend?: string;
      /**
       * Set instead (with `compartmentLookup`) for a read by id the URL cannot place: the request is
       * allowed only if the FHIR server, asked this question, finds the resource in the compartment.
       */
      readonly lookupCompartment?: CompartmentQuestion;
    }
  | { readonly ok: false; readonly reason: 'insufficient_scope'; readonly hint: string };

// ---------------------------------------------------------------------------------------------
// Parsing

const V2_LETTERS = 'cruds';
const V2_MEANING: Readonly<Record<string, SmartInteraction>> = { c: 'create', r: 'readById', u: 'update', d: 'delete', s: 'search' };
const ALL_INTERACTIONS: readonly SmartInteraction[] = ['create', 'readById', 'update', 'delete', 'search'];
const V1_MEANING: Readonly<Record<string, readonly SmartInteraction[]>> = {
  read: ['readById', 'search'],
  write: ['create', 'update', 'delete'],
  '*': ALL_INTERACTIONS,
};
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_-]{0,63}$/;
/**
 * Underscore parameters that filter (FHIR R4 "Parameters for all resources"); the others shape the
 * result (_count, _sort, _elements ...) or reach other resources (_has, _include), so they cannot
 * be a constraint.
 */
const FILTERING_UNDERSCORE_PARAMS: ReadonlySet<string> = new Set(['_id', '_lastUpdated', '_tag', '_profile', '_security', '_source']);

type ParsedOne =
  | { readonly kind: 'ignored' }
  | { readonly kind: 'scope'; readonly context: SmartContextKind; readonly version: 1 | 2; readonly scope: SmartScope }
  | { readonly kind: 'error'; readonly problem: string };

/**
 * Parses the token's scopes into the SMART scope set they confer (the policy's grants, data
 * actions, are another thing). `opts.audiences` are the accepted audiences, any of which may
 * prefix a scope (Entra writes `{resource}/patient/Observation.read`).
 */
export function parseSmartScopes(
  scopes: readonly string[],
  opts: { readonly audiences: readonly string[] },
): { ok: true; scopeSet: SmartScopeSet } | { ok: false; scope: string; problem: string } {
  if (scopes.length > MAX_SCOPES) return { ok: false, scope: '', problem: `the token holds more than ${MAX_SCOPES} scopes` };
  const prefixes = opts.audiences
    .map((a) => a.replace(/\/+$/, ''))
    .filter((a) => a !== '')
    .map((a) => `${a}/`);
  const parsed: SmartScope[] = [];
  const ignored: string[] = [];
  let context: SmartContextKind | undefined;
  let version: 1 | 2 | undefined;
  let first = '';
  for (const raw of scopes) {
    const one = parseOne(raw, prefixes);
    if (one.kind === 'error') return { ok: false, scope: raw, problem: one.problem };
    if (one.kind === 'ignored') {
      ignored.push(raw);
      continue;
    }
    if (context === undefined) {
      context = one.context;
      version = one.version;
      first = raw;
    } else if (one.context !== context) {
      return {
        ok: false,
        scope: raw,
        problem: `scope '${show(raw)}' is a ${one.context}/ scope but '${show(first)}' is a ${context}/ scope; one token may not mix patient/, user/ and system/ scopes`,
      };
    } else if (one.version !== version) {
      return {
        ok: false,
        scope: raw,
        problem: `scope '${show(raw)}' uses SMART v${one.version} syntax but '${show(first)}' uses v${version}; one token may not mix v1 (.read/.write/.*) and v2 (.cruds) scopes`,
      };
    }
    parsed.push(one.scope);
  }
  const scopeSet: SmartScopeSet =
    context === undefined ? { scopes: parsed, ignored } : { context, version: version!, scopes: parsed, ignored };
  return { ok: true, scopeSet };
}

function parseOne(raw: string, audiencePrefixes: readonly string[]): ParsedOne {
  const q = raw.indexOf('?');
  const head = q === -1 ? raw : raw.slice(0, q);
  const query = q === -1 ? undefined : raw.slice(q + 1);

  // Entra's spellings (`patient.Observation.read`, `patient%2FObservation.read`, `patient.all.read`,
  // `{audience}/patient$Observation.all` ...) are read into the SMART grammar (scope-spellings.ts).
  const spelling = readScopeSpelling(head, audiencePrefixes);
  if (spelling.kind === 'ignored') return spelling;
  if (spelling.kind === 'error') return err(raw, spelling.problem);
  const { context, resourceType, permission } = spelling;
  if (resourceType !== '*' && !RESOURCE_TYPE.test(resourceType)) {
    return err(raw, `names '${show(resourceType)}', which is not a FHIR resource type or *`);
  }

  let version: 1 | 2;
  let interactions: readonly SmartInteraction[];
  const v1 = V1_MEANING[permission];
  if (Object.hasOwn(V1_MEANING, permission) && v1) {
    version = 1;
    interactions = v1;
  } else if (/^[a-z]+$/.test(permission) && [...permission].every((c) => V2_LETTERS.includes(c))) {
    const seen = new Set<string>();
    let last = -1;
    for (const c of permission) {
      if (seen.has(c)) return err(raw, `repeats the letter ${c}`);
      seen.add(c);
      const at = V2_LETTERS.indexOf(c);
      // SMART 2.x: the permission letters appear in the order c, r, u, d, s.
      if (at < last) return err(raw, `has its letters out of order: SMART v2 requires the order c, r, u, d, s`);
      last = at;
    }
    version = 2;
    interactions = [...permission].map((c) => V2_MEANING[c]!);
  } else {
    return err(raw, `has the permission '${show(permission)}': expected read, write, * (v1) or letters from cruds in that order (v2)`);
  }

  let constraints: ReadonlyMap<string, readonly string[]> = new Map();
  if (query !== undefined) {
    const parsedQuery = parseConstraints(query);
    if (!parsedQuery.ok) return err(raw, parsedQuery.problem);
    constraints = parsedQuery.constraints;
  }
  return {
    kind: 'scope',
    context,
    version,
    scope: { scope: raw, resourceType, interactions: new Set(interactions), constraints },
  };
}

function parseConstraints(
  query: string,
): { ok: true; constraints: ReadonlyMap<string, readonly string[]> } | { ok: false; problem: string } {
  if (query === '') return { ok: false, problem: 'has an empty constraint after ?' };
  const constraints = new Map<string, readonly string[]>();
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    if (eq <= 0) return { ok: false, problem: `has the constraint '${show(pair)}', which is not param=value` };
    const name = pair.slice(0, eq);
    const rawValue = pair.slice(eq + 1);
    if (name.includes('.')) return { ok: false, problem: `constrains by the chained parameter '${show(name)}', which cannot be checked` };
    if (name.includes(':')) return { ok: false, problem: `constrains by '${show(name)}', which uses a search modifier` };
    if (name === '_include' || name === '_revinclude') return { ok: false, problem: `constrains by ${name}, which reaches other resources` };
    // fhir-server: "anything with a missing '=' or an extra '=' ... is malformed and must be rejected".
    if (rawValue.includes('=')) return { ok: false, problem: `has a second = in the constraint '${show(pair)}'` };
    if (!PARAM_NAME.test(name)) return { ok: false, problem: `has the constraint parameter '${show(name)}', which is not a search parameter name` };
    if (name.startsWith('_') && !FILTERING_UNDERSCORE_PARAMS.has(name)) {
      return { ok: false, problem: `constrains by ${name}, which does not filter resources` };
    }
    if (constraints.has(name)) return { ok: false, problem: `constrains ${name} twice` };
    let value: string;
    try {
      value = decodeURIComponent(rawValue.replace(/\+/g, ' '));
    } catch {
      return { ok: false, problem: `has a badly percent-encoded value for ${name}` };
    }
    const values = splitOr(value);
    if (values.length === 0 || values.some((v) => v === '')) return { ok: false, problem: `has an empty value for ${name}` };
    constraints.set(name, values);
  }
  return { ok: true, constraints };
}

/** FHIR search: a comma separates OR'd values; `\,` is a literal comma. */
function splitOr(value: string): string[] {
  const out: string[] = [];
  let current = '';
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (c === '\\' && i + 1 < value.length) {
      current += c + value[i + 1]!;
      i++;
    } else if (c === ',') {
      out.push(current);
      current = '';
    } else current += c;
  }
  out.push(current);
  return out;
}

function err(raw: string, problem: string): ParsedOne {
  return { kind: 'error', problem: `scope '${show(raw)}' ${problem}` };
}

/** Bounded echo of token content for hints. */
function show(s: string): string {
  return s.length > 100 ? `${s.slice(0, 100)}…` : s;
}

// ---------------------------------------------------------------------------------------------
// Patient context

const FHIR_USER_PATIENT = /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})$/;

/**
 * The patient in context: the SMART `patient` launch-context claim, or the `fhirUser` claim when it
 * references a Patient (`Patient/123` or an absolute URL ending in `/Patient/123`). Both present
 * and different is a problem: the token does not say whose data it is for.
 */
export function patientContextFrom(claims: {
  readonly patient?: unknown;
  readonly fhirUser?: unknown;
}): { ok: true; patient?: string } | { ok: false; problem: string } {
  let fromClaim: string | undefined;
  if (claims.patient !== undefined) {
    if (typeof claims.patient !== 'string') return { ok: false, problem: 'the patient claim is not a string' };
    const id = claims.patient.startsWith('Patient/') ? claims.patient.slice('Patient/'.length) : claims.patient;
    if (!FHIR_ID.test(id)) return { ok: false, problem: 'the patient claim is not a FHIR id' };
    fromClaim = id;
  }
  let fromFhirUser: string | undefined;
  if (claims.fhirUser !== undefined) {
    if (typeof claims.fhirUser !== 'string') return { ok: false, problem: 'the fhirUser claim is not a string' };
    fromFhirUser = FHIR_USER_PATIENT.exec(claims.fhirUser)?.[1];
  }
  if (fromClaim !== undefined && fromFhirUser !== undefined && fromClaim !== fromFhirUser) {
    return { ok: false, problem: `the patient claim (${fromClaim}) and fhirUser (Patient/${fromFhirUser}) name different patients` };
  }
  const patient = fromClaim ?? fromFhirUser;
  return patient === undefined ? { ok: true } : { ok: true, patient };
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/**
 * Types that have a `patient` search parameter referencing Patient and are in the Patient
 * compartment (FHIR R4 4.0.1 search parameters and CompartmentDefinition/patient). Only on these
 * does `patient={ctx}` prove a search stays in the compartment: a server with lenient handling
 * (the FHIR default) ignores an unknown parameter and would return everything.
 */
const TYPES_WITH_PATIENT_PARAM: ReadonlySet<string> = new Set(
  (
    'Account AllergyIntolerance Appointment AppointmentResponse AuditEvent Basic BodyStructure CarePlan CareTeam ' +
    'ChargeItem Claim ClaimResponse ClinicalImpression Communication CommunicationRequest Composition Condition Consent ' +
    'Coverage CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue DeviceRequest DeviceUseStatement ' +
    'DiagnosticReport DocumentManifest DocumentReference Encounter EnrollmentRequest EpisodeOfCare ExplanationOfBenefit ' +
    'FamilyMemberHistory Flag Goal ImagingStudy Immunization ImmunizationEvaluation ImmunizationRecommendation Invoice ' +
    'List MeasureReport Media MedicationAdministration MedicationDispense MedicationRequest MedicationStatement ' +
    'MolecularSequence NutritionOrder Observation Person Procedure Provenance QuestionnaireResponse RelatedPerson ' +
    'RequestGroup ResearchSubject RiskAssessment ServiceRequest Specimen SupplyDelivery Task VisionPrescription'
  ).split(' '),
);

/** As above for a `subject` parameter that may reference a Patient (value must then be `Patient/{id}`). */
const TYPES_WITH_SUBJECT_PARAM: ReadonlySet<string> = new Set(
  (
    'Account AdverseEvent Basic CarePlan CareTeam ChargeItem ClinicalImpression Communication CommunicationRequest ' +
    'Composition Condition DeviceRequest DeviceUseStatement DiagnosticReport DocumentManifest DocumentReference ' +
    'Encounter EnrollmentRequest Flag Goal ImagingStudy Invoice List MeasureReport Media MedicationAdministration ' +
    'MedicationDispense MedicationRequest MedicationStatement Observation Procedure QuestionnaireResponse RequestGroup ' +
    'RiskAssessment ServiceRequest Specimen SupplyRequest Task'
  ).split(' '),
);

const TERMINOLOGY_TYPES: ReadonlySet<string> = new Set(['CodeSystem', 'ValueSet', 'ConceptMap']);
const TERMINOLOGY_OPERATIONS: ReadonlySet<string> = new Set(['$expand', '$lookup', '$validate-code', '$translate', '$subsumes']);

const WRITE_INTERACTIONS: ReadonlySet<Interaction> = new Set<Interaction>([
  'create',
  'update',
  'patch',
  'delete',
  'conditional-update',
  'conditional-patch',
  'conditional-delete',
]);
const WRITE_EXTRAS: readonly DataAction[] = ['hardDelete', 'searchParameter', 'editProfileDefinitions'];

const INTERACTION_WORD: Readonly<Record<SmartInteraction, string>> = {
  create: 'create',
  readById: 'read',
  update: 'update',
  delete: 'delete',
  search: 'search',
};

interface Need {
  /** A resource type, or `*`: only a `*` scope covers it. */
  readonly type: string;
  readonly interaction: SmartInteraction;
  /** Whether the request's query is a search on `type`, so a scope constraint can be checked on it. */
  readonly queryChecks: boolean;
  /** Whether the scopes that cover it define the verdict's actions. */
  readonly primary: boolean;
  /** Extra words for a refusal hint (why this need exists). */
  readonly because?: string;
  /** A GET type-level search whose query a gateway may extend with a scope's constraint (narrowing). */
  readonly narrowable?: boolean;
}

type Compartment =
  | { readonly kind: 'inside' }
  | { readonly kind: 'unprovable'; readonly why: string; readonly narrowBy?: CompartmentNarrowing; readonly lookup?: CompartmentQuestion }
  | { readonly kind: 'outside'; readonly why: string };

/** The parameter that puts a GET type-level search inside the compartment, and the values of it that already do. */
interface CompartmentNarrowing {
  readonly addition: QueryAddition;
  readonly accepts: (value: string) => boolean;
}

interface Plan {
  readonly needs: readonly Need[];
  /** Only for patient/ scopes. */
  readonly compartment?: Compartment;
  /** Fixed actions instead of those of the covering scopes ($export). */
  readonly fixedActions?: readonly DataAction[];
}

type Refused = { readonly ok: false; readonly reason: 'insufficient_scope'; readonly hint: string };
const refused = (hint: string): Refused => ({ ok: false, reason: 'insufficient_scope', hint });

export interface ScopeEvaluationInput {
  readonly scopeSet: SmartScopeSet;
  readonly request: FhirRequest;
  /** The patient id in context (patientContextFrom), required by patient/ scopes. */
  readonly patientContext?: string;
  /** True for a client-credentials (app-only) token; system/ scopes are valid only then. */
  readonly isAppToken: boolean;
  readonly compartmentMode: 'refuse' | 'delegate';
  /**
   * The asking gateway appends a verdict's `queryAppend` to the request (smartNarrowing): a GET
   * type-level search refused only for lacking the compartment's patient parameter or a scope's
   * constraint is then allowed with those parameters to add.
   */
  readonly narrow?: boolean;
  /** Whether a read by id the URL cannot place may be proven by asking the FHIR server (compartmentLookup). */
  readonly compartmentLookup?: boolean;
}

/** What the token's SMART scopes allow for this request (to be intersected with the principal's rights). */
export function evaluateScopes(input: ScopeEvaluationInput): ScopeVerdict {
  const { scopeSet, request, compartmentMode } = input;
  // The capability statement describes the server, not data; SMART discovery needs it.
  if (request.interaction === 'capabilities' || request.interaction === 'smart-configuration') return { ok: true, actions: new Set(ALL_BUT_SMART) };

  if (scopeSet.context === undefined || scopeSet.scopes.length === 0) {
    const seen = scopeSet.ignored.length === 0 ? '' : ` (it carries only ${list(scopeSet.ignored)})`;
    return refused(`the token carries no patient/, user/ or system/ resource scope${seen}`);
  }
  const context = scopeSet.context;
  if (context === 'system' && !input.isAppToken) {
    // SMART Backend Services: system/ scopes are for a client acting on its own behalf.
    return refused(`system/ scopes (${list(scopeSet.scopes.map((s) => s.scope))}) are only valid in an app (client credentials) token, and this token has a user`);
  }
  const patient = context === 'patient' ? input.patientContext : undefined;
  if (context === 'patient' && (patient === undefined || patient === '')) {
    // SMART App Launch: "When granting a patient-level scope ... the server SHALL provide a patient launch context".
    return refused('patient/ scopes need a patient context: the token has neither a patient claim nor a Patient fhirUser');
  }
  if (request.interaction === 'batch') {
    return refused('a batch or transaction bundle is decided entry by entry: ask about each entry as its own request');
  }

  const plan = planFor(request, context, patient, input.compartmentLookup === true);
  if ('hint' in plan) return plan;

  const narrow = input.narrow === true;
  const used = new Set<SmartScope>();
  let additions: QueryAddition[] | undefined;
  for (const need of plan.needs) {
    const covered = cover(scopeSet.scopes, need, request, narrow);
    if (!covered.ok) return covered;
    if (need.primary) for (const s of covered.scopes) used.add(s);
    if (covered.additions) (additions ??= []).push(...covered.additions);
  }

  let delegateCompartment: string | undefined;
  let lookupCompartment: CompartmentQuestion | undefined;
  const compartment = plan.compartment;
  if (compartment && compartment.kind === 'outside') return refused(compartment.why);
  // Narrowing into the compartment: the proving parameter, appended where the client does not use
  // it; a client that names it otherwise (a modifier, a list of ids) is decided as without narrowing.
  const intoCompartment =
    narrow && compartment?.kind === 'unprovable' && compartment.narrowBy && paramUse(request.query, compartment.narrowBy.addition.param, compartment.narrowBy.accepts) === 'absent'
      ? compartment.narrowBy.addition
      : undefined;
  if (intoCompartment) (additions ??= []).unshift(intoCompartment);
  // Proven by the FHIR server beats delegated to it: with a lookup configured, a read by id is
  // allowed only when the server finds the resource in the compartment.
  else if (compartment && compartment.kind === 'unprovable' && compartment.lookup) lookupCompartment = compartment.lookup;
  else if (compartment && compartment.kind === 'unprovable') {
    if (compartmentMode !== 'delegate') {
      return refused(
        `${compartment.why}, so it cannot be proven to stay in the compartment of Patient/${patient}; ` +
          `with compartmentMode 'delegate' it is allowed and the compartment is sent for the FHIR server to enforce`,
      );
    }
    delegateCompartment = `Patient/${patient}`;
  }

  let actions: Set<DataAction>;
  if (plan.fixedActions) actions = new Set(plan.fixedActions);
  else {
    const interactions = new Set<SmartInteraction>();
    for (const s of used) for (const i of s.interactions) interactions.add(i);
    actions = dataActionsFor(interactions);
    if (WRITE_INTERACTIONS.has(request.interaction)) for (const a of WRITE_EXTRAS) actions.add(a);
  }
  if (additions) {
    const queryAppend = encodeQueryAppend(additions);
    if (queryAppend.length > MAX_QUERY_APPEND) {
      return refused(`narrowing this search would append ${queryAppend.length} characters to its query, more than the ${MAX_QUERY_APPEND} a gateway is offered; search with ${queryAppend.slice(0, 100)}…`);
    }
    return {
      ok: true,
      actions,
      queryAppend,
      ...(delegateCompartment === undefined ? {} : { delegateCompartment }),
      ...(lookupCompartment === undefined ? {} : { lookupCompartment }),
    };
  }
  if (lookupCompartment) return { ok: true, actions, lookupCompartment };
  return { ok: true, actions, ...(delegateCompartment === undefined ? {} : { delegateCompartment }) };
}

/** SMART interactions as data actions: each by its name, plus `read` (readById + search) and `write` (create + update). */
export function dataActionsFor(interactions: ReadonlySet<SmartInteraction>): Set<DataAction> {
  const out = new Set<DataAction>(interactions);
  if (interactions.has('readById') && interactions.has('search')) out.add('read');
  if (interactions.has('create') && interactions.has('update')) out.add('write');
  return out;
}

/**
 * The principal's data actions narrowed by the scope verdict's actions. Coarse actions are first
 * expanded (read = readById + search, write = create + update) so that a principal granted `read`
 * and a scope allowing only `search` meet at `search`; the coarse action is kept where both of its
 * halves survive.
 */
export function intersectScopeActions(granted: ReadonlySet<DataAction>, allowed: ReadonlySet<DataAction>): Set<DataAction> {
  const expand = (set: ReadonlySet<DataAction>): Set<DataAction> => {
    const out = new Set(set);
    if (set.has('read')) out.add('readById').add('search');
    if (set.has('write')) out.add('create').add('update');
    return out;
  };
  const a = expand(granted);
  const b = expand(allowed);
  const out = new Set<DataAction>([...a].filter((x) => b.has(x) && x !== 'read' && x !== 'write'));
  if (out.has('readById') && out.has('search')) out.add('read');
  if (out.has('create') && out.has('update')) out.add('write');
  return out;
}

/** `lookup`: whether compartmentLookup is configured (the question is made only then). */
function planFor(request: FhirRequest, context: SmartContextKind, patient: string | undefined, lookup: boolean): Plan | Refused {
  const type = request.resourceType;
  const id = request.id;
  const needType = (): string | Refused => (type === undefined ? refused('the request names no resource type') : type);

  switch (request.interaction) {
    case 'read':
    case 'vread':
    case 'history-instance': {
      const t = needType();
      if (typeof t !== 'string') return t;
      const compartment = instanceCompartment(patient, t, id, `a read by id of ${t}`);
      // A history lists every version, and an earlier one may have been in another compartment: only
      // read and vread are put to the FHIR server (the lookup finds the current version).
      const question = lookup && request.interaction !== 'history-instance' && compartment.kind === 'unprovable' ? compartmentQuestion(t, id, patient) : undefined;
      return {
        needs: [{ type: t, interaction: 'readById', queryChecks: false, primary: true }],
        ...compartmentOf(patient, question && compartment.kind === 'unprovable' ? { ...compartment, lookup: question } : compartment),
      };
    }
    case 'search-type':
    case 'search-compartment':
    case 'search-system':
      return planSearch(request, patient);
    case 'history-type': {
      const t = needType();
      if (typeof t !== 'string') return t;
      return {
        needs: [{ type: t, interaction: 'search', queryChecks: false, primary: true }],
        ...compartmentOf(patient, { kind: 'unprovable', why: `the history of every ${t}` }),
      };
    }
    case 'history-system':
      return {
        needs: [{ type: '*', interaction: 'search', queryChecks: false, primary: true }],
        ...compartmentOf(patient, { kind: 'unprovable', why: 'the history of the whole server' }),
      };
    case 'create': {
      const t = needType();
      if (typeof t !== 'string') return t;
      return {
        needs: [{ type: t, interaction: 'create', queryChecks: false, primary: true }],
        ...compartmentOf(patient, { kind: 'unprovable', why: `a create of ${t} names its patient in the body` }),
      };
    }
    case 'update':
    case 'patch':
    case 'delete': {
      const t = needType();
      if (typeof t !== 'string') return t;
      const interaction: SmartInteraction = request.interaction === 'delete' ? 'delete' : 'update';
      return {
        needs: [{ type: t, interaction, queryChecks: false, primary: true }],
        ...compartmentOf(patient, instanceCompartment(patient, t, id, `a ${request.interaction} of ${t} by id`)),
      };
    }
    case 'conditional-update':
    case 'conditional-patch':
    case 'conditional-delete': {
      const t = needType();
      if (typeof t !== 'string') return t;
      const interaction: SmartInteraction = request.interaction === 'conditional-delete' ? 'delete' : 'update';
      // A conditional write first searches for its target.
      return {
        needs: [
          { type: t, interaction, queryChecks: false, primary: true },
          { type: t, interaction: 'search', queryChecks: true, primary: true, because: `a ${request.interaction} searches first` },
        ],
        ...compartmentOf(patient, { kind: 'unprovable', why: `a ${request.interaction} of ${t} finds its target by a search` }),
      };
    }
    case 'export-status':
    case 'export-file':
      return exportJobPlan(`${request.method} ${show(request.path)}`, context);
    case 'operation':
      return planOperation(request, context, patient);
    default:
      return refused(`the request (${request.method} ${show(request.path)}) is not a FHIR interaction that SMART scopes cover`);
  }
}

function compartmentOf(patient: string | undefined, compartment: Compartment): { compartment?: Compartment } {
  return patient === undefined ? {} : { compartment };
}

/**
 * The lookup question for a read by id of `type`: the type's search parameter that references the
 * patient (`patient`, else `subject` with a Patient reference), the ones searchCompartment accepts
 * as proof. A type with neither cannot be asked about.
 */
function compartmentQuestion(type: string, id: string | undefined, patient: string | undefined): CompartmentQuestion | undefined {
  if (id === undefined || patient === undefined || !FHIR_ID.test(id)) return undefined;
  const parameter = TYPES_WITH_PATIENT_PARAM.has(type) ? 'patient' : TYPES_WITH_SUBJECT_PARAM.has(type) ? 'subject' : undefined;
  return parameter ? { resourceType: type, id, parameter, patient } : undefined;
}

function instanceCompartment(patient: string | undefined, type: string, id: string | undefined, what: string): Compartment {
  if (type === 'Patient' && id !== undefined) {
    return id === patient ? { kind: 'inside' } : { kind: 'outside', why: `Patient/${id} is not the patient in context (Patient/${patient})` };
  }
  return { kind: 'unprovable', why: what };
}

function planSearch(request: FhirRequest, patient: string | undefined): Plan | Refused {
  const needs: Need[] = [];
  let compartment: Compartment;
  if (request.interaction === 'search-system') {
    const types = typeList(request.query, '_type');
    if (typeof types === 'string') return refused(types);
    for (const t of types ?? ['*']) needs.push({ type: t, interaction: 'search', queryChecks: true, primary: true });
    compartment = { kind: 'unprovable', why: 'a search across resource types' };
  } else if (request.interaction === 'search-compartment') {
    const c = request.compartment;
    if (!c) return refused('the compartment search names no compartment');
    needs.push({ type: c.targetType, interaction: 'search', queryChecks: true, primary: true });
    if (c.type === 'Patient') {
      compartment =
        c.id === patient ? { kind: 'inside' } : { kind: 'outside', why: `the compartment of Patient/${c.id} is not that of the patient in context (Patient/${patient})` };
    } else compartment = { kind: 'unprovable', why: `a search in the compartment of ${c.type}/${c.id}` };
  } else {
    const t = request.resourceType;
    if (t === undefined) return refused('the request names no resource type');
    // Only a GET (or HEAD) type-level search can be narrowed: a POST search's parameters are in a
    // body the gateway does not rewrite, and other interactions are not searches of their own.
    const narrowable = request.method === 'GET' || request.method === 'HEAD';
    needs.push({ type: t, interaction: 'search', queryChecks: true, primary: true, narrowable });
    compartment = searchCompartment(t, request.query, patient, narrowable);
  }

  const reach = reachingParameters(request.query);
  if (patient !== undefined) {
    // The issue's rule: under a patient scope, parameters that pull in or filter by other resources
    // cannot be proven to stay in the compartment, and are refused whatever compartmentMode says.
    if (reach.length > 0) {
      return refused(`${reach[0]!.param} reaches beyond the resources searched, which patient/ scopes do not allow (Patient/${patient})`);
    }
  } else {
    for (const r of reach) needs.push({ type: r.type, interaction: r.interaction, queryChecks: false, primary: false, because: `for ${r.param}` });
  }
  if (request.method === 'POST') {
    // A POST search carries its parameters in the body, which the PDP does not see: any of them
    // could be an _include or a chain.
    if (patient !== undefined) {
      if (compartment.kind === 'outside') return refused(compartment.why);
      return refused(`a POST search carries its parameters in a form body fhir-pdp does not see, and under patient/ scopes _include, _revinclude, chains and _has must be ruled out (Patient/${patient}); search with GET and the parameters in the query`);
    } else {
      needs.push({ type: '*', interaction: 'search', queryChecks: false, primary: false, because: 'because a POST search may carry _include or chained parameters in its body (use GET)' });
    }
  }
  return patient === undefined ? { needs } : { needs, compartment };
}

/** Whether a type-level search's query proves, disproves or leaves open that it stays in the patient's compartment. */
function searchCompartment(type: string, query: FhirRequest['query'], patient: string | undefined, narrowable = false): Compartment {
  let outside: string | undefined;
  for (const [name, value] of query) {
    if (value.includes(',')) continue;
    let named: string | undefined;
    if (type === 'Patient' && name === '_id') named = value;
    else if (name === 'patient' && TYPES_WITH_PATIENT_PARAM.has(type)) {
      named = value.startsWith('Patient/') ? value.slice('Patient/'.length) : value;
    } else if (name === 'subject' && TYPES_WITH_SUBJECT_PARAM.has(type)) {
      // subject may reference other types, so only an explicit Patient reference is proof.
      if (value.startsWith('Patient/')) named = value.slice('Patient/'.length);
    }
    if (named === undefined) continue;
    // Repeated parameters are ANDed: one that names the patient in context is enough.
    if (named === patient) return { kind: 'inside' };
    outside ??= `${name}=${show(value)} names another patient than the one in context (Patient/${patient})`;
  }
  if (outside) return { kind: 'outside', why: outside };
  const how =
    type === 'Patient'
      ? `_id=${patient}`
      : TYPES_WITH_PATIENT_PARAM.has(type)
        ? `patient=${patient}`
        : TYPES_WITH_SUBJECT_PARAM.has(type)
          ? `subject=Patient/${patient}`
          : undefined;
  const why = how ? `a search of ${type} without ${how}` : `a search of ${type}, which has no patient search parameter in the FHIR R4 Patient compartment`;
  const narrowBy = narrowable && patient !== undefined ? compartmentNarrowing(type, patient) : undefined;
  return narrowBy ? { kind: 'unprovable', why, narrowBy } : { kind: 'unprovable', why };
}

/**
 * The parameter that the search would need to prove the compartment (the same ones
 * searchCompartment accepts as proof), to append: `_id` on Patient, `patient` where the type has
 * it, else `subject` with a Patient reference.
 */
function compartmentNarrowing(type: string, patient: string): CompartmentNarrowing | undefined {
  const reference = `Patient/${patient}`;
  if (type === 'Patient') return { addition: { param: '_id', values: [patient] }, accepts: (v) => v === patient };
  if (TYPES_WITH_PATIENT_PARAM.has(type)) return { addition: { param: 'patient', values: [reference] }, accepts: (v) => v === reference || v === patient };
  if (TYPES_WITH_SUBJECT_PARAM.has(type)) return { addition: { param: 'subject', values: [reference] }, accepts: (v) => v === reference };
  return undefined;
}

interface Reach {
  readonly param: string;
  readonly type: string;
  readonly interaction: SmartInteraction;
}

const OUT_OF_COMPARTMENT_PARAMS: ReadonlySet<string> = new Set(['_contained', '_containedType', '_query', '_filter']);

/** _include, _revinclude, chained parameters, _has, _contained, _query and _filter: they return or filter by other resources. */
function reachingParameters(query: FhirRequest['query']): Reach[] {
  const out: Reach[] = [];
  for (const [name, value] of query) {
    const base = name.split(':')[0]!;
    if (base === '_include' || base === '_revinclude') {
      // Value: SourceType:searchParam[:TargetType], or *.
      const parts = value.split(':');
      if (base === '_include') {
        const target = parts.length === 3 && RESOURCE_TYPE.test(parts[2]!) ? parts[2]! : '*';
        out.push({ param: `${name}=${show(value)}`, type: target, interaction: 'readById' });
      } else {
        const source = parts.length >= 2 && RESOURCE_TYPE.test(parts[0]!) ? parts[0]! : '*';
        out.push({ param: `${name}=${show(value)}`, type: source, interaction: 'search' });
      }
    } else if (base === '_has') {
      // _has:Type:reference:param — a nested _has or a chain inside reaches types not named here.
      const parts = name.split(':');
      const typed = parts.length === 4 && RESOURCE_TYPE.test(parts[1]!) && !parts[3]!.includes('.');
      out.push({ param: show(name), type: typed ? parts[1]! : '*', interaction: 'search' });
    } else if (OUT_OF_COMPARTMENT_PARAMS.has(base) && !(base === '_contained' && value === 'false')) {
      // _contained searches (and returns) resources contained in others, _containedType shapes what
      // it returns, and _query and _filter can express any search, chains and _has included, in a
      // value: none can be shown to stay in the resources searched. `_contained=false` is the
      // default behaviour (FHIR R4 search.html#contained) and reaches nothing.
      out.push({ param: `${name}=${show(value)}`, type: '*', interaction: 'search' });
    } else if (name.includes('.')) {
      // subject:Patient.name names the type; subject.name or a longer chain does not.
      const m = /^[^.:]+:([A-Z][A-Za-z]*)\.[^.]+$/.exec(name);
      out.push({ param: show(name), type: m ? m[1]! : '*', interaction: 'search' });
    }
  }
  return out;
}

/** Resource types listed in a `_type`-like parameter; undefined when absent; a string on a bad value. */
function typeList(query: FhirRequest['query'], param: string): string[] | undefined | string {
  const types: string[] = [];
  let present = false;
  for (const [name, value] of query) {
    if (name !== param) continue;
    present = true;
    for (const t of value.split(',')) {
      if (!RESOURCE_TYPE.test(t)) return `${param} lists '${show(t)}', which is not a resource type`;
      if (!types.includes(t)) types.push(t);
    }
  }
  return present ? types : undefined;
}

function readOf(type: string, because?: string): Need[] {
  return [
    { type, interaction: 'readById', queryChecks: false, primary: true, ...(because ? { because } : {}) },
    { type, interaction: 'search', queryChecks: false, primary: true, ...(because ? { because } : {}) },
  ];
}

/**
 * A Bulk Data status or output file request. Its URL names a job, not the exported types, which
 * the kick-off's scopes were checked against; which jobs the caller may see, the server decides
 * (404 for the others). So: the context a kick-off can have (never patient/), and `export`.
 */
function exportJobPlan(where: string, context: SmartContextKind): Plan | Refused {
  if (context === 'patient') return refused(`${where} belongs to a bulk export, which patient/ scopes do not allow`);
  return { needs: [], fixedActions: ['export'] };
}

function planOperation(request: FhirRequest, context: SmartContextKind, patient: string | undefined): Plan | Refused {
  const op = request.operation ?? '';
  const type = request.resourceType;
  const id = request.id;
  const where = type === undefined ? op : id === undefined ? `${type}/${op}` : `${type}/${id}/${op}`;

  if (op === '$export') {
    if (context === 'patient') return refused(`${where} exports more than one patient's data, which patient/ scopes do not allow`);
    const types = typeList(request.query, '_type');
    if (typeof types === 'string') return refused(types);
    const exported = (types ?? ['*']).flatMap((t) => readOf(t, `for ${where}`));
    // SMART Backend Services / Bulk Data: system-level export is for backend (system/) clients;
    // Patient/$export and Group/[id]/$export also need read of Patient or Group.
    if (type === undefined) {
      if (context !== 'system') return refused(`${where} at system level needs system/ scopes, and this token has ${context}/ scopes`);
      return { needs: exported, fixedActions: ['export'] };
    }
    if (type === 'Patient' && id === undefined) return { needs: [...readOf('Patient'), ...exported], fixedActions: ['export'] };
    if (type === 'Group' && id !== undefined) return { needs: [...readOf('Group'), ...exported], fixedActions: ['export'] };
    return refused(`${where} is not a bulk export: $export is defined at system level, on Patient and on Group/[id]`);
  }

  if (op === '$export-poll-status' && type === undefined) return exportJobPlan(where, context);

  if (op === '$everything') {
    if (type !== 'Patient' || id === undefined) return refused(`${where}: $everything is allowed under SMART only on one Patient`);
    const types = typeList(request.query, '_type');
    if (typeof types === 'string') return refused(types);
    return {
      needs: (types ?? ['*']).flatMap((t) => readOf(t, `for ${where}`)),
      ...compartmentOf(patient, instanceCompartment(patient, type, id, where)),
    };
  }

  if (op === '$meta' && type !== undefined && id !== undefined) {
    return { needs: readOf(type), ...compartmentOf(patient, instanceCompartment(patient, type, id, `${where}`)) };
  }

  if ((op === '$lastn' || op === '$stats') && type === 'Observation' && id === undefined) {
    const reach = reachingParameters(request.query);
    if (patient !== undefined && reach.length > 0) {
      return refused(`${reach[0]!.param} reaches beyond the resources searched, which patient/ scopes do not allow`);
    }
    if (request.method === 'POST' && patient !== undefined) {
      return refused(`${where} by POST carries its parameters in a body fhir-pdp does not see, which under patient/ scopes could reach beyond the compartment of Patient/${patient}; use GET with the parameters in the query`);
    }
    const compartment = searchCompartment(type, request.query, patient);
    const needs: Need[] = [
      { type, interaction: 'readById', queryChecks: false, primary: true },
      { type, interaction: 'search', queryChecks: true, primary: true },
    ];
    for (const r of reach) needs.push({ type: r.type, interaction: r.interaction, queryChecks: false, primary: false, because: `for ${r.param}` });
    if (request.method === 'POST' && patient === undefined) {
      needs.push({ type: '*', interaction: 'search', queryChecks: false, primary: false, because: `because ${where} by POST may carry _include or chained parameters in its body (use GET)` });
    }
    return { needs, ...compartmentOf(patient, compartment) };
  }

  if (TERMINOLOGY_OPERATIONS.has(op) && type !== undefined && TERMINOLOGY_TYPES.has(type)) {
    return { needs: readOf(type), ...compartmentOf(patient, { kind: 'unprovable', why: `${where} reads terminology` }) };
  }

  return refused(
    `${where} is not allowed under SMART scopes: only $export, $export-poll-status, $everything (Patient), $meta (instance), ` +
      `$lastn and $stats (Observation) and ${[...TERMINOLOGY_OPERATIONS].join(', ')} (CodeSystem, ValueSet, ConceptMap) are`,
  );
}

type Covered = { readonly ok: true; readonly scopes: readonly SmartScope[]; readonly additions?: readonly QueryAddition[] } | Refused;

/**
 * The scopes that cover one need, their constraints proven from the URL (or, when `narrow` and the
 * need is narrowable, added to it), else a refusal.
 */
function cover(scopes: readonly SmartScope[], need: Need, request: FhirRequest, narrow: boolean): Covered {
  const onType = scopes.filter((s) => s.resourceType === '*' || (need.type !== '*' && s.resourceType === need.type));
  const candidates = onType.filter((s) => s.interactions.has(need.interaction));
  const what = `${INTERACTION_WORD[need.interaction]} on ${need.type === '*' ? 'all resource types (*)' : need.type}`;
  const because = need.because ? ` (${need.because})` : '';
  if (candidates.length === 0) {
    if (onType.length > 0) {
      const names = onType.map((s) => s.scope);
      return refused(`scope ${list(names)} ${names.length === 1 ? 'does' : 'do'} not allow ${what}${because}`);
    }
    return refused(`no scope allows ${what}${because}; the token's scopes are ${list(scopes.map((s) => s.scope))}`);
  }
  const proven = candidates.filter((s) => s.constraints.size === 0 || (need.queryChecks && constraintsHold(s.constraints, request.query)));
  if (proven.length > 0) return { ok: true, scopes: proven };
  let unnarrowed = '';
  if (narrow && need.narrowable) {
    const narrowed = narrowConstraints(candidates, request.query);
    if ('additions' in narrowed) return { ok: true, scopes: candidates, additions: narrowed.additions };
    unnarrowed = `; it cannot be narrowed instead: ${narrowed.why}`;
  }
  // A constraint the request does not prove is refused in every compartmentMode: nothing carries it
  // to the FHIR server yet, and allowing the request without it would widen the scope.
  const first = candidates[0]!;
  const required = [...first.constraints].map(([p, v]) => `${p}=${v.join(',')}`).join('&');
  const why = need.queryChecks
    ? `the request does not carry ${required}`
    : `${need.type === '*' ? 'this request' : `this ${INTERACTION_WORD[need.interaction]} of ${need.type}`} cannot show it from the URL`;
  return refused(
    `scope ${list(candidates.map((s) => s.scope))} ${candidates.length === 1 ? 'allows' : 'allow'} ${what} only with ${required}${candidates.length > 1 ? ' (or the other scopes\' constraints)' : ''}, and ${why}${because}; ` +
      `a constraint must be proven from the request's query (compartmentMode 'delegate' does not delegate constraints): search with ${required}${unnarrowed}`,
  );
}

/**
 * The parameters that, appended, make the search return exactly what the constrained scopes allow:
 * one scope's constraints (each parameter with its values), or several scopes on one parameter
 * each, whose union is that parameter with all their values ORed (`category=laboratory,vital-signs`).
 * Scopes constraining different parameters have a union no list of ANDed parameters expresses,
 * and a client that already uses a parameter otherwise than the scopes allow is not narrowed.
 */
function narrowConstraints(candidates: readonly SmartScope[], query: FhirRequest['query']): { additions: QueryAddition[] } | { why: string } {
  let wanted: ReadonlyMap<string, readonly string[]>;
  if (candidates.length === 1) wanted = candidates[0]!.constraints;
  else {
    const [param] = candidates[0]!.constraints.keys();
    if (param === undefined || candidates.some((s) => s.constraints.size !== 1 || !s.constraints.has(param))) {
      return { why: `the scopes ${list(candidates.map((s) => s.scope))} constrain different parameters, and their union is no one set of parameters` };
    }
    const values: string[] = [];
    for (const s of candidates) for (const v of s.constraints.get(param)!) if (!values.includes(v)) values.push(v);
    wanted = new Map([[param, values]]);
  }
  const additions: QueryAddition[] = [];
  for (const [param, values] of wanted) {
    const use = paramUse(query, param, (value) => {
      const parts = splitOr(value);
      return parts.length > 0 && parts.every((v) => v !== '' && values.includes(v));
    });
    if (use === 'conflict') return { why: `the request already uses ${param} otherwise than with ${values.join(',')}` };
    if (use === 'absent') additions.push({ param, values });
  }
  return { additions };
}

/**
 * A constraint holds when the request carries the parameter (no modifier) with values all allowed:
 * `category=laboratory` satisfies `?category=laboratory`; `category=laboratory,vital-signs` (OR)
 * does not. Repeated request parameters are ANDed, so one satisfying entry is enough.
 */
function constraintsHold(constraints: ReadonlyMap<string, readonly string[]>, query: FhirRequest['query']): boolean {
  for (const [param, allowed] of constraints) {
    const ok = query.some(([name, value]) => {
      if (name !== param) return false;
      const values = splitOr(value);
      return values.length > 0 && values.every((v) => v !== '' && allowed.includes(v));
    });
    if (!ok) return false;
  }
  return true;
}

function list(items: readonly string[]): string {
  const shown = items.slice(0, 3).map(show).join(', ');
  return items.length > 3 ? `${shown} and ${items.length - 3} more` : shown;
}
