/**
 * One catalogue of outcomes (STYLE §5): src/core/reasons.ts, the contract's table and
 * docs/reason-codes.md must name the same codes with the same statuses (fastify's errors.test.js).
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { REASONS, REASON_CODES, refuse, type ReasonCode, type ReasonDefinition } from '../../../src/core/reasons.js';

const repo = (p: string) => fileURLToPath(new URL(`../../../${p}`, import.meta.url));
const CONTRACT = [repo('docs/decision-contract.md'), '/work/shared/docs/decision-contract.md'].find((p) => existsSync(p));
const REASON_DOC = repo('docs/reason-codes.md');

/** Rows `| \`code\` | status | when |` of the contract's answer table. */
function contractTable(): Map<string, number> {
  const rows = new Map<string, number>();
  for (const line of readFileSync(CONTRACT!, 'utf8').split('\n')) {
    const m = /^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|/.exec(line);
    if (m) rows.set(m[1]!, Number(m[2]));
  }
  return rows;
}

describe('REASONS and the decision contract', () => {
  it('finds the contract and its table', () => {
    expect(CONTRACT, 'docs/decision-contract.md').toBeDefined();
    expect(contractTable().size).toBeGreaterThanOrEqual(10);
  });

  it.each(REASON_CODES)('%s appears in the contract table with the same status', (code) => {
    expect(contractTable().get(code)).toBe(REASONS[code].status);
  });

  it('every code of the contract table exists in REASONS', () => {
    const missing = [...contractTable().keys()].filter((c) => !(c in REASONS));
    expect(missing).toEqual([]);
  });

  it('REASON_CODES lists exactly the keys of REASONS', () => {
    expect([...REASON_CODES].sort()).toEqual(Object.keys(REASONS).sort());
  });
});

describe('REASONS and docs/reason-codes.md', () => {
  /** Rows `| \`code\` | status | \`error\` or (none) | when | what to do |`. */
  const rows = new Map<string, { status: number; bearerError?: string }>();
  for (const line of readFileSync(REASON_DOC, 'utf8').split('\n')) {
    const m = /^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|([^|]*)\|/.exec(line);
    if (!m) continue;
    const error = /`([a-z_]+)`/.exec(m[3]!)?.[1];
    rows.set(m[1]!, { status: Number(m[2]), ...(error ? { bearerError: error } : {}) });
  }

  it.each(REASON_CODES)('%s is documented with the same status', (code) => {
    expect(rows.get(code)?.status).toBe(REASONS[code].status);
  });

  // WWW-Authenticate is sent on 401 and 403 only (gateway modes), so the error column matters there.
  it.each(REASON_CODES.filter((c) => REASONS[c].status === 401 || REASONS[c].status === 403))(
    '%s is documented with the same RFC 6750 error',
    (code) => {
      const def = REASONS[code];
      expect(rows.get(code)?.bearerError).toBe('bearerError' in def ? def.bearerError : undefined);
    },
  );

  it('documents no code that REASONS lacks', () => {
    expect([...rows.keys()].filter((c) => !(c in REASONS))).toEqual([]);
  });
});

describe('the catalogue is internally consistent', () => {
  it('only `allowed` allows, with 200', () => {
    const allowing = REASON_CODES.filter((c) => REASONS[c].decision === 'allow');
    expect(allowing).toEqual(['allowed']);
    expect(REASONS.allowed.status).toBe(200);
  });

  it.each(REASON_CODES)('%s: status, decision and RFC 6750 error agree', (code: ReasonCode) => {
    const def: ReasonDefinition = REASONS[code];
    const bearerError = 'bearerError' in def ? def.bearerError : undefined;
    switch (def.status) {
      case 401:
        expect(def.decision).toBe('deny');
        // RFC 6750 §3.1: a request without credentials gets a challenge without an error code.
        expect(bearerError).toBe(code === 'missing_token' ? undefined : 'invalid_token');
        break;
      case 403:
        expect(def.decision).toBe('deny');
        expect(bearerError).toBe('insufficient_scope');
        break;
      case 503:
        expect(def.decision).toBe('indeterminate');
        expect(bearerError).toBeUndefined();
        break;
      case 400:
        expect(code).toBe('invalid_request');
        expect(bearerError).toBe('invalid_request');
        break;
      default:
        expect(code).toBe('allowed');
    }
  });

  it.each(REASON_CODES)('%s has a short message that names no setting or value', (code) => {
    const { message } = REASONS[code];
    expect(message.length).toBeGreaterThan(5);
    expect(message.length).toBeLessThan(120);
    expect(message).not.toMatch(/[{}`$]|https?:|audience[s]? \[|\bkid\b/);
  });

  it('refuse() carries the reason and the hint the failing check wrote', () => {
    expect(refuse('audience_mismatch', 'aud x; accepted [y]')).toEqual({ reason: 'audience_mismatch', hint: 'aud x; accepted [y]' });
  });
});
