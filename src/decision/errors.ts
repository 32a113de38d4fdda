/**
 * Exceptions in a decision, and the one place they become an indeterminate (503) refusal. A
 * denial is a value; an exception is an I/O failure or a bug, and which of the two it was is
 * decided by its class, never by where the pipeline happened to be.
 */
import { refuse, type Refusal } from '../core/reasons.js';
import { DirectoryUnavailableError } from '../directory/types.js';
import { CompartmentLookupError } from '../lookup/types.js';

/** The edges a decision waits on within its budget. */
export type WaitedEdge = 'identity' | 'directory' | 'compartment lookup';

/** Thrown by the budget when a decision's time is up while it waits on `edge`. */
export class BudgetExceeded extends Error {
  readonly code = 'decision_budget_exceeded' as const;
  constructor(readonly edge: WaitedEdge) {
    super(`decisionBudgetMs exceeded during ${edge}`);
    this.name = 'BudgetExceeded';
  }
}

/**
 * Something the issuer edge (keys, metadata, signature work) or the directory edge (Graph) threw
 * that is not one of its outcomes: the edge failed, so the decision cannot be made.
 */
export class EdgeFailure extends Error {
  readonly code = 'edge_failure' as const;
  constructor(
    readonly edge: WaitedEdge,
    override readonly cause: unknown,
  ) {
    super(cause instanceof Error ? `${cause.name}: ${cause.message}` : 'unknown error');
    this.name = 'EdgeFailure';
  }
}

/**
 * The refusal for an exception that ended a decision: never an allow, never a deny.
 * - a budget timeout names the edge it waited on (issuer keys and signature work, or Graph);
 * - a failure thrown by an edge names that edge (issuer_unavailable, directory_unavailable);
 * - anything else is a bug in the pure code between the edges (fhir, policy, principal). The contract has no reason for "fhir-pdp failed", so it is answered
 *   as the 503 a caller retries (directory_unavailable: "cannot be reached; try again later"),
 *   with a hint that says plainly it was an internal error, not an outage of either edge.
 */
export function indeterminateFor(err: unknown, budgetMs: number): Refusal {
  if (err instanceof BudgetExceeded)
    return refuse(reasonOf(err.edge), `the decision took longer than decisionBudgetMs (${budgetMs} ms) during ${err.edge}`);
  if (err instanceof EdgeFailure) {
    if (err.cause instanceof CompartmentLookupError) return lookupFailed(err.cause);
    return refuse(reasonOf(err.edge), `internal error during ${err.edge}: ${err.message}`);
  }
  if (err instanceof DirectoryUnavailableError) return refuse('directory_unavailable', `Microsoft Graph did not answer: ${err.message}`);
  if (err instanceof CompartmentLookupError) return lookupFailed(err);
  return refuse(
    'directory_unavailable',
    `internal error (a bug in fhir-pdp, not an outage of the issuer or the directory): ${err instanceof Error ? `${err.name}: ${err.message}` : 'unknown error'}`,
  );
}

/**
 * The FHIR server is asked in the place of a policy information point, and the contract has no
 * reason for it: directory_unavailable is the 503 for "a source of facts the decision needs did
 * not answer", and the hint names the lookup.
 */
function reasonOf(edge: WaitedEdge): Refusal['reason'] {
  return edge === 'identity' ? 'issuer_unavailable' : 'directory_unavailable';
}

/** A compartment lookup that failed: indeterminate (503), whatever the lookup was about. */
export function lookupFailed(err: CompartmentLookupError): Refusal {
  return refuse('directory_unavailable', `the compartment lookup at the FHIR server (compartmentLookup) failed (${err.code}): ${err.message}`);
}
