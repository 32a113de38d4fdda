/** Reading a verified token's scope claim (raw_scope, scp or scope) into a list of scope strings. */
import { MAX_SCOPE_CLAIM_LENGTH, MAX_SCOPES } from '../core/scope-limits.js';

export type ScopeClaimSource = 'raw_scope' | 'scp' | 'scope';

/**
 * The token's scopes. `raw_scope` (the SMART scopes as requested, which Entra-fronting proxies put
 * in the token) wins over `scp` (Entra: space-separated string; some providers: array), which wins
 * over RFC 9068's `scope` (space-separated string). A claim of the wrong type is a problem, never
 * a fall-through to the next claim.
 */
export function readScopeClaims(
  claims: Record<string, unknown>,
): { ok: true; scopes: string[]; source: ScopeClaimSource } | { ok: false; problem: string } {
  for (const source of ['raw_scope', 'scp', 'scope'] as const) {
    if (!Object.hasOwn(claims, source) || claims[source] === undefined) continue;
    const value = claims[source];
    let scopes: string[];
    if (typeof value === 'string') {
      if (value.length > MAX_SCOPE_CLAIM_LENGTH) return { ok: false, problem: `${source} is longer than ${MAX_SCOPE_CLAIM_LENGTH} characters` };
      // RFC 6749 §3.3: scope = scope-token *( SP scope-token ); runs of spaces are tolerated.
      scopes = value.split(' ').filter((s) => s !== '');
    } else if (Array.isArray(value) && source !== 'scope') {
      if (value.length > MAX_SCOPES) return { ok: false, problem: `${source} holds more than ${MAX_SCOPES} scopes` };
      let total = 0;
      scopes = [];
      for (const item of value) {
        if (typeof item !== 'string' || item === '' || /\s/.test(item)) {
          return { ok: false, problem: `${source} must be an array of non-empty scope strings without spaces` };
        }
        total += item.length + 1;
        if (total > MAX_SCOPE_CLAIM_LENGTH + 1) return { ok: false, problem: `${source} is longer than ${MAX_SCOPE_CLAIM_LENGTH} characters` };
        scopes.push(item);
      }
    } else {
      const expected = source === 'scope' ? 'a space-separated string (RFC 9068)' : 'a space-separated string or an array of strings';
      return { ok: false, problem: `${source} must be ${expected}` };
    }
    if (scopes.length === 0) return { ok: false, problem: `${source} is empty` };
    if (scopes.length > MAX_SCOPES) return { ok: false, problem: `${source} holds more than ${MAX_SCOPES} scopes` };
    return { ok: true, scopes, source };
  }
  return { ok: false, problem: 'the token has none of the claims raw_scope, scp, scope' };
}
