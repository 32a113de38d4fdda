/**
 * SMART search narrowing: the search parameters a gateway appends to a type-level search so that
 * it returns only what the token's scopes allow, instead of fhir-pdp refusing it. Pure.
 *
 * Narrowing relies on one rule of FHIR search (R4 search.html#combining): parameters are ANDed,
 * so appending `param=value` can only remove results. To stay independent of how a server treats
 * a parameter named twice, fhir-pdp appends a parameter only when the client's query does not use
 * that name at all (with any modifier, in any letter case); docs/security.md lists the rules.
 */

/** One parameter to append: its name and the values it ORs (FHIR's comma). Values are decoded. */
export interface QueryAddition {
  readonly param: string;
  readonly values: readonly string[];
}

/** Longest `queryAppend` offered; beyond it the search is refused as without narrowing (a header value must fit the gateway's buffers). */
export const MAX_QUERY_APPEND = 2048;

export type ParamUse = 'absent' | 'satisfied' | 'conflict';

/**
 * How the client's query uses `param`: `satisfied` when one entry named exactly `param` (no
 * modifier) has a value `accepts` (repeats are ANDed, so that entry alone bounds the results);
 * otherwise `conflict` when any entry names it (a modifier `param:not`, a chain `param.x`, another
 * value, or another letter case, which some servers bind to the same parameter); else `absent`.
 */
export function paramUse(query: ReadonlyArray<readonly [string, string]>, param: string, accepts: (value: string) => boolean): ParamUse {
  const lower = param.toLowerCase();
  let named = false;
  for (const [name, value] of query) {
    if (name === param && accepts(value)) return 'satisfied';
    if (!named) {
      const end = baseEnd(name);
      const base = end === -1 ? name : name.slice(0, end);
      named = base.toLowerCase() === lower;
    }
  }
  return named ? 'conflict' : 'absent';
}

function baseEnd(name: string): number {
  const colon = name.indexOf(':');
  const dot = name.indexOf('.');
  if (colon === -1) return dot;
  return dot === -1 ? colon : Math.min(colon, dot);
}

/**
 * The additions as a query fragment: `&`-joined `param=value` pairs, each value's parts
 * percent-encoded (RFC 3986; `/` and `:` kept, both allowed in a query) and joined by a literal
 * comma, FHIR's OR. A `\,` inside a value (FHIR's escaped comma) is encoded as `%5C%2C`, which the
 * server decodes back to the escape.
 */
export function encodeQueryAppend(additions: readonly QueryAddition[]): string {
  return additions.map((a) => `${encodePart(a.param)}=${a.values.map(encodePart).join(',')}`).join('&');
}

function encodePart(s: string): string {
  return encodeURIComponent(s).replace(/%2F/g, '/').replace(/%3A/g, ':');
}

/** The parameter names of a `queryAppend` (for the decision log, which never carries values). */
export function appendedNames(queryAppend: string): string {
  return queryAppend
    .split('&')
    .map((pair) => pair.slice(0, pair.indexOf('=')))
    .join(',');
}
