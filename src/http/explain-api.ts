/**
 * /api/explain for admin callers (src/http/routes.ts checks the admin key before calling these):
 * GET serves the self-contained page, POST {token, method, path} (or an AuthZEN evaluation request)
 * answers the Explanation of the decision /api/decide (or /api/access/v1/evaluation) would make,
 * walked by the same code (Pdp.decide with a trace). The token is used for that one decision and
 * then dropped: never logged, never stored, never echoed back.
 */
import { z } from 'zod';
import type { PdpHttpRequest, PdpHttpResponse } from './types.js';
import { json } from './types.js';
import { parseJsonStrict } from '../identity/strict-json.js';
import { fhirQuestionOf, readEvaluation } from '../authzen/request.js';
import { subjectMismatch } from '../authzen/response.js';
import type { Pdp } from '../decision/pipeline.js';
import { invalidRequestAnswer } from './answer.js';
import { JSON_BODY_ADVICE } from './body-advice.js';
import { EXPLAIN_PAGE_CSP, EXPLAIN_PAGE_HTML } from '../explain/page.js';
import { explanationOf, type Explanation } from '../explain/render.js';
import { stripBearer } from '../identity/extract.js';

/** Larger than any maxTokenBytes the schema allows, so an oversized token still gets its reason. */
export const MAX_EXPLAIN_TOKEN_CHARS = 65_536 + 16;

const explainQuestion = z
  .object({
    token: z.string().max(MAX_EXPLAIN_TOKEN_CHARS),
    method: z.string().min(1).max(16).regex(/^[A-Za-z]+$/, 'an HTTP method name'),
    path: z.string().min(1).max(8192),
  })
  .strict();

export type ExplainQuestion = z.output<typeof explainQuestion>;

/** One traced decision, explained. Shared by the CLI and POST /api/explain. */
export async function explainQuestionWith(pdp: Pdp, q: ExplainQuestion, now: () => number = Date.now): Promise<Explanation> {
  const token = stripBearer(q.token);
  const method = q.method.toUpperCase();
  const decision = await pdp.decide(
    { method, target: q.path, credentials: { authorization: [], token }, mode: 'explain', gateway: 'json', bodyAdvice: JSON_BODY_ADVICE },
    { trace: true },
  );
  return explanationOf(decision, { method, path: q.path }, token, now());
}

/** True when a JSON question is an AuthZEN evaluation (it names a subject) rather than {token, method, path}. */
export function isAuthzenQuestion(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && !Array.isArray(raw) && 'subject' in raw;
}

/**
 * Explain an AuthZEN 1.0 evaluation request (docs/authzen.md): the same mapping the AuthZEN
 * endpoints use (src/authzen/), then the traced decision /api/explain walks. For the CLI
 * (`fhir-pdp explain --authzen`) and POST /api/explain with an AuthZEN body.
 */
export async function explainEvaluationWith(pdp: Pdp, raw: unknown, now: () => number = Date.now): Promise<{ explanation: Explanation } | { problem: string }> {
  const read = readEvaluation(raw);
  if (!read.ok) return { problem: read.problem };
  const mapped = fhirQuestionOf(read.evaluation, pdp.config.fhirBaseUrl ? { fhirBaseUrl: pdp.config.fhirBaseUrl } : {});
  if (!mapped.ok) return { problem: mapped.problem };
  const { input, subjectId } = mapped.question;
  const decision = await pdp.decide({ ...input, mode: 'explain' }, { trace: true, subjectMismatch: (p) => subjectMismatch(subjectId, p) });
  return { explanation: explanationOf(decision, { method: input.method, path: input.target }, input.credentials.token, now()) };
}

/** Only admin callers reach /api/explain, so the problem is always the hint. */
function invalidRequest(problem: string): PdpHttpResponse {
  return invalidRequestAnswer(problem, true);
}

export function explainHandler(pdp: Pdp, now: () => number = Date.now): (req: PdpHttpRequest) => Promise<PdpHttpResponse> {
  return async (req) => {
    if (req.method !== 'POST') return json(405, { error: 'method_not_allowed' }, { allow: 'GET, POST' });
    if (req.bodyTooLarge) return invalidRequest('the request body exceeds the size limit');
    if (!req.body || req.body.length === 0) return invalidRequest('the body is empty; send {"token","method","path"}');
    // As strict as /api/decide's JSON mode: a repeated member is refused, not read as its last value.
    const raw = parseJsonStrict(req.body.toString('utf8'));
    if (!raw.ok) return invalidRequest(raw.problem === 'duplicate member names' ? 'the body repeats a member name; send each member once' : 'the body is not JSON');
    // An AuthZEN evaluation request (docs/authzen.md) is explained through the same mapping as /api/access/v1/evaluation.
    if (isAuthzenQuestion(raw.value)) {
      const answer = await explainEvaluationWith(pdp, raw.value, now);
      if ('problem' in answer) return invalidRequest(`the AuthZEN evaluation request is malformed: ${answer.problem}`);
      return json(200, answer.explanation, { 'x-decision-id': answer.explanation.decision.decisionId });
    }
    const parsed = explainQuestion.safeParse(raw.value);
    if (!parsed.success) return invalidRequest(parsed.error.issues.map((i) => `${i.path.join('.') || '$'}: ${i.message}`).join('; '));
    const explanation = await explainQuestionWith(pdp, parsed.data, now);
    return json(200, explanation, { 'x-decision-id': explanation.decision.decisionId });
  };
}

/** The page, with headers that keep it self-contained: its CSP allows only its own inline code and same-origin fetch. */
export function explainPageResponse(): PdpHttpResponse {
  return {
    status: 200,
    headers: {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': EXPLAIN_PAGE_CSP,
      'cache-control': 'no-store',
      'referrer-policy': 'no-referrer',
      'x-content-type-options': 'nosniff',
      'x-frame-options': 'DENY',
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-resource-policy': 'same-origin',
    },
    body: EXPLAIN_PAGE_HTML,
  };
}
