/**
 * Issue #4 end to end: SMART on FHIR scopes, patient compartments, additional identity providers
 * and bundles, through the standalone host (createPdpServer + PdpService).
 *
 * Identity providers:
 * - the primary authority, an Entra look-alike (DevIdentityProvider), whose principals holding the
 *   `smart` data action are narrowed by their scopes;
 * - provider A and provider B: two real OpenID providers (npm oidc-provider, RFC 9068 JWT access
 *   tokens: `typ: at+jwt`, `client_id`, `scope`; `fhirUser` added through extraTokenClaims);
 * - a third provider whose tokens are shaped as Keycloak, Auth0, Okta and oidc-provider write them.
 */
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PdpConfigInput } from '../../src/config/schema.js';
import { DevIdentityProvider } from '../../testkit/dev-idp.js';
import { startHost } from '../../src/host/main.js';
import { startOidcProvider, type RunningOidcProvider } from '../../testkit/oidc-provider.js';
import {
  askContract,
  batchBundle,
  E2E_ADMIN_KEY,
  E2E_AUDIENCE,
  outcome,
  startE2ePdp,
  type E2eAnswer,
  type E2ePdp,
} from '../../testkit/service.js';

/** Entra principals. */
const SMART_USER = '1d2c3b4a-5f6e-4a7b-8c9d-0e1f2a3b4c5d'; // read, write, smart: narrowed by scopes
const READER = '2e3d4c5b-6a7f-4b8c-9d0e-1f2a3b4c5d6e'; // read
const READ_WRITER = '3f4e5d6c-7b8a-4c9d-8e1f-2a3b4c5d6e7f'; // read, write
const FULL = '4a5f6e7d-8c9b-4dae-9f1a-3b4c5d6e7f80'; // *
const SMART_GROUP = '5b6a7f8e-9d0c-4ebf-8a2b-4c5d6e7f8091'; // smart only: its members are narrowed by their scopes

const PATIENT = 'Patient/p1';
const SECRET = 'client-secret';
/** Provider A's clients: two configured applications, one without fhirUser, and one named like provider B's. */
const A_CLAIMS: Record<string, Record<string, unknown>> = {
  'portal-a': { fhirUser: PATIENT },
  'clinic-a': { fhirUser: 'Practitioner/dr1' },
  'nofhir-a': {},
  'portal-b': { fhirUser: PATIENT },
};
/** Scopes the providers' resource server grants; a request for another one is dropped by oidc-provider. */
const SMART_SCOPES = [
  'launch/patient',
  'patient/Patient.rs',
  'patient/Observation.rs',
  'patient/Observation.cruds',
  'user/*.rs',
  'user/*.cruds',
];
const PATIENT_APP_SCOPE = 'launch/patient patient/Patient.rs patient/Observation.rs';

let entra: DevIdentityProvider;
let shaped: DevIdentityProvider;
let providerA: RunningOidcProvider;
let providerB: RunningOidcProvider;
let strict: E2ePdp; // compartmentMode refuse (the default)
let delegating: E2ePdp; // compartmentMode delegate

function configFor(compartmentMode: 'refuse' | 'delegate'): PdpConfigInput {
  const app = (clientId: string, allowedDataActions: string[]) => ({ clientId, audience: E2E_AUDIENCE, allowedDataActions });
  return {
    authority: entra.authority,
    audience: E2E_AUDIENCE,
    compartmentMode,
    accessPolicies: [
      { objectId: SMART_USER, dataActions: ['read', 'write', 'smart'] },
      { objectId: READER, dataActions: ['read'] },
      { objectId: READ_WRITER, dataActions: ['read', 'write'] },
      { objectId: FULL, dataActions: ['*'] },
      { objectId: SMART_GROUP, dataActions: ['smart'] },
    ],
    smartIdentityProviders: [
      {
        authority: providerA.issuer,
        applications: [app('portal-a', ['read']), app('clinic-a', ['read', 'write', 'export']), app('nofhir-a', ['read'])],
      },
      { authority: providerB.issuer, applications: [app('portal-b', ['read'])] },
      {
        authority: shaped.authority,
        applications: ['keycloak-app', 'auth0-app', 'okta-app', 'oidc-provider-app'].map((id) => app(id, ['read'])),
      },
    ],
    fetchTimeoutMs: 2000,
  };
}

/** A token from an oidc-provider, checked to carry exactly the scopes asked for (it drops unknown ones silently). */
async function smartToken(provider: RunningOidcProvider, clientId: string, scope: string | undefined): Promise<string> {
  const token = await provider.getToken(clientId, SECRET, scope);
  expect(decodeJwt(token).scope).toBe(scope);
  return token;
}

function entraToken(oid: string, scp: string, fhirUser?: string, groups?: string[]): Promise<string> {
  return entra.mint({ audience: E2E_AUDIENCE, oid, scp, ...(fhirUser ? { fhirUser } : {}), ...(groups ? { groups } : {}) });
}

beforeAll(async () => {
  [entra, shaped, providerA, providerB] = await Promise.all([
    DevIdentityProvider.start(),
    DevIdentityProvider.start({ tenantId: 'shaped-tokens' }),
    startOidcProvider({
      clients: Object.keys(A_CLAIMS).map((client_id) => ({ client_id, client_secret: SECRET })),
      resource: E2E_AUDIENCE,
      scopes: SMART_SCOPES,
      extraTokenClaims: (_ctx, token) => A_CLAIMS[token.clientId ?? ''],
    }),
    startOidcProvider({
      clients: [{ client_id: 'portal-b', client_secret: SECRET }],
      resource: E2E_AUDIENCE,
      scopes: SMART_SCOPES,
      extraTokenClaims: () => ({ fhirUser: PATIENT }),
    }),
  ]);
  [strict, delegating] = await Promise.all([startE2ePdp(configFor('refuse')), startE2ePdp(configFor('delegate'))]);
});

afterAll(async () => {
  await Promise.all([strict?.close(), delegating?.close()]);
  await Promise.all([entra?.close(), shaped?.close(), providerA?.close(), providerB?.close()]);
});

describe('a patient-context app of a SMART identity provider (oidc-provider, RFC 9068 tokens)', () => {
  let token: string;
  beforeAll(async () => {
    token = await smartToken(providerA, 'portal-a', PATIENT_APP_SCOPE);
  });

  it('is an RFC 9068 token (typ at+jwt, client_id, scope) and is matched to its application', async () => {
    expect(decodeProtectedHeader(token).typ).toBe('at+jwt');
    expect(decodeJwt(token)).toMatchObject({ client_id: 'portal-a', fhirUser: PATIENT });
    const answer = await strict.ask({ path: '/Patient/p1', token });
    expect(outcome(answer)).toEqual({ reason: 'allowed', status: 200 });
    expect(answer.body.principal).toMatchObject({
      issuer: providerA.issuer,
      applicationId: 'portal-a',
      fhirUser: PATIENT,
      scopes: PATIENT_APP_SCOPE.split(' '),
    });
    expect(answer.body.dataActions).toContain('read');
  });

  it.each([
    ['GET', '/Patient/p1', 'allowed', undefined],
    ['GET', '/Patient/p1/Observation', 'allowed', undefined],
    ['GET', '/Observation?patient=p1', 'allowed', undefined],
    ['GET', '/Observation?subject=Patient/p1&code=1234-5', 'allowed', undefined],
    ['GET', '/metadata', 'allowed', undefined],
    // Another patient's data:
    ['GET', '/Patient/p2', 'insufficient_scope', 'Patient/p2 is not the patient in context (Patient/p1)'],
    ['GET', '/Patient/p2/Observation', 'insufficient_scope', 'the compartment of Patient/p2 is not that of the patient in context'],
    ['GET', '/Observation?patient=p2', 'insufficient_scope', 'patient=p2 names another patient'],
    // What the URL cannot prove stays in the compartment (compartmentMode refuse):
    ['GET', '/Observation/o1', 'insufficient_scope', 'cannot be proven to stay in the compartment of Patient/p1'],
    ['GET', '/Observation', 'insufficient_scope', 'cannot be proven to stay in the compartment of Patient/p1'],
    ['GET', '/Observation?patient=p1&_include=Observation:performer', 'insufficient_scope', 'reaches beyond the resources searched'],
    // What the scopes do not name:
    ['GET', '/Encounter?patient=p1', 'insufficient_scope', 'no scope allows search on Encounter'],
    ['PUT', '/Patient/p1', 'insufficient_scope', 'does not allow update on Patient'],
    ['GET', '/$export', 'insufficient_scope', "exports more than one patient's data"],
    ['GET', '/Patient/$export', 'insufficient_scope', "exports more than one patient's data"],
  ])('%s %s is %s', async (method, path, expected, named) => {
    const answer = await strict.ask({ method, path, token });
    expect(outcome(answer)).toEqual({ reason: expected, status: expected === 'allowed' ? 200 : 403 });
    if (named) expect(answer.body.hint).toContain(named);
  });
});

describe('a user-level app of a SMART identity provider', () => {
  it('reads any patient with user/*.rs and refuses a system-level $export', async () => {
    const token = await smartToken(providerA, 'clinic-a', 'user/*.rs');
    expect(outcome(await strict.ask({ path: '/Patient/p2', token }))).toEqual({ reason: 'allowed', status: 200 });
    const exported = await strict.ask({ path: '/$export?_type=Patient', token });
    expect(outcome(exported)).toEqual({ reason: 'insufficient_scope', status: 403 });
    expect(exported.body.hint).toContain('needs system/ scopes');
  });

  it('is granted the application\'s allowedDataActions narrowed by its scopes (rights ∩ scopes)', async () => {
    const token = await smartToken(providerA, 'clinic-a', 'user/*.cruds');
    expect(outcome(await strict.ask({ method: 'PUT', path: '/Patient/p1', token }))).toEqual({ reason: 'allowed', status: 200 });
    // The scopes allow delete; the application is not allowed it.
    const remove = await strict.ask({ method: 'DELETE', path: '/Patient/p1', token });
    expect(outcome(remove)).toEqual({ reason: 'action_not_permitted', status: 403 });
    expect(remove.body.hint).toContain('application clinic-a');
    expect(remove.body.hint).toContain('narrowed by SMART scopes');
    // The application is allowed write; user/*.rs scopes are not.
    const readOnly = await smartToken(providerA, 'clinic-a', 'user/*.rs');
    expect(outcome(await strict.ask({ method: 'PUT', path: '/Patient/p1', token: readOnly }))).toEqual({ reason: 'insufficient_scope', status: 403 });
  });
});

describe('tokens of one provider never pass as another\'s', () => {
  it('refuses a token of provider A that carries provider B\'s client id', async () => {
    const impostor = await smartToken(providerA, 'portal-b', PATIENT_APP_SCOPE);
    const answer = await strict.ask({ path: '/Patient/p1', token: impostor });
    expect(outcome(answer)).toEqual({ reason: 'unknown_application', status: 401 });
    expect(answer.body.hint).toContain(`client id portal-b is not an application of ${providerA.issuer}`);

    const gateway = await strict.forward({ uri: '/Patient/p1', token: impostor });
    expect(gateway.httpStatus).toBe(401);
    expect(gateway.headers.get('www-authenticate')).toContain('error="invalid_token"');
  });

  it('allows the same client id from provider B, its own provider', async () => {
    const genuine = await smartToken(providerB, 'portal-b', PATIENT_APP_SCOPE);
    const answer = await strict.ask({ path: '/Patient/p1', token: genuine });
    expect(outcome(answer)).toEqual({ reason: 'allowed', status: 200 });
    expect(answer.body.principal).toMatchObject({ issuer: providerB.issuer, applicationId: 'portal-b' });
  });

  it.each([
    ['no fhirUser', 'nofhir-a', PATIENT_APP_SCOPE, 'fhirUser'],
    ['no scope', 'portal-a', undefined, 'scopes'],
  ])('refuses a SMART token with %s as missing_claim', async (_, client, scope, named) => {
    const answer = await strict.ask({ path: '/Patient/p1', token: await smartToken(providerA, client, scope) });
    expect(outcome(answer)).toEqual({ reason: 'missing_claim', status: 401 });
    expect(answer.body.hint).toContain(named);
  });
});

describe('providers that write client id and scopes differently', () => {
  const entraOnly = { oid: undefined, tid: undefined, ver: undefined, azpacr: undefined, uti: undefined };
  it.each([
    ['Keycloak (azp + scope)', 'keycloak-app', { azp: 'keycloak-app', scope: 'openid profile patient/Patient.rs', typ: 'Bearer' }, {}],
    ['Auth0 (azp + scope)', 'auth0-app', { azp: 'auth0-app', scope: 'openid patient/Patient.rs', gty: 'authorization_code' }, {}],
    ['Okta (cid + scp array)', 'okta-app', { azp: undefined, cid: 'okta-app', scp: ['openid', 'patient/Patient.rs'], uid: '00u1' }, {}],
    ['oidc-provider (client_id + scope, at+jwt)', 'oidc-provider-app', { azp: undefined, client_id: 'oidc-provider-app', scope: 'patient/Patient.rs' }, { typ: 'at+jwt' }],
  ])('%s: the patient in context is allowed, another patient is not', async (_, clientId, claims, header) => {
    const token = await shaped.mint({ audience: E2E_AUDIENCE, fhirUser: PATIENT, extraClaims: { ...entraOnly, ...claims }, header });
    const own = await strict.ask({ path: '/Patient/p1', token });
    expect(outcome(own)).toEqual({ reason: 'allowed', status: 200 });
    expect(own.body.principal).toMatchObject({ issuer: shaped.v2Issuer, applicationId: clientId, fhirUser: PATIENT });
    expect(outcome(await strict.ask({ path: '/Patient/p2', token }))).toEqual({ reason: 'insufficient_scope', status: 403 });
  });
});

describe('an Entra principal holding the smart data action', () => {
  it.each([
    ['dotted (Entra scope names cannot hold /)', 'patient.Patient.read patient.Observation.read'],
    ['percent-encoded', 'patient%2FPatient.read patient%2FObservation.read'],
    ['prefixed with the audience', `${E2E_AUDIENCE}/patient.Patient.read ${E2E_AUDIENCE}/patient.Observation.read`],
  ])('is narrowed by its SMART scopes, %s', async (_, scp) => {
    const token = await entraToken(SMART_USER, scp, PATIENT);
    for (const path of ['/Patient/p1', '/Observation?patient=p1'])
      expect(outcome(await strict.ask({ path, token }))).toEqual({ reason: 'allowed', status: 200 });
    expect(outcome(await strict.ask({ path: '/Patient/p2', token }))).toEqual({ reason: 'insufficient_scope', status: 403 });
    // Granted write, but its scopes only read.
    expect(outcome(await strict.ask({ method: 'PUT', path: '/Patient/p1', token }))).toEqual({ reason: 'insufficient_scope', status: 403 });
  });

  it('keeps to its own rights where the scopes allow more', async () => {
    const token = await entraToken(SMART_USER, 'patient.Patient.cruds', PATIENT);
    expect(outcome(await strict.ask({ method: 'PUT', path: '/Patient/p1', token }))).toEqual({ reason: 'allowed', status: 200 });
    const remove = await strict.ask({ method: 'DELETE', path: '/Patient/p1', token });
    expect(outcome(remove)).toEqual({ reason: 'action_not_permitted', status: 403 });
    expect(remove.body.hint).toContain('narrowed by SMART scopes');
  });

  it('is narrowed when `smart` comes from a group, even where its own grants would decide alone', async () => {
    // microsoft/fhir-server unions every grant before it looks for Smart; so does fhir-pdp.
    const token = await entraToken(READER, 'patient.Patient.read', PATIENT, [SMART_GROUP]);
    expect(outcome(await strict.ask({ path: '/Patient/p1', token }))).toEqual({ reason: 'allowed', status: 200 });
    expect(outcome(await strict.ask({ path: '/Patient/p2', token }))).toEqual({ reason: 'insufficient_scope', status: 403 });
    const outside = await strict.ask({ path: '/Patient/p2', token: await entraToken(READER, 'patient.Patient.read', PATIENT) });
    expect(outcome(outside)).toEqual({ reason: 'allowed', status: 200 });
  });

  it('is refused without any SMART scope, while a principal without smart is not narrowed', async () => {
    const plain = await strict.ask({ path: '/Patient/p1', token: await entraToken(SMART_USER, 'user_impersonation', PATIENT) });
    expect(outcome(plain)).toEqual({ reason: 'insufficient_scope', status: 403 });
    expect(plain.body.hint).toContain('no patient/, user/ or system/ resource scope');
    const reader = await strict.ask({ path: '/Patient/p2', token: await entraToken(READER, 'user_impersonation') });
    expect(outcome(reader)).toEqual({ reason: 'allowed', status: 200 });
  });
});

describe('batch and transaction bundles', () => {
  it.each([
    ['batch', ['GET Patient/p1', 'GET Observation?patient=p1'], 'allowed', undefined],
    ['transaction', ['GET Patient/p1', 'GET Patient/p2', 'GET Observation?patient=p1'], 'insufficient_scope', 'bundle entry 1 (GET Patient/p2)'],
    ['batch', ['GET Observation?patient=p1', 'DELETE Patient/p1'], 'insufficient_scope', 'bundle entry 1 (DELETE Patient/p1)'],
  ] as const)('in JSON mode, decides each entry of a patient app\'s %s: %j is %s', async (type, entries, expected, named) => {
    const token = await smartToken(providerA, 'portal-a', PATIENT_APP_SCOPE);
    const answer = await strict.ask({ method: 'POST', path: '/', token, body: batchBundle(type, ...entries) });
    expect(outcome(answer)).toEqual({ reason: expected, status: expected === 'allowed' ? 200 : 403 });
    if (named) expect(answer.body.hint).toContain(named);
  });

  it.each([
    [READER, ['GET Patient/1', 'POST Patient'], 'action_not_permitted', 'bundle entry 1 (POST Patient)'],
    // With the body, a bundle needs only what its entries need: no delete here.
    [READ_WRITER, ['GET Patient/1', 'PUT Patient/1'], 'allowed', undefined],
    [READ_WRITER, ['PUT Patient/1', 'DELETE Patient/1', 'GET Patient/2'], 'action_not_permitted', 'bundle entry 1 (DELETE Patient/1)'],
  ] as const)('in JSON mode, decides each entry for Entra principal %s: %j is %s', async (oid, entries, expected, named) => {
    const token = await entraToken(oid, 'user_impersonation');
    const answer = await strict.ask({ method: 'POST', path: '/', token, body: batchBundle('transaction', ...entries) });
    expect(outcome(answer)).toEqual({ reason: expected, status: expected === 'allowed' ? 200 : 403 });
    if (named) expect(answer.body.hint).toContain(named);
  });

  it.each([
    ['read only', READER],
    ['read and write', READ_WRITER],
    ['every right', FULL],
  ] as const)('without the body (forward-auth), a root POST by a principal with %s is refused (unseenBundles defaults to refuse)', async (_, oid) => {
    const answer = await strict.forward({ method: 'POST', uri: '/', token: await entraToken(oid, 'user_impersonation') });
    expect(answer.httpStatus).toBe(403);
    expect(answer.headers.get('x-decision-reason')).toBe('action_not_permitted');
  });

  it('without the body, refuses a SMART app\'s root POST', async () => {
    const answer = await strict.forward({ method: 'POST', uri: '/', token: await smartToken(providerA, 'portal-a', PATIENT_APP_SCOPE) });
    expect(answer.httpStatus).toBe(403);
    expect(answer.headers.get('x-decision-reason')).toBe('action_not_permitted');
  });
});

describe('compartmentMode delegate', () => {
  let token: string;
  beforeAll(async () => {
    token = await smartToken(providerA, 'portal-a', PATIENT_APP_SCOPE);
  });

  function expectAllowed(answer: E2eAnswer, compartment: string | null): void {
    expect(answer.httpStatus).toBe(200);
    expect(answer.headers.get('x-decision-reason')).toBe('allowed');
    expect(answer.headers.get('x-auth-compartment')).toBe(compartment);
    expect(answer.headers.get('x-auth-fhir-user')).toBe(PATIENT);
    expect(answer.headers.get('x-auth-application')).toBe('portal-a');
    expect(answer.headers.get('x-auth-scopes')).toBe(PATIENT_APP_SCOPE);
  }

  it('allows what the URL cannot prove and hands the compartment upstream in X-Auth-Compartment (forward-auth)', async () => {
    expectAllowed(await delegating.forward({ uri: '/Observation/o1', token }), PATIENT);
    expectAllowed(await delegating.forward({ uri: '/Observation?code=1234-5', token }), PATIENT);
  });

  it('sends no compartment when the URL proves it', async () => {
    expectAllowed(await delegating.forward({ uri: '/Patient/p1', token }), null);
  });

  it('does the same in Envoy mode', async () => {
    const res = await fetch(`${delegating.url}/api/decide/Observation/o1`, {
      headers: { authorization: `Bearer ${token}`, 'x-functions-key': E2E_ADMIN_KEY },
      signal: AbortSignal.timeout(10_000),
    });
    await res.text();
    expect(res.status).toBe(200);
    expect(res.headers.get('x-auth-compartment')).toBe(PATIENT);
  });

  it('still refuses what the URL proves is another patient\'s', async () => {
    const answer = await delegating.forward({ uri: '/Patient/p2', token });
    expect(answer.httpStatus).toBe(403);
    expect(answer.headers.get('x-decision-reason')).toBe('insufficient_scope');
    expect(answer.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
    expect(answer.headers.get('x-auth-compartment')).toBeNull();
  });

  it('still narrows the application\'s rights: a create under cruds scopes needs write, which it lacks', async () => {
    const cruds = await smartToken(providerA, 'portal-a', 'launch/patient patient/Observation.cruds');
    const answer = await delegating.forward({ method: 'POST', uri: '/Observation', token: cruds });
    expect(answer.httpStatus).toBe(403);
    expect(answer.headers.get('x-decision-reason')).toBe('action_not_permitted');
  });

  it('names the one compartment of a bundle whose entries need it (JSON mode)', async () => {
    const answer = await delegating.ask({ method: 'POST', path: '/', token, body: batchBundle('batch', 'GET Observation/o1', 'GET Patient/p1') });
    expect(outcome(answer)).toEqual({ reason: 'allowed', status: 200 });
    expect(answer.body.compartment).toBe(PATIENT);
  });
});

describe('npm start (startHost), configured through PDP_CONFIG', () => {
  it('decides SMART and Entra tokens with the configuration read from app settings', async () => {
    const host = await startHost(
      {
        PDP_CONFIG: JSON.stringify(configFor('refuse')),
        PORT: '0',
        PDP_HOST: '127.0.0.1',
        PDP_ADMIN_KEYS: E2E_ADMIN_KEY,
        PDP_LOG_DECISIONS: 'false',
      },
      () => {},
    );
    try {
      const token = await smartToken(providerA, 'portal-a', PATIENT_APP_SCOPE);
      expect(outcome(await askContract(host.url, { path: '/Patient/p1', token }))).toEqual({ reason: 'allowed', status: 200 });
      const other = await askContract(host.url, { path: '/Patient/p2', token });
      expect(outcome(other)).toEqual({ reason: 'insufficient_scope', status: 403 });
      expect(other.body.hint).toContain('Patient/p2 is not the patient in context');
      const impostor = await smartToken(providerA, 'portal-b', PATIENT_APP_SCOPE);
      expect(outcome(await askContract(host.url, { path: '/Patient/p1', token: impostor }))).toEqual({ reason: 'unknown_application', status: 401 });
      const narrowed = await entraToken(SMART_USER, 'patient.Patient.read', PATIENT);
      expect(outcome(await askContract(host.url, { path: '/Patient/p2', token: narrowed }))).toEqual({ reason: 'insufficient_scope', status: 403 });
    } finally {
      await host.close();
    }
  });
});
