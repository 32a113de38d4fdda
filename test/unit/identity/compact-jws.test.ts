import { describe, expect, it } from 'vitest';
import { decodeBase64UrlStrict, isCanonicalBase64Url, parseCompactJws } from '../../../src/identity/compact-jws.js';
import { hasDuplicateMemberNames, parseJsonObjectStrict } from '../../../src/identity/strict-json.js';
import { b64url, nonCanonicalVariants } from '../../../testkit/service.js';

const MAX = 16384;
const header = { alg: 'RS256', typ: 'JWT', kid: 'k1' };
const payload = { iss: 'https://idp.example.test', aud: 'x', exp: 2000000000 };
const SIG = b64url(Buffer.alloc(256, 7));

function jws(h: unknown = header, p: unknown = payload, s = SIG): string {
  const enc = (v: unknown) => (typeof v === 'string' ? b64url(v) : b64url(JSON.stringify(v)));
  return `${enc(h)}.${enc(p)}.${s}`;
}

function reasonOf(token: string, max = MAX): string | undefined {
  const r = parseCompactJws(token, max);
  return 'reason' in r ? r.reason : undefined;
}

describe('decodeBase64UrlStrict (RFC 7515 §2: base64url without padding, canonical)', () => {
  it('decodes canonical base64url', () => {
    expect(decodeBase64UrlStrict(b64url('hello?>'))?.toString()).toBe('hello?>');
    expect(decodeBase64UrlStrict('')?.length).toBe(0);
  });

  it.each([
    ['padding', `${b64url('ab')}==`],
    ['a single padding character', `${b64url('abcd')}=`],
    ['an inner space', 'aGVs bG8'],
    ['a trailing newline', `${b64url('hello')}\n`],
    ['a tab', 'aGVs\tbG8'],
    ['standard-alphabet +', '+/+/'],
    ['a length of 4n+1', 'aGVsb'],
    ['a non-ASCII letter', 'aGVsbé8'],
  ])('refuses %s', (_what, text) => {
    expect(decodeBase64UrlStrict(text)).toBeUndefined();
  });

  it('agrees with decode-and-re-encode on every string of 1 to 3 base64url characters', () => {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    let canonical = 0;
    let checked = 0;
    const disagreements: string[] = [];
    const check = (s: string) => {
      const reference = Buffer.from(s, 'base64url').toString('base64url') === s && s.length % 4 !== 1;
      if (isCanonicalBase64Url(s) !== reference) disagreements.push(s);
      if (reference) canonical++;
      checked++;
    };
    for (const a of alphabet) {
      check(a);
      for (const b of alphabet) {
        check(a + b);
        for (const c of alphabet) check(`AAAA${a}${b}${c}`);
      }
    }
    expect(disagreements).toEqual([]);
    expect(checked).toBe(64 + 64 ** 2 + 64 ** 3);
    // 2-character groups carry 1 byte (256 canonical forms), 3-character groups 2 bytes (65,536).
    expect(canonical).toBe(256 + 65_536);
  });

  it('refuses every non-canonical trailing-bit variant of a canonical string', () => {
    for (const canonical of [b64url('a'), b64url('ab'), b64url(Buffer.alloc(256, 1))]) {
      const variants = nonCanonicalVariants(canonical);
      expect(variants.length).toBeGreaterThan(0);
      // Node decodes each variant to the very same bytes: the reason to refuse them.
      for (const v of variants) {
        expect(Buffer.from(v, 'base64url').equals(Buffer.from(canonical, 'base64url'))).toBe(true);
        expect(decodeBase64UrlStrict(v)).toBeUndefined();
      }
    }
  });
});

describe('hasDuplicateMemberNames / parseJsonObjectStrict (RFC 7515 §5.2, RFC 7519 §4)', () => {
  it.each([
    ['{"a":1,"a":2}', true],
    ['{"a":1,"b":{"c":1,"c":2}}', true],
    ['{"a":[{"x":1,"x":1}]}', true],
    ['{"alg":"RS256","\\u0061lg":"none"}', true],
    ['{"a\\"b":1,"a\\"b":2}', true],
    ['{"a":1,"b":{"a":1}}', false],
    ['{"a":"a","b":"a"}', false],
    ['{"a":[{"x":1},{"x":2}]}', false],
    ['{"a":"{\\"a\\":1,\\"a\\":2}"}', false],
    ['{"a\\\\":1,"a":2}', false],
    ['{"__proto__":1,"__proto__":2}', true],
    ['{"__proto__":{"a":1},"a":1}', false],
    ['{"a":"x\\\\","a":1}', true],
    ['{"a":"\\"","b":"\\\\\\"","b":1}', true],
    ['{"a":{"b":{"c":{"d":[[{"e":1,"e":1}]]}}}}', true],
    ['{"a":{"b":{"c":{"d":[[{"e":1,"f":1}]]}}}}', false],
    ['{"":1,"":2}', true],
    ['{"a":1, "b" : 2 ,\n "a" :3}', true],
    ['{"é":1,"\\u00e9":2}', true],
  ])('%s -> %s', (text, duplicate) => {
    expect(hasDuplicateMemberNames(text)).toBe(duplicate);
  });

  it.each([
    ['not JSON', '{"a":', false],
    ['an array', '[1,2]', false],
    ['a string', '"a"', false],
    ['null', 'null', false],
    ['duplicates', '{"aud":"a","aud":"b"}', false],
    ['an object', '{"aud":"a"}', true],
  ])('%s -> ok %s', (_what, text, ok) => {
    expect(parseJsonObjectStrict(text).ok).toBe(ok);
  });
});

describe('parseCompactJws', () => {
  it('parses a compact JWS into header, payload, alg and kid', () => {
    const r = parseCompactJws(jws(), MAX);
    expect('reason' in r).toBe(false);
    if ('reason' in r) return;
    expect(r).toMatchObject({ alg: 'RS256', kid: 'k1', header, payload });
  });

  it('checks the size before anything else and accepts exactly the limit', () => {
    const base = jws();
    const exact = `${base}${'A'.repeat(0)}`;
    expect(reasonOf(exact, exact.length)).toBeUndefined();
    expect(reasonOf(exact, exact.length - 1)).toBe('malformed_token');
    // Far over the limit, and not even a JWS: still only the size is looked at.
    const r = parseCompactJws('x'.repeat(MAX + 1), MAX);
    expect(r).toMatchObject({ reason: 'malformed_token', hint: expect.stringContaining(String(MAX)) });
  });

  const h = b64url(JSON.stringify(header));
  const p = b64url(JSON.stringify(payload));
  it.each<{ what: string; token: string; reason: string }>([
    { what: 'one part', token: 'abc', reason: 'malformed_token' },
    { what: 'two parts', token: `${h}.${p}`, reason: 'malformed_token' },
    { what: 'four parts', token: `${h}.${p}.${SIG}.x`, reason: 'malformed_token' },
    { what: 'an empty header', token: `.${p}.${SIG}`, reason: 'malformed_token' },
    { what: 'an empty payload', token: `${h}..${SIG}`, reason: 'malformed_token' },
    { what: 'an empty signature (alg none style)', token: `${h}.${p}.`, reason: 'malformed_token' },
    { what: 'a padded header', token: `${h}=.${p}.${SIG}`, reason: 'malformed_token' },
    { what: 'a padded payload', token: `${h}.${p}==.${SIG}`, reason: 'malformed_token' },
    { what: 'a padded signature', token: `${h}.${p}.${SIG}==`, reason: 'malformed_token' },
    { what: 'whitespace in the header', token: `${h.slice(0, 5)} ${h.slice(5)}.${p}.${SIG}`, reason: 'malformed_token' },
    { what: 'a newline in the payload', token: `${h}.${p.slice(0, 5)}\n${p.slice(5)}.${SIG}`, reason: 'malformed_token' },
    { what: 'standard base64 in the payload', token: `${h}.${Buffer.from('{"a":"??>>"}').toString('base64')}.${SIG}`, reason: 'malformed_token' },
    { what: 'a header that is not JSON', token: `${b64url('{alg:RS256}')}.${p}.${SIG}`, reason: 'malformed_token' },
    { what: 'a header that is a JSON array', token: `${b64url('["RS256"]')}.${p}.${SIG}`, reason: 'malformed_token' },
    { what: 'a payload that is a JSON string', token: `${h}.${b64url('"claims"')}.${SIG}`, reason: 'malformed_token' },
    { what: 'a header that is not UTF-8', token: `${b64url(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))}.${p}.${SIG}`, reason: 'malformed_token' },
    { what: 'duplicate header members', token: `${b64url('{"alg":"RS256","alg":"none"}')}.${p}.${SIG}`, reason: 'malformed_token' },
    { what: 'duplicate claims', token: `${h}.${b64url('{"aud":"x","aud":"y","exp":1}')}.${SIG}`, reason: 'malformed_token' },
    { what: 'a header without alg', token: jws({ typ: 'JWT' }), reason: 'malformed_token' },
    { what: 'an empty alg', token: jws({ alg: '' }), reason: 'malformed_token' },
    { what: 'a numeric alg', token: jws({ alg: 256 }), reason: 'malformed_token' },
    { what: 'a numeric kid', token: jws({ alg: 'RS256', kid: 1 }), reason: 'malformed_token' },
    { what: 'an empty kid', token: jws({ alg: 'RS256', kid: '' }), reason: 'malformed_token' },
    { what: 'a kid longer than 256', token: jws({ alg: 'RS256', kid: 'k'.repeat(257) }), reason: 'malformed_token' },
    { what: 'alg none', token: jws({ alg: 'none' }), reason: 'unsupported_token' },
    { what: 'alg None', token: jws({ alg: 'None' }), reason: 'unsupported_token' },
    { what: 'alg NONE', token: jws({ alg: 'NONE' }), reason: 'unsupported_token' },
    { what: 'a JWE (five parts)', token: `${h}.a.b.c.d`, reason: 'unsupported_token' },
    { what: 'a JWE header in three parts (enc)', token: jws({ alg: 'RSA-OAEP', enc: 'A256GCM' }), reason: 'unsupported_token' },
    { what: 'crit naming an extension', token: jws({ alg: 'RS256', crit: ['exp'], exp: 1 }), reason: 'unsupported_token' },
    { what: 'an empty crit', token: jws({ alg: 'RS256', crit: [] }), reason: 'unsupported_token' },
    { what: 'b64 false (RFC 7797)', token: jws({ alg: 'RS256', b64: false, crit: ['b64'] }), reason: 'unsupported_token' },
    { what: 'b64 false without crit', token: jws({ alg: 'RS256', b64: false }), reason: 'unsupported_token' },
  ])('refuses $what as $reason', ({ token, reason }) => {
    expect(reasonOf(token)).toBe(reason);
  });

  // RFC 7519 §6.1: an Unsecured JWT is `header.payload.` (empty signature). The contract maps
  // `alg: none` to unsupported_token, but the empty-part check (compact-jws.ts:58) runs first.
  it('refuses an Unsecured JWT (alg none, empty signature) as unsupported_token', () => {
    expect(reasonOf(`${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${p}.`)).toBe('unsupported_token');
  });

  it('refuses every non-canonical variant of the header, payload and signature', () => {
    const hh = b64url(JSON.stringify({ alg: 'RS256', kid: 'ab' })); // 26 bytes: 2 unused bits
    const pp = b64url(JSON.stringify({ ab: 'c' })); // 10 bytes: 4 unused bits
    const ss = SIG;
    for (const [part, variants] of [
      ['header', nonCanonicalVariants(hh)],
      ['payload', nonCanonicalVariants(pp)],
      ['signature', nonCanonicalVariants(ss)],
    ] as const) {
      expect(variants.length, part).toBeGreaterThan(0);
      for (const v of variants) {
        const token = part === 'header' ? `${v}.${pp}.${ss}` : part === 'payload' ? `${hh}.${v}.${ss}` : `${hh}.${pp}.${v}`;
        expect(reasonOf(token), `${part} ${v.slice(-3)}`).toBe('malformed_token');
      }
    }
    expect(reasonOf(`${hh}.${pp}.${ss}`)).toBeUndefined();
  });

  it.each([
    ['garbage text', 'not a token at all'],
    ['only dots', '..'],
    ['many dots', '.'.repeat(1000)],
    ['a JSON document', '{"alg":"none"}'],
    ['binary noise', Buffer.from([0, 1, 2, 0xff, 0xfe, 0x2e, 0x2e]).toString('latin1')],
    ['emoji', '😀.😀.😀'],
    ['a NUL in a part', `${h}\u0000.${p}.${SIG}`],
    ['a header of "null"', `${b64url('null')}.${p}.${SIG}`],
    ['a header with a prototype key', `${b64url('{"__proto__":{"alg":"RS256"}}')}.${p}.${SIG}`],
  ])('refuses %s without throwing', (_what: string, token: string) => {
    expect(() => parseCompactJws(token, MAX)).not.toThrow();
    expect(['malformed_token', 'unsupported_token']).toContain(reasonOf(token));
  });
});

describe('hasDuplicateMemberNames agrees with a name-by-name check on random JSON', () => {
  /** The reference: every member name of every object, unescaped, in a Set per object. */
  function referenceHasDuplicates(value: RawJson): boolean {
    if (value.kind === 'array') return value.items.some(referenceHasDuplicates);
    if (value.kind !== 'object') return false;
    const names = value.members.map(([raw]) => JSON.parse(raw) as string);
    return new Set(names).size !== names.length || value.members.some(([, v]) => referenceHasDuplicates(v));
  }

  type RawJson = { kind: 'scalar'; text: string } | { kind: 'array'; items: RawJson[] } | { kind: 'object'; members: Array<[string, RawJson]> };

  // Names that collide in tricky ways: escapes of the same character, quotes, backslashes.
  const NAMES = ['"a"', '"\\u0061"', '"b"', '"a\\\\"', '"a\\""', '"\\""', '"__proto__"', '""', '"é"', '"\\u00e9"'];
  const SCALARS = ['1', 'true', 'null', '"a"', '"\\\\"', '"\\"}"', '"{\\"a\\":1,\\"a\\":2}"', '"[,]"', '-0.5e3'];

  function random(seed: number): () => number {
    let s = seed;
    return () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
  }

  function generate(rnd: () => number, depth: number): RawJson {
    const r = rnd();
    if (depth > 3 || r < 0.4) return { kind: 'scalar', text: SCALARS[Math.floor(rnd() * SCALARS.length)]! };
    if (r < 0.55) return { kind: 'array', items: Array.from({ length: Math.floor(rnd() * 4) }, () => generate(rnd, depth + 1)) };
    return {
      kind: 'object',
      members: Array.from({ length: Math.floor(rnd() * 5) }, () => [NAMES[Math.floor(rnd() * NAMES.length)]!, generate(rnd, depth + 1)] as [string, RawJson]),
    };
  }

  function text(v: RawJson, rnd: () => number): string {
    const ws = () => (rnd() < 0.2 ? ' \n\t'[Math.floor(rnd() * 3)]! : '');
    if (v.kind === 'scalar') return v.text;
    if (v.kind === 'array') return `[${v.items.map((i) => ws() + text(i, rnd) + ws()).join(',')}]`;
    return `{${v.members.map(([n, m]) => `${ws()}${n}${ws()}:${ws()}${text(m, rnd)}${ws()}`).join(',')}}`;
  }

  it('on 5,000 random objects, about half with a repeated name somewhere', () => {
    const rnd = random(20261122);
    let withDuplicates = 0;
    for (let i = 0; i < 5000; i++) {
      const root: RawJson = {
        kind: 'object',
        members: Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => [NAMES[Math.floor(rnd() * NAMES.length)]!, generate(rnd, 1)] as [string, RawJson]),
      };
      const t = text(root, rnd);
      const expected = referenceHasDuplicates(root);
      if (expected) withDuplicates++;
      expect({ t, duplicate: hasDuplicateMemberNames(t) }).toEqual({ t, duplicate: expected });
      expect(parseJsonObjectStrict(t).ok).toBe(!expected);
    }
    expect(withDuplicates).toBeGreaterThan(1000);
    expect(withDuplicates).toBeLessThan(4000);
  });
});
