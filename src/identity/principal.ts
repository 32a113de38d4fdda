/**
 * Who the caller is, from a verified token. Entra v1 and v2 tokens name the same things
 * differently (`appid` vs `azp`, `ver`), SMART providers differently again (`client_id` per
 * RFC 9068, Okta's `cid`, `scope` vs `scp`); Principal is the one normalised shape policy sees.
 */
import type { Principal, SmartApplication } from '../core/principal.js';
import { refuse, type Refusal } from '../core/reasons.js';
import type { Trace } from '../core/trace.js';
import { checkClaimTypes } from './claim-types.js';
import { readScopeClaims } from './scope-claims.js';
import { appOnlyEvidence, tenantOfIssuer } from './entra-token.js';
import type { VerifiedToken } from './verify.js';

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
  // Types are checked first (checkClaimTypes): hasgroups is a boolean, _claim_names an object.
  const names = claims._claim_names as Readonly<Record<string, string>> | undefined;
  return claims.hasgroups === true || (names !== undefined && Object.hasOwn(names, 'groups'));
}

/**
 * Claims that name the same thing under different providers' names: the client id (azp, appid,
 * client_id, cid) and the FHIR user (fhirUser, extension_fhirUser). Two of them naming different
 * values leave the token saying two things; it is refused rather than one of them believed.
 */
const ALTERNATIVE_NAMES = [
  ['azp', 'appid', 'client_id', 'cid'],
  ['fhirUser', 'extension_fhirUser'],
] as const;

function contradictingAlternatives(claims: Readonly<Record<string, unknown>>): string | undefined {
  for (const names of ALTERNATIVE_NAMES) {
    const present = names.filter((n) => claims[n] !== undefined);
    const first = present[0];
    const other = first === undefined ? undefined : present.find((n) => claims[n] !== claims[first]);
    if (other !== undefined) return `${first} "${String(claims[first!])}" and ${other} "${String(claims[other])}" differ`;
  }
  return undefined;
}

export function principalFromToken(
  v: VerifiedToken,
  applications: ReadonlyMap<string, SmartApplication> | undefined,
  trace?: Trace,
): { ok: true; principal: Principal } | Refusal {
  const c = v.claims;
  // One place for claim types, before anything is read: a claim of the wrong type is refused, never
  // taken as absent (claim-types.ts).
  const mistyped = checkClaimTypes(c, applications ? 'smart' : 'entra');
  if (mistyped) {
    trace?.fail('claims', mistyped);
    return mistyped;
  }
  const conflict = contradictingAlternatives(c);
  if (conflict) {
    const r = refuse('malformed_token', `${conflict}: the token names two values for one thing; the issuer's claim mapping writes both`);
    trace?.fail('claims', r);
    return r;
  }
  // App-only Entra tokens carry no scope claim at all: that is no scopes, not a bad claim.
  const hasScopeClaim = c.scp !== undefined || c.scope !== undefined || c.raw_scope !== undefined;
  const scopes: ReturnType<typeof readScopeClaims> = hasScopeClaim ? readScopeClaims(c) : { ok: true, scopes: [], source: 'scp' };
  const common = {
    issuer: v.issuer,
    authority: v.authority,
    expiresAt: v.expiresAt,
    ...(str(c.sub) ? { subject: str(c.sub)! } : {}),
    ...(str(c.tid) ? { tenantId: str(c.tid)! } : {}),
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
  // Primary authority. Entra's issuer names its tenant; a `tid` naming another one means the token
  // was not made by the issuer it claims, or by a misconfigured one ("Always check that the tid in
  // a token matches the tenant ID", Entra's claims-validation guidance).
  if (c.tid !== undefined) {
    const issuerTenant = tenantOfIssuer(v.issuer);
    const tid = (c.tid as string).toLowerCase();
    if (issuerTenant !== tid) {
      const r = refuse(
        'untrusted_issuer',
        issuerTenant === undefined
          ? `tid ${tid} cannot be checked: iss ${v.issuer} names no tenant (Entra's issuers are https://sts.windows.net/{tid}/ and https://login.microsoftonline.com/{tid}/v2.0); the primary authority must be an Entra tenant, or its tokens must not carry tid`
          : `tid ${tid} is not the tenant of iss ${v.issuer} (${issuerTenant}): the token contradicts its issuer; check the authority's token configuration`,
      );
      trace?.fail('claims', r, { found: `tid ${tid}`, expected: issuerTenant ?? `an issuer naming tenant ${tid}` });
      return r;
    }
  }
  // `oid` identifies the principal. `scp` (delegated) or `roles` (app or user roles) show an
  // access token; without either, only an Entra app-only token is accepted (appOnlyEvidence), so
  // an ID token is never taken for an access token.
  const oid = str(c.oid);
  const roles = stringList(c.roles) ?? [];
  const hasScp = hasScopeClaim;
  const problems: string[] = [];
  if (!oid) problems.push('`oid`');
  if (!scopes.ok) problems.push(`scopes (${scopes.problem})`);
  let appOnly: string | undefined;
  if (!hasScp && roles.length === 0 && oid) {
    const evidence = appOnlyEvidence(c);
    if (evidence.ok) appOnly = evidence.because;
    else
      problems.push(
        `\`scp\` or \`roles\`, and it does not show it is an Entra app-only access token (\`idtyp: app\`, or \`azp\`+\`azpacr\` (v2) / \`appid\`+\`appidacr\` (v1) with \`sub\` equal to \`oid\`): ${evidence.found}; request an access token for the FHIR audience (an ID token is never one), or add the optional claim idtyp to the API's access tokens`,
      );
  } else if (!hasScp && roles.length === 0) problems.push('`scp` or `roles`');
  if (problems.length) {
    const r = refuse('missing_claim', `the token lacks ${problems.join(', ')}`);
    trace?.fail('claims', r);
    return r;
  }
  const groups = stringList(c.groups);
  const idtyp = str(c.idtyp);
  trace?.pass('claims', appOnly ? `oid ${oid}, app-only (${appOnly})` : `oid ${oid}`);
  return {
    ok: true,
    principal: {
      kind: 'entra',
      ...common,
      objectId: oid!.toLowerCase(),
      ...(clientIdOf(c) ? { applicationId: clientIdOf(c)! } : {}),
      ...(str(c.ver) ? { version: str(c.ver)! } : {}),
      isAppToken: idtyp === 'app' || (idtyp === undefined && !hasScp),
      roles: roles ?? [],
      scopes: scopes.ok ? scopes.scopes : [],
      ...(groups ? { groups: groups.map((g) => g.toLowerCase()) } : {}),
      groupsOverage: overage(c),
    },
  };
}
