/**
 * The HTTPS binding of the OpenID AuthZEN Authorization API 1.0 (docs/authzen.md), below the PDP
 * base `/api` of both hosts:
 *   POST /api/access/v1/evaluation    one evaluation
 *   POST /api/access/v1/evaluations   a batch, with defaults and options.evaluations_semantic
 *   GET  /.well-known/authzen-configuration/api   the PDP metadata ("Obtaining Policy Decision Point Metadata": the well-known string
 *        "inserted between the host component and the path"); also /api/.well-known/authzen-configuration,
 *        which is where Azure Functions (route prefix /api) can serve it.
 * The PEP authenticates with the API key as /api/decide does; the subject is proven by its token.
 */
import { fhirQuestionOf, readEvaluation, readEvaluations, type Evaluation, type EvaluationsSemantic, type FhirQuestion } from '../authzen/request.js';
import { evaluationResponse, malformedEvaluation, pdpMetadata, subjectMismatch, type EvaluationResponse } from '../authzen/response.js';
import { parseJsonStrict } from '../identity/strict-json.js';
import type { Pdp } from '../decision/pipeline.js';
import type { PdpHttpRequest, PdpHttpResponse } from './types.js';
import { json } from './types.js';

/** The AuthZEN PDP base in both hosts: the spec's paths are relative to it. */
export const AUTHZEN_BASE_PATH = '/api';
export const EVALUATION_PATH = `${AUTHZEN_BASE_PATH}/access/v1/evaluation`;
export const EVALUATIONS_PATH = `${AUTHZEN_BASE_PATH}/access/v1/evaluations`;
/** RFC 8615 / AuthZEN 1.0 "Obtaining Policy Decision Point Metadata" for the identifier `{origin}/api`. */
export const METADATA_PATH = `/.well-known/authzen-configuration${AUTHZEN_BASE_PATH}`;
/** The same document below the base, where Azure Functions' route prefix allows it. */
export const METADATA_PATH_UNDER_BASE = `${AUTHZEN_BASE_PATH}/.well-known/authzen-configuration`;

export function isAuthzenPath(path: string): boolean {
  return path === EVALUATION_PATH || path === EVALUATIONS_PATH || path === METADATA_PATH || path === METADATA_PATH_UNDER_BASE;
}

export interface AuthzenCallOptions {
  /** The caller presented a recognised key (or none is needed: loopback only, or the Functions host checked it). */
  readonly authenticated: boolean;
  /** The caller holds an admin key: operator hints go into `reason_admin`. */
  readonly admin: boolean;
  /** PDP_AUTHZEN_PDP_URL: the policy decision point identifier the metadata names. */
  readonly pdpUrl?: string;
  /** fhirBaseUrl, to spell type + id as the FHIR server's path. */
  readonly fhirBaseUrl?: string;
}

/** AuthZEN 1.0 Transport, Error Responses: the body is "An error message string". */
function error(status: 400 | 401 | 403 | 405, message: string, requestId: string | undefined, headers: Record<string, string> = {}): PdpHttpResponse {
  return {
    status,
    headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', ...headers, ...(requestId !== undefined ? { 'x-request-id': requestId } : {}) },
    body: message,
  };
}

/** The X-Request-ID to echo, or a problem. Echoed unchanged, so it must be a safe header value. */
function requestIdOf(req: PdpHttpRequest): { id?: string } | { problem: string } {
  const values = req.header('x-request-id');
  if (values.length === 0) return {};
  if (values.length > 1) return { problem: 'X-Request-ID is sent more than once; send one request identifier' };
  const id = values[0]!;
  if (id.length > 256 || !/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(id)) return { problem: 'X-Request-ID must be 1 to 256 printable ASCII characters' };
  return { id };
}

export async function handleAuthzen(pdp: Pdp, req: PdpHttpRequest, path: string, options: AuthzenCallOptions): Promise<PdpHttpResponse> {
  const rid = requestIdOf(req);
  // A refused request id is not echoed: it is what could not be carried.
  if ('problem' in rid) return error(400, rid.problem, undefined);
  const requestId = rid.id;
  if (path === METADATA_PATH || path === METADATA_PATH_UNDER_BASE) return metadata(req, options, requestId);
  if (req.method !== 'POST') return error(405, `${path} takes POST with a JSON body`, requestId, { allow: 'POST' });
  // AuthZEN 1.0 Transport: "a 401 HTTPS status code indicates that the caller (policy enforcement
  // point) did not properly authenticate to the PDP". The PEP's key, not the subject's token.
  if (!options.authenticated) return error(401, 'A valid key is required (x-functions-key header or code parameter).', requestId);
  if (req.bodyTooLarge) return error(400, 'The request body exceeds the size limit; split the batch.', requestId);
  if (!req.body || req.body.length === 0) return error(400, 'The body is empty; send an AuthZEN evaluation request (subject, action, resource).', requestId);
  const parsed = parseJsonStrict(req.body.toString('utf8'));
  if (!parsed.ok)
    return error(400, parsed.problem === 'duplicate member names' ? 'The body repeats a member name; send each member once.' : 'The body is not JSON.', requestId);
  const answer = path === EVALUATION_PATH ? await single(pdp, parsed.value, options) : await batch(pdp, parsed.value, options);
  if ('problem' in answer) return error(400, `The request is malformed: ${answer.problem}`, requestId);
  return json(200, answer.body, requestId !== undefined ? { 'x-request-id': requestId } : {});
}

type Answer = { body: unknown } | { problem: string };

async function single(pdp: Pdp, raw: unknown, options: AuthzenCallOptions): Promise<Answer> {
  const read = readEvaluation(raw);
  if (!read.ok) return read;
  return await one(pdp, read.evaluation, options);
}

async function one(pdp: Pdp, e: Evaluation, options: AuthzenCallOptions): Promise<Answer> {
  const mapped = fhirQuestionOf(e, options.fhirBaseUrl ? { fhirBaseUrl: options.fhirBaseUrl } : {});
  if (!mapped.ok) return mapped;
  return { body: await decideOne(pdp, mapped.question, options.admin) };
}

async function decideOne(pdp: Pdp, q: FhirQuestion, admin: boolean): Promise<EvaluationResponse> {
  const decision = await pdp.decide(q.input, { subjectMismatch: (p) => subjectMismatch(q.subjectId, p) });
  return evaluationResponse(decision, admin);
}

async function batch(pdp: Pdp, raw: unknown, options: AuthzenCallOptions): Promise<Answer> {
  const read = readEvaluations(raw);
  if (!read.ok) return read;
  if (!read.batch) return await one(pdp, read.evaluation, options);
  const mapOptions = options.fhirBaseUrl ? { fhirBaseUrl: options.fhirBaseUrl } : {};
  const questions = read.evaluations.map((e) => fhirQuestionOf(e, mapOptions));
  return { body: { evaluations: await decideBatch(pdp, questions, read.semantic, options.admin) } };
}

/**
 * AuthZEN 1.0 "Evaluations semantics": execute_all answers every evaluation; deny_on_first_deny stops after the
 * first false ("any denial (error, or decision: false)"), permit_on_first_permit after the first
 * true; answers in request order ("Access Evaluations API Response").
 *
 * One verification per token: the first evaluation of each token is decided alone, which verifies
 * the token and puts it in the verified-token cache; the others are then answered from the cache.
 */
export async function decideBatch(
  pdp: Pdp,
  questions: ReadonlyArray<{ ok: true; question: FhirQuestion } | { ok: false; problem: string }>,
  semantic: EvaluationsSemantic,
  admin: boolean,
): Promise<EvaluationResponse[]> {
  const decideAt = (i: number): EvaluationResponse | Promise<EvaluationResponse> => {
    const q = questions[i]!;
    return q.ok ? decideOne(pdp, q.question, admin) : malformedEvaluation(q.problem);
  };
  if (semantic !== 'execute_all') {
    const answers: EvaluationResponse[] = [];
    for (let i = 0; i < questions.length; i++) {
      const a = await decideAt(i);
      answers.push(a);
      if (semantic === 'deny_on_first_deny' ? !a.decision : a.decision) break;
    }
    return answers;
  }
  const answers: Array<EvaluationResponse | Promise<EvaluationResponse>> = new Array(questions.length);
  const seen = new Set<string | undefined>();
  for (let i = 0; i < questions.length; i++) {
    const q = questions[i]!;
    const token = q.ok ? q.question.input.credentials.token : undefined;
    if (!q.ok || seen.has(token)) continue;
    seen.add(token);
    answers[i] = await decideAt(i);
  }
  for (let i = 0; i < questions.length; i++) answers[i] ??= decideAt(i);
  return await Promise.all(answers);
}

const LOOPBACK_HOST = /^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d{1,5})?$/i;
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;

/**
 * "Policy Decision Point Metadata Response": a JSON object of the metadata parameters. The identifier is PDP_AUTHZEN_PDP_URL when set;
 * else it is made from the request's Host (https, or http for a loopback host), which is right
 * when clients reach fhir-pdp directly, and is why the answer is then not cached by proxies.
 */
function metadata(req: PdpHttpRequest, options: AuthzenCallOptions, requestId: string | undefined): PdpHttpResponse {
  if (req.method !== 'GET' && req.method !== 'HEAD') return error(405, 'The PDP metadata is read with GET.', requestId, { allow: 'GET' });
  const rid: Record<string, string> = requestId !== undefined ? { 'x-request-id': requestId } : {};
  if (options.pdpUrl) return json(200, pdpMetadata(options.pdpUrl), { 'cache-control': 'public, max-age=300', ...rid });
  const hosts = req.header('host');
  const host = hosts.length === 1 ? hosts[0]! : undefined;
  if (!host || !HOST.test(host)) return error(400, 'The request has no single valid Host header, so the PDP URL is unknown; set PDP_AUTHZEN_PDP_URL.', requestId);
  const scheme = LOOPBACK_HOST.test(host) ? 'http' : 'https';
  return json(200, pdpMetadata(`${scheme}://${host.toLowerCase()}${AUTHZEN_BASE_PATH}`), { vary: 'Host', ...rid });
}
