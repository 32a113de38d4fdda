/**
 * The standalone host's decision-log writer (src/host/main.ts batchedLines): lines come out whole,
 * in order, one per line, in as few writes as the time and size bounds allow.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { batchedLines, LOG_FLUSH_MS } from '../../../src/host/main.js';

describe('batchedLines', () => {
  let writes: string[];
  const write = (chunk: Buffer): void => {
    writes.push(chunk.toString('utf8'));
  };

  beforeEach(() => {
    writes = [];
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('writes the lines of one flush interval in one write, in order, after LOG_FLUSH_MS', () => {
    const lines = batchedLines(write);
    lines.log('{"a":1}');
    lines.log('{"b":"é ☃ 𝄞"}');
    expect(writes).toEqual([]);
    vi.advanceTimersByTime(LOG_FLUSH_MS - 1);
    expect(writes).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(writes).toEqual(['{"a":1}\n{"b":"é ☃ 𝄞"}\n']);
    lines.log('{"c":3}');
    vi.advanceTimersByTime(LOG_FLUSH_MS);
    expect(writes).toEqual(['{"a":1}\n{"b":"é ☃ 𝄞"}\n', '{"c":3}\n']);
    lines.close();
  });

  it('writes early when the buffer is full, never splitting a line, and keeps every byte', () => {
    const lines = batchedLines(write);
    const sent: string[] = [];
    for (let i = 0; i < 2000; i++) {
      const line = JSON.stringify({ i, pad: '☃'.repeat(i % 97) });
      sent.push(line);
      lines.log(line);
    }
    expect(writes.length).toBeGreaterThan(1);
    lines.close();
    for (const w of writes) expect(w.endsWith('\n')).toBe(true);
    expect(writes.join('').split('\n').slice(0, -1)).toEqual(sent);
  });

  it('writes a line longer than the buffer on its own, after what was waiting', () => {
    const lines = batchedLines(write);
    lines.log('first');
    const long = 'x'.repeat(100_000);
    lines.log(long);
    expect(writes).toEqual(['first\n', `${long}\n`]);
    lines.close();
  });

  it('on close writes what is waiting, then writes later lines at once', () => {
    const lines = batchedLines(write);
    lines.log('one');
    lines.close();
    expect(writes).toEqual(['one\n']);
    lines.log('late');
    expect(writes).toEqual(['one\n', 'late\n']);
    vi.advanceTimersByTime(LOG_FLUSH_MS);
    expect(writes).toEqual(['one\n', 'late\n']);
  });

  it('does not write an empty batch', () => {
    const lines = batchedLines(write);
    vi.advanceTimersByTime(LOG_FLUSH_MS * 3);
    lines.close();
    expect(writes).toEqual([]);
  });
});
