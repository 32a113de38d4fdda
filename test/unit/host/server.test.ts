import { describe, expect, it } from 'vitest';
import { headerValues } from '../../../src/host/server.js';

describe('headerValues (the standalone host reads headers from rawHeaders)', () => {
  const raw = ['Host', 'pdp', 'Authorization', 'Bearer a', 'X-Original-URI', '/Patient/1', 'authorization', 'Bearer b', 'AUTHORIZATION', '', 'Authorization-X', 'c'];

  it('returns every value of a repeated header, in order, whatever the case of its name', () => {
    expect(headerValues(raw, 'authorization')).toEqual(['Bearer a', 'Bearer b', '']);
    expect(headerValues(raw, 'Authorization')).toEqual(['Bearer a', 'Bearer b', '']);
  });

  it('matches whole names only, and returns an empty list for an absent header', () => {
    expect(headerValues(raw, 'x-original-uri')).toEqual(['/Patient/1']);
    expect(headerValues(raw, 'authorization-x')).toEqual(['c']);
    expect(headerValues(raw, 'x-forwarded-uri')).toEqual([]);
    expect(headerValues([], 'authorization')).toEqual([]);
  });
});
