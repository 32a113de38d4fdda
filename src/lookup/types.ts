/**
 * The compartment lookup edge: whether the FHIR server finds a resource in a patient's
 * compartment (compartmentLookup). Implemented against a FHIR server's search API in
 * fhir-lookup.ts; the pipeline sees only these answers.
 */
import type { CompartmentQuestion } from '../core/compartment-question.js';

export type { CompartmentQuestion };

export interface CompartmentAnswer {
  /** Whether the search found the resource in the compartment (`total` ≥ 1). */
  readonly found: boolean;
  /** `cache`: an answer the server gave within cacheSeconds; `server`: asked now (or joined a request in flight). */
  readonly source: 'cache' | 'server';
}

export interface CompartmentLookup {
  /**
   * The server's answer: a value when the cache holds one, else a promise. Rejects (or throws) with
   * CompartmentLookupError when the server gives no usable answer; that is never cached.
   */
  check(question: CompartmentQuestion): CompartmentAnswer | Promise<CompartmentAnswer>;
}

/** Every outcome a lookup is counted under (fhir_pdp_compartment_lookups_total). */
export const LOOKUP_OUTCOMES = ['found', 'not_found', 'failed', 'cache_hit'] as const;
export type LookupOutcome = (typeof LOOKUP_OUTCOMES)[number];

export type CompartmentLookupErrorCode =
  | 'lookup_unreachable'
  | 'lookup_timeout'
  | 'lookup_status'
  | 'lookup_oversized'
  | 'lookup_malformed'
  | 'lookup_credential';

/** The FHIR server gave no usable answer: the decision is indeterminate (503), never an allow. */
export class CompartmentLookupError extends Error {
  constructor(
    readonly code: CompartmentLookupErrorCode,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'CompartmentLookupError';
  }
}
