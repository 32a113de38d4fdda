import { describe, expect, it } from 'vitest';
import { CircuitBreaker, GraphCircuitOpenError } from '../../../src/directory/circuit-breaker.js';

function breaker(): { b: CircuitBreaker; advance: (ms: number) => void } {
  let now = Date.parse('2030-01-01T00:00:00Z');
  return { b: new CircuitBreaker({ failureThreshold: 3, openMs: 30_000, now: () => now }), advance: (ms) => void (now += ms) };
}

describe('CircuitBreaker', () => {
  it('opens after the threshold of consecutive failures, not before; a success resets the count', () => {
    const { b } = breaker();
    b.failed();
    b.failed();
    b.succeeded();
    b.failed();
    b.failed();
    expect(b.status()).toMatchObject({ state: 'closed', consecutiveFailures: 2 });
    b.admit();
    b.failed();
    expect(b.status()).toMatchObject({ state: 'open', opened: 1, openedAt: Date.parse('2030-01-01T00:00:00Z'), nextProbeAt: Date.parse('2030-01-01T00:00:30Z') });
    expect(() => b.admit()).toThrow(GraphCircuitOpenError);
    expect(() => b.admit()).toThrow(/open since 2030-01-01T00:00:00.000Z after 3 consecutive failed Graph calls/);
    expect(b.status().shortCircuited).toBe(2);
  });

  it('lets exactly one probe through after the interval; its failure reopens, its success closes', () => {
    const { b, advance } = breaker();
    for (let i = 0; i < 3; i++) b.failed();
    advance(29_999);
    expect(() => b.admit()).toThrow(GraphCircuitOpenError);
    advance(1);
    b.admit(); // the probe
    expect(b.status().state).toBe('half-open');
    expect(() => b.admit()).toThrow(GraphCircuitOpenError); // one probe at a time
    b.failed();
    expect(b.status()).toMatchObject({ state: 'open', opened: 1, nextProbeAt: Date.parse('2030-01-01T00:01:00Z') });
    advance(30_000);
    b.admit();
    b.succeeded();
    expect(b.status()).toMatchObject({ state: 'closed', consecutiveFailures: 0 });
    b.admit();
  });
});
