/**
 * Method + request target -> FhirRequest (https://hl7.org/fhir/R4/http.html). Pure; never throws.
 *
 * The target is checked as sent, before any normalisation, because the FHIR server behind the
 * gateway receives it as sent: a path that a URL library would "clean up" (`..`, `%2F`, `\`) could
 * be routed by the server to something other than what was authorised. Such targets are refused.
 */
import { requirementFor } from './interactions.js';
import type { FhirRequest, Interaction, ParsedFhirRequest } from './types.js';

export const MAX_PATH_LENGTH = 4096;
export const MAX_QUERY_LENGTH = 16384;
export const MAX_QUERY_PARAMS = 200;
/** Path and query limits plus room for an absolute URL's scheme and authority. */
const MAX_TARGET_LENGTH = MAX_PATH_LENGTH + 1 + MAX_QUERY_LENGTH + 2048;

const METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
const RESOURCE_TYPE = /^[A-Z][A-Za-z]{0,63}$/;
// FHIR R4 id datatype: [A-Za-z0-9\-\.]{1,64}
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const OPERATION_NAME = /^\$[A-Za-z][A-Za-z0-9-]{0,63}$/;
// RFC 3986 §3.1 scheme, followed by `//` authority: an absolute-form target (RFC 9112 §3.2.2).
const ABSOLUTE_URL = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/[^/?]*/;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

type Fields = Omit<FhirRequest, 'method' | 'path' | 'query' | 'hardDelete' | 'requires'>;
type Result<T> = { ok: true; value: T } | { ok: false; problem: string };

const fail = (problem: string): { ok: false; problem: string } => ({ ok: false, problem });

/**
 * Parses `target` (origin-form `/fhir/Patient/1?x=y`, or an absolute http(s) URL of which only
 * path and query are used) relative to `basePath`, the path of the configured FHIR base URL.
 */
export function parseFhirRequest(method: string, target: string, basePath = '/'): ParsedFhirRequest {
  if (typeof method !== 'string' || typeof target !== 'string' || typeof basePath !== 'string') {
    return fail('method, target and base path must be strings');
  }
  // ASCII only: toUpperCase would turn `poſt` into `POST`.
  const upperMethod = /^[A-Za-z]{1,10}$/.test(method) ? method.toUpperCase() : '';
  if (!METHODS.has(upperMethod)) return fail(`method ${JSON.stringify(method.slice(0, 20))} is not a FHIR method`);
  if (target.length > MAX_TARGET_LENGTH) return fail('the target is too long');
  if (CONTROL_CHARS.test(target)) return fail('the target contains a control character');
  if (target.includes('#')) return fail('the target contains a fragment');

  let rest = target;
  const absolute = ABSOLUTE_URL.exec(target);
  if (absolute) {
    const scheme = absolute[1]!.toLowerCase();
    if (scheme !== 'http' && scheme !== 'https') return fail('an absolute target must be an http or https URL');
    rest = target.slice(absolute[0].length);
    if (rest === '' || rest.startsWith('?')) rest = `/${rest}`;
  }
  if (!rest.startsWith('/')) return fail('the target must start with / or be an absolute URL');

  const q = rest.indexOf('?');
  const rawPath = q === -1 ? rest : rest.slice(0, q);
  const rawQuery = q === -1 ? '' : rest.slice(q + 1);
  if (rawPath.length > MAX_PATH_LENGTH) return fail(`the path is longer than ${MAX_PATH_LENGTH} characters`);
  if (rawQuery.length > MAX_QUERY_LENGTH) return fail(`the query is longer than ${MAX_QUERY_LENGTH} characters`);

  const segments = pathSegments(rawPath);
  if (!segments.ok) return segments;
  const base = pathSegments(basePath.startsWith('/') ? basePath : `/${basePath}`);
  if (!base.ok) return fail(`the base path is invalid: ${base.problem}`);
  const inBase = base.value.length <= segments.value.length && base.value.every((s, i) => s === segments.value[i]);
  if (!inBase) return fail('the path is outside the FHIR base path');
  const relative = segments.value.slice(base.value.length);

  const query = parseQuery(rawQuery);
  if (!query.ok) return query;

  const fields = classify(upperMethod === 'HEAD' ? 'GET' : upperMethod, relative, query.value.length > 0);
  if (!fields.ok) return fields;

  // Assigned onto the fresh object classify() returned: spreading it into a new literal took V8's
  // slow clone path and was the largest cost of a cached-token decision (bench/PROFILE.md).
  const request: Omit<FhirRequest, 'requires'> = Object.assign(fields.value, {
    method: upperMethod,
    path: `/${relative.join('/')}`,
    query: query.value,
    hardDelete: upperMethod === 'DELETE' && query.value.some(([k, v]) => isHardDeleteFlag(k, v)),
  });
  return { ok: true, request: Object.assign(request, { requires: requirementFor(request) }) };
}

/**
 * The Microsoft FHIR server binds `_hardDelete` and `_purgeHistory` (which also destroys history,
 * BulkDeleteController) as ASP.NET booleans: parameter names and `true` case-insensitively. Any
 * value but `false` counts, so a spelling the server might accept is never under-authorised.
 */
function isHardDeleteFlag(key: string, value: string): boolean {
  const name = key.toLowerCase();
  return (name === '_harddelete' || name === '_purgehistory') && value.trim().toLowerCase() !== 'false';
}

/** Decoded segments of an absolute path; one trailing slash is tolerated, as FHIR servers route it. */
function pathSegments(rawPath: string): Result<string[]> {
  if (rawPath.includes('\\')) return fail('the path contains a backslash');
  const raw = rawPath === '/' ? [] : rawPath.slice(1).split('/');
  if (raw.length > 0 && raw[raw.length - 1] === '') raw.pop();
  const decoded: string[] = [];
  for (const segment of raw) {
    if (segment === '') return fail('the path contains an empty segment');
    // An encoded slash would be one segment here and two to a server that decodes before routing.
    if (/%2f/i.test(segment)) return fail('a path segment contains an encoded slash');
    const value = percentDecode(segment);
    if (value === undefined) return fail('a path segment has invalid percent-encoding');
    // RFC 3986 §5.2.4 removes `.` and `..` segments (also when percent-encoded, by servers that
    // decode first); refused rather than resolved so the path cannot climb out of the base.
    if (value === '.' || value === '..') return fail('the path contains a dot segment');
    if (CONTROL_CHARS.test(value) || value.includes('\\')) return fail('a path segment encodes a control character or backslash');
    decoded.push(value);
  }
  return { ok: true, value: decoded };
}

/** application/x-www-form-urlencoded pairs in order (`+` is a space), repeats kept. */
function parseQuery(rawQuery: string): Result<Array<readonly [string, string]>> {
  const pairs = rawQuery === '' ? [] : rawQuery.split('&').filter((p) => p !== '');
  if (pairs.length > MAX_QUERY_PARAMS) return fail(`the query has more than ${MAX_QUERY_PARAMS} parameters`);
  const out: Array<readonly [string, string]> = [];
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const key = percentDecode((eq === -1 ? pair : pair.slice(0, eq)).replaceAll('+', ' '));
    const value = percentDecode((eq === -1 ? '' : pair.slice(eq + 1)).replaceAll('+', ' '));
    if (key === undefined || value === undefined) return fail('a query parameter has invalid percent-encoding');
    out.push([key, value]);
  }
  return { ok: true, value: out };
}

function percentDecode(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

/**
 * The URL patterns of FHIR R4 §3.1.0 (http.html) and of operations (operations.html). A known
 * shape with a method FHIR does not define for it is the `unknown` interaction, which is refused.
 */
function classify(method: string, s: readonly string[], hasQuery: boolean): Result<Fields> {
  const ok = (interaction: Interaction, extra: Omit<Fields, 'interaction'> = {}): Result<Fields> => ({
    ok: true,
    value: { interaction, ...extra },
  });
  const byMethod = (table: Partial<Record<string, Interaction>>, extra: Omit<Fields, 'interaction'> = {}) =>
    ok(table[method] ?? 'unknown', extra);

  const [first, second, third, fourth, fifth] = s;
  if (first === undefined) return byMethod({ GET: 'search-system', POST: 'batch' });
  if (s.length === 1) {
    if (first === 'metadata') return byMethod({ GET: 'capabilities' });
    if (first === '_search') return byMethod({ POST: 'search-system' });
    if (first === '_history') return byMethod({ GET: 'history-system' });
  }
  if (first.startsWith('$')) {
    if (s.length > 1) return fail('a system-level operation has extra path segments');
    return operation(first, {});
  }
  if (!RESOURCE_TYPE.test(first)) return fail('the path does not start with a resource type');
  const resourceType = first;

  if (second === undefined) {
    // Conditional update, patch and delete name their target by search parameters in the query.
    const conditional = (i: Interaction): Interaction => (hasQuery ? i : 'unknown');
    return byMethod(
      {
        GET: 'search-type',
        POST: 'create',
        PUT: conditional('conditional-update'),
        PATCH: conditional('conditional-patch'),
        DELETE: conditional('conditional-delete'),
      },
      { resourceType },
    );
  }
  if (s.length === 2 && second === '_search') return byMethod({ POST: 'search-type' }, { resourceType });
  if (s.length === 2 && second === '_history') return byMethod({ GET: 'history-type' }, { resourceType });
  if (second.startsWith('$')) {
    if (s.length > 2) return fail('a type-level operation has extra path segments');
    return operation(second, { resourceType });
  }
  if (!FHIR_ID.test(second)) return fail('the resource id is not a valid FHIR id');
  const id = second;

  if (third === undefined) {
    return byMethod({ GET: 'read', PUT: 'update', PATCH: 'patch', DELETE: 'delete' }, { resourceType, id });
  }
  if (third.startsWith('$')) {
    if (s.length > 3) return fail('an instance-level operation has extra path segments');
    return operation(third, { resourceType, id });
  }
  if (third === '_history') {
    if (fourth === undefined) return byMethod({ GET: 'history-instance' }, { resourceType, id });
    if (!FHIR_ID.test(fourth)) return fail('the version id is not a valid FHIR id');
    const versionId = fourth;
    if (fifth === undefined) return byMethod({ GET: 'vread' }, { resourceType, id, versionId });
    // FHIR R4 $meta and friends may address one version: [type]/[id]/_history/[vid]/$meta.
    if (fifth.startsWith('$') && s.length === 5) return operation(fifth, { resourceType, id, versionId });
    return fail('the path has extra segments after the version id');
  }
  if (third !== '*' && !RESOURCE_TYPE.test(third)) return fail('the compartment search target is not a resource type');
  // resourceType is the searched type; `*` searches every type in the compartment.
  const compartment = { type: resourceType, id, targetType: third };
  const searched = third === '*' ? { compartment } : { compartment, resourceType: third };
  if (fourth === undefined) return byMethod({ GET: 'search-compartment' }, searched);
  if (fourth === '_search' && fifth === undefined) return byMethod({ POST: 'search-compartment' }, searched);
  return fail('the path has extra segments after the compartment search');
}

function operation(name: string, at: Omit<Fields, 'interaction' | 'operation'>): Result<Fields> {
  if (!OPERATION_NAME.test(name)) return fail('the operation name is invalid');
  return { ok: true, value: { interaction: 'operation', operation: name, ...at } };
}
