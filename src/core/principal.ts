/**
 * Who the caller is, in the one normalised shape the policy sees: identity builds it from a
 * verified token, policy and the decision pipeline read it.
 */
export interface SmartApplication {
  readonly clientId: string;
  readonly audience: string;
  readonly allowedDataActions: readonly string[];
}

export interface Principal {
  /** `entra`: the primary authority (access policies, roles, groups); `smart`: a SMART identity provider's application. */
  readonly kind: 'entra' | 'smart';
  readonly issuer: string;
  readonly authority: string;
  readonly subject?: string;
  readonly objectId?: string;
  readonly tenantId?: string;
  /** Client id of the calling application (appid / azp / client_id / cid). */
  readonly applicationId?: string;
  /** True for app-only tokens (client credentials): Entra's `idtyp: app`, or no scope claim (see appOnlyEvidence). */
  readonly isAppToken: boolean;
  readonly roles: readonly string[];
  /** Scope strings as the token carries them (raw_scope, scp or scope). */
  readonly scopes: readonly string[];
  /** The `groups` claim when present (Entra: transitive security groups). */
  readonly groups?: readonly string[];
  /** The token says its groups did not fit (`_claim_names.groups`, `hasgroups`). */
  readonly groupsOverage: boolean;
  readonly fhirUser?: string;
  /** SMART launch context `patient` claim. */
  readonly patient?: string;
  readonly version?: string;
  readonly expiresAt: number;
  readonly application?: SmartApplication;
}

/** How a membership answer was established (reported in hints and the explain trace). */
export type MembershipSource = 'claim' | 'index' | 'graph' | 'cache';
