/**
 * Who the caller is, from a verified token. Entra v1 and v2 tokens name the same things
 * differently (`appid` vs `azp`, `ver`), SMART providers differently again (`client_id` per
 * RFC 9068, Okta's `cid`, `scope` vs `scp`); Principal is the one normalised shape policy sees.
 */
import { readScopeClaims } from '../fhir/scopes.js';
import { refuse, type Refusal } from '../policy/reasons.js';
import type { Trace } from '../policy/trace.js';
import type { VerifiedToken } from './verify.js';

export interface SmartApplication {
  readonly clientId: string;
  readonly audience: string;
  readonly allowedDataActions: readonly string[];
}

export interface Principal {
  /** `entra`: the primary authority (access policies, roles, groups); `smart`: a SMART identity provider's application. */
  readonly kind: 'entra' | 'smart';
  readonly issuer: string;
  readonly authority: string;
  readonly subject?: string;
  readonly objectId?: string;
  readonly tenantId?: string;
  /** Client id of the calling application (appid / azp / client_id / cid). */
  readonly applicationId?: string;
  /** True for app-only tokens (client credentials): Entra's `idtyp: app`, or roles without scp. */
  readonly isAppToken: boolean;
  readonly roles: readonly string[];
  /** Scope strings as the token carries them (raw_scope, scp or scope). */
  readonly scopes: readonly string[];
  /** The `groups` claim when present (Entra: transitive security groups). */
  readonly groups?: readonly string[];
  /** The token says its groups did not fit (`_claim_names.groups`, `hasgroups`). */
  readonly groupsOverage: boolean;
  readonly fhirUser?: string;
  /** SMART launch context `patient` claim. */
  readonly patient?: string;
  readonly version?: string;
  readonly expiresAt: number;
  readonly application?: SmartApplication;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function stringList(v: unknown): string[] | undefined {
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  return undefined;
}

/** The client id, by the names the providers use: azp (Entra v2, Keycloak, Auth0), appid (Entra v1), client_id (RFC 9068), cid (Okta). */
export function clientIdOf(claims: Readonly<Record<string, unknown>>): string | undefined {
  return str(claims.azp) ?? str(claims.appid) ?? str(claims.client_id) ?? str(claims.cid);
}

function fhirUserOf(claims: Readonly<Record<string, unknown>>): string | undefined {
  return str(claims.fhirUser) ?? str(claims.extension_fhirUser);
}

function overage(claims: Readonly<Record<string, unknown>>): boolean {
  const names = claims._claim_names;
  return claims.hasgroups === true || claims.hasgroups === 'true' || (typeof names === 'object' && names !== null && 'groups' in names);
}

export function principalFromToken(
  v: VerifiedToken,
  applications: ReadonlyMap<string, SmartApplication> | undefined,
  trace?: Trace,
): { ok: true; principal: Principal } | Refusal {
  const c = v.claims;
  // App-only Entra tokens carry `roles` and no scope claim at all: that is no scopes, not a bad claim.
  const hasScopeClaim = c.scp !== undefined || c.scope !== undefined || c.raw_scope !== undefined;
  const scopes: ReturnType<typeof readScopeClaims> = hasScopeClaim ? readScopeClaims(c) : { ok: true, scopes: [], source: 'scp' };
  const common = {
    issuer: v.issuer,
    authority: v.authority,
    expiresAt: v.expiresAt,
    ...(str(c.sub) ? { subject: str(c.sub)! } : {}),
    ...(str(c.tid) ? { tenantId: str(c.tid)! } : {}),
    ...(str(c.ver) ? { version: str(c.ver)! } : {}),
    ...(fhirUserOf(c) ? { fhirUser: fhirUserOf(c)! } : {}),
    ...(str(c.patient) ? { patient: str(c.patient)! } : {}),
  };

  if (applications) {
    // SMART identity provider: the application decides what the token may do.
    const clientId = clientIdOf(c);
    const app = clientId !== undefined ? applications.get(clientId) : undefined;
    if (!app) {
      const r = refuse('unknown_application', clientId === undefined
        ? 'the token has no client id (azp, appid, client_id or cid)'
        : `client id ${clientId} is not an application of ${v.authority}; configured: [${[...applications.keys()].join(', ')}]`);
      trace?.fail('application', r, { found: clientId ?? '(none)', expected: [...applications.keys()].join(' or ') });
      return r;
    }
    if (!v.audiences.includes(app.audience)) {
      const r = refuse('audience_mismatch', `aud [${v.audiences.join(', ')}] does not include ${app.audience}, the audience of application ${app.clientId}`);
      trace?.fail('application', r, { found: v.audiences.join(', '), expected: app.audience });
      return r;
    }
    trace?.pass('application', clientId!);
    const problems: string[] = [];
    if (!fhirUserOf(c)) problems.push('`fhirUser` (or `extension_fhirUser`)');
    if (!scopes.ok) problems.push(`scopes (${scopes.problem})`);
    else if (scopes.scopes.length === 0) problems.push('scopes (`scp` or `scope`)');
    if (problems.length) {
      const r = refuse('missing_claim', `a SMART token of ${v.authority} needs ${problems.join(' and ')}`);
      trace?.fail('claims', r);
      return r;
    }
    trace?.pass('claims', `fhirUser ${fhirUserOf(c)}`);
    return {
      ok: true,
      principal: {
        kind: 'smart',
        ...common,
        ...(str(c.oid) ? { objectId: str(c.oid)!.toLowerCase() } : {}),
        applicationId: clientId!,
        isAppToken: false,
        roles: [],
        scopes: scopes.ok ? scopes.scopes : [],
        groupsOverage: false,
        application: app,
      },
    };
  }

  trace?.skip('application', 'the primary authority matches principals through access policies and roles');
  // Primary authority. `oid` identifies the principal; `scp` (delegated) or `roles` (app or
  // user roles) must be present, which an ID token never has, so an ID token is never taken
  // for an access token.
  const oid = str(c.oid);
  const roles = c.roles === undefined ? [] : stringList(c.roles);
  const hasScp = hasScopeClaim;
  const problems: string[] = [];
  if (!oid) problems.push('`oid`');
  if (roles === undefined) problems.push('`roles` as an array of strings');
  if (!scopes.ok) problems.push(`scopes (${scopes.problem})`);
  if (!hasScp && (roles ?? []).length === 0) problems.push('`scp` or `roles` (an ID token is not an access token)');
  if (problems.length) {
    const r = refuse('missing_claim', `the token lacks ${problems.join(', ')}`);
    trace?.fail('claims', r);
    return r;
  }
  const groups = stringList(c.groups);
  const idtyp = str(c.idtyp);
  trace?.pass('claims', `oid ${oid}`);
  return {
    ok: true,
    principal: {
      kind: 'entra',
      ...common,
      objectId: oid!.toLowerCase(),
      ...(clientIdOf(c) ? { applicationId: clientIdOf(c)! } : {}),
      isAppToken: idtyp === 'app' || (idtyp === undefined && !hasScp),
      roles: roles ?? [],
      scopes: scopes.ok ? scopes.scopes : [],
      ...(groups ? { groups: groups.map((g) => g.toLowerCase()) } : {}),
      groupsOverage: overage(c),
    },
  };
}
