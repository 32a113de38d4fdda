/**
 * Operator hints for the 401 half of the troubleshooting tree: the checks people do today by
 * pasting a token into jwt.ms and comparing it with portal settings. Each names the value found
 * and the value expected, and says what to change.
 */
import { GUID_IN_TEXT, isGuid } from '../core/guid.js';

/** Microsoft Graph's application id and resource URL. */
const GRAPH_AUDIENCES = new Set(['00000003-0000-0000-c000-000000000000', 'https://graph.microsoft.com', 'https://graph.microsoft.com/']);

export function tenantOf(issuerOrAuthority: string): string | undefined {
  return GUID_IN_TEXT.exec(issuerOrAuthority)?.[0]?.toLowerCase();
}

function isV2Issuer(iss: string): boolean {
  return /\/v2\.0\/?$/i.test(iss);
}

export function untrustedIssuerHint(iss: string, knownIssuers: readonly string[]): string {
  const tenant = tenantOf(iss);
  const knownTenants = new Set(knownIssuers.map(tenantOf).filter((t): t is string => t !== undefined));
  const list = `trusted issuers: [${knownIssuers.join(', ')}]`;
  if (tenant && knownTenants.size > 0 && !knownTenants.has(tenant))
    return `the tenant in iss (${tenant}) differs from the configured authority's tenant (${[...knownTenants].join(', ')}): the token was issued by another tenant; request it from the authority's tenant, or fix \`authority\`; ${list}`;
  if (tenant && knownTenants.has(tenant)) {
    const sameTenant = knownIssuers.filter((k) => tenantOf(k) === tenant);
    if (isV2Issuer(iss) && sameTenant.every((k) => !isV2Issuer(k)))
      return `iss ${iss} is the v2.0 issuer of tenant ${tenant}, but only its v1 issuer is trusted (${sameTenant.join(', ')}); the authority's /v2.0 discovery document was not found (see GET /api/health), or the API's app manifest should set accessTokenAcceptedVersion to 1`;
    if (!isV2Issuer(iss) && sameTenant.every(isV2Issuer))
      return `iss ${iss} is the v1 issuer of tenant ${tenant}, but the authority ends with /v2.0 so only its v2 issuer is trusted (${sameTenant.join(', ')}); remove /v2.0 from \`authority\`, or set accessTokenAcceptedVersion to 2 in the API's app manifest`;
  }
  return `iss ${iss} is not the issuer of any configured authority; ${list}`;
}

export function audienceHint(aud: readonly string[], accepted: readonly string[]): string {
  const found = aud.length === 1 ? aud[0]! : `[${aud.join(', ')}]`;
  const acceptedList = `accepted audiences are [${accepted.join(', ')}]`;
  if (aud.some((a) => GRAPH_AUDIENCES.has(a.toLowerCase())))
    return `the token is for Microsoft Graph (aud ${found}), not for this FHIR service; request a token for ${accepted[0] ?? 'the FHIR audience'} (scope "<audience>/.default")`;
  for (const a of aud) {
    const trimmed = a.replace(/\/+$/, '');
    const near = accepted.find((x) => x !== a && x.replace(/\/+$/, '') === trimmed);
    if (near) return `aud ${a} differs from the accepted audience ${near} only by a trailing slash; ${acceptedList}; add "${a}" to \`audiences\` or request the token for exactly ${near}`;
  }
  const guid = aud.find((a) => isGuid(a));
  if (guid) {
    const appIdUri = accepted.find((x) => x.toLowerCase() === `api://${guid.toLowerCase()}`);
    return `aud is the client id ${guid}${appIdUri ? ` whose App ID URI ${appIdUri} is configured` : ''}; ${acceptedList}; add "${guid}" to \`audiences\`, or request a token for the resource URL (scope "${accepted[0] ?? '<audience>'}/.default")`;
  }
  const clientIdAccepted = accepted.find((x) => isGuid(x));
  if (clientIdAccepted && aud.some((a) => /^(api:\/\/|https?:\/\/)/i.test(a)))
    return `aud ${found} is a URL while the client id ${clientIdAccepted} is configured; ${acceptedList}; add "${aud[0]}" to \`audiences\``;
  return `aud ${found} is not an accepted audience; ${acceptedList}; add it to \`audiences\` or request a token for one of them`;
}
