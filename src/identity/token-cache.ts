/**
 * The verified-token cache: a successful signature and claims verification, remembered so the next
 * request with the same token skips the RSA work. Policy is never cached: every request is still
 * decided for its own method and path.
 *
 * - Keyed by SHA-256 of the token: the token itself is not kept in memory. A cache belongs to one
 *   Pdp, whose issuers and accepted audiences are fixed for its life (a new configuration builds a
 *   new Pdp with an empty cache), so entries verified under one profile are never served under
 *   another. (The key used to hash the profile with the token: a third of the key's cost.)
 * - Bounded by entry count and by bytes. Eviction approximates LRU with a second chance (CLOCK): a
 *   hit only marks its entry, and the oldest entry, if marked since, moves to the young end instead
 *   of being evicted. A hit then costs one Map lookup, not a delete and a re-insert.
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
}

interface Entry {
  readonly token: VerifiedToken;
  readonly bytes: number;
  /** ms since epoch after which the entry is not served. */
  readonly validUntil: number;
  readonly keyId: string;
  /** Served since it was inserted or last given its second chance. */
  referenced: boolean;
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
    return hash('sha256', token, 'base64url');
  }

  get(cacheKey: string, now: number): VerifiedToken | undefined {
    const e = this.entries.get(cacheKey);
    if (!e) return undefined;
    if (now >= e.validUntil) {
      this.remove(cacheKey, e);
      return undefined;
    }
    e.referenced = true;
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
      referenced: false,
    };
    this.entries.set(cacheKey, entry);
    this.bytes += bytes;
    let set = this.byKey.get(keyId);
    if (!set) this.byKey.set(keyId, (set = new Set()));
    set.add(cacheKey);
    // Each turn evicts the oldest entry, or clears its mark and moves it young (the entry just
    // inserted is never the one evicted while another remains), so the loop ends within two turns
    // of the cache.
    while (this.entries.size > this.options.maxEntries || this.bytes > this.options.maxBytes) {
      const oldest = this.entries.entries().next();
      if (oldest.done) break;
      const [k, e] = oldest.value;
      if ((e.referenced || k === cacheKey) && this.entries.size > 1) {
        e.referenced = false;
        this.entries.delete(k);
        this.entries.set(k, e);
      } else this.remove(k, e);
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
