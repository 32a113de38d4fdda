/**
 * The deny-list the snapshot carries: its stored schema, the changes the admin route makes to it
 * (add, remove, drop what expired), and the index a decision looks tokens up in. The index is built
 * once per installed snapshot (three maps), so a decision does at most three Map lookups, whatever
 * the list's length.
 *
 * How long an entry lives: a token is accepted only while `exp` (plus the clock skew) is ahead, so
 * an entry may go once every token it matches has expired. The caller of the admin route may say
 * when that is (`expiresAt`, e.g. the revoked token's `exp`); otherwise the entry lives the longest
 * lifetime a matching token can still have: `maxTokenAgeSeconds` when set (a token older than that
 * is refused anyway), else `revocation.maxTokenLifetimeSeconds`, plus the clock skew.
 */
import { hash } from 'node:crypto';
import { z } from 'zod';
import {
  MAX_REVOCATION_ENTRIES,
  MAX_REVOCATION_NOTE_CHARS,
  MAX_REVOKED_ISSUER_CHARS,
  MAX_REVOKED_VALUE_CHARS,
  type RevocationEntry,
  type RevocationTarget,
} from '../core/revocations.js';

export type { RevocationEntry, RevocationTarget };

/** Printable ASCII only: values are compared with claims exactly and shown in hints and logs. */
export const printable = (max: number) => z.string().min(1).max(max).regex(/^[\x20-\x7e]+$/, 'must be printable ASCII');

export const revocationTargetSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('jti'), issuer: printable(MAX_REVOKED_ISSUER_CHARS), jti: printable(MAX_REVOKED_VALUE_CHARS) }).strict(),
  z.object({ kind: z.literal('sid'), issuer: printable(MAX_REVOKED_ISSUER_CHARS), sid: printable(MAX_REVOKED_VALUE_CHARS) }).strict(),
  z.object({ kind: z.literal('oid'), oid: printable(MAX_REVOKED_VALUE_CHARS), issuedBefore: z.number().int().min(0) }).strict(),
]);

const entryFields = {
  id: z.string().regex(/^(jti|sid|oid)-[A-Za-z0-9_-]{22}$/),
  addedAt: z.number().int().min(0),
  expiresAt: z.number().int().min(0),
  note: printable(MAX_REVOCATION_NOTE_CHARS).optional(),
};

/** An entry as a stored snapshot holds it (src/state/codec.ts); a reader accepts no more than the hard bound. */
export const revocationListSchema = z
  .array(
    z.discriminatedUnion('kind', [
      revocationTargetSchema.options[0].extend(entryFields).strict(),
      revocationTargetSchema.options[1].extend(entryFields).strict(),
      revocationTargetSchema.options[2].extend(entryFields).strict(),
    ]),
  )
  .max(MAX_REVOCATION_ENTRIES);

/**
 * The id of a target: the same target added twice is one entry. An `oid` entry is one per object
 * id (a later `issuedBefore` widens it), so its id leaves `issuedBefore` out.
 */
export function revocationId(target: RevocationTarget): string {
  const parts = target.kind === 'oid' ? [target.kind, target.oid.toLowerCase()] : [target.kind, target.issuer, target.kind === 'jti' ? target.jti : target.sid];
  return `${target.kind}-${hash('sha256', JSON.stringify(parts), 'base64url').slice(0, 22)}`;
}

/** Entries still in force at `now`. */
export function liveEntries(entries: readonly RevocationEntry[], now: number): RevocationEntry[] {
  return entries.filter((e) => e.expiresAt > now);
}

export interface AddOptions {
  readonly now: number;
  /** How long an entry without `expiresAt` lives (ms): the longest a matching token can still be accepted. */
  readonly defaultLifetimeMs: number;
  /** `revocation.maxEntries`: the most live entries after the change. */
  readonly maxEntries: number;
}

/** One addition asked for: a target, and optionally when it may go and why it was made. */
export type RevocationAddition = RevocationTarget & { readonly expiresAt?: number; readonly note?: string };

export type DenyListChange =
  | { readonly ok: true; readonly entries: readonly RevocationEntry[]; readonly changed: readonly RevocationEntry[] }
  | { readonly ok: false; readonly code: 'deny_list_full' | 'not_found'; readonly message: string };

/**
 * The list with `additions` in it, expired entries dropped. A target already listed is widened
 * (the later `expiresAt`, for `oid` the later `issuedBefore`), never narrowed: revoking twice
 * never shortens a revocation. Beyond `maxEntries` live entries nothing is added (never a live
 * entry dropped to make room).
 */
export function addRevocations(current: readonly RevocationEntry[], additions: readonly RevocationAddition[], o: AddOptions): DenyListChange {
  const byId = new Map(liveEntries(current, o.now).map((e) => [e.id, e]));
  const changed = new Map<string, RevocationEntry>();
  for (const a of additions) {
    const { expiresAt: asked, note, ...rest } = a;
    const target = normalise(rest as RevocationTarget);
    const id = revocationId(target);
    const prior = changed.get(id) ?? byId.get(id);
    const expiresAt = Math.max(asked ?? o.now + o.defaultLifetimeMs, prior?.expiresAt ?? 0);
    const widened: RevocationTarget =
      target.kind === 'oid' && prior?.kind === 'oid' ? { ...target, issuedBefore: Math.max(target.issuedBefore, prior.issuedBefore) } : target;
    const noteNow = note ?? prior?.note;
    const entry: RevocationEntry = { ...widened, id, addedAt: prior?.addedAt ?? o.now, expiresAt, ...(noteNow === undefined ? {} : { note: noteNow }) };
    changed.set(id, entry);
    byId.set(id, entry);
  }
  if (byId.size > o.maxEntries) {
    const live = liveEntries(current, o.now).length;
    return {
      ok: false,
      code: 'deny_list_full',
      message: `the deny-list holds ${live} live entries and this would make ${byId.size}, more than revocation.maxEntries (${o.maxEntries}); nothing was added: remove entries (DELETE /api/revocations/<id>) or raise revocation.maxEntries`,
    };
  }
  return { ok: true, entries: [...byId.values()], changed: [...changed.values()] };
}

/** The list without entry `id` (and without expired entries); `not_found` when it is not listed. */
export function removeRevocation(current: readonly RevocationEntry[], id: string, now: number): DenyListChange {
  const live = liveEntries(current, now);
  const gone = live.find((e) => e.id === id);
  if (!gone) return { ok: false, code: 'not_found', message: `no live revocation entry has id ${id.slice(0, 40)}` };
  return { ok: true, entries: live.filter((e) => e !== gone), changed: [gone] };
}

/** Object ids are compared case-insensitively (Entra's GUIDs; principal.ts lowercases them too). */
function normalise(t: RevocationTarget): RevocationTarget {
  return t.kind === 'oid' ? { kind: 'oid', oid: t.oid.toLowerCase(), issuedBefore: t.issuedBefore } : t;
}

/** What a token matched: the entry, and for the hint which claim matched it. */
export interface RevocationMatch {
  readonly entry: RevocationEntry;
  readonly claim: 'jti' | 'uti' | 'sid' | 'oid';
}

/**
 * The deny-list of one installed snapshot, indexed for lookup. Expiry is checked at lookup, so an
 * entry stops matching at its `expiresAt` even before a write drops it.
 */
export class DenyList {
  static readonly EMPTY = new DenyList([]);
  readonly size: number;
  readonly #byJti = new Map<string, Map<string, RevocationEntry>>();
  readonly #bySid = new Map<string, Map<string, RevocationEntry>>();
  readonly #byOid = new Map<string, RevocationEntry>();

  constructor(entries: readonly RevocationEntry[]) {
    this.size = entries.length;
    for (const e of entries) {
      if (e.kind === 'oid') this.#byOid.set(e.oid.toLowerCase(), e);
      else {
        const index = e.kind === 'jti' ? this.#byJti : this.#bySid;
        let forIssuer = index.get(e.issuer);
        if (!forIssuer) index.set(e.issuer, (forIssuer = new Map()));
        forIssuer.set(e.kind === 'jti' ? e.jti : e.sid, e);
      }
    }
  }

  /**
   * The live entry this token matches, if any. `jti` is the token's id (Entra's access tokens carry
   * it as `uti`); an `oid` entry matches a token of that object id whose `iat` is before
   * `issuedBefore`, or that has no `iat` at all (its issue time cannot be shown to be later).
   */
  match(issuer: string, claims: Readonly<Record<string, unknown>>, now: number): RevocationMatch | undefined {
    if (this.#byJti.size > 0) {
      const forIssuer = this.#byJti.get(issuer);
      if (forIssuer) {
        const claim = typeof claims.jti === 'string' ? 'jti' : 'uti';
        const value = claims[claim];
        const e = typeof value === 'string' ? forIssuer.get(value) : undefined;
        if (e && e.expiresAt > now) return { entry: e, claim };
      }
    }
    if (this.#bySid.size > 0 && typeof claims.sid === 'string') {
      const e = this.#bySid.get(issuer)?.get(claims.sid);
      if (e && e.expiresAt > now) return { entry: e, claim: 'sid' };
    }
    if (this.#byOid.size > 0 && typeof claims.oid === 'string') {
      const e = this.#byOid.get(claims.oid.toLowerCase());
      if (e && e.kind === 'oid' && e.expiresAt > now) {
        const iat = claims.iat;
        if (typeof iat !== 'number' || !Number.isFinite(iat) || iat < e.issuedBefore) return { entry: e, claim: 'oid' };
      }
    }
    return undefined;
  }
}
