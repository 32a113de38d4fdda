import { describe, expect, it } from 'vitest';
import { AnswerCache } from '../../../src/lookup/answer-cache.js';

describe('AnswerCache', () => {
  it('keeps found and not-found answers for the TTL, then forgets them', () => {
    const c = new AnswerCache(10, 1000);
    c.set('Observation/o1|A', true, 0);
    c.set('Observation/o2|A', false, 0);
    expect(c.get('Observation/o1|A', 999)).toBe(true);
    expect(c.get('Observation/o2|A', 999)).toBe(false);
    expect(c.get('Observation/o1|A', 1000)).toBeUndefined();
    // An expired entry is dropped when seen, so it does not hold a slot.
    expect(c.size).toBe(1);
  });

  it('drops the least recently used answer beyond maxEntries', () => {
    const c = new AnswerCache(2, 60_000);
    c.set('a', true, 0);
    c.set('b', true, 0);
    expect(c.get('a', 1)).toBe(true); // a is now the most recently used
    c.set('c', false, 1);
    expect(c.size).toBe(2);
    expect(c.get('b', 2)).toBeUndefined();
    expect(c.get('a', 2)).toBe(true);
    expect(c.get('c', 2)).toBe(false);
  });

  it('stores nothing with maxEntries 0 or a TTL of 0', () => {
    for (const c of [new AnswerCache(0, 60_000), new AnswerCache(10, 0)]) {
      c.set('a', true, 0);
      expect(c.get('a', 0)).toBeUndefined();
      expect(c.size).toBe(0);
    }
  });

  it('keys by type, id and patient: another patient is another entry', () => {
    const c = new AnswerCache(10, 60_000);
    c.set('Observation/o1|A', true, 0);
    expect(c.get('Observation/o1|B', 1)).toBeUndefined();
  });
});
