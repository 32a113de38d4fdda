/**
 * JSON mode checks the common question by hand (isPlainQuestion) and everything else with zod
 * (jsonQuestion). The hand check must never accept what zod refuses, nor accept a question in a
 * form zod would change: thousands of questions at, and one past, every bound.
 */
import { describe, expect, it } from 'vitest';
import { isPlainQuestion, jsonQuestion } from '../../../src/http/decide-api.js';

function random(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
}

describe('isPlainQuestion', () => {
  it('accepts only questions zod accepts unchanged, over 20,000 random questions around every bound', () => {
    const rnd = random(2024);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const str = (n: number): string => 'a'.repeat(n);
    const methods = (): unknown => rnd() < 0.6 ? 'GET' : pick<unknown>(['GET', 'post', 'PATCH', '', 'GE T', 'GÉT', str(16), str(17), 'A'.repeat(16), 'A'.repeat(17), 1, null, ['GET'], undefined]);
    const targets = (): unknown => rnd() < 0.6 ? '/Patient/1' : pick<unknown>(['/Patient/1', 'https://fhir.example/Patient', '', str(8192), str(8193), 3, null, ['/x'], {}, undefined]);
    const headerValue = (): unknown =>
      rnd() < 0.6 ? 'Bearer x' : pick<unknown>(['Bearer x', '', str(65536), str(65537), 1, null, {}, [], ['a'], Array(8).fill('v'), Array(9).fill('v'), ['a', 2], [str(65537)], [null]]);
    const headers = (): unknown => {
      if (rnd() < 0.15) return pick<unknown>([undefined, null, [], 'authorization', 5, [['authorization', 'x']]]);
      const h: Record<string, unknown> = {};
      const n = Math.floor(rnd() * 4);
      for (let i = 0; i < n; i++) h[pick(['authorization', 'Authorization', 'x-a', str(256), str(257), '', '__proto__'])] = headerValue();
      return h;
    };
    let fast = 0;
    let zodOnly = 0;
    for (let i = 0; i < 20_000; i++) {
      const q: Record<string, unknown> = {};
      const set = (k: string, v: unknown): void => {
        if (v !== undefined) q[k] = v;
      };
      set('method', methods());
      if (rnd() < 0.8) set('path', targets());
      if (rnd() < 0.1) set('url', targets());
      if (rnd() < 0.8) set('headers', headers());
      if (rnd() < 0.15) set('token', pick<unknown>(['eyJ', str(65536), str(65537), 1, null]));
      if (rnd() < 0.1) set('body', pick<unknown>([{ resourceType: 'Bundle' }, null, 'x', 1]));
      if (rnd() < 0.05) set(pick(['extra', 'Method', 'constructor', '__proto__']), 'x');
      // As the host sees it: parsed from JSON text.
      const raw: unknown = rnd() < 0.03 ? pick<unknown>([null, [], 'x', 1]) : JSON.parse(JSON.stringify(q));
      const parsed = jsonQuestion.safeParse(raw);
      if (isPlainQuestion(raw)) {
        fast++;
        expect(parsed.success).toBe(true);
        expect(parsed.data).toEqual(raw);
      } else if (parsed.success) zodOnly++;
    }
    // The hand check is the common path, not a check that is never taken.
    expect(fast, `fast ${fast}, zod only ${zodOnly}`).toBeGreaterThan(2000);
    expect(zodOnly).toBeLessThan(fast / 10);
  });

  it('accepts the questions of the contract and refuses each malformed one', () => {
    expect(isPlainQuestion({ method: 'GET', path: '/Patient/1', headers: { authorization: 'Bearer x' } })).toBe(true);
    expect(isPlainQuestion({ method: 'POST', url: 'https://fhir.example/', token: 'x', body: { resourceType: 'Bundle' } })).toBe(true);
    expect(isPlainQuestion({ method: 'GET', path: '/a', headers: { authorization: ['Bearer a', 'Bearer b'] } })).toBe(true);
    for (const q of [
      { method: 'GET' },
      { method: 'GET', path: '/a', url: 'https://x/a' },
      { method: 'GET', path: '' },
      { method: 'G E T', path: '/a' },
      { method: 'GET', path: '/a', extra: 1 },
      { method: 'GET', path: '/a', headers: [] },
      { method: 'GET', path: '/a', headers: { a: Array(9).fill('x') } },
      { method: 'GET', path: '/a', token: 1 },
      Object.create({ method: 'GET', path: '/a' }),
    ])
      expect(isPlainQuestion(q)).toBe(false);
  });
});
