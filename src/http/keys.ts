/**
 * API and admin keys, as Azure Functions carries them: the `x-functions-key` header or the `code`
 * query parameter. Compared in constant time over SHA-256 digests, so neither content nor length
 * leaks through timing.
 */
import { hash, timingSafeEqual } from 'node:crypto';
import type { PdpHttpRequest } from './types.js';

export type Access = 'none' | 'api' | 'admin';

function digest(v: string): Buffer {
  // One-shot: a keyed deployment hashes the presented key on every request.
  return hash('sha256', v, 'buffer');
}

export class KeyRing {
  private readonly api: Buffer[];
  private readonly admin: Buffer[];

  constructor(apiKeys: readonly string[], adminKeys: readonly string[]) {
    this.api = apiKeys.map(digest);
    this.admin = adminKeys.map(digest);
  }

  /** With no API keys configured, /decide is open (the standalone host then binds loopback only). */
  get decideIsOpen(): boolean {
    return this.api.length === 0 && this.admin.length === 0;
  }

  get hasAnyKey(): boolean {
    return this.api.length > 0 || this.admin.length > 0;
  }

  /** What the presented key grants. `fromQuery` is false where `code` must not be read (Envoy mode). */
  accessOf(req: PdpHttpRequest, fromQuery = true): Access {
    const presented = presentedKey(req, fromQuery);
    if (presented === undefined) return 'none';
    const d = digest(presented);
    let admin = false;
    let api = false;
    // Every key is compared, so the time taken does not say which matched.
    for (const k of this.admin) admin = timingSafeEqual(k, d) || admin;
    for (const k of this.api) api = timingSafeEqual(k, d) || api;
    return admin ? 'admin' : api ? 'api' : 'none';
  }
}

/** The key a request presents, where it came from, and its fingerprint; never the key itself. */
export interface PresentedKey {
  readonly source: 'header' | 'query';
  /**
   * `sha256:` and the first 8 hex digits of the key's SHA-256, to tell an old key from a typo in a
   * log (`printf %s "$KEY" | sha256sum | cut -c1-8`). 32 bits say which of a few known keys it is,
   * and nothing about a random key.
   */
  readonly fingerprint: string;
}

export function describePresentedKey(req: PdpHttpRequest, fromQuery = true): PresentedKey | undefined {
  const header = req.header('x-functions-key')[0];
  const presented = presentedKey(req, fromQuery);
  if (presented === undefined) return undefined;
  return { source: header !== undefined ? 'header' : 'query', fingerprint: `sha256:${digest(presented).toString('hex', 0, 4)}` };
}

function presentedKey(req: PdpHttpRequest, fromQuery: boolean): string | undefined {
  return req.header('x-functions-key')[0] ?? (fromQuery ? codeParam(req.url) : undefined);
}

function codeParam(url: string): string | undefined {
  const q = url.indexOf('?');
  if (q < 0) return undefined;
  return new URLSearchParams(url.slice(q + 1)).get('code') ?? undefined;
}
