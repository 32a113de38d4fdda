/**
 * The spellings of a SMART clinical scope's head (everything before `?`) that the Microsoft stack
 * issues, read into one canonical form: context, resource type (`*` for all) and permission
 * (`*` for all). Pure; never throws.
 *
 * Entra ID scope names cannot hold '/' (nor '*'), so SMART scopes registered there are spelled
 * `patient.Observation.read`, `patient$Observation.read`, `patient%2FObservation.read`,
 * `patient.all.read` (for `patient/*.read`) and `patient/Observation.all` (for `.*`); a proxy that
 * copies the requested scope into the token writes the resource in front of it
 * (`{audience}/patient.Observation.read`). The accepted set mirrors microsoft/fhir-server's
 * SmartClinicalScopesMiddleware, except where docs/security.md ("Scope spellings") says why not.
 */
import type { SmartContextKind } from './scopes.js';

export type ScopeSpelling =
  /** Not a SMART clinical scope (openid, launch/patient, user.read, another API's scope). */
  | { readonly kind: 'ignored' }
  | { readonly kind: 'error'; readonly problem: string }
  | {
      readonly kind: 'clinical';
      readonly context: SmartContextKind;
      /** A resource type as spelled, or `*` (also for `all`). */
      readonly resourceType: string;
      /** `read`, `write`, `*` (also for `all`) or v2 letters, unchecked. */
      readonly permission: string;
    };

const CONTEXT_AND_SEPARATOR = /^(patient|user|system)([/.$])(.*)$/;

/**
 * Reads a scope head. `audiencePrefixes` are the accepted audiences, each ending in '/', any of
 * which may stand in front of the scope.
 */
export function readScopeSpelling(head: string, audiencePrefixes: readonly string[]): ScopeSpelling {
  // microsoft/fhir-server unescapes the whole claim (Uri.UnescapeDataString) before reading it, so
  // %2F, %24, %2E and %2A all stand for their characters. A head that does not decode is a SMART
  // scope spelled wrong only if it starts like one; otherwise it is somebody else's scope name.
  let decoded: string;
  try {
    decoded = decodeURIComponent(head);
  } catch {
    const loose = stripPrefix(head.replace(/%2f/gi, '/'), audiencePrefixes);
    return CONTEXT_AND_SEPARATOR.test(loose) ? { kind: 'error', problem: 'is badly percent-encoded' } : { kind: 'ignored' };
  }
  const unprefixed = stripPrefix(decoded, audiencePrefixes);
  const m = CONTEXT_AND_SEPARATOR.exec(unprefixed);
  if (!m) return { kind: 'ignored' };
  const context = m[1] as SmartContextKind;
  const separator = m[2]!;
  const body = m[3]!;
  // With '.', only `ctx.Type.perm` (or `ctx.all.perm`, `ctx.*.perm`) is a SMART scope: `user.read`
  // or `user.profile` are other scope names and are ignored like any other unknown scope.
  if (separator === '.' && !/^(?:\*|all|[A-Z][^.]*)\./.test(body)) return { kind: 'ignored' };
  // A '?', '&', '=' or space that was percent-encoded would turn into a constraint (or a second
  // scope) only after decoding; fhir-pdp reads constraints only as written, so it refuses rather
  // than guess which the issuer meant.
  if (/[?&=\s]/.test(body)) return { kind: 'error', problem: 'percent-encodes a ?, &, = or space; write a constraint unencoded after ?' };

  const dot = body.indexOf('.');
  if (dot === -1) return { kind: 'error', problem: 'has no permission: expected Type.read, Type.write, Type.* or Type.cruds' };
  const resource = body.slice(0, dot);
  const permission = body.slice(dot + 1);
  // fhir-server: `all` as the resource means every type (KnownResourceTypes.All), and as the
  // permission it means what `*` means: "case \"*\": case \"all\": Full access".
  return {
    kind: 'clinical',
    context,
    resourceType: resource === 'all' ? '*' : resource,
    permission: permission === 'all' ? '*' : permission,
  };
}

function stripPrefix(head: string, audiencePrefixes: readonly string[]): string {
  const prefix = audiencePrefixes.find((p) => head.startsWith(p));
  return prefix === undefined ? head : head.slice(prefix.length);
}
