import { describe, expect, it } from 'vitest';
import type { Refusal } from '../../../src/core/reasons.js';
import { checkB64Token, hasAccessTokenParam, locateBearerToken, stripBearer, type CredentialSources } from '../../../src/identity/extract.js';

/** The one bearer token of a request, fully checked: as the decision pipeline finds it. */
function extractBearerToken(sources: CredentialSources): { ok: true; token: string } | Refusal {
  const located = locateBearerToken(sources);
  if ('reason' in located) return located;
  const bad = located.grammarChecked ? undefined : checkB64Token(located.token);
  return bad ?? { ok: true, token: located.token };
}

const T = 'eyJhbGciOiJSUzI1NiJ9.eyJhIjoxfQ.c2ln';

function outcome(sources: CredentialSources): string {
  const r = extractBearerToken(sources);
  return 'reason' in r ? r.reason : `token:${r.token}`;
}

describe('extractBearerToken (RFC 6750 §2)', () => {
  it.each<{ what: string; sources: CredentialSources; expected: string }>([
    { what: 'Bearer <token>', sources: { authorization: [`Bearer ${T}`] }, expected: `token:${T}` },
    { what: 'the scheme in lower case', sources: { authorization: [`bearer ${T}`] }, expected: `token:${T}` },
    { what: 'the scheme in upper case', sources: { authorization: [`BEARER ${T}`] }, expected: `token:${T}` },
    { what: 'several spaces after the scheme', sources: { authorization: [`Bearer    ${T}`] }, expected: `token:${T}` },
    { what: 'surrounding whitespace', sources: { authorization: [`  Bearer ${T}  `] }, expected: `token:${T}` },
    { what: 'b64token characters and trailing =', sources: { authorization: ['Bearer a-b.c_d~e+f/g=='] }, expected: 'token:a-b.c_d~e+f/g==' },
    { what: 'the token field', sources: { authorization: [], token: ` ${T} ` }, expected: `token:${T}` },
    { what: 'no Authorization header', sources: { authorization: [] }, expected: 'missing_token' },
    { what: 'an empty Authorization header', sources: { authorization: [''] }, expected: 'missing_token' },
    { what: 'the Basic scheme', sources: { authorization: ['Basic dXNlcjpwYXNz'] }, expected: 'missing_token' },
    { what: 'the DPoP scheme', sources: { authorization: [`DPoP ${T}`] }, expected: 'missing_token' },
    { what: 'a scheme that only starts with Bearer', sources: { authorization: [`Bearerx ${T}`] }, expected: 'missing_token' },
    { what: 'a bare token without scheme', sources: { authorization: [T] }, expected: 'missing_token' },
    { what: 'an empty token field', sources: { authorization: [], token: '  ' }, expected: 'missing_token' },
    { what: 'only an access_token query parameter (RFC 6750 §2.3)', sources: { authorization: [], queryToken: true }, expected: 'missing_token' },
    { what: '"Bearer" with no token', sources: { authorization: ['Bearer'] }, expected: 'malformed_token' },
    { what: '"Bearer " with only spaces', sources: { authorization: ['Bearer    '] }, expected: 'malformed_token' },
    { what: 'a tab after the scheme', sources: { authorization: [`Bearer\t${T}`] }, expected: 'malformed_token' },
    { what: 'two tokens in one header', sources: { authorization: [`Bearer ${T} ${T}`] }, expected: 'malformed_token' },
    { what: 'a comma-joined second credential', sources: { authorization: [`Bearer ${T}, Bearer ${T}`] }, expected: 'malformed_token' },
    { what: '= inside the token', sources: { authorization: ['Bearer ab=cd'] }, expected: 'malformed_token' },
    { what: 'a quote in the token', sources: { authorization: ['Bearer "abc"'] }, expected: 'malformed_token' },
    { what: 'non-ASCII in the token', sources: { authorization: ['Bearer abcé'] }, expected: 'malformed_token' },
    { what: 'two Authorization headers', sources: { authorization: [`Bearer ${T}`, `Bearer ${T}`] }, expected: 'malformed_token' },
    { what: 'two Authorization headers, the second Basic', sources: { authorization: [`Bearer ${T}`, 'Basic eA=='] }, expected: 'malformed_token' },
    { what: 'two Authorization headers, the first empty', sources: { authorization: ['', `Bearer ${T}`] }, expected: 'malformed_token' },
    { what: 'a header and the token field', sources: { authorization: [`Bearer ${T}`], token: T }, expected: 'malformed_token' },
    { what: 'a header and an access_token parameter', sources: { authorization: [`Bearer ${T}`], queryToken: true }, expected: 'malformed_token' },
    { what: 'the token field and an access_token parameter', sources: { authorization: [], token: T, queryToken: true }, expected: 'malformed_token' },
  ])('$what -> $expected', ({ sources, expected }) => {
    expect(outcome(sources)).toBe(expected);
  });

  it('counts every credential in its hint when there is more than one', () => {
    const r = extractBearerToken({ authorization: ['Bearer a', 'Bearer b'], token: 'c' });
    expect(r).toMatchObject({ reason: 'malformed_token', hint: expect.stringContaining('3 credentials') });
  });

  it('never echoes a long foreign credential back in the hint', () => {
    const secret = `Basic ${'s'.repeat(200)}`;
    const r = extractBearerToken({ authorization: [secret] });
    expect('reason' in r && r.hint.includes('s'.repeat(30))).toBe(false);
  });
});

describe('a token field and the access_token parameter', () => {
  it('reads `Bearer <token>` and `<token>` as the same token, whatever the case and the spaces', () => {
    expect(stripBearer(`  bearer   ${T} \n`)).toBe(T);
    expect(stripBearer(`Bearer ${T}`)).toBe(T);
    expect(stripBearer(T)).toBe(T);
    expect(stripBearer('Bearer   ')).toBe('');
  });

  it('finds access_token in the query only', () => {
    expect(hasAccessTokenParam('/Patient?access_token=x')).toBe(true);
    expect(hasAccessTokenParam('/Patient?a=1&access_token')).toBe(true);
    expect(hasAccessTokenParam('/Patient/access_token')).toBe(false);
    expect(hasAccessTokenParam('/Patient?my_access_token=x')).toBe(false);
  });
});
