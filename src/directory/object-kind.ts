/**
 * What a directory object id names, for the config checker: an access policy's `objectId` must be
 * a user, a group or a service principal. Listing an app registration's application object id
 * instead of its service principal's (enterprise application's) object id is a common mistake:
 * tokens carry the service principal's `oid`, so such a policy never matches.
 */
import type { Client } from '@microsoft/microsoft-graph-client';
import { describeGraphFailure, withoutSdkRetries } from './graph-client.js';
// Directory object ids are GUIDs; anything else never goes into a URL.
import { isGuid } from '../core/guid.js';

export type DirectoryObjectKind = 'user' | 'group' | 'servicePrincipal' | 'application' | 'unknown' | 'not-found';

const KINDS: ReadonlyMap<string, DirectoryObjectKind> = new Map([
  ['#microsoft.graph.user', 'user'],
  ['#microsoft.graph.group', 'group'],
  ['#microsoft.graph.servicePrincipal', 'servicePrincipal'],
  ['#microsoft.graph.application', 'application'],
]);

export class DirectoryLookupError extends Error {
  readonly code = 'directory_lookup_failed' as const;
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'DirectoryLookupError';
  }
}

/**
 * GET /directoryObjects/{id} and its `@odata.type`. 'not-found' for a 404 (or an id that is not a
 * GUID, which names no object); 'unknown' for other object types (devices, contacts). Rejects
 * with DirectoryLookupError when Graph cannot answer.
 */
export async function getDirectoryObjectKind(client: Client, id: string): Promise<DirectoryObjectKind> {
  if (!isGuid(id)) return 'not-found';
  let body: unknown;
  try {
    body = await client.api(`/directoryObjects/${id.toLowerCase()}`).middlewareOptions(withoutSdkRetries()).select('id').get();
  } catch (error) {
    const failure = describeGraphFailure(error);
    if (failure.status === 404) return 'not-found';
    throw new DirectoryLookupError(failure.message, failure.status);
  }
  return kindOf(body);
}

/** The kind a `directoryObjects/{id}` answer names in its `@odata.type`; 'unknown' for others. */
export function kindOf(body: unknown): DirectoryObjectKind {
  const type = (body as { '@odata.type'?: unknown } | null)?.['@odata.type'];
  return (typeof type === 'string' ? KINDS.get(type) : undefined) ?? 'unknown';
}
