/**
 * `npm run dev`: the development sandbox. Starts a built-in Entra-shaped identity provider on
 * loopback (keys generated now, discovery and JWKS served), the standalone host with a sample
 * configuration, and prints three requests to try: an allow, a 401 and a 403.
 */
import { randomBytes } from 'node:crypto';
import { DEV_APP_ID, DevIdentityProvider } from './dev-idp.js';
import { startHost } from '../src/host/main.js';

const FHIR_URL = 'https://fhir.sandbox.example';
const ALICE = '6a2f8c4e-1b3d-4e5f-8a7b-9c0d1e2f3a4b'; // listed: read and write
const BOB = 'd4e5f6a7-b8c9-4d0e-9f1a-2b3c4d5e6f70'; // not listed anywhere

function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

async function main(): Promise<void> {
  const idp = await DevIdentityProvider.start();
  const adminKey = `dev-${randomBytes(12).toString('hex')}`;
  const config = {
    fhirBaseUrl: FHIR_URL,
    authority: idp.authority,
    audience: FHIR_URL,
    audiences: [`api://${DEV_APP_ID}`],
    accessPolicies: [{ objectId: ALICE, dataActions: ['read', 'write'], description: 'Alice, a clinician' }],
    roles: [{ name: 'globalReader', dataActions: ['read'], notDataActions: [] }],
  };
  const host = await startHost({ ...process.env, PDP_CONFIG: JSON.stringify(config), PDP_ADMIN_KEYS: adminKey, PDP_HOST: '127.0.0.1', PORT: process.env.PORT ?? '7071' });
  await host.service.refresh();
  const hours = 12 * 3600;
  const alice = await idp.mint({ audience: FHIR_URL, oid: ALICE, scp: 'user_impersonation', expiresInSeconds: hours });
  const wrongAudience = await idp.mint({ audience: DEV_APP_ID, oid: ALICE, scp: 'user_impersonation', expiresInSeconds: hours });
  const bob = await idp.mint({ audience: FHIR_URL, oid: BOB, scp: 'user_impersonation', expiresInSeconds: hours });
  const ask = (method: string, path: string, token: string) =>
    `curl -s ${host.url}/api/decide -H 'x-functions-key: ${adminKey}' -H 'content-type: application/json' \\\n  -d ${quote(JSON.stringify({ method, path, headers: { authorization: `Bearer ${token}` } }))}`;
  const out = [
    '',
    'fhir-pdp development sandbox',
    `  service            ${host.url}   (health: ${host.url}/api/health)`,
    `  identity provider  ${idp.authority}   (tenant ${idp.tenantId})`,
    `  admin key          ${adminKey}   (shows operator hints)`,
    `  metrics            ${host.url}/api/metrics?code=${adminKey}   (Prometheus scrape snippet: docs/operations.md)`,
    `  configuration      ${JSON.stringify(config)}`,
    '',
    '1) Alice reads a patient: allow (200, reason "allowed")',
    ask('GET', '/Patient/123', alice),
    '',
    '2) A token whose aud is the client id, not the FHIR URL: 401, reason "audience_mismatch" (see the hint)',
    ask('GET', '/Patient/123', wrongAudience),
    '',
    '3) Bob is not in any access policy: 403, reason "principal_not_allowed"',
    ask('GET', '/Patient/123', bob),
    '',
    'As a gateway would ask (nginx auth_request): the HTTP status is the decision, 403 "action_not_permitted" (Alice may read and write, not delete):',
    `curl -i ${host.url}/api/decide -H 'x-functions-key: ${adminKey}' -H 'X-Original-Method: DELETE' -H 'X-Original-URI: /Patient/123' -H 'Authorization: Bearer ${alice}'`,
    '',
    'Tokens are valid for 12 hours. Decision log lines follow. Ctrl-C stops.',
    '',
  ];
  process.stderr.write(`${out.join('\n')}\n`);
  const stop = () => {
    void Promise.all([host.close(), idp.close()]).then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`fhir-pdp dev: cannot start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
