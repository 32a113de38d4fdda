import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { keyRefusalLogger, LINES_PER_WINDOW, WINDOW_MS } from '../../../src/http/key-refusals.js';
import { describePresentedKey } from '../../../src/http/keys.js';
import type { PdpHttpRequest } from '../../../src/http/types.js';

function request(url: string, headers: Record<string, string> = {}): PdpHttpRequest {
  return { method: 'GET', url, header: (name) => (headers[name] === undefined ? [] : [headers[name]!]) };
}

describe('describePresentedKey', () => {
  const key = 'an-old-rotated-key-7f3c2a';
  const expected = `sha256:${createHash('sha256').update(key).digest('hex').slice(0, 8)}`;

  it('fingerprints the header key as `sha256sum | cut -c1-8` would, never the key', () => {
    const d = describePresentedKey(request('/api/decide', { 'x-functions-key': key }));
    expect(d).toEqual({ source: 'header', fingerprint: expected });
    expect(JSON.stringify(d)).not.toContain(key);
  });

  it('reads `code` only where the query is fhir-pdp\'s', () => {
    const url = `/api/decide?code=${encodeURIComponent(key)}`;
    expect(describePresentedKey(request(url))).toEqual({ source: 'query', fingerprint: expected });
    expect(describePresentedKey(request(url), false)).toBeUndefined();
    expect(describePresentedKey(request('/api/decide'))).toBeUndefined();
  });
});

describe('keyRefusalLogger', () => {
  it('writes one JSON line per refusal with the mode, the key fingerprint and the remote address', () => {
    const lines: string[] = [];
    const log = keyRefusalLogger((l) => lines.push(l), () => Date.UTC(2026, 0, 1));
    log({ mode: 'forward-auth', status: 503, key: { source: 'header', fingerprint: 'sha256:0a1b2c3d' }, remoteAddress: '10.0.0.7' });
    log({ mode: 'envoy', status: 503 });
    expect(lines.map((l) => JSON.parse(l))).toEqual([
      { type: 'key_refused', time: '2026-01-01T00:00:00.000Z', route: '/api/decide', mode: 'forward-auth', status: 503, key: 'not_recognised', keySource: 'header', keyFingerprint: 'sha256:0a1b2c3d', remoteAddress: '10.0.0.7' },
      { type: 'key_refused', time: '2026-01-01T00:00:00.000Z', route: '/api/decide', mode: 'envoy', status: 503, key: 'missing' },
    ]);
  });

  it('writes at most LINES_PER_WINDOW lines per window and counts the rest into the next line', () => {
    let now = 0;
    const lines: string[] = [];
    const log = keyRefusalLogger((l) => lines.push(l), () => now);
    for (let i = 0; i < LINES_PER_WINDOW + 500; i++) log({ mode: 'forward-auth', status: 503 });
    expect(lines).toHaveLength(LINES_PER_WINDOW);
    now += WINDOW_MS;
    log({ mode: 'forward-auth', status: 503 });
    expect(lines).toHaveLength(LINES_PER_WINDOW + 1);
    expect(JSON.parse(lines.at(-1)!)).toMatchObject({ suppressedBefore: 500 });
  });
});
