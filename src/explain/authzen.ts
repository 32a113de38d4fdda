/**
 * Explain an AuthZEN 1.0 evaluation request (docs/authzen.md): the same mapping the AuthZEN
 * endpoints use (src/authzen/), then the traced decision /api/explain walks. For the CLI
 * (`fhir-pdp explain --authzen`) and POST /api/explain with an AuthZEN body.
 */
import { fhirQuestionOf, readEvaluation } from '../authzen/request.js';
import { subjectMismatch } from '../authzen/response.js';
import type { Pdp } from '../pdp.js';
import { explanationOf, type Explanation } from './render.js';

/** True when a JSON question is an AuthZEN evaluation (it names a subject) rather than {token, method, path}. */
export function isAuthzenQuestion(raw: unknown): boolean {
  return typeof raw === 'object' && raw !== null && !Array.isArray(raw) && 'subject' in raw;
}

export async function explainEvaluationWith(pdp: Pdp, raw: unknown, now: () => number = Date.now): Promise<{ explanation: Explanation } | { problem: string }> {
  const read = readEvaluation(raw);
  if (!read.ok) return { problem: read.problem };
  const mapped = fhirQuestionOf(read.evaluation, pdp.config.fhirBaseUrl ? { fhirBaseUrl: pdp.config.fhirBaseUrl } : {});
  if (!mapped.ok) return { problem: mapped.problem };
  const { input, subjectId } = mapped.question;
  const decision = await pdp.decide({ ...input, mode: 'explain' }, { trace: true, subjectMismatch: (p) => subjectMismatch(subjectId, p) });
  return { explanation: explanationOf(decision, { method: input.method, path: input.target }, input.credentials.token, now()) };
}
