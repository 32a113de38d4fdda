/**
 * The OpenID AuthZEN Authorization API 1.0 request, read and spelled as a FHIR question
 * (docs/authzen.md). Pure: no I/O, no clock. It imports only types from the decision entry point,
 * and how a token field is read from identity/extract.ts.
 *
 * AuthZEN 1.0 "Access Evaluation API Request": an evaluation is the 4-tuple subject, action, resource (REQUIRED) and context
 * (OPTIONAL). "Access Evaluations API Request": an evaluations request MAY carry an `evaluations` array; top-level members are
 * defaults, and "If a top-level key is specified in the 4-tuples present in the evaluations array
 * then the value of that will take precedence over these default values" (a whole-member
 * replacement, not a deep merge).
 */
import { z } from 'zod';
import type { DecisionInput } from '../decision/types.js';
import { hasAccessTokenParam, stripBearer } from '../identity/extract.js';

/** Most evaluations in one request; more is refused with 400 (the body limit bounds it too). */
export const MAX_EVALUATIONS = 1000;
/**
 * Most distinct subject tokens in one batch: each is verified once (signature work), so a batch
 * never costs more verifications than this.
 */
export const MAX_BATCH_TOKENS = 10;
/** As for /api/explain: larger than any maxTokenBytes, so an oversized token still gets its reason. */
const MAX_TOKEN_CHARS = 65_536 + 16;

/** How an AuthZEN caller sends the request body: the hint of a Bundle whose entries were not seen ends with it. */
const AUTHZEN_BODY_ADVICE = 'send the Bundle as `resource.properties.body` in the AuthZEN evaluation';

const properties = z.record(z.string().max(256), z.unknown());

/** AuthZEN 1.0 "Subject": `type` and `id` REQUIRED strings, `properties` an OPTIONAL object. */
const subject = z
  .object({
    type: z.string().min(1).max(256),
    id: z.string().max(1024),
    properties: properties.optional(),
  })
  .strict();
/** "Resource": the same members as a Subject. */
const resource = z
  .object({
    type: z.string().min(1).max(256),
    id: z.string().max(8192),
    properties: properties.optional(),
  })
  .strict();
/** "Action": `name` REQUIRED, `properties` OPTIONAL. */
const action = z
  .object({
    name: z.string().min(1).max(64),
    properties: properties.optional(),
  })
  .strict();
/** "Context": any JSON object. */
const context = properties;

export const evaluationRequest = z.object({ subject, action, resource, context: context.optional() }).strict();

const partialEvaluation = z
  .object({ subject: subject.optional(), action: action.optional(), resource: resource.optional(), context: context.optional() })
  .strict();

export const EVALUATIONS_SEMANTICS = ['execute_all', 'deny_on_first_deny', 'permit_on_first_permit'] as const;
export type EvaluationsSemantic = (typeof EVALUATIONS_SEMANTICS)[number];

export const evaluationsRequest = z
  .object({
    subject: subject.optional(),
    action: action.optional(),
    resource: resource.optional(),
    context: context.optional(),
    evaluations: z.array(partialEvaluation).max(MAX_EVALUATIONS, `at most ${MAX_EVALUATIONS} evaluations per request`).optional(),
    // "Evaluations options": "a set of key-value pairs"; an option this PDP does not know changes nothing.
    options: z.object({ evaluations_semantic: z.enum(EVALUATIONS_SEMANTICS).optional() }).passthrough().optional(),
  })
  .strict();

export type Evaluation = z.infer<typeof evaluationRequest>;
type EvaluationsRequest = z.infer<typeof evaluationsRequest>;

function problemsOf(error: z.ZodError): string {
  return error.issues
    .slice(0, 5)
    .map((i) => `${i.path.join('.') || '$'}: ${i.message}`)
    .join('; ');
}

export type ReadSingle = { ok: true; evaluation: Evaluation } | { ok: false; problem: string };

/** POST /access/v1/evaluation's body. */
export function readEvaluation(raw: unknown): ReadSingle {
  if (isObject(raw) && 'evaluations' in raw) return { ok: false, problem: 'evaluations belongs to /access/v1/evaluations; /access/v1/evaluation takes one subject, action and resource' };
  const parsed = evaluationRequest.safeParse(raw);
  return parsed.success ? { ok: true, evaluation: parsed.data } : { ok: false, problem: problemsOf(parsed.error) };
}

export type ReadBatch =
  | { ok: true; batch: false; evaluation: Evaluation }
  | { ok: true; batch: true; evaluations: Evaluation[]; semantic: EvaluationsSemantic }
  | { ok: false; problem: string };

/**
 * POST /access/v1/evaluations's body: each evaluation with the defaults applied. Without an
 * `evaluations` array it is a single evaluation ("Access Evaluations API Request": "behaves in a backwards-compatible manner").
 * An evaluation that still lacks subject, action or resource makes the whole request malformed.
 */
export function readEvaluations(raw: unknown): ReadBatch {
  if (isObject(raw) && Array.isArray(raw.evaluations) && raw.evaluations.length > MAX_EVALUATIONS)
    return { ok: false, problem: `${raw.evaluations.length} evaluations; at most ${MAX_EVALUATIONS} are decided in one request: split the batch` };
  const parsed = evaluationsRequest.safeParse(raw);
  if (!parsed.success) return { ok: false, problem: problemsOf(parsed.error) };
  const req: EvaluationsRequest = parsed.data;
  if (req.evaluations === undefined) {
    const single = evaluationRequest.safeParse({ subject: req.subject, action: req.action, resource: req.resource, ...(req.context ? { context: req.context } : {}) });
    return single.success ? { ok: true, batch: false, evaluation: single.data } : { ok: false, problem: problemsOf(single.error) };
  }
  const evaluations: Evaluation[] = [];
  for (const [i, item] of req.evaluations.entries()) {
    const s = item.subject ?? req.subject;
    const a = item.action ?? req.action;
    const r = item.resource ?? req.resource;
    const c = item.context ?? req.context;
    const missing = [s ? '' : 'subject', a ? '' : 'action', r ? '' : 'resource'].filter(Boolean);
    if (missing.length) return { ok: false, problem: `evaluations.${i} has no ${missing.join(', ')}, neither its own nor a top-level default` };
    evaluations.push({ subject: s!, action: a!, resource: r!, ...(c ? { context: c } : {}) });
  }
  const tokens = new Set(evaluations.map((e) => e.subject.properties?.token));
  if (tokens.size > MAX_BATCH_TOKENS)
    return { ok: false, problem: `the evaluations carry ${tokens.size} different subject tokens; at most ${MAX_BATCH_TOKENS} per request (send one batch per subject)` };
  return { ok: true, batch: true, evaluations, semantic: req.options?.evaluations_semantic ?? 'execute_all' };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The FHIR question an evaluation asks, and the subject id the caller asserted. */
export interface FhirQuestion {
  readonly input: DecisionInput;
  /** `subject.id`: must name the principal the token proves (checked after verification). */
  readonly subjectId: string;
}

export type Mapped = { ok: true; question: FhirQuestion } | { ok: false; problem: string };

const HTTP_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);

/** FHIR R4 resource type names (http.html: `[type]`): a capital letter, then letters. */
const FHIR_TYPE = /^[A-Z][A-Za-z]{0,63}$/;
/** FHIR R4 datatypes.html#id: `[A-Za-z0-9\-\.]{1,64}`. */
const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
/** An operation name (operations.html): `$` and a name. */
const OPERATION = /^\$[A-Za-z][A-Za-z0-9\-_.]{0,63}$/;

/** Where an interaction sits (FHIR R4 http.html): on an instance, a type, or the whole system. */
type Level = 'instance' | 'type' | 'system';

/** FHIR interaction names (FHIR R4 http.html §3.1.0) as AuthZEN action names: method and level. */
const INTERACTIONS: Readonly<Record<string, { method: string; level: Level; suffix?: string }>> = {
  read: { method: 'GET', level: 'instance' },
  vread: { method: 'GET', level: 'instance', suffix: '/_history/{vid}' },
  update: { method: 'PUT', level: 'instance' },
  patch: { method: 'PATCH', level: 'instance' },
  delete: { method: 'DELETE', level: 'instance' },
  'history-instance': { method: 'GET', level: 'instance', suffix: '/_history' },
  create: { method: 'POST', level: 'type' },
  'search-type': { method: 'GET', level: 'type' },
  'history-type': { method: 'GET', level: 'type', suffix: '/_history' },
  'search-system': { method: 'GET', level: 'system' },
  'history-system': { method: 'GET', level: 'system', suffix: '/_history' },
  capabilities: { method: 'GET', level: 'system', suffix: '/metadata' },
  batch: { method: 'POST', level: 'system' },
  transaction: { method: 'POST', level: 'system' },
};

/** The action names this PDP understands, for hints and the documentation. */
export const ACTION_NAMES: readonly string[] = [...HTTP_METHODS, ...Object.keys(INTERACTIONS), '$<operation>'];

/** The resource type of a request given as a path (the API-gateway profile's `route`). */
export const ROUTE_RESOURCE = 'route';
/** The resource of system-level interactions (capabilities, search-system, batch, system operations). */
export const SYSTEM_RESOURCE = 'system';

export interface MapOptions {
  /** fhirBaseUrl of the configuration: type + id become `{base}/{type}/{id}`. */
  readonly fhirBaseUrl?: string;
}

/**
 * Spells one evaluation as the DecisionInput /api/decide would decide:
 *  - subject.properties.token: the end user's (or client's) bearer token, verified as always;
 *  - action.name: an HTTP method (the API-gateway profile) or a FHIR interaction name, or `$op`;
 *  - resource: `{type: "route", id: <request path and query>}` with an HTTP method, or a FHIR
 *    type and id (`""` for type-level interactions), or `{type: "system", id: ""}`;
 *  - resource.properties.body: the request body (a batch or transaction Bundle).
 * A problem here is the caller's malformed question (400, or a false decision inside a batch).
 */
export function fhirQuestionOf(e: Evaluation, options: MapOptions = {}): Mapped {
  const token = e.subject.properties?.token;
  if (token !== undefined && (typeof token !== 'string' || token.length > MAX_TOKEN_CHARS))
    return { ok: false, problem: `subject.properties.token must be a string of at most ${MAX_TOKEN_CHARS} characters (the bearer token, with or without "Bearer ")` };
  const target = targetOf(e, options);
  if ('problem' in target) return { ok: false, problem: target.problem };
  const body = e.resource.properties?.body;
  return {
    ok: true,
    question: {
      subjectId: e.subject.id,
      input: {
        method: target.method,
        target: target.target,
        // The token as the JSON question's `token` member: no Authorization header of the AuthZEN
        // request is read (that header authenticates the PEP to the PDP, AuthZEN 1.0 "Model").
        credentials: { authorization: [], ...(token !== undefined ? { token: stripBearer(token) } : {}), queryToken: hasAccessTokenParam(target.target) },
        mode: 'authzen',
        gateway: 'authzen',
        bodyAdvice: AUTHZEN_BODY_ADVICE,
        ...(body !== undefined ? { body } : {}),
      },
    },
  };
}

function targetOf(e: Evaluation, options: MapOptions): { method: string; target: string } | { problem: string } {
  const name = e.action.name;
  const { type, id } = e.resource;
  if (HTTP_METHODS.has(name)) {
    if (type === ROUTE_RESOURCE) {
      if (!id.startsWith('/') && !/^https?:\/\//i.test(id)) return { problem: `resource.id of a "route" resource is the request path (starting with /) or URL; got ${JSON.stringify(id.slice(0, 64))}` };
      return { method: name, target: id };
    }
    if (type === SYSTEM_RESOURCE) return id === '' ? { method: name, target: under(options, '/') } : { problem: 'a "system" resource has id ""' };
    const t = typedPath(type, id);
    if ('problem' in t) return t;
    if (id === '' && (name === 'PUT' || name === 'PATCH' || name === 'DELETE'))
      return { problem: `${name} on a resource type needs resource.id (the FHIR id); for a conditional ${name.toLowerCase()}, give the request as a "route" resource with its query` };
    if (id !== '' && name === 'POST') return { problem: 'POST creates a resource of resource.type: leave resource.id ""' };
    return { method: name, target: under(options, t.path) };
  }
  if (OPERATION.test(name)) {
    const method = e.action.properties?.method ?? 'POST';
    if (method !== 'GET' && method !== 'POST') return { problem: `action.properties.method of an operation is "GET" or "POST"; got ${JSON.stringify(String(method).slice(0, 16))}` };
    if (type === SYSTEM_RESOURCE) return id === '' ? { method, target: under(options, `/${name}`) } : { problem: 'a "system" resource has id ""' };
    const t = typedPath(type, id);
    if ('problem' in t) return t;
    return { method, target: under(options, `${t.path}/${name}`) };
  }
  const interaction = INTERACTIONS[name];
  if (!interaction) {
    const lower = name.toLowerCase();
    const spelled = HTTP_METHODS.has(name.toUpperCase()) ? `; HTTP methods are upper case ("${name.toUpperCase()}")` : INTERACTIONS[lower] ? `; interaction names are lower case ("${lower}")` : '';
    return { problem: `action.name ${JSON.stringify(name)} is neither an HTTP method nor a FHIR interaction (${ACTION_NAMES.join(', ')})${spelled}` };
  }
  if (type === ROUTE_RESOURCE) return { problem: `a "route" resource goes with an HTTP method as action.name, not the interaction "${name}"` };
  let path: string;
  if (interaction.level === 'system') {
    if (type !== SYSTEM_RESOURCE || id !== '') return { problem: `"${name}" is a system-level interaction: resource is {"type":"system","id":""}` };
    path = '/';
  } else {
    const t = typedPath(type, id);
    if ('problem' in t) return t;
    if (interaction.level === 'instance' && id === '') return { problem: `"${name}" acts on one resource: resource.id is its FHIR id` };
    if (interaction.level === 'type' && id !== '') return { problem: `"${name}" acts on the resource type: resource.id is ""` };
    path = t.path;
  }
  let suffix = interaction.suffix ?? '';
  if (suffix.includes('{vid}')) {
    const vid = e.resource.properties?.versionId;
    if (typeof vid !== 'string' || !FHIR_ID.test(vid)) return { problem: '"vread" needs resource.properties.versionId, a FHIR id' };
    suffix = suffix.replace('{vid}', vid);
  }
  const joined = path === '/' ? suffix || '/' : `${path}${suffix}`;
  return { method: interaction.method, target: under(options, joined) };
}

function typedPath(type: string, id: string): { path: string } | { problem: string } {
  if (!FHIR_TYPE.test(type)) return { problem: `resource.type ${JSON.stringify(type.slice(0, 64))} is not a FHIR resource type, "route" or "system"` };
  if (id === '') return { path: `/${type}` };
  if (!FHIR_ID.test(id)) return { problem: `resource.id ${JSON.stringify(id.slice(0, 64))} is not a FHIR id (A-Z, a-z, 0-9, '-', '.', at most 64)` };
  return { path: `/${type}/${id}` };
}

/** A path relative to the FHIR base, as the FHIR server receives it (the base's path in front). */
function under(options: MapOptions, path: string): string {
  if (!options.fhirBaseUrl) return path;
  const base = options.fhirBaseUrl.replace(/\/+$/, '');
  return path === '/' ? `${base}/` : `${base}${path}`;
}
