/**
 * The three ways in to /api/decide (docs/decision-contract.md, "Asking: three ways in") and the one
 * place where a Decision becomes HTTP (STYLE §8):
 *  1. JSON: POST /api/decide with {method, path|url, headers, token}; always 200 with the decision,
 *     except a malformed question (400 invalid_request).
 *  2. Forward-auth (nginx auth_request, Traefik forwardAuth): X-Original-URI / X-Forwarded-Uri
 *     present; the HTTP status is the decision's.
 *  3. Envoy ext_authz HTTP service: /api/decide/<original path>; the HTTP status is the decision's.
 */
import { z } from 'zod';
import { echoTraceparent, gatewayAnswer, invalidRequestAnswer, jsonAnswer, type AnswerOptions, type DecideMode } from './answer.js';
import type { Pdp } from '../decision/pipeline.js';
import type { DecisionInput } from '../decision/types.js';
import { hasAccessTokenParam } from '../identity/extract.js';
import { parseJsonStrict } from '../identity/strict-json.js';
import { ENVOY_BODY_ADVICE, FORWARD_AUTH_BODY_ADVICE, JSON_BODY_ADVICE } from './body-advice.js';
import { traceparentOf } from '../telemetry/trace-context.js';
import { firstHeader, type PdpHttpRequest, type PdpHttpResponse } from './types.js';

export type { DecideMode };

export const DECIDE_PREFIX = '/api/decide';

const ORIGINAL = ['x-original-method', 'x-original-uri'] as const;
const FORWARDED = ['x-forwarded-method', 'x-forwarded-uri'] as const;
const ORIGINAL_REQUEST_HEADERS = [...ORIGINAL, ...FORWARDED] as const;

/**
 * Method-override headers (Google's and Microsoft's X-HTTP-Method-Override, X-HTTP-Method,
 * X-Method-Override; the `_method` parameter is refused with the target, src/fhir/request.ts). A
 * server or framework behind the gateway that honours one runs another method than the request
 * line says, so a question carrying one is refused: fhir-pdp decides the method it was told.
 */
const METHOD_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const;

export function modeOf(req: PdpHttpRequest, path: string): DecideMode {
  if (path.startsWith(`${DECIDE_PREFIX}/`)) return 'envoy';
  // A method header alone is a forward-auth question too (one that lacks its URI header): answered
  // as incomplete, not mistaken for a JSON question.
  for (const h of ORIGINAL_REQUEST_HEADERS) if (req.header(h).length > 0) return 'forward-auth';
  return 'json';
}

/** JSON mode's question. Bounded: a method is a token, a path fits a URL limit, headers are few. */
export const jsonQuestion = z
  .object({
    method: z.string().min(1).max(16).regex(/^[A-Za-z]+$/),
    path: z.string().min(1).max(8192).optional(),
    url: z.string().min(1).max(8192).optional(),
    headers: z.record(z.string().max(256), z.union([z.string().max(65536), z.array(z.string().max(65536)).max(8)])).optional(),
    token: z.string().max(65536).optional(),
    /** A batch/transaction Bundle for `POST /`: each entry is decided. */
    body: z.unknown().optional(),
  })
  .strict()
  .refine((q) => (q.path === undefined) !== (q.url === undefined), { message: 'exactly one of `path` or `url` is required' });

type JsonQuestion = z.infer<typeof jsonQuestion>;

const METHOD_TOKEN = /^[A-Za-z]+$/;

/** A member jsonQuestion knows. */
function isQuestionMember(key: string): boolean {
  switch (key) {
    case 'method':
    case 'path':
    case 'url':
    case 'headers':
    case 'token':
    case 'body':
      return true;
    default:
      return false;
  }
}

const isBoundedString = (v: unknown, max: number): v is string => typeof v === 'string' && v.length <= max;
const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.getPrototypeOf(v) === Object.prototype;

/**
 * The common question checked without zod, which took a tenth of answering a cached token: true
 * only for a question jsonQuestion accepts as it is (test/unit/http/decide-api.test.ts compares the
 * two on thousands of questions, at and past every bound). Anything else, including every question
 * zod refuses, goes through zod, which also words the problem.
 */
export function isPlainQuestion(raw: unknown): raw is JsonQuestion {
  if (!isPlainObject(raw)) return false;
  for (const key in raw) if (!isQuestionMember(key)) return false;
  const { method, path, url, headers, token } = raw;
  if (!isBoundedString(method, 16) || !METHOD_TOKEN.test(method)) return false;
  // Exactly one of path and url, a string of 1 to 8192 characters.
  const target = path === undefined ? url : url === undefined ? path : undefined;
  if (!isBoundedString(target, 8192) || target === '') return false;
  if (token !== undefined && !isBoundedString(token, 65536)) return false;
  if (headers === undefined) return true;
  if (!isPlainObject(headers)) return false;
  for (const name in headers) {
    if (name.length > 256) return false;
    const value = headers[name];
    if (isBoundedString(value, 65536)) continue;
    if (!Array.isArray(value) || value.length > 8) return false;
    for (const v of value) if (!isBoundedString(v, 65536)) return false;
  }
  return true;
}

/**
 * /api/decide's answer: a value when the Pdp decided from memory (Pdp.decideNow), else a promise.
 * No async function on this path: each would add a promise and microtask turns to every cached decision.
 */
export function handleDecide(pdp: Pdp, req: PdpHttpRequest, path: string, query: string, options: AnswerOptions): PdpHttpResponse | Promise<PdpHttpResponse> {
  const mode = modeOf(req, path);
  if (mode === 'json') return handleJson(pdp, req, options);
  const input = withTraceparent(mode === 'envoy' ? envoyInput(req, path, query) : forwardAuthInput(req), req);
  const decision = pdp.decideNow(input);
  return decision instanceof Promise ? decision.then((d) => echoTraceparent(gatewayAnswer(d, options, mode), input)) : echoTraceparent(gatewayAnswer(decision, options, mode), input);
}

/**
 * The question's W3C traceparent (the client's, passed on by nginx's auth subrequest, Traefik or
 * Envoy; or the JSON caller's own), continued by the decision. An invalid one is ignored.
 */
export function withTraceparent(input: DecisionInput, req: PdpHttpRequest): DecisionInput {
  const values = req.header('traceparent');
  if (values.length === 0) return input;
  const traceparent = traceparentOf(values);
  return traceparent ? { ...input, traceparent } : input;
}

function handleJson(pdp: Pdp, req: PdpHttpRequest, options: AnswerOptions): PdpHttpResponse | Promise<PdpHttpResponse> {
  if (req.method !== 'POST') return invalidRequestAnswer('JSON mode takes POST with a JSON body; gateways use the forward-auth headers or /api/decide/<path>', options.admin);
  if (req.bodyTooLarge) return invalidRequestAnswer('the request body exceeds the size limit', options.admin);
  if (!req.body || req.body.length === 0) return invalidRequestAnswer('the body is empty; send {"method","path","headers":{"authorization"}}', options.admin);
  // Duplicate member names are refused as in tokens (RFC 8259 §4: names SHOULD be unique; JSON.parse
  // keeps the last): a question read one way here and another way by whoever built it is not decided.
  const parsedBody = parseJsonStrict(req.body.toString('utf8'));
  if (!parsedBody.ok) return invalidRequestAnswer(parsedBody.problem === 'duplicate member names' ? 'the body repeats a member name (in the question, its headers or its body); send each member once' : 'the body is not JSON', options.admin);
  const raw = parsedBody.value;
  let q: JsonQuestion;
  if (isPlainQuestion(raw)) q = raw;
  else {
    const parsed = jsonQuestion.safeParse(raw);
    if (!parsed.success)
      return invalidRequestAnswer(parsed.error.issues.map((i) => `${i.path.join('.') || '$'}: ${i.message}`).join('; '), options.admin);
    q = parsed.data;
  }
  const authorization: string[] = [];
  let override: string | undefined;
  for (const name in q.headers) {
    const lower = name.toLowerCase();
    if ((METHOD_OVERRIDE_HEADERS as readonly string[]).includes(lower)) override ??= methodOverrideProblem(name);
    if (lower !== 'authorization') continue;
    const value = q.headers[name]!;
    if (Array.isArray(value)) authorization.push(...value);
    else authorization.push(value);
  }
  const target = q.path ?? q.url!;
  const input = withTraceparent(
    {
      method: q.method.toUpperCase(),
      target,
      credentials: { authorization, token: q.token, queryToken: hasAccessTokenParam(target) },
      mode: 'json',
      gateway: 'json',
      body: q.body,
      bodyAdvice: JSON_BODY_ADVICE,
      ...(override ? { ambiguity: override } : {}),
    },
    req,
  );
  const decision = pdp.decideNow(input);
  return decision instanceof Promise ? decision.then((d) => echoTraceparent(jsonAnswer(d, options.admin), input)) : echoTraceparent(jsonAnswer(decision, options.admin), input);
}

function forwardAuthInput(req: PdpHttpRequest): DecisionInput {
  // nginx: X-Original-Method + X-Original-URI (set in the auth_request location);
  // Traefik forwardAuth: X-Forwarded-Method + X-Forwarded-Uri. One family, each header once:
  // a gateway that passes client headers through (Traefik does by default) would otherwise let
  // the client add the other family, or a second value, and choose what is decided.
  const original = ORIGINAL.some((h) => req.header(h).length > 0);
  const forwarded = FORWARDED.some((h) => req.header(h).length > 0);
  const repeated = ORIGINAL_REQUEST_HEADERS.find((h) => req.header(h).length > 1);
  const family = original ? ORIGINAL : FORWARDED;
  const uri = firstHeader(req, family[1]);
  const method = firstHeader(req, family[0]);
  const spoofable =
    original && forwarded
      ? 'the request carries both X-Original-* and X-Forwarded-* headers; the gateway must send one family and overwrite client-supplied values (see docs/gateways.md)'
      : repeated
        ? `the request carries ${repeated} more than once`
        : undefined;
  // The auth request's own method says nothing about the client's: nginx's auth_request always
  // asks with GET, so a question without the method header would decide a DELETE as a read.
  const incomplete = spoofable ? undefined : missingPart(original ? 'nginx' : 'traefik', method, uri);
  const target = uri ?? '/';
  const ambiguity = spoofable ?? methodOverrideIn(req);
  return {
    method: (method ?? req.method).toUpperCase(),
    target,
    credentials: credentialsOf(req, target),
    mode: 'forward-auth',
    // X-Original-URI is what the nginx snippet sends; Traefik sends X-Forwarded-Uri and cannot
    // rewrite the query, so it is never offered a narrowed search.
    gateway: original && !forwarded ? 'nginx' : 'traefik',
    bodyAdvice: FORWARD_AUTH_BODY_ADVICE,
    ...(incomplete ? { incomplete } : ambiguity ? { ambiguity } : {}),
  };
}

/** What a forward-auth question lacks of the original request, with the line that adds it; else undefined. */
function missingPart(gateway: 'nginx' | 'traefik', method: string | undefined, uri: string | undefined): string | undefined {
  const [methodHeader, uriHeader] = gateway === 'nginx' ? ['X-Original-Method', 'X-Original-URI'] : ['X-Forwarded-Method', 'X-Forwarded-Uri'];
  const fix = (header: string, variable: string) =>
    gateway === 'nginx'
      ? `add \`proxy_set_header ${header} ${variable};\` to the nginx auth location (docs/gateways.md)`
      : `Traefik forwardAuth sets ${header} itself: check that nothing between Traefik and fhir-pdp removes it (docs/gateways.md)`;
  if (!method) return `the forward-auth question has no ${methodHeader} header, so the client's method is unknown; ${fix(methodHeader, '$request_method')}`;
  if (!uri) return `the forward-auth question has ${methodHeader} but no ${uriHeader} header, so the client's request target is unknown; ${fix(uriHeader, '$request_uri')}`;
  return undefined;
}

/** The method-override header a request carries, described; else undefined. (`_method` in the target is refused by src/fhir/request.ts.) */
function methodOverrideIn(req: PdpHttpRequest): string | undefined {
  for (const h of METHOD_OVERRIDE_HEADERS) if (req.header(h).length > 0) return methodOverrideProblem(h);
  return undefined;
}

function methodOverrideProblem(input: string): string {
  return `the request carries the method override ${input}, with which a server may run another method than the one decided; remove it at the gateway, or send the real method`;
}

function envoyInput(req: PdpHttpRequest, path: string, query: string): DecisionInput {
  const target = `${path.slice(DECIDE_PREFIX.length)}${query}`;
  const ambiguity = methodOverrideIn(req);
  return {
    method: req.method.toUpperCase(),
    target,
    credentials: credentialsOf(req, target),
    mode: 'envoy',
    gateway: 'envoy',
    bodyAdvice: ENVOY_BODY_ADVICE,
    ...envoyBody(req),
    ...(ambiguity ? { ambiguity } : {}),
  };
}

/**
 * The client's body, when Envoy sends it (`with_request_body`): a batch or transaction Bundle is
 * then decided entry by entry. A body Envoy marks as cut short (`x-envoy-auth-partial-body: true`,
 * with `allow_partial_message`) or that exceeds fhir-pdp's limit is not seen at all, and a body
 * that is not strict JSON is a problem the Bundle is refused for.
 */
function envoyBody(req: PdpHttpRequest): Pick<DecisionInput, 'body' | 'bodyProblem'> {
  if (req.bodyTooLarge || firstHeader(req, 'x-envoy-auth-partial-body')?.toLowerCase() === 'true') return {};
  if (!req.body || req.body.length === 0) return {};
  const parsed = parseJsonStrict(req.body.toString('utf8'));
  if (parsed.ok) return { body: parsed.value };
  return { bodyProblem: parsed.problem === 'duplicate member names' ? 'the body repeats a member name' : 'the body is not JSON (fhir-pdp reads JSON Bundles only)' };
}

function credentialsOf(req: PdpHttpRequest, target: string): DecisionInput['credentials'] {
  return { authorization: req.header('authorization'), queryToken: hasAccessTokenParam(target) };
}
