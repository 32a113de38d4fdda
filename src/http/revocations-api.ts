/**
 * /api/revocations for admin callers (src/http/routes.ts checks the admin key): GET lists the live
 * deny-list, POST adds to it, DELETE /api/revocations/<id> removes one entry. Every change is one
 * write of the snapshot (src/app.ts, changeRevocations), so it is all or nothing, and other
 * instances install it at their next poll of the Blob store.
 *
 * POST body: one entry, or `{ "entries": [ ... ] }` with up to 1000; each is one of
 *   { "kind": "jti", "issuer": "<iss>", "jti": "<jti or Entra uti>" }
 *   { "kind": "sid", "issuer": "<iss>", "sid": "<sid>" }
 *   { "kind": "oid", "oid": "<object id>", "issuedBefore": "<RFC 3339>" }   (default: now)
 * with optional "expiresAt" (RFC 3339; default: the longest a matching token can live) and "note".
 */
import { z } from 'zod';
import { MAX_REVOCATION_NOTE_CHARS, MAX_REVOKED_VALUE_CHARS, type RevocationEntry } from '../core/revocations.js';
import { parseJsonStrict } from '../identity/strict-json.js';
import { printable, revocationTargetSchema, type RevocationAddition } from '../state/deny-list.js';
import { json, type PdpHttpRequest, type PdpHttpResponse } from './types.js';

export const REVOCATIONS_PATH = '/api/revocations';
/** Additions in one POST: a large incident is several requests, each all-or-nothing. */
export const MAX_ADDITIONS_PER_REQUEST = 1000;
/** The latest `expiresAt` accepted: an entry is for tokens, which live hours, not years. */
const MAX_EXPIRY_MS = 400 * 86_400_000;

/** What the route needs from the running service (src/app.ts's PdpService). */
export interface RevocationAdmin {
  revocations(): { readonly revision: string | null; readonly maxEntries: number; readonly entries: readonly RevocationEntry[] };
  addRevocations(additions: readonly RevocationAddition[]): Promise<RevocationChange>;
  removeRevocation(id: string): Promise<RevocationChange>;
  readonly clock?: () => number;
  /** clockSkewSeconds: how far in the future an `issuedBefore` may be (the caller's clock may run ahead). */
  readonly pdp: { readonly config: { readonly clockSkewSeconds: number } };
}

export type RevocationChange =
  | { readonly ok: true; readonly revision: string; readonly changed: readonly RevocationEntry[]; readonly entries: number }
  | { readonly ok: false; readonly code: 'deny_list_full' | 'not_found' | 'no_snapshot'; readonly message: string };

const instant = z.iso.datetime({ offset: true });
const extras = { expiresAt: instant.optional(), note: printable(MAX_REVOCATION_NOTE_CHARS).optional() };
const additionSchema = z.discriminatedUnion('kind', [
  revocationTargetSchema.options[0].extend(extras).strict(),
  revocationTargetSchema.options[1].extend(extras).strict(),
  z.object({ kind: z.literal('oid'), oid: printable(MAX_REVOKED_VALUE_CHARS), issuedBefore: instant.optional(), ...extras }).strict(),
]);
const postSchema = z.union([z.object({ entries: z.array(additionSchema).min(1).max(MAX_ADDITIONS_PER_REQUEST) }).strict(), additionSchema]);

export async function handleRevocations(admin: RevocationAdmin, req: PdpHttpRequest, path: string): Promise<PdpHttpResponse> {
  try {
    if (path === REVOCATIONS_PATH) {
      if (req.method === 'GET') {
        const listing = admin.revocations();
        return json(200, { revision: listing.revision, maxEntries: listing.maxEntries, count: listing.entries.length, entries: listing.entries.map(render) });
      }
      if (req.method !== 'POST') return json(405, { error: 'method_not_allowed' }, { allow: 'GET, POST' });
      const additions = readAdditions(req, (admin.clock ?? Date.now)(), admin.pdp.config.clockSkewSeconds);
      if ('problem' in additions) return invalid(additions.problem);
      return answer(await admin.addRevocations(additions.additions), 'added');
    }
    const id = path.slice(REVOCATIONS_PATH.length + 1);
    if (req.method !== 'DELETE') return json(405, { error: 'method_not_allowed' }, { allow: 'DELETE' });
    if (!/^(jti|sid|oid)-[A-Za-z0-9_-]{22}$/.test(id)) return invalid('the path names no revocation id (DELETE /api/revocations/<id>, the id from GET /api/revocations)');
    return answer(await admin.removeRevocation(id), 'removed');
  } catch (error) {
    // The store could not be read or written (its errors name status codes, never keys or URLs
    // with a SAS): nothing was changed, and the caller may retry.
    const code = typeof (error as { code?: unknown })?.code === 'string' ? (error as { code: string }).code : 'snapshot_store_error';
    const message = error instanceof Error ? error.message.slice(0, 300) : 'the snapshot store failed';
    return json(503, { error: code, message: `The deny-list was not changed: ${message}` }, { 'retry-after': '5' });
  }
}

function readAdditions(req: PdpHttpRequest, now: number, skewSeconds: number): { additions: RevocationAddition[] } | { problem: string } {
  if (req.bodyTooLarge) return { problem: 'the body is too large' };
  if (!req.body) return { problem: 'a JSON body is required: one entry or {"entries": [...]}' };
  const parsed = parseJsonStrict(req.body.toString('utf8'));
  if (!parsed.ok) return { problem: `the body is ${parsed.problem}` };
  const read = postSchema.safeParse(parsed.value);
  if (!read.success) {
    const issue = read.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : '(root)';
    return { problem: `${where}: ${issue?.message ?? 'invalid'}` };
  }
  const asked = 'entries' in read.data ? read.data.entries : [read.data];
  const additions: RevocationAddition[] = [];
  for (const [i, a] of asked.entries()) {
    const where = 'entries' in read.data ? `entries.${i}.` : '';
    let expiresAt: number | undefined;
    if (a.expiresAt !== undefined) {
      expiresAt = Date.parse(a.expiresAt);
      if (expiresAt <= now) return { problem: `${where}expiresAt: ${a.expiresAt} is not in the future` };
      if (expiresAt > now + MAX_EXPIRY_MS) return { problem: `${where}expiresAt: at most ${MAX_EXPIRY_MS / 86_400_000} days ahead` };
    }
    const extra = { ...(expiresAt === undefined ? {} : { expiresAt }), ...(a.note === undefined ? {} : { note: a.note }) };
    if (a.kind === 'oid') {
      const before = a.issuedBefore === undefined ? now : Date.parse(a.issuedBefore);
      // An entry lives as long as a token issued before it was added can; a later issuedBefore
      // would revoke tokens not issued yet for longer than the entry lives.
      if (before > now + skewSeconds * 1000) return { problem: `${where}issuedBefore: ${a.issuedBefore} is in the future` };
      // Rounded up to the second `iat` counts in: a token of the same second is revoked too.
      additions.push({ kind: 'oid', oid: a.oid, issuedBefore: Math.ceil(Math.min(before, now) / 1000), ...extra });
    } else if (a.kind === 'jti') additions.push({ kind: 'jti', issuer: a.issuer, jti: a.jti, ...extra });
    else additions.push({ kind: 'sid', issuer: a.issuer, sid: a.sid, ...extra });
  }
  return { additions };
}

function answer(result: RevocationChange, verb: 'added' | 'removed'): PdpHttpResponse {
  if (result.ok) return json(200, { revision: result.revision, count: result.entries, [verb]: result.changed.map(render) });
  const status = result.code === 'not_found' ? 404 : result.code === 'deny_list_full' ? 409 : 503;
  return json(status, { error: result.code, message: result.message }, status === 503 ? { 'retry-after': '10' } : {});
}

function invalid(problem: string): PdpHttpResponse {
  return json(400, { error: 'invalid_revocation', message: `The request was not applied: ${problem}` });
}

/** An entry as the API shows it: times as RFC 3339. */
function render(e: RevocationEntry): Record<string, unknown> {
  const target =
    e.kind === 'oid' ? { kind: e.kind, oid: e.oid, issuedBefore: new Date(e.issuedBefore * 1000).toISOString() } : e.kind === 'jti' ? { kind: e.kind, issuer: e.issuer, jti: e.jti } : { kind: e.kind, issuer: e.issuer, sid: e.sid };
  return { id: e.id, ...target, addedAt: new Date(e.addedAt).toISOString(), expiresAt: new Date(e.expiresAt).toISOString(), ...(e.note === undefined ? {} : { note: e.note }) };
}
