// fhir-pdp on Azure Functions (Flex Consumption), the way the Azure Functions azd samples ship it:
// one resource group holding a user-assigned managed identity, a storage account with shared keys
// disabled (host storage, the deployment package and the snapshot container), Log Analytics and
// Application Insights reached by identity, and the Function App. `azd up` provisions this and
// deploys the package; docs/deploy.md has the steps, the Graph grant and the checks to run.
// test/unit/infra.test.ts keeps the app settings here in line with src/config/settings.ts.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; also hashed into the resource names.')
param environmentName string

@minLength(1)
@description('Region of every resource; one where Flex Consumption is offered (az functionapp list-flexconsumption-locations).')
@metadata({ azd: { type: 'location' } })
param location string

// Base64, because azd writes environment values into main.parameters.json as they are, and the
// quotes of a JSON value would break that file.
@description('The fhir-pdp configuration JSON (contract JSON, or the ARM resource JSON of Azure API for FHIR), base64-encoded: azd env set PDP_CONFIG_BASE64 "$(base64 -w0 config.json)". Leave empty when pdpConfigSecretUri is set.')
param pdpConfigBase64 string = ''

@description('A Key Vault secret URI holding the configuration JSON (https://<vault>.vault.azure.net/secrets/<name>), read through a Key Vault reference by the app\'s identity. Takes the place of pdpConfig.')
param pdpConfigSecretUri string = ''

@secure()
@description('Comma-separated admin keys (POST /api/refresh, /api/explain, operator hints); or a Key Vault reference @Microsoft.KeyVault(SecretUri=...). Empty: admin routes are refused.')
param adminKeys string = ''

@secure()
@description('The snapshot signing keys, kid:base64secret (32 bytes or more), comma-separated; the first signs, all verify (docs/state.md, "Who may write the snapshot"): azd env set PDP_SNAPSHOT_SIGNING_KEYS "k1:$(openssl rand -base64 32)"; or a Key Vault reference @Microsoft.KeyVault(SecretUri=...). Required: without it anyone who can write the snapshot container could hand every instance issuer keys.')
param snapshotSigningKeys string

@minValue(1)
@maxValue(1000)
@description('Most instances the app scales out to.')
param maximumInstanceCount int = 100

@allowed([512, 2048, 4096])
@description('Memory of one instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(0)
@description('Instances kept warm for the HTTP functions (billed while idle); 0: none, so the first decision after idling waits for a cold start.')
param alwaysReadyInstances int = 0

@description('Name of the resource group to create (default rg-<environmentName>).')
param resourceGroupName string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = 'func-pdp-${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

// The one identity of the app: host storage, the deployment package, the snapshot, Application
// Insights, Key Vault references and Microsoft Graph (once granted GroupMember.Read.All).
module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-pdp-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'stpdp${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: 'app-package-${take(resourceToken, 12)}'
    snapshotContainerName: 'fhir-pdp'
    principalId: identity.outputs.principalId
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-pdp-${resourceToken}'
    applicationInsightsName: 'appi-pdp-${resourceToken}'
    location: location
    tags: tags
    principalId: identity.outputs.principalId
  }
}

module api 'app/function-app.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-pdp-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    snapshotContainerName: storage.outputs.snapshotContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    pdpConfig: base64ToString(pdpConfigBase64)
    pdpConfigSecretUri: pdpConfigSecretUri
    adminKeys: adminKeys
    snapshotSigningKeys: snapshotSigningKeys
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    alwaysReadyInstances: alwaysReadyInstances
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.name
@description('The URL a gateway asks (forward-auth, JSON, or /api/decide/{path} for Envoy), with the function key in x-functions-key.')
output PDP_DECIDE_URL string = '${api.outputs.uri}/api/decide'
output PDP_HEALTH_URL string = '${api.outputs.uri}/api/health'
@description('Prints the function key the gateway sends as x-functions-key (a secret: it is not an output).')
output PDP_FUNCTION_KEY_COMMAND string = 'az functionapp keys list --resource-group ${rg.name} --name ${api.outputs.name} --query functionKeys.default --output tsv'
@description('Object id of the managed identity: the principalId of the Graph grant (docs/deploy.md).')
output PDP_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output PDP_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output PDP_SNAPSHOT_ACCOUNT_URL string = storage.outputs.blobEndpoint
