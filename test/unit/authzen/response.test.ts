/**
 * A Decision as an AuthZEN 1.0 answer (src/authzen/response.ts): pure, no host. The answer's
 * context, the subject-id check and the PDP metadata.
 */
import { describe, expect, it } from 'vitest';
import { evaluationResponse, pdpMetadata, subjectMismatch } from '../../../src/authzen/response.js';
import type { Decision } from '../../../src/decision/types.js';

const decision = (d: Partial<Decision>): Decision => ({ decisionId: 'd1', decision: 'deny', status: 403, reason: 'action_not_permitted', message: 'm', durationMs: 0, cacheHit: false, ...d });

describe('the answer', () => {
  it('only an allow is true; indeterminate is false with an error naming 503', () => {
    expect(evaluationResponse(decision({ decision: 'allow', status: 200, reason: 'allowed', compartment: 'Patient/1' }), false)).toEqual({
      decision: true,
      context: { id: 'allowed', decision_id: 'd1', status: 200, reason_user: { en: 'm' }, compartment: 'Patient/1' },
    });
    expect(evaluationResponse(decision({ decision: 'indeterminate', status: 503, reason: 'issuer_unavailable', hint: 'h' }), false)).toEqual({
      decision: false,
      context: { id: 'issuer_unavailable', decision_id: 'd1', status: 503, reason_user: { en: 'm' }, error: { status: 503, message: 'm' } },
    });
  });

  it('the hint is reason_admin, for admin callers only', () => {
    expect(evaluationResponse(decision({ hint: 'h' }), true).context.reason_admin).toEqual({ en: 'h' });
    expect(evaluationResponse(decision({ hint: 'h' }), false).context.reason_admin).toBeUndefined();
  });

  it('the subject id must be the oid (any case) or the fhirUser', () => {
    const p = { issuer: 'i', objectId: 'ab-cd', fhirUser: 'Practitioner/1' };
    expect(subjectMismatch('AB-CD', p)).toBeUndefined();
    expect(subjectMismatch('Practitioner/1', p)).toBeUndefined();
    expect(subjectMismatch('practitioner/1', p)).toMatch(/oid ab-cd, fhirUser Practitioner\/1/);
    expect(subjectMismatch('x', { issuer: 'i' })).toMatch(/no oid or fhirUser/);
  });

  it('metadata: the spec endpoint paths below the identifier', () => {
    expect(pdpMetadata('https://pdp.example/api/')).toEqual({
      policy_decision_point: 'https://pdp.example/api',
      access_evaluation_endpoint: 'https://pdp.example/api/access/v1/evaluation',
      access_evaluations_endpoint: 'https://pdp.example/api/access/v1/evaluations',
    });
  });
});
