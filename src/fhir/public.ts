/**
 * The two requests answered without a token: a SMART client discovers how to get one from them.
 * Pure; never throws.
 *
 * - `GET [base]/metadata`: the CapabilityStatement, where SMART App Launch v1 puts the OAuth
 *   endpoints (the oauth-uris extension). The Microsoft FHIR server serves it anonymously.
 * - `GET [base]/.well-known/smart-configuration`: SMART App Launch, "FHIR endpoints requiring
 *   authorization SHALL serve a JSON document at the location formed by appending
 *   /.well-known/smart-configuration to their base URL".
 *
 * Only GET and HEAD, only those exact paths at the configured FHIR base (as parseFhirRequest reads
 * them), nothing below or beside them.
 */
import { parseFhirRequest, ROOT_BASE_PATH, type FhirBasePath } from './request.js';
import type { FhirRequest, Interaction } from './types.js';

const PUBLIC_INTERACTIONS: ReadonlySet<Interaction> = new Set<Interaction>(['capabilities', 'smart-configuration']);
// ASCII only, as parseFhirRequest reads methods.
const READ_METHOD = /^(?:get|head)$/i;

/** The discovery request `target` is, when it is one; undefined for every other request. */
export function publicDiscovery(method: string, target: string, basePath: string | FhirBasePath = ROOT_BASE_PATH): FhirRequest | undefined {
  if (typeof method !== 'string' || typeof target !== 'string') return undefined;
  // Every decision passes here: a substring look first, the full parse only for likely candidates.
  if (!target.includes('/metadata') && !target.includes('/.well-known/')) return undefined;
  if (method !== 'GET' && method !== 'HEAD' && !READ_METHOD.test(method)) return undefined;
  const parsed = parseFhirRequest(method, target, basePath);
  return parsed.ok && PUBLIC_INTERACTIONS.has(parsed.request.interaction) ? parsed.request : undefined;
}
