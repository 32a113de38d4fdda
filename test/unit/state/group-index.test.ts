import { describe, expect, it } from 'vitest';
import { GroupIndex } from '../../../src/state/group-index.js';

const G1 = '11111111-1111-4111-8111-111111111111';
const G2 = '22222222-2222-4222-8222-222222222222';
const U = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa';
const V = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb';
const HOUR = 3_600_000;

describe('GroupIndex', () => {
  const now = 1_800_000_000_000;
  const index = new GroupIndex({
    [G1]: { members: [U, V.toUpperCase(), U], fetchedAt: now - HOUR },
    [G2]: { members: [U], fetchedAt: now - 30 * HOUR },
  });
  const listed = new Set([G1, G2]);

  it('counts each membership once, whatever the case or repetition of member ids', () => {
    expect(index.memberships).toBe(3);
    expect(index.size).toBe(2);
  });

  it('answers which candidate groups a member is in, from fresh entries only', () => {
    expect(index.memberOf(U, (g) => listed.has(g), now, 48 * HOUR)).toEqual(new Set([G1, G2]));
    expect(index.memberOf(U, (g) => listed.has(g), now, 24 * HOUR)).toEqual(new Set([G1]));
    expect(index.memberOf(V, (g) => listed.has(g), now, 48 * HOUR)).toEqual(new Set([G1]));
    expect(index.memberOf(U, (g) => g === G2, now, 48 * HOUR)).toEqual(new Set([G2]));
    expect(index.memberOf('cccccccc-cccc-4ccc-8ccc-cccccccccccc', () => true, now, 48 * HOUR).size).toBe(0);
  });

  it('says how many candidates it can answer for, and its oldest entry', () => {
    expect(index.coverage([G1, G2, U], now, 48 * HOUR)).toBe(2);
    expect(index.coverage([G1, G2], now, 24 * HOUR)).toBe(1);
    expect(index.oldestFetchedAt()).toBe(now - 30 * HOUR);
    expect(GroupIndex.empty().oldestFetchedAt()).toBeUndefined();
  });
});
