/**
 * The SMART App Launch 2.x discovery document (`[base]/.well-known/smart-configuration`), built
 * from configuration and the authority's OpenID discovery document. Pure: the discovery record is
 * passed in. A document missing a field the spec requires is never served: the answer is then a
 * refusal to publish (503, `issuer_unavailable`) that says which field the authority did not give.
 */
/** The `smartConfiguration` setting (src/config/schema.ts), as this builder reads it. */
export interface SmartConfigurationSettings {
  readonly capabilities: readonly string[];
  readonly grantTypesSupported: readonly string[];
  readonly codeChallengeMethodsSupported: readonly string[];
  readonly scopesSupported?: readonly string[] | undefined;
  readonly responseTypesSupported?: readonly string[] | undefined;
  readonly tokenEndpointAuthMethodsSupported?: readonly string[] | undefined;
}

/** What the authority's OpenID discovery document said (the issuer registry's record). */
export interface AuthorityDiscovery {
  readonly issuer: string;
  readonly jwksUri: string;
  readonly authorizationEndpoint?: string;
  readonly tokenEndpoint?: string;
}

export interface SmartConfigurationDocument {
  readonly issuer?: string;
  readonly jwks_uri?: string;
  readonly authorization_endpoint?: string;
  readonly token_endpoint: string;
  readonly grant_types_supported: readonly string[];
  readonly scopes_supported?: readonly string[];
  readonly response_types_supported?: readonly string[];
  readonly token_endpoint_auth_methods_supported?: readonly string[];
  readonly capabilities: readonly string[];
  readonly code_challenge_methods_supported: readonly string[];
}

export type SmartConfigurationResult =
  | { readonly ok: true; readonly document: SmartConfigurationDocument }
  | { readonly ok: false; readonly reason: 'issuer_unavailable'; readonly hint: string };

export function buildSmartConfiguration(
  settings: SmartConfigurationSettings,
  authority: string,
  discovery: AuthorityDiscovery | undefined,
): SmartConfigurationResult {
  if (discovery === undefined) {
    return { ok: false, reason: 'issuer_unavailable', hint: `the discovery document of ${authority} has not been loaded yet (see /api/health)` };
  }
  const capabilities = settings.capabilities;
  const missing = (field: string) => ({
    ok: false as const,
    reason: 'issuer_unavailable' as const,
    hint: `the discovery document of ${authority} has no https ${field}, which SMART discovery requires; fhir-pdp serves no document rather than one without it`,
  });
  // SMART App Launch 2.x, "Metadata": token_endpoint is REQUIRED; authorization_endpoint is
  // "REQUIRED if the server supports the launch-ehr or launch-standalone capability".
  if (discovery.tokenEndpoint === undefined) return missing('token_endpoint');
  const launches = capabilities.includes('launch-ehr') || capabilities.includes('launch-standalone');
  if (launches && discovery.authorizationEndpoint === undefined) return missing('authorization_endpoint');
  // "issuer: CONDITIONAL, String conveying this system's OpenID Connect Issuer URL. Required if the
  // server's capabilities include sso-openid-connect"; likewise jwks_uri.
  const oidc = capabilities.includes('sso-openid-connect');
  const document: SmartConfigurationDocument = {
    ...(oidc ? { issuer: discovery.issuer, jwks_uri: discovery.jwksUri } : {}),
    ...(discovery.authorizationEndpoint !== undefined ? { authorization_endpoint: discovery.authorizationEndpoint } : {}),
    token_endpoint: discovery.tokenEndpoint,
    grant_types_supported: settings.grantTypesSupported,
    ...(settings.scopesSupported ? { scopes_supported: settings.scopesSupported } : {}),
    ...(settings.responseTypesSupported ? { response_types_supported: settings.responseTypesSupported } : {}),
    ...(settings.tokenEndpointAuthMethodsSupported ? { token_endpoint_auth_methods_supported: settings.tokenEndpointAuthMethodsSupported } : {}),
    capabilities,
    // "code_challenge_methods_supported: REQUIRED ... SHALL include S256 ... SHALL NOT include plain"
    // (the config schema refuses a list that breaks this).
    code_challenge_methods_supported: settings.codeChallengeMethodsSupported,
  };
  return { ok: true, document };
}
