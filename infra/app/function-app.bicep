// The Function App on the Flex Consumption plan: Node.js 22 on Functions v4 (the programming model
// of @azure/functions 4.x in functions/), the user-assigned identity for everything it reaches,
// HTTPS only, FTP and basic-auth publishing off.
param name string
param planName string
param location string
param tags object = {}
@description('Resource id of the user-assigned managed identity.')
param identityId string
@description('Client id of the user-assigned managed identity.')
param identityClientId string
param storageAccountName string
@description('Blob service endpoint of the storage account (https://<account>.blob.core.windows.net/).')
param blobEndpoint string
param deploymentContainerName string
param snapshotContainerName string
param applicationInsightsConnectionString string
param pdpConfig string
param pdpConfigSecretUri string
@secure()
param adminKeys string
@secure()
param snapshotSigningKeys string
param maximumInstanceCount int
param instanceMemoryMB int
param alwaysReadyInstances int

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

// Flex Consumption takes the runtime from functionAppConfig.runtime; FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION are not app settings there
// (https://learn.microsoft.com/azure/azure-functions/functions-app-settings#flex-consumption-plan-deprecations).
var appSettings = {
  // Host storage by identity (https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity).
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // Telemetry by identity: the component has local auth disabled.
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // fhir-pdp (src/config/settings.ts). The configuration: inline, or a Key Vault reference the
  // platform resolves with keyVaultReferenceIdentity below.
  PDP_CONFIG: empty(pdpConfigSecretUri) ? pdpConfig : '@Microsoft.KeyVault(SecretUri=${pdpConfigSecretUri})'
  PDP_LOG_DECISIONS: 'true'
  // Scaled-out instances share one snapshot, written by the refresh timer, read by identity.
  PDP_SNAPSHOT_STORE: 'blob'
  PDP_SNAPSHOT_ACCOUNT_URL: blobEndpoint
  PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID: identityClientId
  PDP_SNAPSHOT_CONTAINER: snapshotContainerName
  // The snapshot is signed: instances install only what a holder of this key wrote.
  PDP_SNAPSHOT_SIGNING_KEYS: snapshotSigningKeys
  // Microsoft Graph (group membership) as the same identity, once it holds GroupMember.Read.All.
  PDP_GRAPH_MANAGED_IDENTITY_CLIENT_ID: identityClientId
}
// An empty admin key list means: admin routes refused. Left out rather than set to "".
var adminSettings = empty(adminKeys) ? {} : { PDP_ADMIN_KEYS: adminKeys }

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd deploys the package of service "api" (azure.yaml) to the one resource with this tag.
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: alwaysReadyInstances > 0 ? [{ name: 'http', instanceCount: alwaysReadyInstances }] : []
      }
      runtime: {
        name: 'node'
        version: '22'
      }
    }
  }

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(appSettings, adminSettings)
  }

  // No FTP and no basic-auth (username/password) publishing: deployments authenticate with Entra ID.
  resource ftp 'basicPublishingCredentialsPolicies' = {
    name: 'ftp'
    properties: { allow: false }
  }

  resource scm 'basicPublishingCredentialsPolicies' = {
    name: 'scm'
    properties: { allow: false }
  }
}

output name string = site.name
output uri string = 'https://${site.properties.defaultHostName}'
