/**
 * An exception that ends a decision is indeterminate (503), and its reason follows the error's
 * class: a timeout or a failure of an edge names that edge; a bug in the pure code never claims
 * the issuer is down.
 */
import { describe, expect, it } from 'vitest';
import { BudgetExceeded, EdgeFailure, indeterminateFor } from '../../../src/decision/errors.js';
import { DirectoryUnavailableError } from '../../../src/directory/types.js';
import { CompartmentLookupError } from '../../../src/lookup/types.js';

describe('indeterminateFor', () => {
  it.each([
    [new BudgetExceeded('identity'), 'issuer_unavailable', 'decisionBudgetMs (250 ms) during identity'],
    [new BudgetExceeded('directory'), 'directory_unavailable', 'decisionBudgetMs (250 ms) during directory'],
    [new EdgeFailure('identity', new Error('boom')), 'issuer_unavailable', 'internal error during identity: Error: boom'],
    [new EdgeFailure('directory', new TypeError('x is undefined')), 'directory_unavailable', 'internal error during directory: TypeError: x is undefined'],
    [new DirectoryUnavailableError('Graph answered 503'), 'directory_unavailable', 'Graph answered 503'],
    [new BudgetExceeded('compartment lookup'), 'directory_unavailable', 'decisionBudgetMs (250 ms) during compartment lookup'],
    [new CompartmentLookupError('lookup_status', 'the FHIR server answered HTTP 500', 500), 'directory_unavailable', 'compartment lookup at the FHIR server (compartmentLookup) failed (lookup_status)'],
    [new EdgeFailure('compartment lookup', new CompartmentLookupError('lookup_timeout', 'slow')), 'directory_unavailable', 'failed (lookup_timeout): slow'],
  ])('%s -> %s', (err, reason, hint) => {
    const r = indeterminateFor(err, 250);
    expect(r.reason).toBe(reason);
    expect(r.hint).toContain(hint);
  });

  it('a bug thrown between the edges (policy, fhir, principal) is not reported as the issuer being down', () => {
    const r = indeterminateFor(new TypeError("Cannot read properties of undefined (reading 'has')"), 250);
    expect(r.reason).not.toBe('issuer_unavailable');
    expect(r.hint).toMatch(/^internal error \(a bug in fhir-pdp, not an outage/);
    expect(r.hint).toContain("TypeError: Cannot read properties of undefined (reading 'has')");
  });
});
