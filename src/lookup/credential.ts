/**
 * fhir-pdp's own token for the FHIR server it asks (compartmentLookup.credential kind
 * `managedIdentity`). Loaded only when that is configured, so a deployment without a lookup never
 * loads @azure/identity for it.
 */
import { DefaultAzureCredential, ManagedIdentityCredential, type TokenCredential } from '@azure/identity';

/** A token is renewed this long before it expires, so none is sent that expires in flight. */
const RENEW_BEFORE_MS = 5 * 60 * 1000;

/**
 * With a client id: that user-assigned managed identity and nothing else, so a developer's Azure
 * CLI sign-in or a stray AZURE_CLIENT_SECRET can never stand in for it. Without one:
 * DefaultAzureCredential (environment, workload identity, managed identity, then developer
 * sign-ins). Azure Health Data Services: the identity needs a FHIR data role (FHIR Data Reader)
 * on the service, and the scope is the service URL + `/.default`.
 */
export function managedIdentityToken(options: {
  readonly clientId?: string;
  readonly scope: string;
  readonly clock?: () => number;
  /** For tests: a credential of their own. */
  readonly credential?: TokenCredential;
}): () => Promise<string> {
  const credential =
    options.credential ?? (options.clientId === undefined ? new DefaultAzureCredential() : new ManagedIdentityCredential({ clientId: options.clientId }));
  const clock = options.clock ?? Date.now;
  let held: { token: string; renewAt: number } | undefined;
  let pending: Promise<string> | undefined;
  return () => {
    if (held && held.renewAt > clock()) return Promise.resolve(held.token);
    pending ??= credential
      .getToken(options.scope)
      .then((t) => {
        if (!t?.token) throw new Error('the credential returned no token');
        held = { token: t.token, renewAt: t.expiresOnTimestamp - RENEW_BEFORE_MS };
        return t.token;
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  };
}
