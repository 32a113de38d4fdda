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
 *   and never outlives the key that verified it: evictKeys() drops entries of removed kids. It
 *   walks the cache: keys are removed a few times a year, tokens are inserted on every cache miss,
 *   and a per-key index cost each insert more than the walk costs each removal.
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
  /** Served since it was inserted or last given its second chance. */
  referenced: boolean;
}

/**
 * Rough memory of a decoded JSON value: its strings, plus a word per member or element. A walk, not
 * JSON.stringify: this runs on every cache miss, and claims are bounded by maxTokenBytes.
 */
function approxBytes(v: unknown): number {
  if (typeof v === 'string') return v.length;
  if (typeof v !== 'object' || v === null) return 8;
  let n = 16;
  if (Array.isArray(v)) {
    for (const x of v) n += 8 + approxBytes(x);
    return n;
  }
  for (const k in v) n += 8 + k.length + approxBytes((v as Record<string, unknown>)[k]);
  return n;
}

/** Rough memory of an entry: the decoded claims and header dominate; the token text is dropped. */
function sizeOf(v: VerifiedToken): number {
  return 256 + 2 * (approxBytes(v.claims) + approxBytes(v.jws.header));
}

/** The verified token without its text (explicit fields: a spread copy is V8's slow clone path). */
function withoutTokenText(v: VerifiedToken): VerifiedToken {
  const j = v.jws;
  if (j.token === '') return v;
  return {
    jws: { token: '', header: j.header, payload: j.payload, alg: j.alg, kid: j.kid },
    issuer: v.issuer,
    authority: v.authority,
    claims: v.claims,
    audiences: v.audiences,
    expiresAt: v.expiresAt,
    kid: v.kid,
  };
}

export class VerifiedTokenCache {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;
  /** Entries dropped before they expired: by the size bounds, or because their key was removed. */
  private evictions = 0;

  constructor(private readonly options: TokenCacheOptions) {}

  keyOf(token: string): string {
    // One-shot hash: no Hash object per decision.
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
    this.entries.set(cacheKey, {
      // The raw token is not needed after verification; keep only what decisions read.
      token: withoutTokenText(token),
      bytes,
      validUntil: (token.expiresAt + this.options.clockSkewSeconds) * 1000,
      referenced: false,
    });
    this.bytes += bytes;
    // Each turn evicts the oldest entry, or clears its mark and moves it young (the entry just
    // inserted is never the one evicted while another remains), so the loop ends within two turns
    // of the cache.
    while (this.entries.size > this.options.maxEntries || this.bytes > this.options.maxBytes) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      const k = oldest.value;
      const e = this.entries.get(k)!;
      if ((e.referenced || k === cacheKey) && this.entries.size > 1) {
        e.referenced = false;
        this.entries.delete(k);
        this.entries.set(k, e);
      } else {
        this.remove(k, e);
        this.evictions++;
      }
    }
  }

  /** Drops every entry verified with one of these keys (they were removed from the issuer's JWKS). */
  evictKeys(issuer: string, kids: readonly string[]): number {
    if (kids.length === 0) return 0;
    const removed = new Set(kids);
    let n = 0;
    for (const [k, e] of this.entries) {
      if (e.token.issuer === issuer && removed.has(e.token.kid ?? '')) {
        this.remove(k, e);
        n++;
        this.evictions++;
      }
    }
    return n;
  }

  private remove(cacheKey: string, e: Entry): void {
    this.entries.delete(cacheKey);
    this.bytes -= e.bytes;
  }

  stats(): { entries: number; bytes: number; evictions: number } {
    return { entries: this.entries.size, bytes: this.bytes, evictions: this.evictions };
  }
}
