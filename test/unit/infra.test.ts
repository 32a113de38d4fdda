/**
 * infra/ (Bicep) and the code in one language. The Bicep CLI cannot be installed on these machines,
 * so this reads the templates as text: every app setting the Function App gets is one that
 * readSettings knows or a documented platform setting, the settings fhir-pdp needs in Azure are
 * there and are accepted by the same code that reads them at start-up, the plan and runtime match
 * package.json, and nothing reaches Storage with a shared key. Where the CLI exists, `az bicep
 * build --file infra/main.bicep` and `azd provision --preview` check the rest (docs/deploy.md).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfigFromEnv } from '../../src/config/load.js';
import { readSettings, SETTINGS } from '../../src/config/settings.js';
import { blobStoreSettingsFrom } from '../../src/state/blob-settings.js';

const root = new URL('../../', import.meta.url).pathname;
const read = (path: string): string => readFileSync(join(root, path), 'utf8');

function bicepFiles(dir = 'infra'): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? bicepFiles(`${dir}/${entry.name}`) : entry.name.endsWith('.bicep') ? [`${dir}/${entry.name}`] : [],
  );
}

const files = bicepFiles();
const all = files.map(read).join('\n');
const functionApp = read('infra/app/function-app.bicep');

/**
 * Platform settings the templates set besides fhir-pdp's own: each is read by the Functions host or
 * the Application Insights agent, not by fhir-pdp, and docs/deploy.md lists them.
 */
const PLATFORM_SETTINGS = [
  'AzureWebJobsStorage__accountName',
  'AzureWebJobsStorage__credential',
  'AzureWebJobsStorage__clientId',
  'APPLICATIONINSIGHTS_CONNECTION_STRING',
  'APPLICATIONINSIGHTS_AUTHENTICATION_STRING',
];

/** Values standing in for the module's parameters, shaped like what Azure passes. */
const SAMPLE_CLIENT_ID = '0f3c9a8e-6b1d-4e2f-9a7c-5d4e3f2a1b0c';
const SAMPLE_PARAMS: Record<string, string> = {
  storageAccountName: 'stpdpabc123',
  identityClientId: SAMPLE_CLIENT_ID,
  blobEndpoint: 'https://stpdpabc123.blob.core.windows.net/',
  snapshotContainerName: 'fhir-pdp',
  applicationInsightsConnectionString: 'InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/',
  pdpConfig: JSON.stringify({
    authority: 'https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47',
    audience: 'https://fhir.contoso.example',
    accessPolicies: [{ objectId: '9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d', dataActions: ['read'] }],
  }),
  pdpConfigSecretUri: '',
  adminKeys: 'admin-key-from-deployment',
  snapshotSigningKeys: 'k1:c2lnbmluZy1rZXktb2YtdGhlLWRlcGxveW1lbnQtMzItYnl0ZXM=',
};

/** Evaluates the few expression shapes the settings use; anything else fails the test, on purpose. */
function evaluate(expression: string): string {
  const expr = expression.trim();
  const ternary = /^empty\((\w+)\)\s*\?\s*(.+?)\s*:\s*(.+)$/.exec(expr);
  if (ternary) return evaluate(param(ternary[1]!) === '' ? ternary[2]! : ternary[3]!);
  if (/^'.*'$/.test(expr)) return expr.slice(1, -1).replace(/\$\{(\w+)\}/g, (_m, name: string) => param(name));
  if (/^\w+$/.test(expr)) return param(expr);
  throw new Error(`infra.test.ts cannot evaluate the setting expression ${expr}: extend evaluate() or simplify the template`);
}

function param(name: string): string {
  const value = SAMPLE_PARAMS[name];
  if (value === undefined) throw new Error(`no sample value for the parameter ${name}: add one to SAMPLE_PARAMS`);
  return value;
}

/** The `var <name> = {...}` objects of function-app.bicep that the appsettings resource unions. */
function settingsVars(): Map<string, Record<string, string>> {
  const union = /name: 'appsettings'\s*\n\s*properties: union\(([^)]*)\)/.exec(functionApp);
  if (!union) throw new Error("function-app.bicep: the appsettings resource must be `properties: union(<settings vars>)`");
  const vars = new Map<string, Record<string, string>>();
  for (const name of union[1]!.split(',').map((s) => s.trim())) {
    const start = functionApp.indexOf(`var ${name} = `);
    if (start < 0) throw new Error(`function-app.bicep: no var ${name}`);
    // A declaration runs until the next line that starts a new statement.
    const rest = functionApp.slice(start);
    const end = rest.slice(1).search(/\n(?=\S)/);
    const text = end < 0 ? rest : rest.slice(0, end + 1);
    const entries: Record<string, string> = {};
    // One entry per line in a multi-line object; `{ KEY: value }` inline on the declaration line.
    const lines = text.split('\n').slice(1);
    const inline = /\{\s*(\w+):\s*([^}]+?)\s*\}/.exec(text.split('\n')[0]!);
    if (inline) entries[inline[1]!] = inline[2]!;
    for (const line of lines) {
      if (/^\s*\/\//.test(line)) continue;
      const m = /^\s+(\w+):\s*(.+)$/.exec(line);
      if (m) entries[m[1]!] = m[2]!;
    }
    vars.set(name, entries);
  }
  return vars;
}

const vars = settingsVars();
const settingExpressions: Record<string, string> = Object.assign({}, ...vars.values());
const env: Record<string, string> = Object.fromEntries(Object.entries(settingExpressions).map(([k, v]) => [k, evaluate(v)]));

describe('infra/: app settings', () => {
  it('reads the settings the template sets', () => {
    expect(files).toEqual(expect.arrayContaining(['infra/main.bicep', 'infra/app/function-app.bicep', 'infra/app/storage.bicep']));
    expect(Object.keys(env).length).toBeGreaterThan(8);
    // Settings only in the unioned vars: no siteConfig.appSettings array beside them.
    expect(all).not.toMatch(/appSettings\s*:\s*\[/);
  });

  it('sets only settings readSettings knows, or documented platform settings', () => {
    const deployDoc = read('docs/deploy.md');
    for (const name of Object.keys(env)) {
      const known = name in SETTINGS || PLATFORM_SETTINGS.includes(name);
      expect(known, `${name} is neither in src/config/settings.ts nor a platform setting of infra.test.ts`).toBe(true);
    }
    for (const name of PLATFORM_SETTINGS) expect(deployDoc, `docs/deploy.md does not name ${name}`).toContain(name);
  });

  it('sets what fhir-pdp needs on Azure, and the code that reads them accepts the values', () => {
    for (const name of ['PDP_CONFIG', 'PDP_SNAPSHOT_STORE', 'PDP_SNAPSHOT_ACCOUNT_URL', 'PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID', 'PDP_SNAPSHOT_SIGNING_KEYS', 'PDP_GRAPH_MANAGED_IDENTITY_CLIENT_ID', ...PLATFORM_SETTINGS]) {
      expect(env, `${name} is not set by infra/`).toHaveProperty(name);
    }
    // The same functions that read settings at start-up (src/host/main.ts, src/http/azure.ts).
    const settings = readSettings(env);
    expect(settings.PDP_SNAPSHOT_STORE).toBe('blob');
    expect(loadConfigFromEnv(env).audience).toBe('https://fhir.contoso.example');
    expect(blobStoreSettingsFrom(env)).toEqual({ accountUrl: 'https://stpdpabc123.blob.core.windows.net/', managedIdentityClientId: SAMPLE_CLIENT_ID, container: 'fhir-pdp' });
    expect(env.AzureWebJobsStorage__credential).toBe('managedidentity');
    expect(env.AzureWebJobsStorage__clientId).toBe(SAMPLE_CLIENT_ID);
    expect(env.APPLICATIONINSIGHTS_AUTHENTICATION_STRING).toBe(`ClientId=${SAMPLE_CLIENT_ID};Authorization=AAD`);
    expect(env.PDP_ADMIN_KEYS).toBe('admin-key-from-deployment');
  });

  it('names the configuration through a Key Vault reference when a secret URI is given', () => {
    const uri = 'https://kv-pdp.vault.azure.net/secrets/pdp-config';
    const saved = SAMPLE_PARAMS.pdpConfigSecretUri;
    SAMPLE_PARAMS.pdpConfigSecretUri = uri;
    try {
      expect(evaluate(settingExpressions.PDP_CONFIG!)).toBe(`@Microsoft.KeyVault(SecretUri=${uri})`);
    } finally {
      SAMPLE_PARAMS.pdpConfigSecretUri = saved!;
    }
    expect(functionApp).toMatch(/keyVaultReferenceIdentity: identityId/);
  });

  it('sets none of the settings Flex Consumption refuses or that carry a shared key', () => {
    for (const name of ['FUNCTIONS_WORKER_RUNTIME', 'FUNCTIONS_EXTENSION_VERSION', 'WEBSITE_NODE_DEFAULT_VERSION', 'WEBSITE_RUN_FROM_PACKAGE', 'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING', 'AzureWebJobsStorage', 'PDP_SNAPSHOT_CONNECTION']) {
      expect(env, `${name} must not be set`).not.toHaveProperty(name);
    }
  });
});

describe('infra/: plan, runtime and identity', () => {
  const pkg = JSON.parse(read('package.json')) as { engines: { node: string }; dependencies: Record<string, string> };

  it('runs the Node version package.json asks for, on Functions v4 (Flex Consumption)', () => {
    expect(functionApp).toMatch(/tier: 'FlexConsumption'\s*\n\s*name: 'FC1'/);
    expect(functionApp).toMatch(/kind: 'functionapp,linux'/);
    const runtime = /runtime: \{\s*name: '(\w+)'\s*version: '(\d+)'\s*\}/.exec(functionApp);
    expect(runtime?.[1]).toBe('node');
    // The lowest major engines.node admits (">=20.19", "^22", ">=22 <25"): Azure must run one it admits.
    const minimum = /(\d+)/.exec(pkg.engines.node);
    expect(minimum, `engines.node "${pkg.engines.node}" names no version`).not.toBeNull();
    expect(Number(runtime?.[2])).toBeGreaterThanOrEqual(Number(minimum![1]));
    // The v4 programming model is @azure/functions 4.x; Flex Consumption runs host v4 only.
    expect(pkg.dependencies['@azure/functions']).toMatch(/^\^?4\./);
    // One Node major everywhere: the container image runs the same one.
    expect(read('Dockerfile')).toMatch(new RegExp(`^FROM node:${runtime?.[2]}-`, 'm'));
  });

  it('uses the user-assigned identity for host storage, the package, Key Vault and Graph', () => {
    expect(functionApp).toMatch(/type: 'UserAssigned'/);
    expect(functionApp).toMatch(/authentication: \{\s*type: 'UserAssignedIdentity'\s*userAssignedIdentityResourceId: identityId\s*\}/);
    for (const name of ['AzureWebJobsStorage__clientId', 'PDP_SNAPSHOT_MANAGED_IDENTITY_CLIENT_ID', 'PDP_GRAPH_MANAGED_IDENTITY_CLIENT_ID']) {
      expect(settingExpressions[name]).toBe('identityClientId');
    }
  });

  it('is HTTPS only with FTP and basic publishing credentials off', () => {
    expect(functionApp).toMatch(/httpsOnly: true/);
    expect(functionApp).toMatch(/ftpsState: 'Disabled'/);
    expect(functionApp).toMatch(/minTlsVersion: '1\.2'/);
    for (const policy of ['ftp', 'scm']) {
      expect(functionApp).toMatch(new RegExp(`'basicPublishingCredentialsPolicies' = \\{\\s*name: '${policy}'\\s*properties: \\{ allow: false \\}`));
    }
  });
});

describe('infra/: storage and telemetry without shared keys', () => {
  const storage = read('infra/app/storage.bicep');
  const monitoring = read('infra/app/monitoring.bicep');

  it('disables shared keys and public blob access on the account', () => {
    expect(storage).toMatch(/allowSharedKeyAccess: false/);
    expect(storage).toMatch(/allowBlobPublicAccess: false/);
    expect(storage).toMatch(/minimumTlsVersion: 'TLS1_2'/);
  });

  it('has no account key, SAS or connection string anywhere', () => {
    expect(all).not.toMatch(/listKeys|listAccountSas|listServiceSas|AccountKey|DefaultEndpointsProtocol|SharedAccessSignature|UseDevelopmentStorage/i);
  });

  it('grants the identity Blob Data Owner on the account, Blob Data Contributor on the snapshot container, Metrics Publisher on Application Insights', () => {
    const role = (file: string, id: string, scope: string): void => {
      const variable = new RegExp(`var (\\w+) = '${id}'`).exec(file)?.[1];
      expect(variable, `role ${id} is not declared`).toBeDefined();
      expect(file).toMatch(new RegExp(`scope: ${scope}\\s*\\n\\s*properties: \\{\\s*principalId: principalId\\s*principalType: 'ServicePrincipal'\\s*roleDefinitionId: subscriptionResourceId\\('Microsoft.Authorization/roleDefinitions', ${variable}\\)`));
    };
    role(storage, 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b', 'account');
    role(storage, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe', 'snapshotContainer');
    role(monitoring, '3913510d-42f4-4e42-8a64-420c390055eb', 'insights');
    expect(monitoring).toMatch(/DisableLocalAuth: true/);
  });

  it('points the snapshot store at the container the template creates', () => {
    expect(read('infra/main.bicep')).toMatch(/snapshotContainerName: 'fhir-pdp'/);
    expect(storage).toMatch(/name: snapshotContainerName/);
  });
});

describe('docs/deploy.md and the templates', () => {
  it('explains every output of main.bicep and every parameter azd passes', () => {
    const doc = read('docs/deploy.md');
    const outputs = [...read('infra/main.bicep').matchAll(/^output (\w+) /gm)].map((m) => m[1]!);
    expect(outputs).toContain('PDP_DECIDE_URL');
    for (const name of outputs.filter((n) => n.startsWith('PDP_') || n.startsWith('AZURE_FUNCTION') || n === 'AZURE_RESOURCE_GROUP')) {
      expect(doc, `docs/deploy.md does not name the output ${name}`).toContain(name);
    }
    const passed = Object.values((JSON.parse(read('infra/main.parameters.json')) as { parameters: Record<string, { value: string }> }).parameters)
      .map((p) => /^\$\{(\w+)/.exec(p.value)?.[1])
      .filter((n): n is string => n !== undefined && !n.startsWith('AZURE_'));
    for (const name of passed) expect(doc, `docs/deploy.md does not say how to set ${name}`).toContain(`azd env set ${name} `);
  });
});

describe('azure.yaml and the parameters file', () => {
  it('deploys this package as a Function App service', () => {
    const yaml = read('azure.yaml');
    expect(yaml).toMatch(/^services:\n {2}api:\n {4}project: \.\n {4}language: ts\n {4}host: function$/m);
  });

  it('passes only parameters main.bicep declares', () => {
    const parameters = JSON.parse(read('infra/main.parameters.json')) as { parameters: Record<string, unknown> };
    const main = read('infra/main.bicep');
    for (const name of Object.keys(parameters.parameters)) expect(main).toMatch(new RegExp(`^param ${name} `, 'm'));
    // The configuration crosses azd's parameter file base64-encoded and is decoded once, here.
    expect(main).toMatch(/^\s+pdpConfig: base64ToString\(pdpConfigBase64\)$/m);
  });
});
