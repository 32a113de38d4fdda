import { describe, expect, it } from 'vitest';
import { newDecisionId } from '../../../src/core/decision-id.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('newDecisionId', () => {
  it('makes version-4 UUIDs, all different, across many batches', () => {
    const ids = Array.from({ length: 20_000 }, newDecisionId);
    for (const id of ids) expect(id).toMatch(UUID_V4);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('varies every random hex digit (no position stuck at one value)', () => {
    const ids = Array.from({ length: 2_000 }, newDecisionId);
    for (let p = 0; p < 36; p++) {
      if ([8, 13, 18, 23, 14].includes(p)) continue; // dashes and the version digit
      const seen = new Set(ids.map((id) => id[p]));
      // The variant digit takes 4 values; every other random digit takes all 16.
      expect(seen.size).toBe(p === 19 ? 4 : 16);
    }
  });
});
