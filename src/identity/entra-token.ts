/**
 * What Entra's access tokens say about themselves that other issuers' do not: the tenant their
 * issuer names, and whether a token without `scp` or `roles` is an app-only access token. Rules
 * from Entra's access token claims reference
 * (learn.microsoft.com/entra/identity-platform/access-token-claims-reference) and its
 * claims-validation guidance (learn.microsoft.com/entra/identity-platform/claims-validation).
 */

/** The issuer's path with a trailing `v2.0` segment removed: the tenant is its last segment, when that is a GUID. */
const ISSUER_TENANT = /\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:\/v2\.0)?\/?$/i;

/**
 * The tenant an Entra issuer names: `https://sts.windows.net/{tid}/` (v1) and
 * `https://login.microsoftonline.com/{tid}/v2.0` (v2), on any host (national clouds, and the
 * loopback development IdP whose v1 issuer is `{origin}/sts/{tid}/`).
 */
export function tenantOfIssuer(iss: string): string | undefined {
  let path: string;
  try {
    path = new URL(iss).pathname;
  } catch {
    return undefined;
  }
  return ISSUER_TENANT.exec(path)?.[1]?.toLowerCase();
}

/**
 * Why a primary-authority token without `scp` or `roles` is (or is not) an Entra app-only access
 * token. Entra issues client-credentials tokens without `roles` when the application has no app
 * role assignment, and never with `scp` ("Only included for user tokens", access token claims
 * reference). Entra's claims-validation guidance names the `idtyp` optional claim as the way to
 * tell an app token from an app+user token; without it, the access-token-only claims (`appid` and
 * `appidacr`, "only present in v1.0 tokens"; `azp` and `azpacr`, "only present in v2.0 tokens")
 * together with `sub` equal to `oid` (an application is its own subject) show the same. An ID
 * token has none of these (its `aud` is the client id, it may carry `nonce`, it has no
 * `appid`/`azp` with their `acr`), so it is never accepted this way.
 */
export function appOnlyEvidence(c: Readonly<Record<string, unknown>>): { ok: true; because: string } | { ok: false; found: string } {
  if (c.nonce !== undefined) return { ok: false, found: 'it carries `nonce`, which only ID tokens do' };
  if (c.idtyp === 'app') return { ok: true, because: 'idtyp app' };
  if (c.idtyp === 'user') return { ok: false, found: 'idtyp is "user"' };
  const v1 = c.ver === '1.0';
  const [id, acr] = v1 ? (['appid', 'appidacr'] as const) : (['azp', 'azpacr'] as const);
  const missing = [id, acr].filter((n) => c[n] === undefined);
  const missingNote = missing.length ? `no ${missing.map((n) => `\`${n}\``).join(' or ')}` : '';
  const subNote = typeof c.sub === 'string' && typeof c.oid === 'string' && c.sub.toLowerCase() === c.oid.toLowerCase() ? '' : 'sub differs from oid';
  if (c.ver !== undefined && !missingNote && !subNote) return { ok: true, because: `${id} + ${acr}, sub = oid` };
  const notes = [c.ver === undefined ? 'no `ver`' : '', c.idtyp === undefined ? 'no `idtyp`' : '', missingNote, subNote].filter((n) => n !== '');
  return { ok: false, found: notes.join(', ') };
}
