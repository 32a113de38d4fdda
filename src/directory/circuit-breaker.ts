/**
 * The circuit breaker in front of Microsoft Graph. During a Graph outage every uncached decision
 * that needs group membership would otherwise make its own calls (and retries), multiplying load
 * on a service that is already failing and holding each decision for its whole budget. After
 * `failureThreshold` consecutive failed calls the breaker opens: calls fail at once, without
 * reaching Graph. After `openMs` one call is let through as a probe (half-open); its success
 * closes the breaker, its failure opens it again for another `openMs`. So an outage costs one
 * probe per interval, however many decisions arrive.
 *
 * A failure is what says Graph cannot answer now: no response (unreachable, timeout), a 5xx, or a
 * 429 (throttled). Any other answer, 4xx included, proves Graph is answering.
 */

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  /** Consecutive failed calls that open the breaker (app setting PDP_GRAPH_BREAKER_FAILURES). */
  readonly failureThreshold: number;
  /** How long it stays open before a probe (PDP_GRAPH_BREAKER_OPEN_SECONDS). */
  readonly openMs: number;
  /** Wall clock, ms since epoch. */
  readonly now?: () => number;
}

export interface CircuitStatus {
  readonly state: CircuitState;
  readonly consecutiveFailures: number;
  /** When it last opened (ms since epoch), while not closed. */
  readonly openedAt?: number;
  /** When the next probe may go out, while open. */
  readonly nextProbeAt?: number;
  /** Times it opened since start. */
  readonly opened: number;
  /** Calls refused without reaching Graph since start. */
  readonly shortCircuited: number;
}

export const DEFAULT_BREAKER: Omit<CircuitBreakerOptions, 'now'> = { failureThreshold: 5, openMs: 30_000 };

/** A call refused because the breaker is open: Graph was not asked. */
export class GraphCircuitOpenError extends Error {
  readonly code = 'graph_circuit_open' as const;
  constructor(
    readonly openedAt: number,
    readonly nextProbeAt: number,
    readonly failures: number,
  ) {
    super(
      `the Graph circuit breaker is open since ${new Date(openedAt).toISOString()} after ${failures} consecutive failed Graph calls; ` +
        `Graph is not called until a probe at ${new Date(nextProbeAt).toISOString()} succeeds`,
    );
    this.name = 'GraphCircuitOpenError';
  }
}

export class CircuitBreaker {
  readonly #threshold: number;
  readonly #openMs: number;
  readonly #now: () => number;
  #state: CircuitState = 'closed';
  #failures = 0;
  #openedAt = 0;
  /** Failures counted when it last opened (for the message). */
  #failuresAtOpen = 0;
  #opened = 0;
  #shortCircuited = 0;

  constructor(options: CircuitBreakerOptions) {
    this.#threshold = Math.max(1, options.failureThreshold);
    this.#openMs = Math.max(0, options.openMs);
    this.#now = options.now ?? Date.now;
  }

  /** Before a call: returns when it may go out, throws GraphCircuitOpenError when it may not. */
  admit(): void {
    if (this.#state === 'closed') return;
    const nextProbeAt = this.#openedAt + this.#openMs;
    if (this.#state === 'open' && this.#now() >= nextProbeAt) {
      // Exactly one probe: the state says a probe is out until it succeeds or fails.
      this.#state = 'half-open';
      return;
    }
    this.#shortCircuited++;
    throw new GraphCircuitOpenError(this.#openedAt, this.#state === 'open' ? nextProbeAt : this.#now(), this.#failuresAtOpen);
  }

  /** Graph answered (any status but 5xx and 429). */
  succeeded(): void {
    this.#state = 'closed';
    this.#failures = 0;
  }

  /** Graph could not answer. */
  failed(): void {
    this.#failures++;
    if (this.#state === 'half-open' || (this.#state === 'closed' && this.#failures >= this.#threshold)) {
      if (this.#state === 'closed') this.#opened++;
      this.#state = 'open';
      this.#openedAt = this.#now();
      this.#failuresAtOpen = this.#failures;
    }
  }

  status(): CircuitStatus {
    return {
      state: this.#state,
      consecutiveFailures: this.#failures,
      ...(this.#state !== 'closed' ? { openedAt: this.#openedAt } : {}),
      ...(this.#state === 'open' ? { nextProbeAt: this.#openedAt + this.#openMs } : {}),
      opened: this.#opened,
      shortCircuited: this.#shortCircuited,
    };
  }
}
