// The user-assigned managed identity of fhir-pdp. User-assigned rather than system-assigned so
// its role assignments and the Graph grant exist before the app does and survive re-creating it.
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
