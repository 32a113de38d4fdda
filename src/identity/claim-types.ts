/**
 * Every claim fhir-pdp reads, with its one JSON type and what each authority kind needs of it.
 *
 * RFC 7519 §4.1, RFC 9068 §2.2 and Entra's access token claims reference
 * (learn.microsoft.com/entra/identity-platform/access-token-claims-reference) give each claim one
 * type. A token that breaks that was not made by the issuer the service trusts, or was made by a
 * misconfigured one; either way it is refused, never half-read: a claim of the wrong type is never
 * treated as absent. docs/security.md carries this table and test/unit/identity/claim-types.test.ts keeps
 * the two in sync.
 */
import { refuse, type Refusal } from '../core/reasons.js';

export type AuthorityKind = 'entra' | 'smart';

export type ClaimType =
  | 'string'
  | 'numericDate'
  | 'audience'
  | 'stringArray'
  | 'scopes'
  | 'scopeString'
  | 'boolean'
  | 'claimNames'
  | 'clientAuth'
  | 'tokenKind'
  | 'version';

/**
 * How an authority kind uses a claim. `required` and `oneOf` (one claim of a group is required)
 * make a wrong type `missing_claim`, as the contract's "a required claim is absent or of the wrong
 * type" says; `optional` makes it `malformed_token`; a claim that kind never reads is not checked
 * (Okta writes `ver` as a number, and fhir-pdp does not read `ver` of a SMART provider).
 */
export type ClaimUse = 'required' | 'oneOf' | 'optional' | 'notRead';

export interface ClaimRule {
  readonly type: ClaimType;
  /** The primary (Entra) authority. */
  readonly entra: ClaimUse;
  /** A SMART identity provider. */
  readonly smart: ClaimUse;
}

/** JSON numbers beyond this are not dates (year 9999); `1e400` parses to Infinity. */
export const MAX_NUMERIC_DATE = 253402300799;

/** Each type as docs/security.md names it. */
export const CLAIM_TYPE_TEXT: Readonly<Record<ClaimType, string>> = {
  string: 'non-empty string',
  numericDate: 'NumericDate (number, 0 to 253402300799)',
  audience: 'non-empty string, or non-empty array of them',
  stringArray: 'array of non-empty strings',
  scopes: 'non-empty string (space-separated), or array of non-empty strings',
  scopeString: 'non-empty string (space-separated)',
  boolean: 'boolean',
  claimNames: 'object of strings',
  clientAuth: '`"0"`, `"1"` or `"2"`',
  tokenKind: '`"app"` or `"user"`',
  version: '`"1.0"` or `"2.0"`',
};

export const CLAIMS = {
  iss: { type: 'string', entra: 'required', smart: 'required' },
  aud: { type: 'audience', entra: 'required', smart: 'required' },
  exp: { type: 'numericDate', entra: 'required', smart: 'required' },
  nbf: { type: 'numericDate', entra: 'optional', smart: 'optional' },
  iat: { type: 'numericDate', entra: 'optional', smart: 'optional' },
  sub: { type: 'string', entra: 'optional', smart: 'optional' },
  oid: { type: 'string', entra: 'required', smart: 'optional' },
  tid: { type: 'string', entra: 'optional', smart: 'optional' },
  azp: { type: 'string', entra: 'optional', smart: 'optional' },
  appid: { type: 'string', entra: 'optional', smart: 'optional' },
  client_id: { type: 'string', entra: 'optional', smart: 'optional' },
  cid: { type: 'string', entra: 'optional', smart: 'optional' },
  azpacr: { type: 'clientAuth', entra: 'optional', smart: 'notRead' },
  appidacr: { type: 'clientAuth', entra: 'optional', smart: 'notRead' },
  ver: { type: 'version', entra: 'optional', smart: 'notRead' },
  idtyp: { type: 'tokenKind', entra: 'optional', smart: 'notRead' },
  nonce: { type: 'string', entra: 'optional', smart: 'notRead' },
  roles: { type: 'stringArray', entra: 'oneOf', smart: 'notRead' },
  groups: { type: 'stringArray', entra: 'optional', smart: 'notRead' },
  hasgroups: { type: 'boolean', entra: 'optional', smart: 'notRead' },
  _claim_names: { type: 'claimNames', entra: 'optional', smart: 'notRead' },
  scp: { type: 'scopes', entra: 'oneOf', smart: 'oneOf' },
  scope: { type: 'scopeString', entra: 'oneOf', smart: 'oneOf' },
  raw_scope: { type: 'scopes', entra: 'oneOf', smart: 'oneOf' },
  fhirUser: { type: 'string', entra: 'optional', smart: 'oneOf' },
  extension_fhirUser: { type: 'string', entra: 'optional', smart: 'oneOf' },
  patient: { type: 'string', entra: 'optional', smart: 'optional' },
  jti: { type: 'string', entra: 'optional', smart: 'optional' },
  sid: { type: 'string', entra: 'optional', smart: 'optional' },
} as const satisfies Readonly<Record<string, ClaimRule>>;

export type ClaimName = keyof typeof CLAIMS;
export const CLAIM_NAMES = Object.keys(CLAIMS) as readonly ClaimName[];

/** The reason a wrong-typed claim gets, for an authority kind; undefined when that kind does not read it. */
export function wrongTypeReason(use: ClaimUse): 'missing_claim' | 'malformed_token' | undefined {
  return use === 'notRead' ? undefined : use === 'optional' ? 'malformed_token' : 'missing_claim';
}

/** What a JSON value is, as a hint says it ("a number", "an empty string", ...). */
export function describeJsonValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return v.length === 0 ? 'an empty array' : 'an array';
  switch (typeof v) {
    case 'string':
      return v === '' ? 'an empty string' : `the string "${v.length > 40 ? `${v.slice(0, 40)}…` : v}"`;
    case 'number':
      return `the number ${String(v).slice(0, 30)}`;
    case 'boolean':
      return `the boolean ${v}`;
    case 'object':
      return 'an object';
    default:
      return typeof v;
  }
}

const isNonEmptyString = (v: unknown): v is string => typeof v === 'string' && v !== '';
const isStringArray = (v: unknown): boolean => Array.isArray(v) && v.every(isNonEmptyString);

/** True when `v` is a value of `type`. */
export function hasClaimType(type: ClaimType, v: unknown): boolean {
  switch (type) {
    case 'string':
    case 'scopeString':
      return isNonEmptyString(v);
    case 'numericDate':
      return typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= MAX_NUMERIC_DATE;
    case 'audience':
      return isNonEmptyString(v) || (Array.isArray(v) && v.length > 0 && isStringArray(v));
    case 'stringArray':
      return isStringArray(v);
    case 'scopes':
      return isNonEmptyString(v) || isStringArray(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'claimNames':
      return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every(isNonEmptyString);
    case 'clientAuth':
      return v === '0' || v === '1' || v === '2';
    case 'tokenKind':
      return v === 'app' || v === 'user';
    case 'version':
      return v === '1.0' || v === '2.0';
  }
}

/** The hint for one wrong-typed claim: names the claim, the type expected and what was found. */
export function claimTypeProblem(name: ClaimName, v: unknown): string {
  return `\`${name}\` is ${describeJsonValue(v)}; expected ${CLAIM_TYPE_TEXT[CLAIMS[name].type]}`;
}

/**
 * Every claim of the table the authority kind reads, checked against its type. A claim present
 * with `null` is present, and null is no claim's type (only `undefined`, which JSON cannot
 * produce, counts as absent).
 */
export function checkClaimTypes(claims: Readonly<Record<string, unknown>>, kind: AuthorityKind): Refusal | undefined {
  let reason: 'missing_claim' | 'malformed_token' | undefined;
  const problems: string[] = [];
  for (const name of CLAIM_NAMES) {
    if (claims[name] === undefined) continue;
    const rule: ClaimRule = CLAIMS[name];
    const r = wrongTypeReason(rule[kind]);
    if (r === undefined || hasClaimType(rule.type, claims[name])) continue;
    problems.push(claimTypeProblem(name, claims[name]));
    // A required claim of the wrong type is as good as absent: that reason wins.
    if (reason !== 'missing_claim') reason = r;
  }
  if (reason === undefined) return undefined;
  const issuer = kind === 'entra' ? 'the primary authority' : 'a SMART identity provider';
  return refuse(reason, `${problems.join('; ')} (a token of ${issuer} with a claim of another type is refused, not half-read; docs/security.md lists each claim's type)`);
}
