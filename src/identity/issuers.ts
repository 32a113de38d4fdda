/**
 * The per-issuer key cache (Envoy's JwksCache): for each configured authority, its discovery
 * documents (the authority's own and, where it exists, its `/v2.0` one, since Entra publishes a v1
 * and a v2 issuer), and for each issuer its metadata and verification keys.
 *
 * Only configured URLs are ever fetched: a token's `iss`, `kid`, `jku`, `x5u` or `jwk` never causes
 * a request. An unknown `kid` triggers one JWKS refetch of that (already trusted) issuer, at most
 * once per cooldown, single-flight. Keys live until the next successful refresh replaces them (so
 * a key removed by the issuer stops verifying then) or until they are older than maxStale.
 */
import { importJWK, type JWK } from 'jose';
import type { IssuerRecord } from '../core/records.js';
import { isFresh } from '../core/staleness.js';
import { FetchJsonError, fetchJson, isAllowedFetchUrl } from './fetch-json.js';
import { algorithmsForKey, filterVerificationKeys, isAsymmetricAlgorithm } from '../core/verification-keys.js';

export interface IssuerRegistryOptions {
  /** Configured authorities (normalised, no trailing slash). */
  readonly authorities: readonly string[];
  readonly fetchTimeoutMs: number;
  readonly jwksRefetchCooldownMs: number;
  readonly metadataRetryMs: number;
  readonly maxStaleMs: number;
  readonly clock: () => number;
  readonly fetch?: typeof fetch;
  readonly maxDocumentBytes?: number;
  /** Told of every discovery or JWKS fetch: its authority, outcome and duration (for metrics and spans). */
  readonly onFetch?: (kind: 'discovery' | 'jwks', outcome: FetchOutcome, authority: string, durationMs: number) => void;
  /** Told of every unknown kid: a JWKS refetch made, or one the cooldown suppressed. */
  readonly onUnknownKid?: (authority: string, outcome: 'refetched' | 'suppressed') => void;
  /** Told which kids an issuer stopped publishing, so caches keyed by them can drop entries. */
  readonly onKeysRemoved?: (issuer: string, kids: readonly string[]) => void;
}

const DEFAULT_MAX_DOCUMENT_BYTES = 256 * 1024;

export type FetchOutcome = 'ok' | 'failed' | 'refused_oversized' | 'timeout';

function fetchOutcomeOf(err: unknown): FetchOutcome {
  if (!(err instanceof FetchJsonError)) return 'failed';
  return err.code === 'timeout' ? 'timeout' : err.code === 'too_large' ? 'refused_oversized' : 'failed';
}

interface IssuerState {
  record: IssuerRecord;
  keysByKid: Map<string, JWK>;
  imported: Map<string, Promise<CryptoKey>>;
  lastRefetchAt: number;
  refetch?: Promise<void>;
  /** Why the last unknown-kid refetch failed; cleared by a successful one. */
  refetchFailure?: string;
  lastError?: { at: number; message: string };
}

interface AuthorityState {
  readonly authority: string;
  /** Issuers this authority published at its last successful discovery (v1 and v2). */
  issuers: string[];
  loadedAt?: number;
  lastAttemptAt?: number;
  /**
   * What the last load could not establish and nothing cached covers (a `/v2.0` document that
   * failed, an issuer whose keys could not be read). While set, a token whose `iss` is not known
   * may belong to this authority: it is indeterminate (503), not untrusted, and the load is retried.
   */
  incomplete?: { readonly issuers: readonly string[]; readonly problems: readonly string[] };
  lastError?: { at: number; message: string };
  loading?: Promise<string[]>;
}

export type IssuerLookup =
  | { readonly state: 'found'; readonly issuer: string; readonly authority: string; readonly algorithms: readonly string[] }
  | { readonly state: 'unknown'; readonly known: readonly string[] }
  /** An authority has no metadata yet (down since start): the issuer may be one of its own. */
  | { readonly state: 'unavailable'; readonly authorities: readonly string[]; readonly problems: readonly string[] };

export type KeyLookup =
  | { readonly ok: true; readonly key: CryptoKey; readonly kid?: string }
  | { readonly ok: false; readonly reason: 'unknown_key' | 'algorithm_not_allowed' | 'issuer_unavailable'; readonly hint: string };

export interface IssuerHealth {
  readonly authority: string;
  readonly issuer?: string;
  readonly discoveryUrl?: string;
  readonly keys: number;
  readonly keysFetchedAt?: string;
  readonly ageSeconds?: number;
  readonly stale: boolean;
  readonly lastError?: { readonly at: string; readonly message: string };
}

interface Discovered {
  discoveryUrl: string;
  issuer: string;
  jwksUri: string;
  authorizationEndpoint?: string;
  tokenEndpoint?: string;
  algorithms: string[];
}

export class IssuerRegistry {
  private readonly authorities = new Map<string, AuthorityState>();
  private readonly issuers = new Map<string, IssuerState>();
  private readonly maxBytes: number;

  constructor(private readonly options: IssuerRegistryOptions) {
    for (const a of options.authorities) this.authorities.set(a, { authority: a, issuers: [] });
    this.maxBytes = options.maxDocumentBytes ?? DEFAULT_MAX_DOCUMENT_BYTES;
  }

  /** The configured authority that published `issuer`, if any (a label for metrics, never the token's own value). */
  authorityOf(issuer: string): string | undefined {
    return this.issuers.get(issuer)?.record.authority;
  }

  /** Issuer records for the snapshot. */
  records(): IssuerRecord[] {
    return [...this.issuers.values()].map((s) => s.record);
  }

  /**
   * Installs records from a snapshot (or a refresh made elsewhere). Records of authorities that are
   * not configured are ignored. Keys an issuer no longer publishes are reported via onKeysRemoved.
   * A snapshot is written by another process, so each record passes the checks a fetched one
   * passed (usableSnapshotRecord); returns one line per record or key dropped, kids only.
   */
  load(records: readonly IssuerRecord[]): string[] {
    const dropped: string[] = [];
    const byAuthority = new Map<string, IssuerRecord[]>();
    for (const snapshotRecord of records) {
      if (!this.authorities.has(snapshotRecord.authority)) continue;
      const r = usableSnapshotRecord(snapshotRecord, dropped);
      if (r === undefined) continue;
      const list = byAuthority.get(r.authority) ?? [];
      list.push(r);
      byAuthority.set(r.authority, list);
    }
    for (const [authority, list] of byAuthority) {
      const state = this.authorities.get(authority)!;
      this.installAuthority(state, list);
    }
    return dropped;
  }

  private installAuthority(state: AuthorityState, records: readonly IssuerRecord[]): void {
    const now = this.options.clock();
    const fresh = new Set(records.map((r) => r.issuer));
    for (const old of state.issuers) if (!fresh.has(old)) this.issuers.delete(old);
    for (const r of records) this.installIssuer(r);
    state.issuers = records.map((r) => r.issuer);
    state.loadedAt = Math.max(...records.map((r) => r.fetchedAt), state.loadedAt ?? 0) || now;
  }

  private installIssuer(record: IssuerRecord): void {
    const prior = this.issuers.get(record.issuer);
    const keysByKid = new Map<string, JWK>();
    for (const k of record.keys) if (typeof k.kid === 'string') keysByKid.set(k.kid, k);
    if (prior && this.options.onKeysRemoved) {
      const removed = [...prior.keysByKid.keys()].filter((kid) => !keysByKid.has(kid));
      if (removed.length) this.options.onKeysRemoved(record.issuer, removed);
    }
    // Imported CryptoKeys are reused only when the JWK is unchanged.
    const imported = new Map<string, Promise<CryptoKey>>();
    if (prior) {
      for (const [cacheKey, key] of prior.imported) {
        const kid = cacheKey.slice(cacheKey.indexOf('|') + 1);
        if (JSON.stringify(prior.keysByKid.get(kid)) === JSON.stringify(keysByKid.get(kid))) imported.set(cacheKey, key);
      }
    }
    this.issuers.set(record.issuer, {
      record,
      keysByKid,
      imported,
      lastRefetchAt: prior?.lastRefetchAt ?? 0,
      ...(prior?.lastError && prior.lastError.at > record.fetchedAt ? { lastError: prior.lastError } : {}),
    });
  }

  /** Which configured issuer a token's `iss` names. Exact string comparison (OIDC Core §3.1.3.7). */
  lookup(iss: string): IssuerLookup {
    const s = this.issuers.get(iss);
    if (s) return { state: 'found', issuer: iss, authority: s.record.authority, algorithms: s.record.algorithms };
    const keyless = [...this.authorities.values()].find((a) => a.incomplete?.issuers.includes(iss));
    if (keyless)
      return { state: 'unavailable', authorities: [keyless.authority], problems: [`${iss}: ${keyless.incomplete!.problems.join('; ')}`] };
    const missing = [...this.authorities.values()].filter((a) => a.loadedAt === undefined || a.incomplete);
    if (missing.length)
      return {
        state: 'unavailable',
        authorities: missing.map((a) => a.authority),
        problems: missing.map((a) => `${a.authority}: ${a.incomplete?.problems.join('; ') ?? a.lastError?.message ?? 'not loaded yet'}`),
      };
    return { state: 'unknown', known: [...this.issuers.keys()] };
  }

  /**
   * Loads authorities that have no metadata yet, at most once per metadataRetry interval each and
   * single-flight. Driven by time, never by anything a token says.
   */
  async ensureLoaded(): Promise<void> {
    const now = this.options.clock();
    const due = [...this.authorities.values()].filter(
      (a) =>
        (a.loadedAt === undefined || a.incomplete) &&
        (a.loading || a.lastAttemptAt === undefined || now - a.lastAttemptAt >= this.options.metadataRetryMs),
    );
    await Promise.all(due.map((a) => this.refreshAuthority(a).catch(() => undefined)));
  }

  /** Refreshes every authority; failures keep the previous records. Returns one line per problem. */
  async refreshAll(): Promise<string[]> {
    const problems: string[] = [];
    await Promise.all(
      [...this.authorities.values()].map((a) =>
        this.refreshAuthority(a).then(
          (p) => void problems.push(...p),
          (err: Error) => void problems.push(`${a.authority}: ${err.message}`),
        ),
      ),
    );
    return problems;
  }

  private refreshAuthority(state: AuthorityState): Promise<string[]> {
    if (!state.loading) {
      state.loading = this.fetchAuthority(state).finally(() => {
        state.loading = undefined;
      });
    }
    return state.loading;
  }

  private async fetchAuthority(state: AuthorityState): Promise<string[]> {
    const now = this.options.clock();
    state.lastAttemptAt = now;
    const problems: string[] = [];
    const uncovered: { issuers: string[]; problems: string[] } = { issuers: [], problems: [] };
    const primaryUrl = `${state.authority}/.well-known/openid-configuration`;
    let docs: Discovered[];
    try {
      docs = [await this.discover(primaryUrl, state.authority)];
    } catch (err) {
      const message = (err as Error).message;
      state.lastError = { at: now, message };
      for (const iss of state.issuers) this.noteIssuerError(iss, now, message);
      throw err;
    }
    // Entra publishes its v2 issuer under /v2.0; other providers answer 404 there, which is fine.
    if (!/\/v2\.0$/i.test(state.authority)) {
      const v2Url = `${state.authority}/v2.0/.well-known/openid-configuration`;
      try {
        const v2 = await this.discover(v2Url, state.authority, true);
        if (v2.issuer !== docs[0]!.issuer) docs.push(v2);
      } catch (err) {
        if (!(err instanceof FetchJsonError && err.code === 'http_status' && (err.status === 404 || err.status === 400))) {
          problems.push(`${v2Url}: ${(err as Error).message}`);
          const kept = state.issuers.map((i) => this.issuers.get(i)?.record).find((r) => r?.discoveryUrl === v2Url);
          if (kept) {
            const { authorizationEndpoint, tokenEndpoint } = kept;
            docs.push({
              discoveryUrl: v2Url,
              issuer: kept.issuer,
              jwksUri: kept.jwksUri,
              ...(authorizationEndpoint ? { authorizationEndpoint } : {}),
              ...(tokenEndpoint ? { tokenEndpoint } : {}),
              algorithms: [...kept.algorithms],
            });
          }
          else uncovered.problems.push(`${v2Url}: ${(err as Error).message}`);
        }
      }
    }
    // One fetch per distinct jwks_uri (Entra's v1 and v2 documents often share it).
    const jwksByUri = new Map<string, Promise<JWK[]>>();
    const records: IssuerRecord[] = [];
    for (const doc of docs) {
      if (!jwksByUri.has(doc.jwksUri)) jwksByUri.set(doc.jwksUri, this.fetchKeys(doc.jwksUri, state.authority));
      try {
        const keys = await jwksByUri.get(doc.jwksUri)!;
        records.push({ authority: state.authority, ...doc, keys, fetchedAt: this.options.clock() });
      } catch (err) {
        const message = (err as Error).message;
        problems.push(message);
        this.noteIssuerError(doc.issuer, now, message);
        const kept = this.issuers.get(doc.issuer)?.record;
        if (kept) records.push({ ...kept, ...doc, keys: kept.keys, fetchedAt: kept.fetchedAt });
        else {
          uncovered.issuers.push(doc.issuer);
          uncovered.problems.push(message);
        }
      }
    }
    if (uncovered.problems.length) state.incomplete = uncovered;
    else delete state.incomplete;
    if (records.length === 0) {
      const message = problems.join('; ') || 'no usable issuer';
      state.lastError = { at: now, message };
      throw new Error(message);
    }
    this.installAuthority(state, records);
    if (problems.length) state.lastError = { at: now, message: problems.join('; ') };
    else delete state.lastError;
    return problems;
  }

  private noteIssuerError(issuer: string, at: number, message: string): void {
    const s = this.issuers.get(issuer);
    if (s) s.lastError = { at, message };
  }

  /** `optional`: a document most providers do not publish (Entra's /v2.0), whose 404 is no failure. */
  private async discover(url: string, authority: string, optional = false): Promise<Discovered> {
    let doc: unknown;
    const started = performance.now();
    try {
      doc = await fetchJson(url, { timeoutMs: this.options.fetchTimeoutMs, maxBytes: this.maxBytes, ...this.fetchOpt() });
      this.options.onFetch?.('discovery', 'ok', authority, performance.now() - started);
    } catch (err) {
      const absent = optional && err instanceof FetchJsonError && err.code === 'http_status' && (err.status === 404 || err.status === 400);
      if (!absent) this.options.onFetch?.('discovery', fetchOutcomeOf(err), authority, performance.now() - started);
      throw err;
    }
    if (typeof doc !== 'object' || doc === null) throw new Error(`${url}: not a discovery document`);
    const d = doc as Record<string, unknown>;
    if (typeof d.issuer !== 'string' || !d.issuer) throw new Error(`${url}: no issuer`);
    if (typeof d.jwks_uri !== 'string' || !isAllowedFetchUrl(d.jwks_uri))
      throw new Error(`${url}: jwks_uri is missing or not https`);
    // OIDC Discovery §3: RS256 is the default when the list is absent. Only asymmetric algorithms
    // are kept (RFC 8725 §3.1: never `none`; HMAC keys would be public for an OIDC issuer).
    const advertised = Array.isArray(d.id_token_signing_alg_values_supported)
      ? d.id_token_signing_alg_values_supported.filter((a): a is string => typeof a === 'string')
      : ['RS256'];
    return {
      discoveryUrl: url,
      issuer: d.issuer,
      jwksUri: d.jwks_uri,
      // Kept only to be published in SMART discovery; an endpoint that is not https is left out, so
      // that discovery refuses to publish rather than send a client's code over plain http.
      ...(typeof d.authorization_endpoint === 'string' && isAllowedFetchUrl(d.authorization_endpoint) ? { authorizationEndpoint: d.authorization_endpoint } : {}),
      ...(typeof d.token_endpoint === 'string' && isAllowedFetchUrl(d.token_endpoint) ? { tokenEndpoint: d.token_endpoint } : {}),
      algorithms: advertised.filter(isAsymmetricAlgorithm),
    };
  }

  private async fetchKeys(jwksUri: string, authority: string): Promise<JWK[]> {
    let body: unknown;
    const started = performance.now();
    try {
      body = await fetchJson(jwksUri, { timeoutMs: this.options.fetchTimeoutMs, maxBytes: this.maxBytes, ...this.fetchOpt() });
    } catch (err) {
      this.options.onFetch?.('jwks', fetchOutcomeOf(err), authority, performance.now() - started);
      throw err;
    }
    if (typeof body !== 'object' || body === null || !Array.isArray((body as { keys?: unknown }).keys)) {
      this.options.onFetch?.('jwks', 'failed', authority, performance.now() - started);
      throw new Error(`${jwksUri}: not a JWK Set`);
    }
    this.options.onFetch?.('jwks', 'ok', authority, performance.now() - started);
    return filterVerificationKeys((body as { keys: unknown[] }).keys).usable;
  }

  private fetchOpt(): { fetch?: typeof fetch } {
    return this.options.fetch ? { fetch: this.options.fetch } : {};
  }

  /**
   * The key that must verify a token of `issuer` signed with `alg` and `kid`. Only this issuer's
   * keys are considered; a token without `kid` is accepted only when exactly one key fits.
   */
  async keyFor(issuer: string, alg: string, kid: string | undefined): Promise<KeyLookup> {
    let s = this.issuers.get(issuer);
    if (!s) return { ok: false, reason: 'issuer_unavailable', hint: `no metadata for issuer ${issuer}` };
    // RFC 8725 §3.1: the algorithm must be one this issuer uses, checked before any key work.
    if (!s.record.algorithms.includes(alg))
      return {
        ok: false,
        reason: 'algorithm_not_allowed',
        hint: `alg ${alg} is not allowed for issuer ${issuer}; it advertises [${s.record.algorithms.join(', ')}] (HMAC and none are never allowed)`,
      };
    const now = this.options.clock();
    if (!isFresh(s.record.fetchedAt, now, this.options.maxStaleMs)) {
      await this.refreshStale(s);
      s = this.issuers.get(issuer)!;
      if (!isFresh(s.record.fetchedAt, now, this.options.maxStaleMs))
        return {
          ok: false,
          reason: 'issuer_unavailable',
          hint: `keys of ${issuer} were fetched ${Math.round((now - s.record.fetchedAt) / 1000)} s ago, beyond maxStaleSeconds (${this.options.maxStaleMs / 1000}); refetch failed: ${s.lastError?.message ?? 'unknown error'}`,
        };
    }
    let jwk: JWK | undefined;
    if (kid !== undefined) {
      jwk = s.keysByKid.get(kid);
      if (!jwk) {
        const refetched = await this.refetchForUnknownKid(s);
        s = this.issuers.get(issuer)!;
        jwk = s.keysByKid.get(kid);
        // The key may be new and the authority unreachable: that is not a proven unknown key.
        if (!jwk && s.refetchFailure !== undefined)
          return {
            ok: false,
            reason: 'issuer_unavailable',
            hint: `kid ${kid.slice(0, 64)} is not among the ${s.keysByKid.size} cached key(s) of ${issuer}, and refetching its keys failed: ${s.refetchFailure}`,
          };
        if (!jwk)
          return {
            ok: false,
            reason: 'unknown_key',
            hint: `kid ${kid.slice(0, 64)} is not among the ${s.keysByKid.size} key(s) of ${issuer}${refetched ? ' (refetched just now)' : ` (refetch rate-limited to one per ${this.options.jwksRefetchCooldownMs / 1000} s)`}`,
          };
      }
    } else {
      const fitting = s.record.keys.filter((k) => algorithmsForKey(k).includes(alg));
      if (fitting.length !== 1)
        return {
          ok: false,
          reason: 'unknown_key',
          hint: `the token has no kid and ${fitting.length} keys of ${issuer} fit ${alg}; a kid is needed to choose one`,
        };
      jwk = fitting[0]!;
    }
    if (!algorithmsForKey(jwk).includes(alg))
      return {
        ok: false,
        reason: 'algorithm_not_allowed',
        hint: `key ${jwk.kid ?? '(no kid)'} of ${issuer} (${jwk.kty}${jwk.alg ? `, alg ${jwk.alg}` : ''}) cannot verify ${alg}`,
      };
    const cacheKey = `${alg}|${jwk.kid ?? ''}`;
    let imported = s.imported.get(cacheKey);
    if (!imported) {
      // Only asymmetric keys get here (filterVerificationKeys); a symmetric import is refused anyway.
      imported = importJWK(jwk, alg).then((k) => {
        if (k instanceof Uint8Array) throw new TypeError('a symmetric key');
        return k;
      });
      s.imported.set(cacheKey, imported);
      imported.catch(() => s!.imported.delete(cacheKey));
    }
    try {
      return { ok: true, key: await imported, ...(jwk.kid ? { kid: jwk.kid } : {}) };
    } catch {
      return { ok: false, reason: 'unknown_key', hint: `key ${jwk.kid ?? '(no kid)'} of ${issuer} could not be imported` };
    }
  }

  private async refetchForUnknownKid(s: IssuerState): Promise<boolean> {
    if (s.refetch) {
      await s.refetch;
      return true;
    }
    const now = this.options.clock();
    if (now - s.lastRefetchAt < this.options.jwksRefetchCooldownMs) {
      this.options.onUnknownKid?.(s.record.authority, 'suppressed');
      return false;
    }
    this.options.onUnknownKid?.(s.record.authority, 'refetched');
    s.lastRefetchAt = now;
    s.refetch = this.refetchKeys(s).finally(() => {
      s.refetch = undefined;
    });
    await s.refetch;
    return true;
  }

  /** Refetches one issuer's JWKS only (not discovery); new keys are kept until the next snapshot. */
  private async refetchKeys(s: IssuerState): Promise<void> {
    try {
      const keys = await this.fetchKeys(s.record.jwksUri, s.record.authority);
      const current = this.issuers.get(s.record.issuer);
      if (current) {
        this.installIssuer({ ...current.record, keys, fetchedAt: this.options.clock() });
        this.issuers.get(s.record.issuer)!.lastRefetchAt = s.lastRefetchAt;
      }
    } catch (err) {
      const message = (err as Error).message;
      this.noteIssuerError(s.record.issuer, this.options.clock(), message);
      const current = this.issuers.get(s.record.issuer);
      if (current) current.refetchFailure = message;
    }
  }

  private async refreshStale(s: IssuerState): Promise<void> {
    const authority = this.authorities.get(s.record.authority);
    if (!authority) return;
    const now = this.options.clock();
    if (authority.loading) {
      await authority.loading.catch(() => undefined);
      return;
    }
    if (authority.lastAttemptAt !== undefined && now - authority.lastAttemptAt < this.options.metadataRetryMs) return;
    await this.refreshAuthority(authority).catch(() => undefined);
  }

  /**
   * Whether tokens of this issuer may still be accepted without re-verification: the issuer is
   * configured and its keys are younger than maxStale. The verified-token cache asks this on every hit.
   */
  keysFresh(issuer: string, now: number): boolean {
    const s = this.issuers.get(issuer);
    return s !== undefined && isFresh(s.record.fetchedAt, now, this.options.maxStaleMs);
  }

  health(): IssuerHealth[] {
    const now = this.options.clock();
    const out: IssuerHealth[] = [];
    for (const a of this.authorities.values()) {
      if (a.issuers.length === 0) {
        out.push({
          authority: a.authority,
          keys: 0,
          stale: true,
          ...(a.lastError ? { lastError: { at: new Date(a.lastError.at).toISOString(), message: a.lastError.message } } : {}),
        });
        continue;
      }
      for (const iss of a.issuers) {
        const s = this.issuers.get(iss);
        if (!s) continue;
        const err = s.lastError ?? a.lastError;
        out.push({
          authority: a.authority,
          issuer: iss,
          discoveryUrl: s.record.discoveryUrl,
          keys: s.record.keys.length,
          keysFetchedAt: new Date(s.record.fetchedAt).toISOString(),
          ageSeconds: Math.round((now - s.record.fetchedAt) / 1000),
          stale: !isFresh(s.record.fetchedAt, now, this.options.maxStaleMs),
          ...(err && err.at >= s.record.fetchedAt ? { lastError: { at: new Date(err.at).toISOString(), message: err.message } } : {}),
        });
      }
    }
    return out;
  }

  /**
   * The discovery record an authority's SMART discovery is built from: its `/v2.0` document where it
   * has one (Entra's v2 endpoints are the ones SMART clients use), else its own. Undefined while the
   * authority has not been loaded.
   */
  discoveryOf(authority: string): IssuerRecord | undefined {
    const state = this.authorities.get(authority);
    if (!state) return undefined;
    const records = state.issuers.map((i) => this.issuers.get(i)?.record).filter((r): r is IssuerRecord => r !== undefined);
    return records.find((r) => /\/v2\.0\/\.well-known\/openid-configuration$/i.test(r.discoveryUrl)) ?? records[0];
  }

  /** True when every authority has usable (non-stale) keys. */
  ready(): boolean {
    const now = this.options.clock();
    return [...this.authorities.values()].every(
      (a) => a.issuers.length > 0 && a.issuers.some((i) => {
        const s = this.issuers.get(i);
        return s !== undefined && isFresh(s.record.fetchedAt, now, this.options.maxStaleMs);
      }),
    );
  }
}

/**
 * The checks a fetched issuer record passed, applied to one read from a snapshot: its discovery
 * document is one this authority's refresh reads, its `jwks_uri` one fetchJson would fetch, its
 * algorithms asymmetric (discover), and its keys pass filterVerificationKeys, the filter every
 * fetched JWKS goes through (fetchKeys). Undefined when the record as a whole cannot be used.
 */
function usableSnapshotRecord(record: IssuerRecord, dropped: string[]): IssuerRecord | undefined {
  const where = `snapshot issuer ${record.issuer.slice(0, 200)}`;
  const discoveryUrls = [`${record.authority}/.well-known/openid-configuration`];
  if (!/\/v2\.0$/i.test(record.authority)) discoveryUrls.push(`${record.authority}/v2.0/.well-known/openid-configuration`);
  if (!discoveryUrls.includes(record.discoveryUrl)) {
    dropped.push(`${where}: discovery URL ${record.discoveryUrl.slice(0, 200)} is not one of ${record.authority}`);
    return undefined;
  }
  if (!isAllowedFetchUrl(record.jwksUri)) {
    dropped.push(`${where}: jwks_uri ${record.jwksUri.slice(0, 200)} is not https (or loopback http)`);
    return undefined;
  }
  const algorithms = record.algorithms.filter(isAsymmetricAlgorithm);
  if (algorithms.length !== record.algorithms.length) {
    dropped.push(`${where}: algorithms ${record.algorithms.filter((a) => !isAsymmetricAlgorithm(a)).map((a) => a.slice(0, 16)).join(', ')} (only asymmetric ones are used)`);
  }
  const { usable, dropped: droppedKeys } = filterVerificationKeys(record.keys);
  for (const why of droppedKeys) dropped.push(`${where}: ${why}`);
  const { authorizationEndpoint, tokenEndpoint, ...rest } = record;
  return {
    ...rest,
    ...(authorizationEndpoint !== undefined && isAllowedFetchUrl(authorizationEndpoint) ? { authorizationEndpoint } : {}),
    ...(tokenEndpoint !== undefined && isAllowedFetchUrl(tokenEndpoint) ? { tokenEndpoint } : {}),
    algorithms,
    keys: usable,
  };
}
