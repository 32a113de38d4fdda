/**
 * The decision log line (src/host/main.ts decisionLine) splices `"type":"decision"` into the
 * event's JSON; it must be exactly the JSON of `{ type: 'decision', ...event }`, whatever a token or
 * a request put in the strings. (A member-by-member writer was measured and was slower: many short
 * concatenations against one JSON.stringify.)
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decisionLine } from '../../src/host/main.js';
import type { DecisionEvent } from '../../src/pdp.js';
import { REASONS, type ReasonCode } from '../../src/policy/reasons.js';

const NASTY = ['', 'plain', 'quote " and backslash \\', 'newline\nand tab\t', 'control \u0001\u001f', 'unicode é ☃ 𝄞', 'lone surrogate \ud800 end', '</script>', '{"injected":true}', 'a'.repeat(600)];

function random(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
}

describe('decisionLine', () => {
  it('is JSON.stringify of {type:"decision", ...event} for 2,000 events with every optional member present or absent and hostile strings', () => {
    const rnd = random(42);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const maybe = (): string | undefined => (rnd() < 0.3 ? undefined : pick(NASTY));
    const reasons = Object.keys(REASONS) as ReasonCode[];
    for (let i = 0; i < 2000; i++) {
      const reason = pick(reasons);
      const event: DecisionEvent = {
        decisionId: randomUUID(),
        time: new Date(Math.floor(rnd() * 4e12)).toISOString(),
        decision: REASONS[reason].decision,
        reason,
        status: REASONS[reason].status,
        mode: rnd() < 0.3 ? undefined : pick(['json', 'forward-auth', 'envoy', 'explain']),
        issuer: maybe(),
        tenantId: maybe(),
        objectId: maybe(),
        applicationId: maybe(),
        method: pick(['GET', 'POST', ...NASTY]),
        path: pick(NASTY),
        durationMs: pick([0, 0.001, 0.412, 12.5, 1000, Math.round(rnd() * 1e6) / 1000]),
        cacheHit: rnd() < 0.5,
      };
      const line = decisionLine(event);
      expect(line).toBe(JSON.stringify({ type: 'decision', ...event }));
      expect(JSON.parse(line)).toEqual({ type: 'decision', ...JSON.parse(JSON.stringify(event)) });
    }
  });

  it('writes a number that is not finite as null, as JSON.stringify does', () => {
    const event: DecisionEvent = { decisionId: 'd', time: 't', decision: 'deny', reason: 'missing_token', status: 401, method: 'GET', path: '/', durationMs: Number.NaN, cacheHit: false };
    expect(decisionLine(event)).toBe(JSON.stringify({ type: 'decision', ...event }));
  });
});
