/**
 * The policy core (pure: no I/O, no clock, no globals). Configuration is compiled once into maps
 * (STYLE §4); a decision looks up the principal's grants, unions them, narrows them by SMART
 * scopes where they apply, and checks the data action the FHIR request needs.
 */
import type { PdpConfig } from '../config/schema.js';
import { evaluateScopes, intersectScopeActions, parseSmartScopes, patientContextFrom } from '../fhir/scopes.js';
import type { FhirRequest } from '../fhir/types.js';
import type { CompartmentQuestion } from '../core/compartment-question.js';
import type { MembershipSource, Principal, SmartApplication } from '../core/principal.js';
import { expandDataActions, satisfies, type ActionRequirement, type DataAction } from '../core/data-actions.js';
import { refuse, type Refusal } from '../core/reasons.js';
import type { Trace } from '../core/trace.js';

export interface CompiledPolicy {
  /** objectId (user, group or service principal) -> granted actions. */
  readonly byObject: ReadonlyMap<string, ReadonlySet<DataAction>>;
  /** role name -> granted actions (a role's notDataActions already subtracted, inside that role only). */
  readonly byRole: ReadonlyMap<string, ReadonlySet<DataAction>>;
  /** Listed object ids, in configuration order (candidates for group membership). */
  readonly objectIds: readonly string[];
  /** True when some listed object id grants `smart`: membership can then narrow any decision. */
  readonly smartByObject: boolean;
  /** SMART application (per authority, by client id) -> allowedDataActions. */
  readonly smartApplications: ReadonlyMap<string, ReadonlyMap<string, ReadonlySet<DataAction>>>;
  /** SMART applications as configured (per authority, by client id), for matching a token to its application. */
  readonly applicationsByAuthority: ReadonlyMap<string, ReadonlyMap<string, SmartApplication>>;
  /** Audiences a token of each authority may carry: the primary's, and each SMART provider's applications'. */
  readonly audiencesByAuthority: ReadonlyMap<string, readonly string[]>;
  readonly compartmentMode: 'refuse' | 'delegate';
  /** Whether reads by id the URL cannot place are put to the FHIR server (compartmentLookup is configured). */
  readonly compartmentLookup: boolean;
  /** Audiences, for SMART scopes written with an `{aud}/` prefix (Entra). */
  readonly audiences: readonly string[];
}

export function compilePolicy(config: PdpConfig): CompiledPolicy {
  const byObject = new Map<string, ReadonlySet<DataAction>>();
  for (const p of config.accessPolicies) byObject.set(p.objectId, expandDataActions(p.dataActions ?? ['*']));
  const byRole = new Map<string, ReadonlySet<DataAction>>();
  for (const r of config.roles) {
    // Microsoft FHIR server semantics: notDataActions remove actions from this role's own
    // dataActions; they never take away what another role or policy grants.
    const granted = expandDataActions(r.dataActions);
    for (const a of expandDataActions(r.notDataActions)) granted.delete(a);
    if (r.notDataActions.includes('smart')) granted.delete('smart');
    byRole.set(r.name, granted);
  }
  const audiences = acceptedAudiences(config);
  const smartApplications = new Map<string, Map<string, ReadonlySet<DataAction>>>();
  const applicationsByAuthority = new Map<string, ReadonlyMap<string, SmartApplication>>();
  const audiencesByAuthority = new Map<string, readonly string[]>([[config.authority, audiences]]);
  for (const idp of config.smartIdentityProviders) {
    const apps = new Map<string, ReadonlySet<DataAction>>();
    for (const a of idp.applications) apps.set(a.clientId, expandDataActions(a.allowedDataActions));
    smartApplications.set(idp.authority, apps);
    applicationsByAuthority.set(idp.authority, new Map(idp.applications.map((a) => [a.clientId, a])));
    audiencesByAuthority.set(idp.authority, [...new Set(idp.applications.map((a) => a.audience))]);
  }
  return {
    byObject,
    byRole,
    objectIds: [...byObject.keys()],
    smartByObject: [...byObject.values()].some((actions) => actions.has('smart')),
    smartApplications,
    applicationsByAuthority,
    audiencesByAuthority,
    compartmentMode: config.compartmentMode,
    compartmentLookup: config.compartmentLookup !== undefined,
    audiences,
  };
}

/** `audience`, `audiences`, and `fhirBaseUrl` with and without its trailing slash. */
export function acceptedAudiences(config: Pick<PdpConfig, 'audience' | 'audiences' | 'fhirBaseUrl'>): string[] {
  const out = new Set<string>();
  if (config.audience) out.add(config.audience);
  for (const a of config.audiences) out.add(a);
  if (config.fhirBaseUrl) {
    const bare = config.fhirBaseUrl.replace(/\/+$/, '');
    out.add(bare);
    out.add(`${bare}/`);
  }
  return [...out];
}

export interface Grants {
  readonly actions: ReadonlySet<DataAction>;
  /** `actions` sorted, as an allowed decision reports them (made once with the grants). */
  readonly sorted?: readonly DataAction[];
  /** Where the grants came from, for hints: `oid`, `role globalReader`, `group <id>`. */
  readonly sources: readonly string[];
}

/** Grants through the principal's own object id and its roles; no group lookups. */
export function directGrants(principal: Principal, policy: CompiledPolicy): Grants {
  if (principal.kind === 'smart') {
    const actions = policy.smartApplications.get(principal.authority)?.get(principal.applicationId ?? '');
    return withSorted(actions ?? new Set(), actions ? [`application ${principal.applicationId}`] : []);
  }
  const actions = new Set<DataAction>();
  const sources: string[] = [];
  const own = principal.objectId ? policy.byObject.get(principal.objectId) : undefined;
  if (own) {
    own.forEach((a) => actions.add(a));
    sources.push(`oid ${principal.objectId}`);
  }
  for (const role of principal.roles) {
    const granted = policy.byRole.get(role);
    if (!granted) continue;
    granted.forEach((a) => actions.add(a));
    sources.push(`role ${role}`);
  }
  return withSorted(actions, sources);
}

function withSorted(actions: ReadonlySet<DataAction>, sources: readonly string[]): Grants {
  return { actions, sorted: Object.freeze([...actions].sort()), sources };
}

/** Adds the grants of the groups the principal belongs to. */
export function withGroupGrants(base: Grants, memberOf: ReadonlySet<string>, policy: CompiledPolicy): Grants {
  if (memberOf.size === 0) return base;
  const actions = new Set(base.actions);
  const sources = [...base.sources];
  for (const g of memberOf) {
    const granted = policy.byObject.get(g);
    if (!granted) continue;
    granted.forEach((a) => actions.add(a));
    sources.push(`group ${g}`);
  }
  return withSorted(actions, sources);
}

/** Object ids whose membership could add grants: every listed id but the principal's own (at most `limit`). */
export function groupCandidates(principal: Principal, policy: CompiledPolicy, limit = Infinity): string[] {
  if (principal.kind === 'smart') return [];
  const out: string[] = [];
  for (const id of policy.objectIds) {
    if (out.length >= limit) break;
    if (id !== principal.objectId) out.push(id);
  }
  return out;
}

/** How many listed ids membership could add grants through; O(1). */
export function groupCandidateCount(principal: Principal, policy: CompiledPolicy): number {
  if (principal.kind === 'smart') return 0;
  return policy.objectIds.length - (principal.objectId !== undefined && policy.byObject.has(principal.objectId) ? 1 : 0);
}

/**
 * Whether group membership can change this decision: when direct grants do not already satisfy
 * the request, or when a group could bring `smart` (which narrows: microsoft/fhir-server unions
 * every grant and then looks for Smart), and there are listed ids to be a member of.
 */
export function needsMembership(principal: Principal, request: FhirRequest, grants: Grants, policy: CompiledPolicy): boolean {
  if (principal.kind === 'smart') return false;
  if (satisfies(grants.actions, request.requires) && !grants.actions.has('smart') && !policy.smartByObject) return false;
  return groupCandidateCount(principal, policy) > 0;
}

export interface MembershipReport {
  readonly checked: number;
  /** A sample of the listed ids checked as groups (the hint names up to 10, then "…"). */
  readonly groupIds?: readonly string[];
  readonly source: MembershipSource | 'none';
  readonly detail?: string;
}

export interface AccessInput {
  readonly principal: Principal;
  readonly request: FhirRequest;
  readonly grants: Grants;
  readonly policy: CompiledPolicy;
  readonly membership?: MembershipReport;
  readonly trace?: Trace;
  /** The asking gateway applies a narrowed search's `queryAppend` (smartNarrowing); never for a Bundle entry. */
  readonly narrow?: boolean;
}

export interface Allowed {
  readonly ok: true;
  readonly dataActions: readonly DataAction[];
  /** `Patient/{id}` when the compartment is delegated to the upstream (compartmentMode delegate). */
  readonly compartment?: string;
  /** The encoded `param=value` pairs the gateway appends to the search's query (smartNarrowing). */
  readonly queryAppend?: string;
}

/**
 * Allowed if the FHIR server finds the resource in the patient's compartment: every other check
 * passed, and only this one is left. Not an Allowed (no `ok: true`), so no caller can take it for one.
 */
export interface LookupNeeded {
  readonly ok: 'lookup';
  readonly question: CompartmentQuestion;
  /** The decision when the server finds it. */
  readonly allowed: Allowed;
}

function describeNeed(need: ActionRequirement): string {
  if (need.length === 0) return 'an action that is never granted (unknown operation)';
  return need.map((g) => (g.length === 1 ? g[0] : `one of [${g.join(', ')}]`)).join(' and ');
}

function describeRequest(r: FhirRequest): string {
  return `${r.method} ${r.path}${r.operation && !r.path.includes(r.operation) ? ` (${r.operation})` : ''}`;
}

export function decideAccess(input: AccessInput): Allowed | Refusal | LookupNeeded {
  const { principal, request, grants, policy, trace } = input;
  if (grants.actions.size === 0) {
    const r = refuse('principal_not_allowed', notAllowedHint(principal, policy, input.membership));
    trace?.fail('principal', r, { found: principal.objectId ? `oid ${principal.objectId}` : `client ${principal.applicationId}` });
    return r;
  }
  trace?.pass('principal', grants.sources.join(', '));

  let effective: ReadonlySet<DataAction> = grants.actions;
  let compartment: string | undefined;
  let queryAppend: string | undefined;
  let lookup: CompartmentQuestion | undefined;
  // SMART: a SMART provider's application, or an Entra principal holding the `smart` action
  // (the FHIR SMART User role), gets only what its scopes allow (rights ∩ scopes).
  const smart = principal.kind === 'smart' || grants.actions.has('smart');
  if (smart) {
    const parsed = parseSmartScopes(principal.scopes, { audiences: policy.audiences });
    if (!parsed.ok) {
      const r = refuse('insufficient_scope', `scope "${parsed.scope}" is refused: ${parsed.problem}`);
      trace?.fail('scopes', r, { found: principal.scopes.join(' ') });
      return r;
    }
    // patient/ scopes need a context: the `patient` claim, or fhirUser when it is a Patient; both
    // present and different is a contradiction, refused.
    const context = patientContextFrom({ patient: principal.patient, fhirUser: principal.fhirUser });
    if (!context.ok) {
      const r = refuse('insufficient_scope', `patient context mismatch: ${context.problem}`);
      trace?.fail('compartment', r, { found: `patient ${principal.patient ?? '(none)'}, fhirUser ${principal.fhirUser ?? '(none)'}` });
      return r;
    }
    const verdict = evaluateScopes({
      scopeSet: parsed.scopeSet,
      request,
      ...(context.patient ? { patientContext: context.patient } : {}),
      isAppToken: principal.isAppToken,
      compartmentMode: policy.compartmentMode,
      narrow: input.narrow === true,
      compartmentLookup: policy.compartmentLookup,
    });
    if (!verdict.ok) {
      const r = refuse('insufficient_scope', verdict.hint);
      trace?.fail('scopes', r, { found: principal.scopes.join(' ') });
      return r;
    }
    effective = intersectScopeActions(grants.actions, verdict.actions);
    compartment = verdict.delegateCompartment;
    queryAppend = verdict.queryAppend;
    lookup = verdict.lookupCompartment;
    trace?.pass('scopes', `${principal.scopes.join(' ')} allow [${[...verdict.actions].join(', ')}]`);
    if (context.patient)
      trace?.pass(
        'compartment',
        lookup
          ? `to be proven by the FHIR server (compartmentLookup): ${lookup.resourceType}/${lookup.id} with ${lookup.parameter}=Patient/${lookup.patient}`
          : verdict.delegateCompartment
            ? `delegated to the upstream: ${verdict.delegateCompartment}`
            : queryAppend
              ? `Patient/${context.patient}, if the gateway appends the narrowing below`
              : `inside Patient/${context.patient}`,
      );
    if (queryAppend) trace?.pass('narrowing', `the gateway appends ${queryAppend} to the query`);
    else if (input.narrow) trace?.skip('narrowing', 'not needed: the request proves what the scopes require');
  }

  if (!satisfies(effective, request.requires)) {
    const r = refuse(
      'action_not_permitted',
      `${describeRequest(request)} needs ${describeNeed(request.requires)}; granted [${[...effective].join(', ')}] via ${grants.sources.join(', ')}${smart ? ' narrowed by SMART scopes' : ''}`,
    );
    trace?.fail('dataAction', r, { expected: describeNeed(request.requires), found: [...effective].join(', ') });
    return r;
  }
  trace?.pass('dataAction', `${describeNeed(request.requires)} granted`);
  const allowed: { ok: true; dataActions: readonly DataAction[]; compartment?: string; queryAppend?: string } = {
    ok: true,
    // Unnarrowed grants were sorted when they were made (once per cached principal: the Pdp memoises them).
    dataActions: effective === grants.actions && grants.sorted ? grants.sorted : [...effective].sort(),
  };
  if (compartment) allowed.compartment = compartment;
  if (queryAppend) allowed.queryAppend = queryAppend;
  if (lookup) return { ok: 'lookup', question: lookup, allowed };
  return allowed;
}

function notAllowedHint(principal: Principal, policy: CompiledPolicy, membership?: MembershipReport): string {
  if (principal.kind === 'smart')
    return `application ${principal.applicationId} of ${principal.authority} has no allowedDataActions`;
  const parts = [`oid ${principal.objectId} is not listed in accessPolicies`];
  const app = principal.applicationId?.toLowerCase();
  if (app && policy.byObject.has(app))
    return `the application (client) id ${principal.applicationId} is listed in accessPolicies instead of the service principal's object id: replace it with ${principal.objectId} (the oid of the enterprise application / service principal)`;
  parts.push(principal.roles.length ? `none of its roles [${principal.roles.join(', ')}] is defined in \`roles\`` : 'the token has no roles');
  if (membership && membership.checked > 0)
    parts.push(
      `it is a member of none of the ${membership.checked} listed object id(s) checked as groups (via ${membership.source}${membership.detail ? `: ${membership.detail}` : ''})${membership.groupIds?.length ? `: [${membership.groupIds.slice(0, 10).join(', ')}${membership.groupIds.length > 10 ? ', …' : ''}]` : ''}`,
    );
  else if (membership) parts.push(`group membership could not be checked${membership.detail ? ` (${membership.detail})` : ''}`);
  return parts.join('; ');
}
