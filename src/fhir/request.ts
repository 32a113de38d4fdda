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
/** A FHIR resource type name as a URL segment or a scope names it. */
export const RESOURCE_TYPE = /^[A-Z][A-Za-z]{0,63}$/;
/** FHIR R4 id datatype: [A-Za-z0-9\-\.]{1,64} */
export const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const OPERATION_NAME = /^\$[A-Za-z][A-Za-z0-9-]{0,63}$/;
// A bulk-data output file's name below its job's status URL (`Patient-1.ndjson`).
const EXPORT_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
// RFC 3986 §3.1 scheme, followed by `//` authority: an absolute-form target (RFC 9112 §3.2.2).
const ABSOLUTE_URL = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/[^/?]*/;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

type Fields = Omit<FhirRequest, 'method' | 'path' | 'query' | 'hardDelete' | 'requires'>;
type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type Result<T> = { ok: true; value: T } | { ok: false; problem: string };

const fail = (problem: string): { ok: false; problem: string } => ({ ok: false, problem });

/**
 * Parses `target` (origin-form `/fhir/Patient/1?x=y`, or an absolute http(s) URL of which only
 * path and query are used) relative to `basePath`, the path of the configured FHIR base URL (a
 * string, or a FhirBasePath parsed once).
 */
export function parseFhirRequest(method: string, target: string, basePath: string | FhirBasePath = ROOT_BASE_PATH): ParsedFhirRequest {
  if (typeof method !== 'string' || typeof target !== 'string' || (typeof basePath !== 'string' && !(basePath instanceof FhirBasePath))) {
    return fail('method, target and base path must be strings');
  }
  // ASCII only: toUpperCase would turn `poſt` into `POST`.
  const upperMethod = METHODS.has(method) ? method : /^[A-Za-z]{1,10}$/.test(method) ? method.toUpperCase() : '';
  if (!METHODS.has(upperMethod)) return fail(`method ${JSON.stringify(method.slice(0, 20))} is not a FHIR method`);
  if (target.length > MAX_TARGET_LENGTH) return fail('the target is too long');
  if (CONTROL_CHARS.test(target)) return fail('the target contains a control character');
  if (target.includes('#')) return fail('the target contains a fragment');

  let rest = target;
  const absolute = target.startsWith('/') ? null : ABSOLUTE_URL.exec(target);
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
  const base = baseSegments(basePath);
  if (!base.ok) return fail(`the base path is invalid: ${base.problem}`);
  const baseLength = base.value.length;
  if (baseLength > segments.value.length) return fail('the path is outside the FHIR base path');
  for (let i = 0; i < baseLength; i++) if (base.value[i] !== segments.value[i]) return fail('the path is outside the FHIR base path');
  const relative = baseLength === 0 ? segments.value : segments.value.slice(baseLength);

  const query = parseQuery(rawQuery);
  if (!query.ok) return query;
  // Rails-style `_method` (and frameworks that copy it) makes the server run another method than
  // the request line's: the method decided would not be the one executed.
  if (query.value.some(([k]) => k === '_method')) return fail('the query carries _method, a method override: send the real method instead');

  const fields = classify(upperMethod === 'HEAD' ? 'GET' : upperMethod, relative, query.value.length > 0);
  if (!fields.ok) return fields;

  // Assigned onto the fresh object classify() returned: spreading it into a new literal takes
  // V8's slow clone path, on every decision.
  const request = fields.value as Mutable<FhirRequest>;
  request.method = upperMethod;
  request.path = `/${relative.join('/')}`;
  request.query = query.value;
  request.hardDelete = upperMethod === 'DELETE' && query.value.some(([k, v]) => isHardDeleteFlag(k, v));
  request.requires = requirementFor(request);
  return { ok: true, request };
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

/**
 * The configured FHIR base path, parsed once: it is configuration, the same for every request, so
 * a caller that decides many requests builds one and passes it instead of the path string.
 */
export class FhirBasePath {
  readonly segments: Result<string[]>;
  constructor(readonly path: string) {
    this.segments = pathSegments(path.startsWith('/') ? path : `/${path}`);
  }
}

/** The server root (`/`): bundle entries' URLs are relative to it. */
export const ROOT_BASE_PATH = new FhirBasePath('/');

function baseSegments(basePath: string | FhirBasePath): Result<string[]> {
  return (typeof basePath === 'string' ? new FhirBasePath(basePath) : basePath).segments;
}

/** Decoded segments of an absolute path; one trailing slash is tolerated, as FHIR servers route it. */
function pathSegments(rawPath: string): Result<string[]> {
  if (rawPath.includes('\\')) return fail('the path contains a backslash');
  // rawPath.slice(1).split('/'), by indexOf: split is a call into V8's runtime, on every decision.
  const raw: string[] = [];
  if (rawPath !== '/') {
    let start = 1;
    let end: number;
    while ((end = rawPath.indexOf('/', start)) !== -1) {
      raw.push(rawPath.slice(start, end));
      start = end + 1;
    }
    raw.push(rawPath.slice(start));
  }
  if (raw.length > 0 && raw[raw.length - 1] === '') raw.pop();
  for (let i = 0; i < raw.length; i++) {
    const segment = raw[i]!;
    if (segment === '') return fail('the path contains an empty segment');
    // Without `%` a segment is its own decoding, and the checks on the whole target (no control
    // characters) and path (no backslash) already cover it.
    let value = segment;
    if (segment.includes('%')) {
      // An encoded slash would be one segment here and two to a server that decodes before routing.
      if (/%2f/i.test(segment)) return fail('a path segment contains an encoded slash');
      const decoded = percentDecode(segment);
      if (decoded === undefined) return fail('a path segment has invalid percent-encoding');
      if (CONTROL_CHARS.test(decoded) || decoded.includes('\\')) return fail('a path segment encodes a control character or backslash');
      value = decoded;
    }
    // RFC 3986 §5.2.4 removes `.` and `..` segments (also when percent-encoded, by servers that
    // decode first); refused rather than resolved so the path cannot climb out of the base.
    if (value === '.' || value === '..') return fail('the path contains a dot segment');
    raw[i] = value;
  }
  return { ok: true, value: raw };
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
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}

type MethodTable = Readonly<Partial<Record<string, Interaction>>>;
// Which interaction each method is at each URL shape; module constants, not literals per call.
const AT_ROOT: MethodTable = { GET: 'search-system', POST: 'batch' };
const AT_METADATA: MethodTable = { GET: 'capabilities' };
const AT_SMART_CONFIGURATION: MethodTable = { GET: 'smart-configuration' };
// Bulk Data IG: the client polls the status URL with GET and cancels the job with DELETE.
const AT_EXPORT_STATUS: MethodTable = { GET: 'export-status', DELETE: 'export-status' };
const AT_EXPORT_FILE: MethodTable = { GET: 'export-file' };
const POST_SEARCH_SYSTEM: MethodTable = { POST: 'search-system' };
const GET_HISTORY_SYSTEM: MethodTable = { GET: 'history-system' };
// Conditional update, patch and delete name their target by search parameters in the query.
const AT_TYPE_WITH_QUERY: MethodTable = { GET: 'search-type', POST: 'create', PUT: 'conditional-update', PATCH: 'conditional-patch', DELETE: 'conditional-delete' };
const AT_TYPE: MethodTable = { GET: 'search-type', POST: 'create' };
const POST_SEARCH_TYPE: MethodTable = { POST: 'search-type' };
const GET_HISTORY_TYPE: MethodTable = { GET: 'history-type' };
const AT_INSTANCE: MethodTable = { GET: 'read', PUT: 'update', PATCH: 'patch', DELETE: 'delete' };
const GET_HISTORY_INSTANCE: MethodTable = { GET: 'history-instance' };
const GET_VREAD: MethodTable = { GET: 'vread' };
const GET_SEARCH_COMPARTMENT: MethodTable = { GET: 'search-compartment' };
const POST_SEARCH_COMPARTMENT: MethodTable = { POST: 'search-compartment' };

/** The fields of a classified request, set by assignment (no spreads: this runs per decision). */
function found(interaction: Interaction, resourceType?: string, id?: string, versionId?: string, operation?: string, compartment?: Fields['compartment']): Result<Fields> {
  const value: Mutable<Fields> = { interaction };
  if (operation !== undefined) value.operation = operation;
  if (resourceType !== undefined) value.resourceType = resourceType;
  if (id !== undefined) value.id = id;
  if (versionId !== undefined) value.versionId = versionId;
  if (compartment !== undefined) value.compartment = compartment;
  return { ok: true, value };
}

/**
 * The URL patterns of FHIR R4 §3.1.0 (http.html) and of operations (operations.html). A known
 * shape with a method FHIR does not define for it is the `unknown` interaction, which is refused.
 */
function classify(method: string, s: readonly string[], hasQuery: boolean): Result<Fields> {
  const by = (table: MethodTable): Interaction => table[method] ?? 'unknown';

  const [first, second, third, fourth, fifth] = s;
  if (first === undefined) return found(by(AT_ROOT));
  if (s.length === 1) {
    if (first === 'metadata') return found(by(AT_METADATA));
    if (first === '_search') return found(by(POST_SEARCH_SYSTEM));
    if (first === '_history') return found(by(GET_HISTORY_SYSTEM));
  }
  // SMART App Launch: "FHIR endpoints requiring authorization SHALL serve a JSON document at the
  // location formed by appending /.well-known/smart-configuration to their base URL."
  if (first === '.well-known') {
    if (second === 'smart-configuration' && s.length === 2) return found(by(AT_SMART_CONFIGURATION));
    return fail('the only .well-known document at the FHIR base is smart-configuration');
  }
  if (first === '_operations' || first === 'job') return exportJob(s, by);
  if (first.startsWith('$')) {
    if (s.length > 1) return fail('a system-level operation has extra path segments');
    return operation(first);
  }
  if (!RESOURCE_TYPE.test(first)) return fail('the path does not start with a resource type');
  const resourceType = first;

  if (second === undefined) return found(by(hasQuery ? AT_TYPE_WITH_QUERY : AT_TYPE), resourceType);
  if (s.length === 2 && second === '_search') return found(by(POST_SEARCH_TYPE), resourceType);
  if (s.length === 2 && second === '_history') return found(by(GET_HISTORY_TYPE), resourceType);
  if (second.startsWith('$')) {
    if (s.length > 2) return fail('a type-level operation has extra path segments');
    return operation(second, resourceType);
  }
  if (!FHIR_ID.test(second)) return fail('the resource id is not a valid FHIR id');
  const id = second;

  if (third === undefined) return found(by(AT_INSTANCE), resourceType, id);
  if (third.startsWith('$')) {
    if (s.length > 3) return fail('an instance-level operation has extra path segments');
    return operation(third, resourceType, id);
  }
  if (third === '_history') {
    if (fourth === undefined) return found(by(GET_HISTORY_INSTANCE), resourceType, id);
    if (!FHIR_ID.test(fourth)) return fail('the version id is not a valid FHIR id');
    const versionId = fourth;
    if (fifth === undefined) return found(by(GET_VREAD), resourceType, id, versionId);
    // FHIR R4 $meta and friends may address one version: [type]/[id]/_history/[vid]/$meta.
    if (fifth.startsWith('$') && s.length === 5) return operation(fifth, resourceType, id, versionId);
    return fail('the path has extra segments after the version id');
  }
  if (third !== '*' && !RESOURCE_TYPE.test(third)) return fail('the compartment search target is not a resource type');
  // resourceType is the searched type; `*` searches every type in the compartment.
  const compartment = { type: resourceType, id, targetType: third };
  const searched = third === '*' ? undefined : third;
  if (fourth === undefined) return found(by(GET_SEARCH_COMPARTMENT), searched, undefined, undefined, undefined, compartment);
  if (fourth === '_search' && fifth === undefined) return found(by(POST_SEARCH_COMPARTMENT), searched, undefined, undefined, undefined, compartment);
  return fail('the path has extra segments after the compartment search');
}

/**
 * Bulk Data status URLs: the server names its own in the kick-off's Content-Location, and these are
 * the shapes of the servers fhir-pdp knows: `_operations/export/[job]` (Microsoft FHIR server,
 * ExportController; some servers serve the output files below it as `_operations/export/[job]/[file]`)
 * and `job/[job]/status` (Medplum). HAPI's `$export-poll-status?_jobId=` is an operation.
 */
function exportJob(s: readonly string[], by: (table: MethodTable) => Interaction): Result<Fields> {
  const [first, second, third, fourth] = s;
  if (first === 'job') {
    if (s.length !== 3 || third !== 'status') return fail('the only job URL is job/[id]/status (an asynchronous request\'s status)');
    if (!FHIR_ID.test(second!)) return fail('the job id is not a valid FHIR id');
    return found(by(AT_EXPORT_STATUS), undefined, second);
  }
  if (second !== 'export' || third === undefined || s.length > 4) return fail('the only _operations URLs authorized are _operations/export/[id] and _operations/export/[id]/[file]');
  if (!FHIR_ID.test(third)) return fail('the export job id is not a valid FHIR id');
  if (fourth === undefined) return found(by(AT_EXPORT_STATUS), undefined, third);
  if (!EXPORT_FILE_NAME.test(fourth)) return fail('the export file name is invalid');
  const fields = found(by(AT_EXPORT_FILE), undefined, third);
  if (fields.ok) (fields.value as Mutable<Fields>).file = fourth;
  return fields;
}

function operation(name: string, resourceType?: string, id?: string, versionId?: string): Result<Fields> {
  if (!OPERATION_NAME.test(name)) return fail('the operation name is invalid');
  return found('operation', resourceType, id, versionId, name);
}
