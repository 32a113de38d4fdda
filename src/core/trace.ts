/**
 * The record of a decision's steps, for `explain` (CLI, page, POST /api/explain). The decision code
 * writes it as it goes (`trace?.pass(...)`: with no trace, optional chaining skips building the
 * arguments), so explain never re-implements a check.
 */
import type { Refusal } from './reasons.js';

export const TRACE_STEPS = [
  ['token', 'Bearer token present and well-formed'],
  ['issuer', 'Issuer is a configured authority'],
  ['key', 'Signing key and algorithm'],
  ['signature', 'Signature'],
  ['lifetime', 'Lifetime (exp, nbf, iat)'],
  ['audience', 'Audience'],
  ['revocation', 'Not revoked (deny-list, maxTokenAgeSeconds)'],
  ['application', 'Application (client id)'],
  ['claims', 'Required claims'],
  ['principal', 'Principal is granted access'],
  ['groups', 'Group membership'],
  ['dataAction', 'Data action for this request'],
  ['scopes', 'SMART scopes'],
  ['compartment', 'Patient compartment'],
  ['compartmentLookup', 'Compartment found by the FHIR server'],
  ['narrowing', 'SMART search narrowing'],
] as const;

export type TraceStepId = (typeof TRACE_STEPS)[number][0];
export type StepOutcome = 'pass' | 'fail' | 'skipped';

export interface TraceStep {
  readonly id: TraceStepId;
  readonly title: string;
  readonly outcome: StepOutcome;
  readonly expected?: string;
  readonly found?: string;
  readonly hint?: string;
  readonly reason?: string;
}

const TITLES = new Map<string, string>(TRACE_STEPS);

export class Trace {
  readonly steps: TraceStep[] = [];

  pass(id: TraceStepId, found?: string, expected?: string): void {
    this.add({ id, title: TITLES.get(id)!, outcome: 'pass', ...opt({ found, expected }) });
  }

  skip(id: TraceStepId, why: string): void {
    this.add({ id, title: TITLES.get(id)!, outcome: 'skipped', hint: why });
  }

  fail(id: TraceStepId, refusal: Refusal, details: { expected?: string; found?: string } = {}): void {
    this.add({ id, title: TITLES.get(id)!, outcome: 'fail', reason: refusal.reason, hint: refusal.hint, ...opt(details) });
  }

  private add(step: TraceStep): void {
    const i = this.steps.findIndex((s) => s.id === step.id);
    if (i >= 0) this.steps[i] = step;
    else this.steps.push(step);
  }

  /** Every step in canonical order; steps never reached are `skipped`. */
  complete(): TraceStep[] {
    const failedAt = this.steps.findIndex((s) => s.outcome === 'fail');
    return TRACE_STEPS.map(([id, title]) => {
      const s = this.steps.find((x) => x.id === id);
      if (s) return s;
      return { id, title, outcome: 'skipped' as const, hint: failedAt >= 0 ? 'not reached' : 'not applicable' };
    });
  }
}

function opt(o: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out;
}
