import { describe, expect, it } from 'vitest';
import { AnswerBatch, RawHeaders } from '../../../src/host/server.js';

describe('RawHeaders (the standalone host reads headers from rawHeaders)', () => {
  const raw = ['Host', 'pdp', 'Authorization', 'Bearer a', 'X-Original-URI', '/Patient/1', 'authorization', 'Bearer b', 'AUTHORIZATION', '', 'Authorization-X', 'c'];

  it('returns every value of a repeated header, in order, whatever the case of its name', () => {
    const headers = new RawHeaders(raw);
    expect(headers.values('authorization')).toEqual(['Bearer a', 'Bearer b', '']);
    expect(headers.values('Authorization')).toEqual(['Bearer a', 'Bearer b', '']);
  });

  it('matches whole names only, and returns an empty list for an absent header', () => {
    const headers = new RawHeaders(raw);
    expect(headers.values('x-original-uri')).toEqual(['/Patient/1']);
    expect(headers.values('authorization-x')).toEqual(['c']);
    expect(headers.values('x-forwarded-uri')).toEqual([]);
    expect(new RawHeaders([]).values('authorization')).toEqual([]);
  });

  it('hands out no list a caller could change for the next lookup', () => {
    const headers = new RawHeaders(raw);
    const absent = headers.values('traceparent');
    expect(() => (absent as string[]).push('00-forged')).toThrow(TypeError);
    expect(headers.values('traceparent')).toEqual([]);
    const found = headers.values('authorization') as string[];
    found.push('Bearer forged');
    expect(headers.values('authorization')).toEqual(['Bearer a', 'Bearer b', '']);
  });
});

describe('AnswerBatch (answers decided in one event-loop turn are written together)', () => {
  const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  it('writes nothing while the turn runs, then every answer of the turn, in the order decided', async () => {
    const batch = new AnswerBatch();
    const written: string[] = [];
    batch.add(() => written.push('a'));
    await Promise.resolve(); // a microtask of the same turn, as a cached decision's answer is
    batch.add(() => written.push('b'));
    batch.add(() => written.push('c'));
    expect(written).toEqual([]);
    await nextTurn();
    expect(written).toEqual(['a', 'b', 'c']);
  });

  it('writes an answer added while a batch is being written in the next batch, and loses none', async () => {
    const batch = new AnswerBatch();
    const written: string[] = [];
    batch.add(() => {
      written.push('first');
      batch.add(() => written.push('added while writing'));
    });
    await nextTurn();
    expect(written).toEqual(['first']);
    await nextTurn();
    expect(written).toEqual(['first', 'added while writing']);
  });

  it('writes each later turn as a batch of its own', async () => {
    const batch = new AnswerBatch();
    const written: number[] = [];
    for (let turn = 0; turn < 3; turn++) {
      batch.add(() => written.push(turn));
      await nextTurn();
      expect(written).toEqual([...Array(turn + 1).keys()]);
    }
  });
});
