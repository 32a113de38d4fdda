/**
 * The credential of the Blob snapshot store when it is reached by identity
 * (PDP_SNAPSHOT_ACCOUNT_URL). Loaded with blob-store.ts only, so a deployment without a Blob
 * snapshot never loads @azure/identity for it.
 */
import { DefaultAzureCredential, ManagedIdentityCredential, type TokenCredential } from '@azure/identity';

/**
 * With a client id (PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID): that user-assigned managed identity
 * and nothing else, so a developer's Azure CLI sign-in or a stray AZURE_CLIENT_SECRET can never
 * stand in for it. Without one: DefaultAzureCredential (environment, workload identity, managed
 * identity, then Azure CLI and other developer sign-ins), for a machine outside Azure.
 * https://learn.microsoft.com/azure/storage/blobs/authorize-access-azure-active-directory: the
 * identity needs a data role (Storage Blob Data Contributor) on the container; an Owner or
 * Contributor role on the account is not enough to read blobs.
 */
export function snapshotStoreCredential(managedIdentityClientId: string | undefined): TokenCredential {
  return managedIdentityClientId === undefined
    ? new DefaultAzureCredential()
    : new ManagedIdentityCredential({ clientId: managedIdentityClientId });
}
