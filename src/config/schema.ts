/**
 * One schema for fhir-pdp's configuration (docs/decision-contract.md, "Configuration"). Every
 * setting carries its description and default here, where it is defined (STYLE §9); docs and
 * local.settings.sample.json are written from the same words.
 */
import { z } from 'zod';
import { canonicalDataAction } from '../core/data-actions.js';
import { isGuid } from '../core/guid.js';
import { isLoopbackHost } from '../core/loopback.js';
import { MAX_REVOCATION_ENTRIES } from '../core/revocations.js';


/**
 * An authority (or a FHIR server fhir-pdp calls itself): https, or http on a loopback host (development and tests). No query, fragment or
 * credentials, since discovery URLs are built by appending to it. Normalised without trailing slash.
 */
const authorityUrl = z
  .string()
  .trim()
  .superRefine((value, ctx) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      ctx.addIssue({ code: 'custom', message: `not an absolute URL: "${value}"` });
      return;
    }
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackHost(url.hostname)))
      ctx.addIssue({
        code: 'custom',
        message: `must use https (plain http is accepted only for loopback hosts): "${value}"`,
      });
    // An empty query or fragment (`…/?`, `…#`) leaves url.search and url.hash empty: the text says.
    if (url.search || url.hash || url.username || url.password || value.includes('?') || value.includes('#'))
      ctx.addIssue({ code: 'custom', message: `must not carry a query, fragment or credentials: "${value}"` });
  })
  .transform((value) => value.replace(/\/+$/, ''));

const dataActionName = z
  .string()
  .refine((v) => v === '*' || canonicalDataAction(v) !== undefined, {
    message: 'unknown data action (see the contract for the list)',
  });

const objectId = z
  .string()
  .trim()
  .refine(isGuid, { message: 'must be an object id (a GUID)' })
  .transform((v) => v.toLowerCase());

const accessPolicy = z
  .object({
    objectId: objectId.describe('Object id of a user, security group or service principal (not an application id).'),
    dataActions: z
      .array(dataActionName)
      .optional()
      .describe('Data actions granted; omitted means all (`*`).'),
    description: z.string().optional(),
  })
  .strict();

const role = z
  .object({
    name: z.string().min(1).describe('A value of the token\'s `roles` claim.'),
    dataActions: z.array(dataActionName),
    notDataActions: z.array(dataActionName).default([]),
    // roles.json of the Microsoft FHIR server carries `scopes: ["/"]`; only "/" is meaningful.
    scopes: z.array(z.literal('/')).optional(),
  })
  .strict();

const smartApplication = z
  .object({
    clientId: z.string().min(1).describe('Client id the provider puts in azp / appid / client_id / cid.'),
    audience: z.string().min(1).describe('The audience this application\'s tokens must carry.'),
    allowedDataActions: z.array(dataActionName).min(1),
  })
  .strict();

const smartIdentityProvider = z
  .object({
    authority: authorityUrl,
    applications: z.array(smartApplication).min(1),
  })
  .strict();

/** SMART App Launch 2.x, "Capability Sets": every capability the spec defines. */
export const SMART_CAPABILITIES = [
  'launch-ehr',
  'launch-standalone',
  'authorize-post',
  'client-public',
  'client-confidential-symmetric',
  'client-confidential-asymmetric',
  'sso-openid-connect',
  'context-passthrough-banner',
  'context-passthrough-style',
  'context-ehr-patient',
  'context-ehr-encounter',
  'context-standalone-patient',
  'context-standalone-encounter',
  'permission-offline',
  'permission-online',
  'permission-patient',
  'permission-user',
  'permission-v1',
  'permission-v2',
] as const;

const oauthName = z.string().regex(/^[\x21-\x7e]{1,200}$/, 'must be printable ASCII without spaces');

const smartConfiguration = z
  .object({
    authority: authorityUrl
      .optional()
      .describe('The configured authority (`authority` or a `smartIdentityProviders[].authority`) whose discovery document supplies issuer, jwks_uri, authorization_endpoint and token_endpoint (its `/v2.0` document where it has one, as Entra does); omitted means `authority`.'),
    capabilities: z
      .array(z.enum(SMART_CAPABILITIES))
      .min(1)
      .default(['launch-standalone', 'client-public', 'client-confidential-symmetric', 'permission-patient', 'permission-user', 'permission-v1', 'permission-v2'])
      .describe('SMART capabilities advertised. The default names what fhir-pdp enforces; add what your authority supports (launch-ehr, sso-openid-connect, ...). With sso-openid-connect the document also carries issuer and jwks_uri.'),
    grantTypesSupported: z
      .array(oauthName)
      .default(['authorization_code'])
      .refine((v) => v.includes('authorization_code'), { message: 'must include authorization_code (SMART App Launch 2.x)' })
      .describe('grant_types_supported; must include authorization_code.'),
    codeChallengeMethodsSupported: z
      .array(oauthName)
      .default(['S256'])
      .refine((v) => v.includes('S256') && !v.includes('plain'), { message: 'must include S256 and must not include plain (SMART App Launch 2.x)' })
      .describe('code_challenge_methods_supported; must include S256 and never plain.'),
    scopesSupported: z.array(oauthName).optional().describe('scopes_supported, when set.'),
    responseTypesSupported: z.array(oauthName).optional().describe('response_types_supported, when set.'),
    tokenEndpointAuthMethodsSupported: z.array(oauthName).optional().describe('token_endpoint_auth_methods_supported, when set.'),
  })
  .strict();

/**
 * The gateways whose documented configuration appends a narrowed search's parameters
 * (docs/gateways.md): nginx (`X-Auth-Query-Append`), a JSON-mode caller such as APIM's policy
 * (`queryAppend`), and an AuthZEN PEP (`context.queryAppend`). Traefik's forwardAuth and Envoy's
 * HTTP ext_authz service cannot rewrite the query, so they are never offered a narrowing.
 */
export const NARROWING_GATEWAYS = ['nginx', 'json', 'authzen'] as const;
export type NarrowingGateway = (typeof NARROWING_GATEWAYS)[number];

const smartNarrowing = z
  .object({
    gateways: z
      .array(
        z.enum(NARROWING_GATEWAYS, {
          error: 'must be nginx, json or authzen (Traefik forwardAuth and the Envoy HTTP ext_authz service cannot rewrite the query, so they are never narrowed)',
        }),
      )
      .max(NARROWING_GATEWAYS.length)
      .default([])
      .refine((v) => new Set(v).size === v.length, { message: 'names a gateway twice' })
      .describe(
        'Gateways that apply a narrowed search: nginx (forward-auth with X-Original-URI; answer header X-Auth-Query-Append), json (/api/decide JSON mode, e.g. the APIM policy; answer member queryAppend), authzen (context.queryAppend). Empty: such searches are refused.',
      ),
  })
  .strict();
/** A FHIR server fhir-pdp itself calls: held to the rules of an authority's URL. */
const lookupBaseUrl = authorityUrl;

const lookupCredential = z
  .discriminatedUnion('kind', [
    z
      .object({
        kind: z.literal('managedIdentity'),
        clientId: objectId
          .optional()
          .describe('Client id of a user-assigned managed identity (ManagedIdentityCredential, nothing else); omitted: DefaultAzureCredential (environment, workload identity, managed identity, then developer sign-ins).'),
        scope: z
          .string()
          .regex(/^[\x21-\x7e]{1,400}$/, 'one scope, printable ASCII without spaces')
          .optional()
          .describe('The token scope; omitted: `{fhirBaseUrl}/.default` (Azure Health Data Services and Azure API for FHIR take the service URL as the audience).'),
      })
      .strict(),
    z.object({ kind: z.literal('none') }).strict(),
  ])
  .describe('How fhir-pdp authenticates to the FHIR server (its own identity, never the caller\'s token; no secret in this JSON): `{ "kind": "managedIdentity", "clientId"?, "scope"? }`, an Entra token from @azure/identity for `scope` (default `{fhirBaseUrl}/.default`), from the user-assigned identity `clientId` (ManagedIdentityCredential only) or, without one, DefaultAzureCredential; or `{ "kind": "none" }`, no Authorization header, accepted only for a loopback fhirBaseUrl (local development and tests).');

const compartmentLookup = z
  .object({
    fhirBaseUrl: lookupBaseUrl.describe('Base URL of the FHIR server fhir-pdp asks (it may be an internal address; https, or http for a loopback host).'),
    credential: lookupCredential,
    timeoutMs: z.number().int().min(100).max(30000).default(2000).describe('Timeout of one lookup request (the decision\'s decisionBudgetMs bounds it too).'),
    cacheSeconds: z.number().int().min(0).max(3600).default(60).describe('How long an answer (found or not found) is reused; 0 asks every time. Failures are never cached.'),
    maxEntries: z.number().int().min(0).max(1_000_000).default(10_000).describe('Most cached answers (least recently used first out); 0 disables the cache.'),
    maxResponseBytes: z.number().int().min(256).max(1024 * 1024).default(64 * 1024).describe('Largest lookup answer read; a longer one is a failed lookup (503).'),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    if (cfg.credential.kind === 'none' && !isLoopbackHost(new URL(cfg.fhirBaseUrl).hostname))
      ctx.addIssue({ code: 'custom', path: ['credential'], message: 'kind "none" is accepted only for a loopback fhirBaseUrl (127.0.0.1, ::1, localhost); a FHIR server elsewhere is reached with a token' });
  });

const seconds = (def: number, max: number) => z.number().int().min(0).max(max).default(def);

export const configSchema = z
  .object({
    fhirBaseUrl: z
      .url({ protocol: /^https?$/ })
      .optional()
      .describe('Base URL of the FHIR server; accepted as an audience (with or without trailing slash); its path is stripped from request paths.'),
    authority: authorityUrl.describe('Primary (Entra ID) authority, e.g. https://login.microsoftonline.com/<tenant-id>.'),
    audience: z.string().min(1).optional().describe('Audience compared exactly with `aud`.'),
    audiences: z.array(z.string().min(1)).default([]).describe('Further accepted audiences (client id, api://<client-id>).'),
    accessPolicies: z.array(accessPolicy).default([]),
    roles: z.array(role).default([]),
    smartIdentityProviders: z.array(smartIdentityProvider).default([]),
    smartConfiguration: smartConfiguration
      .optional()
      .describe('Serve [base]/.well-known/smart-configuration (at /api/smart-configuration) from this and the authority\'s discovery document; omitted means fhir-pdp does not serve it (the FHIR server does, and fhir-pdp only decides the path public).'),
    graph: z
      .object({
        baseUrl: z.url({ protocol: /^https?$/ }).default('https://graph.microsoft.com'),
      })
      .strict()
      .optional()
      .describe('Microsoft Graph, for group membership; omitted means groups are resolved from the token claim only.'),
    compartmentMode: z
      .enum(['refuse', 'delegate'])
      .default('refuse')
      .describe('Patient-scoped requests whose compartment cannot be proven from the URL: refuse, or allow and send X-Auth-Compartment.'),
    smartNarrowing: smartNarrowing
      .default({ gateways: [] })
      .describe(
        'SMART search narrowing: a GET type-level search that the scopes allow only inside the patient compartment or only with a constraint (patient/Observation.rs?category=laboratory) is allowed with the parameters to append (patient=Patient/{id}, category=laboratory), for the gateways listed, which must append them; refused for every other gateway.',
      ),
    compartmentLookup: compartmentLookup
      .optional()
      .describe('Reads by id (read, vread) under patient/ scopes that the URL cannot place in the patient\'s compartment are decided by asking this FHIR server, with fhir-pdp\'s own credential, `{type}?_id={id}&patient=Patient/{patient}&_summary=count` (or `subject=`): allowed when it finds one, refused when none, 503 when the lookup fails. Omitted: compartmentMode decides them.'),
    unseenBundles: z
      .enum(['refuse', 'requireEveryAction'])
      .default('refuse')
      .describe('A batch or transaction Bundle whose entries fhir-pdp did not see (forward-auth, or no JSON body): refuse, or allow only a principal granted every data action.'),
    clockSkewSeconds: seconds(300, 3600).describe('Tolerance for exp, nbf and iat.'),
    maxTokenBytes: z.number().int().min(1024).max(65536).default(16384).describe('Largest bearer token accepted.'),
    jwksRefetchCooldownSeconds: seconds(30, 3600).describe('Least time between two unknown-kid refetches of one issuer\'s keys.'),
    metadataRetrySeconds: seconds(10, 3600).describe('Least time between two attempts to load an authority that is down.'),
    fetchTimeoutMs: z.number().int().min(100).max(60000).default(5000).describe('Timeout of one discovery or JWKS fetch.'),
    maxStaleSeconds: seconds(86400, 30 * 86400).describe('Keys and group data older than this are no longer used.'),
    directoryBudgetMs: z.number().int().min(0).max(30000).default(1000).describe('Longest a decision waits for Graph.'),
    tokenCacheMaxEntries: z.number().int().min(0).max(1_000_000).default(10_000).describe('Verified-token cache: most entries (0 disables it).'),
    tokenCacheMaxBytes: z.number().int().min(0).max(1024 * 1024 * 1024).default(64 * 1024 * 1024).describe('Verified-token cache: most bytes.'),
    decisionBudgetMs: z.number().int().min(100).max(60000).default(5000).describe('Longest a decision may take before it is indeterminate.'),
    maxTokenAgeSeconds: z
      .number()
      .int()
      .min(60)
      .max(30 * 86400)
      .optional()
      .describe('A token whose `iat` is more than this many seconds ago is refused (token_expired) even if unexpired, and a token without `iat` is refused; omitted means no limit beyond `exp`. Also how long a revocation entry lives by default.'),
    revocation: z
      .object({
        maxEntries: z.number().int().min(1).max(MAX_REVOCATION_ENTRIES).default(10_000).describe('Most live entries in the deny-list; an addition beyond it is refused (nothing is dropped to make room).'),
        maxTokenLifetimeSeconds: z
          .number()
          .int()
          .min(300)
          .max(30 * 86400)
          .default(100_800)
          .describe('Longest lifetime (`exp` - `iat`) of a token the authorities issue: a revocation entry without `expiresAt` lives this long (plus clockSkewSeconds) unless maxTokenAgeSeconds is set, which is used instead. Default 28 h, Entra\'s longest (CAE) access token lifetime.'),
      })
      .strict()
      .prefault({})
      .describe('The deny-list of revoked tokens (POST /api/revocations): its bound and how long an entry lives.'),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    if (!cfg.audience && !cfg.fhirBaseUrl)
      ctx.addIssue({ code: 'custom', path: ['audience'], message: 'set `audience` or `fhirBaseUrl` (or both)' });
    const seenObjects = new Map<string, number>();
    cfg.accessPolicies.forEach((p, i) => {
      const prior = seenObjects.get(p.objectId);
      if (prior !== undefined)
        ctx.addIssue({ code: 'custom', path: ['accessPolicies', i, 'objectId'], message: `listed twice (also at accessPolicies[${prior}])` });
      else seenObjects.set(p.objectId, i);
    });
    const seenRoles = new Map<string, number>();
    cfg.roles.forEach((r, i) => {
      const prior = seenRoles.get(r.name);
      if (prior !== undefined)
        ctx.addIssue({ code: 'custom', path: ['roles', i, 'name'], message: `role defined twice (also at roles[${prior}])` });
      else seenRoles.set(r.name, i);
    });
    const authorities = new Map<string, string>([[cfg.authority.toLowerCase(), 'authority']]);
    const clientIds = new Map<string, string>();
    cfg.smartIdentityProviders.forEach((p, i) => {
      const here = `smartIdentityProviders[${i}]`;
      const prior = authorities.get(p.authority.toLowerCase());
      if (prior)
        ctx.addIssue({ code: 'custom', path: ['smartIdentityProviders', i, 'authority'], message: `same authority as ${prior}` });
      else authorities.set(p.authority.toLowerCase(), here);
      p.applications.forEach((a, j) => {
        const where = `${here}.applications[${j}]`;
        const seen = clientIds.get(a.clientId);
        // A token of one provider must never match another provider's application.
        if (seen)
          ctx.addIssue({
            code: 'custom',
            path: ['smartIdentityProviders', i, 'applications', j, 'clientId'],
            message: `client id must be unique across providers (also at ${seen})`,
          });
        else clientIds.set(a.clientId, where);
      });
    });
    const smartAuthority = cfg.smartConfiguration?.authority;
    if (smartAuthority !== undefined && !authorities.has(smartAuthority.toLowerCase()))
      ctx.addIssue({
        code: 'custom',
        path: ['smartConfiguration', 'authority'],
        message: 'must be `authority` or one of `smartIdentityProviders[].authority`: only configured authorities are fetched',
      });
  });

export type PdpConfig = z.output<typeof configSchema>;
export type PdpConfigInput = z.input<typeof configSchema>;
