import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { explainPageResponse } from '../../../src/http/explain-api.js';
import { EXPLAIN_PAGE_CSP, EXPLAIN_PAGE_HTML } from '../../../src/explain/page.js';
import {
  claimTimes,
  decodeForDisplay,
  explanationOf,
  formatSpan,
  relativeTime,
  renderExplanation,
} from '../../../src/explain/render.js';
import type { Decision } from '../../../src/decision/types.js';
import { refuse } from '../../../src/core/reasons.js';
import { TRACE_STEPS, Trace } from '../../../src/core/trace.js';

const NOW = Date.UTC(2025, 0, 15, 12, 0, 0);
const NOW_S = NOW / 1000;

function b64(o: unknown): string {
  return Buffer.from(typeof o === 'string' ? o : JSON.stringify(o)).toString('base64url');
}

function rawToken(header: unknown, claims: unknown): string {
  return `${b64(header)}.${b64(claims)}.c2lnbmF0dXJl`;
}

function decision(overrides: Partial<Decision>): Decision {
  return {
    decisionId: 'd-1',
    decision: 'deny',
    status: 401,
    reason: 'token_expired',
    message: 'The token has expired.',
    durationMs: 1,
    cacheHit: false,
    ...overrides,
  };
}

/** A trace as the decision code writes it: passes up to the lifetime check, which fails. */
function expiredTrace() {
  const t = new Trace();
  t.pass('token', 'alg RS256, kid k1, 900 bytes');
  t.pass('issuer', 'https://login.example/t/v2.0', 'https://login.example/t');
  t.pass('key', 'alg RS256, kid k1');
  t.pass('signature', 'verified with key k1');
  t.fail('lifetime', refuse('token_expired', 'exp is 10800 s ago, beyond the clock skew of 300 s (clockSkewSeconds); get a new token'), {
    expected: 'after 2025-01-15T11:55:00.000Z',
    found: 'exp 2025-01-15T09:00:00.000Z',
  });
  return t.complete();
}

describe('relative times', () => {
  it.each([
    ['exp', NOW_S - 3 * 3600, 'expired 3 h ago'],
    ['exp', NOW_S + 59 * 60, 'expires in 59 min'],
    ['exp', NOW_S, 'expired 0 s ago'],
    ['iat', NOW_S - 12, '12 s ago'],
    ['nbf', NOW_S + 2 * 86400, 'in 2 d'],
    ['iat', NOW_S, 'now'],
    ['auth_time', NOW_S - 89, '89 s ago'],
    ['auth_time', NOW_S - 90, '2 min ago'],
  ])('%s at %d reads "%s"', (claim, seconds, expected) => {
    expect(relativeTime(claim, seconds, NOW)).toBe(expected);
  });

  it.each([
    [0, '0 s'],
    [89, '89 s'],
    [90, '2 min'],
    [89 * 60, '89 min'],
    [90 * 60, '2 h'],
    [47 * 3600, '47 h'],
    [48 * 3600, '2 d'],
  ])('formatSpan(%d) = %s', (s, expected) => {
    expect(formatSpan(s)).toBe(expected);
  });

  it('annotates only numeric dates, in claim order iat, nbf, exp, auth_time', () => {
    const times = claimTimes({ exp: NOW_S - 3600, iat: NOW_S - 7200, nbf: 'soon', auth_time: 1e400, other: NOW_S }, NOW);
    expect(times.map((t) => [t.claim, t.iso, t.relative])).toEqual([
      ['iat', '2025-01-15T10:00:00.000Z', '2 h ago'],
      ['exp', '2025-01-15T11:00:00.000Z', 'expired 60 min ago'],
    ]);
  });
});

describe('decodeForDisplay', () => {
  it('decodes header and claims leniently, with or without the Bearer prefix', () => {
    const t = rawToken({ alg: 'RS256', nonce: 'x' }, { aud: 'a' });
    expect(decodeForDisplay(t)).toEqual({ header: { alg: 'RS256', nonce: 'x' }, claims: { aud: 'a' }, verified: false });
    expect(decodeForDisplay(`Bearer ${t}`)?.claims).toEqual({ aud: 'a' });
  });

  it.each([
    ['not a token', 'not-a-token'],
    ['JSON that is not an object', `${b64([1])}.${b64({})}.sig`],
    ['no payload', `${b64({ alg: 'RS256' })}`],
    ['oversized', `${b64({ alg: 'RS256' })}.${'A'.repeat(70_000)}.sig`],
  ])('returns undefined for %s', (_name, token) => {
    expect(decodeForDisplay(token)).toBeUndefined();
  });
});

describe('explanationOf', () => {
  it('names the first failing step and labels leniently decoded claims by how far the token got', () => {
    const raw = rawToken({ alg: 'RS256', kid: 'k1' }, { exp: NOW_S - 3 * 3600, aud: 'https://fhir.example' });
    const e = explanationOf(decision({ hint: 'get a new token', trace: expiredTrace() }), { method: 'GET', path: '/Patient/1' }, raw, NOW);
    expect(e.failedStep).toBe('lifetime');
    expect(e.hint).toBe('get a new token');
    expect(e.evaluatedAt).toBe('2025-01-15T12:00:00.000Z');
    expect(e.trace.map((s) => s.id)).toEqual(TRACE_STEPS.map(([id]) => id));
    expect(e.token).toMatchObject({ verified: false, status: 'signature verified; refused at Lifetime (exp, nbf, iat)', header: { kid: 'k1' } });
    expect(e.token?.times).toEqual([{ claim: 'exp', seconds: NOW_S - 10800, iso: '2025-01-15T09:00:00.000Z', relative: 'expired 3 h ago' }]);
    // The raw token is used for display and never carried in the explanation.
    expect(JSON.stringify(e)).not.toContain(raw.split('.')[1]);
  });

  it('prefers the verified token of the decision', () => {
    const t = new Trace();
    t.pass('token');
    const e = explanationOf(
      decision({ decision: 'allow', status: 200, reason: 'allowed', dataActions: ['read'], trace: t.complete(), token: { header: { alg: 'PS256' }, claims: { oid: 'o' } } }),
      { method: 'GET', path: '/x' },
      rawToken({ alg: 'RS256' }, { oid: 'other' }),
      NOW,
    );
    expect(e.failedStep).toBeUndefined();
    expect(e.token).toMatchObject({ verified: true, status: 'verified', header: { alg: 'PS256' }, claims: { oid: 'o' } });
    expect(e.decision).toMatchObject({ decision: 'allow', dataActions: ['read'] });
  });

  it.each([
    ['signature', 'fail', 'the signature does not verify: decoded for display only'],
    ['issuer', 'fail', 'not verified: decoded for display only'],
  ] as const)('when %s fails the token status is "%s"', (step, _outcome, status) => {
    const t = new Trace();
    t.pass('token');
    if (step === 'signature') {
      t.pass('issuer');
      t.pass('key');
      t.fail('signature', refuse('invalid_signature', 'the header has a `nonce`'));
    } else t.fail('issuer', refuse('untrusted_issuer', 'other tenant'));
    const e = explanationOf(decision({ trace: t.complete() }), { method: 'GET', path: '/x' }, rawToken({ alg: 'RS256' }, {}), NOW);
    expect(e.token?.status).toBe(status);
    expect(e.failedStep).toBe(step);
  });

  it('has no token section when the token cannot be decoded', () => {
    const t = new Trace();
    t.fail('token', refuse('malformed_token', 'three parts'));
    const e = explanationOf(decision({ reason: 'malformed_token', trace: t.complete() }), { method: 'GET', path: '/x' }, 'garbage', NOW);
    expect(e.token).toBeUndefined();
    expect(e.trace.filter((s) => s.outcome === 'skipped').every((s) => s.hint === 'not reached')).toBe(true);
  });
});

describe('renderExplanation', () => {
  const raw = rawToken(
    { alg: 'RS256', kid: 'k1' },
    { aud: 'https://fhir.example', exp: NOW_S - 3 * 3600, groups: ['g1', 'g2'], evil: 'a\u001b[31mred\nline', long: 'x'.repeat(500) },
  );
  const e = explanationOf(decision({ hint: 'get a new token', trace: expiredTrace() }), { method: 'GET', path: '/Patient/1' }, raw, NOW);
  const lines = renderExplanation(e);
  const text = lines.join('\n');

  it('starts with the verdict and the fix', () => {
    expect(lines[0]).toBe('GET /Patient/1  ->  DENY 401 token_expired');
    expect(lines[1]).toBe('  The token has expired.');
    expect(lines[2]).toBe('  fix: get a new token');
  });

  it('prints header and claims with times as ISO dates and relative to now', () => {
    expect(text).toContain('Token (signature verified; refused at Lifetime (exp, nbf, iat))');
    expect(text).toMatch(/ {4}kid +k1/);
    expect(text).toContain(`exp     ${NOW_S - 10800}  2025-01-15T09:00:00.000Z  (expired 3 h ago)`);
    expect(text).toMatch(/groups +\[g1, g2\]/);
  });

  it('lists every step in order, expanding only the failing one with expected, found and fix', () => {
    const stepLines = lines.filter((l) => /^ {2}(pass|FAIL|skip) /.test(l));
    expect(stepLines).toHaveLength(TRACE_STEPS.length);
    expect(stepLines.map((l) => l.slice(2, 6))).toEqual(['pass', 'pass', 'pass', 'pass', 'FAIL', ...Array(TRACE_STEPS.length - 5).fill('skip')]);
    const fail = lines.findIndex((l) => l.startsWith('  FAIL'));
    expect(lines[fail]).toMatch(/Lifetime \(exp, nbf, iat\) +token_expired$/);
    expect(lines.slice(fail + 1, fail + 4)).toEqual([
      '          expected  after 2025-01-15T11:55:00.000Z',
      '          found     exp 2025-01-15T09:00:00.000Z',
      '          fix       exp is 10800 s ago, beyond the clock skew of 300 s (clockSkewSeconds); get a new token',
    ]);
    expect(lines[fail + 4]).toMatch(/^ {2}skip +Audience +not reached$/);
  });

  it('escapes control characters from the token and cuts long values', () => {
    expect(text).not.toContain('\u001b');
    expect(text).toContain('a\\u001b[31mred\\u000aline');
    const long = lines.find((l) => l.includes('long '))!;
    expect(long.endsWith('…')).toBe(true);
    expect(long.length).toBeLessThan(200);
  });

  it('colours only when asked', () => {
    expect(renderExplanation(e, { color: true }).join('\n')).toContain('\u001b[31mFAIL\u001b[0m');
  });

  it('shows principal and data actions for an allow', () => {
    const t = new Trace();
    t.pass('token');
    const allowed = explanationOf(
      decision({
        decision: 'allow',
        status: 200,
        reason: 'allowed',
        message: 'The request is allowed.',
        principal: { issuer: 'i', objectId: 'o-1', applicationId: 'app-1' },
        dataActions: ['read', 'search'],
        trace: t.complete(),
      }),
      { method: 'GET', path: '/Patient' },
      undefined,
      NOW,
    );
    const out = renderExplanation(allowed);
    expect(out[0]).toBe('GET /Patient  ->  ALLOW 200 allowed');
    expect(out).toContain('  principal: oid o-1, app app-1');
    expect(out).toContain('  data actions: read, search');
    expect(out.join('\n')).toContain('Token: not decodable');
  });
});

describe('the explain page', () => {
  const inline = (tag: string) => [...EXPLAIN_PAGE_HTML.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => m[1]!);
  const hash = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

  it('allows exactly its one inline script and one inline style by hash, and fetch to its own origin only', () => {
    const [script, ...moreScripts] = inline('script');
    const [style, ...moreStyles] = inline('style');
    expect(moreScripts).toEqual([]);
    expect(moreStyles).toEqual([]);
    expect(EXPLAIN_PAGE_CSP).toBe(
      `default-src 'none'; script-src ${hash(script!)}; style-src ${hash(style!)}; connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
    );
  });

  it('names no external URL, has no inline handlers or style attributes, and writes no HTML from data', () => {
    expect(EXPLAIN_PAGE_HTML).not.toMatch(/(https?:)?\/\/[a-z0-9.-]+\.[a-z]/i);
    expect(EXPLAIN_PAGE_HTML).not.toMatch(/\son[a-z]+=|\sstyle=/i);
    expect(EXPLAIN_PAGE_HTML).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(/);
    expect(EXPLAIN_PAGE_HTML).not.toMatch(/localStorage|sessionStorage|indexedDB|document\.cookie/);
  });

  it('is served with its CSP and without caching', () => {
    const res = explainPageResponse();
    expect(res.status).toBe(200);
    expect(res.headers).toMatchObject({
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': EXPLAIN_PAGE_CSP,
      'cache-control': 'no-store',
      'referrer-policy': 'no-referrer',
      'x-frame-options': 'DENY',
    });
    expect(res.body).toBe(EXPLAIN_PAGE_HTML);
  });
});
