/**
 * The records a snapshot holds, shared by identity (which fetches and loads issuers) and state
 * (which stores them): the shape both sides agree on, owned by neither.
 */
import type { JWK } from 'jose';

/** One issuer as published by one discovery document of a configured authority. */
export interface IssuerRecord {
  /** The configured authority this issuer belongs to (normalised, no trailing slash). */
  readonly authority: string;
  /** Which discovery document produced it: the authority's own or its `/v2.0` one. */
  readonly discoveryUrl: string;
  /** The `issuer` of the discovery document; a token's `iss` must equal it exactly. */
  readonly issuer: string;
  readonly jwksUri: string;
  /** The document's `authorization_endpoint` and `token_endpoint`, for SMART discovery; absent when not https. */
  readonly authorizationEndpoint?: string;
  readonly tokenEndpoint?: string;
  /** Asymmetric algorithms from `id_token_signing_alg_values_supported` (never `none`, never HS*). */
  readonly algorithms: readonly string[];
  /** Usable verification keys only (oct, use=enc and RSA < 2048 bits already dropped). */
  readonly keys: readonly JWK[];
  /** When these keys were fetched (ms since epoch). Keys older than maxStale are not used. */
  readonly fetchedAt: number;
}

export interface GroupRecord {
  /** Transitive member object ids (users, service principals, nested groups). */
  readonly members: readonly string[];
  readonly fetchedAt: number;
}
