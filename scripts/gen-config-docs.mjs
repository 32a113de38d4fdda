// Writes docs/configuration.md from the schemas' own descriptions and defaults (STYLE §9).
// Run after `npm run build`: node scripts/gen-config-docs.mjs
import { writeFileSync } from 'node:fs';
import { z } from 'zod';
import { configSchema } from '../dist/src/config/schema.js';
import { SETTINGS } from '../dist/src/config/settings.js';

const json = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' });
const rows = Object.entries(json.properties ?? {}).map(([name, p]) => {
  const def = p.default !== undefined ? `\`${JSON.stringify(p.default)}\`` : (json.required ?? []).includes(name) ? 'required' : '';
  return `| \`${name}\` | ${def} | ${(p.description ?? '').replace(/\|/g, '\\|')} |`;
});
// Nested objects whose keys are worth a table of their own.
const nested = (key) => {
  const p = json.properties?.[key];
  const inner = p?.properties ?? p?.anyOf?.find((a) => a.properties)?.properties ?? {};
  return Object.entries(inner).map(([name, q]) => {
    const def = q.default !== undefined ? `\`${JSON.stringify(q.default)}\`` : '';
    return `| \`${key}.${name}\` | ${def} | ${(q.description ?? '').replace(/\|/g, '\\|')} |`;
  });
};
const smartConfiguration = nested('smartConfiguration');
const revocation = nested('revocation');

const smartNarrowing = nested('smartNarrowing');
const compartmentLookup = nested('compartmentLookup');
const settings = Object.entries(SETTINGS).map(([k, v]) => `| \`${k}\` | ${v.description.replace(/\|/g, '\\|')} |`);
const text = `# Configuration

Generated from \`src/config/schema.ts\` and \`src/config/settings.ts\` by \`scripts/gen-config-docs.mjs\`;
\`test/unit/docs-sync.test.ts\` fails when this file and the schemas disagree.

## Policy configuration (JSON)

From \`PDP_CONFIG\` (inline) or \`PDP_CONFIG_FILE\`. Unknown keys are errors (a typo never silently
disables a check). The Azure ARM resource JSON of Azure API for FHIR / Azure Health Data Services is
accepted as is. See [decision-contract.md](decision-contract.md) for the meaning of each part.

| key | default | description |
|---|---|---|
${rows.join('\n')}

Entries of \`accessPolicies\`: \`objectId\` (a GUID: a user, security group or service principal; not an
application id), \`dataActions\` (omitted: all). Entries of \`roles\`: \`name\` (a value of the \`roles\` claim),
\`dataActions\`, \`notDataActions\` (subtracted inside this role only). Entries of
\`smartIdentityProviders\`: \`authority\`, \`applications\` (\`clientId\`, \`audience\`, \`allowedDataActions\`).

\`smartConfiguration\` (SMART App Launch 2.x discovery, served at \`/api/smart-configuration\`; see
[gateways.md](gateways.md#smart-discovery)):

| key | default | description |
|---|---|---|
${smartConfiguration.join('\n')}

\`revocation\` (the deny-list changed through \`/api/revocations\`; see
[security.md](security.md#revocation)):

| key | default | description |
|---|---|---|
${revocation.join('\n')}

\`smartNarrowing\` (SMART searches narrowed instead of refused; see
[security.md](security.md#narrowed-searches) and [gateways.md](gateways.md)):

| key | default | description |
|---|---|---|
${smartNarrowing.join('\n')}
\`compartmentLookup\` (reads by id under \`patient/\` scopes proven by asking the FHIR server; see
[security.md](security.md#authorization-srcpolicy-srcfhir), step 25):

| key | default | description |
|---|---|---|
${compartmentLookup.join('\n')}

For Azure Health Data Services: \`{ "fhirBaseUrl": "https://<workspace>-<fhir>.fhir.azurehealthcareapis.com",
"credential": { "kind": "managedIdentity", "clientId": "<user-assigned identity's client id>" } }\`, the
identity holding *FHIR Data Reader* on the service. Locally, against a FHIR server on loopback:
\`{ "fhirBaseUrl": "http://127.0.0.1:8080/fhir", "credential": { "kind": "none" } }\`.

## App settings (environment)

Every one is listed in \`local.settings.sample.json\` with the same description.

| setting | description |
|---|---|
${settings.join('\n')}
`;
writeFileSync(new URL('../docs/configuration.md', import.meta.url), text);
