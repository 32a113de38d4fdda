// The storage account of the app: Functions host storage (AzureWebJobsStorage__*), the Flex
// Consumption deployment package container, and the snapshot container of the Blob snapshot store.
// Shared keys are disabled: the Azure security baseline for Functions asks for identity-based
// connections, and every client here (host, deployment, fhir-pdp) reaches Blob by Entra ID.
param name string
param location string
param tags object = {}
param deploymentContainerName string
param snapshotContainerName string
@description('Principal (object) id of the app\'s managed identity.')
param principalId string

// Built-in role definition ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

resource snapshotContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: snapshotContainerName
  properties: { publicAccess: 'None' }
}

// The Functions host keeps leases, timer schedules and its keys in blobs of this account
// (https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity:
// "Storage Blob Data Owner" for AzureWebJobsStorage); Flex Consumption reads the package with it.
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, storageBlobDataOwner)
  scope: account
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
  }
}

// fhir-pdp reads and writes the snapshot (PDP_SNAPSHOT_ACCOUNT_URL): a data role on the container
// itself, so moving the snapshot to an account of its own needs exactly this one assignment.
resource snapshotBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(snapshotContainer.id, principalId, storageBlobDataContributor)
  scope: snapshotContainer
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
  }
}

output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output deploymentContainerName string = deploymentContainer.name
output snapshotContainerName string = snapshotContainer.name
