/**
 * The verified-token cache: a successful signature and claims verification, remembered so the next
 * request with the same token skips the RSA work. Policy is never cached: every request is still
 * decided for its own method and path.
 *
 * - Keyed by SHA-256 of the validation profile and the token (the token itself is not kept as a key
 *   in memory, and a different profile — another audience list — never shares an entry).
 * - Bounded by entry count and by bytes (LRU: a Map in insertion order, touched on hit).
 * - An entry lives until the token's `exp` plus the clock skew the verifier allows, never longer,
 *   and never outlives the key that verified it: evictKeys() drops entries of removed kids.
 * - Only successful verifications are stored.
 */
import { hash } from 'node:crypto';
import type { VerifiedToken } from './verify.js';

export interface TokenCacheOptions {
  readonly maxEntries: number;
  readonly maxBytes: number;
  readonly clockSkewSeconds: number;
  /** Identifies the validation profile (issuers and accepted audiences) the entries were verified under. */
  readonly profile: string;
}

interface Entry {
  readonly token: VerifiedToken;
  readonly bytes: number;
  /** ms since epoch after which the entry is not served. */
  readonly validUntil: number;
  readonly keyId: string;
}

/** Rough memory of an entry: the decoded claims and header dominate; the token text is dropped. */
function sizeOf(v: VerifiedToken): number {
  return 256 + 2 * (v.jws.token.length + JSON.stringify(v.claims).length + JSON.stringify(v.jws.header).length);
}

export class VerifiedTokenCache {
  private readonly entries = new Map<string, Entry>();
  /** issuer|kid -> cache keys verified with that key, for eviction on key removal. */
  private readonly byKey = new Map<string, Set<string>>();
  private bytes = 0;

  constructor(private readonly options: TokenCacheOptions) {}

  keyOf(token: string): string {
    // One-shot hash: no Hash object per decision (bench/PROFILE.md).
    return hash('sha256', `${this.options.profile}\n${token}`, 'base64url');
  }

  get(cacheKey: string, now: number): VerifiedToken | undefined {
    const e = this.entries.get(cacheKey);
    if (!e) return undefined;
    if (now >= e.validUntil) {
      this.remove(cacheKey, e);
      return undefined;
    }
    // LRU touch: re-insert at the end.
    this.entries.delete(cacheKey);
    this.entries.set(cacheKey, e);
    return e.token;
  }

  set(cacheKey: string, token: VerifiedToken): void {
    const bytes = sizeOf(token);
    if (bytes > this.options.maxBytes / 16) return; // one entry may not take a large share
    const existing = this.entries.get(cacheKey);
    if (existing) this.remove(cacheKey, existing);
    const keyId = `${token.issuer}|${token.kid ?? ''}`;
    const entry: Entry = {
      // The raw token is not needed after verification; keep only what decisions read.
      token: { ...token, jws: { ...token.jws, token: '' } },
      bytes,
      validUntil: (token.expiresAt + this.options.clockSkewSeconds) * 1000,
      keyId,
    };
    this.entries.set(cacheKey, entry);
    this.bytes += bytes;
    let set = this.byKey.get(keyId);
    if (!set) this.byKey.set(keyId, (set = new Set()));
    set.add(cacheKey);
    while (this.entries.size > this.options.maxEntries || this.bytes > this.options.maxBytes) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.remove(oldest.value, this.entries.get(oldest.value)!);
    }
  }

  /** Drops every entry verified with one of these keys (they were removed from the issuer's JWKS). */
  evictKeys(issuer: string, kids: readonly string[]): number {
    let n = 0;
    for (const kid of kids) {
      const set = this.byKey.get(`${issuer}|${kid}`);
      if (!set) continue;
      for (const k of [...set]) {
        const e = this.entries.get(k);
        if (e) {
          this.remove(k, e);
          n++;
        }
      }
    }
    return n;
  }

  private remove(cacheKey: string, e: Entry): void {
    this.entries.delete(cacheKey);
    this.bytes -= e.bytes;
    const set = this.byKey.get(e.keyId);
    set?.delete(cacheKey);
    if (set && set.size === 0) this.byKey.delete(e.keyId);
  }

  stats(): { entries: number; bytes: number } {
    return { entries: this.entries.size, bytes: this.bytes };
  }
}
