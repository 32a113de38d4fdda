/**
 * The gateways of docs/gateways.md that are not run here (Traefik, Envoy, Azure API Management),
 * proven at the HTTP level: fhir-pdp's standalone host receives exactly the request each gateway
 * builds from the documented configuration, and answers what that gateway needs.
 *
 * - Traefik forwardAuth (pkg/middlewares/auth/forward.go): GET to `address`, only the
 *   `authRequestHeaders` of the client, then X-Forwarded-For/Method/Proto/Host/Uri set by Traefik.
 * - Envoy ext_authz HTTP service (ext_authz_http_impl.cc): the client's method, `path_prefix` + the
 *   client's path and query, Content-Length 0, the client's Host and Authorization, `allowed_headers`,
 *   `headers_to_add`, and the async client's own x-envoy-internal, x-forwarded-for and
 *   x-envoy-expected-rq-timeout-ms.
 * - API Management: the JSON body the `send-request` policy builds; every field the policy reads.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedHost } from '../../src/host/main.js';
import { DEV_APP_ID, DEV_OBJECT_ID, DEV_TENANT_ID, DevIdentityProvider, type MintOptions } from '../../testkit/dev-idp.js';
import { decisionBody } from '../../src/http/answer.js';
import { gatewayAnswer } from '../../src/http/answer.js';
import type { Decision } from '../../src/decision/types.js';
import {
  IDENTITY_HEADERS,
  docSnippet,
  jsonOf,
  rawRequest,
  startPdpHost,
  substitute,
  type RawRequest,
  type RawResponse,
} from '../../testkit/host.js';

const AUDIENCE = 'https://fhir.example.test';
const API_KEY = `gateway-api-${randomUUID()}`;
const ADMIN_KEY = `gateway-admin-${randomUUID()}`;
const STRANGER_OID = '0b7c6d5e-4f3a-4b2c-9d1e-8f7a6b5c4d3e';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Headers every HTTP answer has that say nothing about the decision. */
const TRANSPORT_HEADERS = new Set(['date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding']);

/** The values listed under `key:` in a YAML block list (`- "X"` or `- exact: x`). */
function yamlList(yaml: string, key: string): string[] {
  const start = yaml.search(new RegExp(`^\\s*${key}:\\s*$`, 'm'));
  if (start < 0) throw new Error(`no "${key}:" list in the snippet`);
  const lines = yaml.slice(start).split('\n').slice(1);
  const items: string[] = [];
  for (const line of lines) {
    if (/^\s*patterns:\s*$/.test(line)) continue;
    const item = /^\s*-\s*(?:exact:\s*)?"?([^"\s]+)"?\s*$/.exec(line);
    if (!item) break;
    items.push(item[1]!);
  }
  return items;
}

function yamlValue(yaml: string, key: string): string {
  const m = new RegExp(`^\\s*${key}:\\s*"?([^"\\n]+?)"?\\s*$`, 'm').exec(yaml);
  if (!m) throw new Error(`no "${key}:" in the snippet`);
  return m[1]!;
}

function lower(values: readonly string[]): string[] {
  return values.map((v) => v.toLowerCase()).sort();
}

const identityAndDecisionId = lower([...IDENTITY_HEADERS, 'x-decision-id']);

/** Every identity header fhir-pdp can set: the answer to a decision with every principal field. */
function everyIdentityHeader(): string[] {
  const full: Decision = {
    decisionId: randomUUID(),
    decision: 'allow',
    status: 200,
    reason: 'allowed',
    message: 'The request is allowed.',
    principal: { issuer: 'https://idp.example', objectId: DEV_OBJECT_ID, tenantId: DEV_TENANT_ID, applicationId: DEV_APP_ID, fhirUser: 'Practitioner/1', scopes: ['user/*.rs'] },
    dataActions: ['read'],
    compartment: 'Patient/1',
    durationMs: 1,
    cacheHit: false,
  };
  return Object.keys(gatewayAnswer(full, { admin: false }).headers).filter((h) => h.startsWith('x-auth-'));
}

describe('gateway conventions', () => {
  let idp: DevIdentityProvider;
  let host: StartedHost;
  let pdpHost: string;

  const mint = (options: Partial<MintOptions> = {}) => idp.mint({ audience: AUDIENCE, scp: 'user_impersonation', ...options });
  const bearer = async (options: Partial<MintOptions> = {}) => `Bearer ${await mint(options)}`;
  const ask = (req: RawRequest): Promise<RawResponse> => rawRequest(host.url, req);

  beforeAll(async () => {
    idp = await DevIdentityProvider.start();
    host = await startPdpHost({
      config: {
        authority: idp.authority,
        audience: AUDIENCE,
        accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }],
        decisionBudgetMs: 500,
        fetchTimeoutMs: 5000,
      },
      settings: { PDP_API_KEYS: API_KEY, PDP_ADMIN_KEYS: ADMIN_KEY },
    });
    pdpHost = new URL(host.url).host;
    await host.service.refresh();
  });

  afterAll(async () => {
    await host?.close();
    await idp?.close();
  });

  it('fhir-pdp sets exactly the identity headers the snippets handle', () => {
    expect(lower(everyIdentityHeader())).toEqual(lower(IDENTITY_HEADERS));
  });

  describe('nginx snippet (run for real by test/e2e/nginx.test.ts)', () => {
    const nginx = docSnippet('nginx');

    it.each(IDENTITY_HEADERS.map((h) => ({ header: h })))('sets $header from the auth answer and nothing else', ({ header }) => {
      const variable = new RegExp(`auth_request_set\\s+(\\$\\w+)\\s+\\$upstream_http_${header.replace(/-/g, '_')};`).exec(nginx);
      expect(variable).not.toBeNull();
      const name = header.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => `${dash}${c.toUpperCase()}`);
      expect(nginx).toContain(`proxy_set_header ${name}`);
      expect(new RegExp(`proxy_set_header ${name}\\s+\\${variable![1]};`).test(nginx)).toBe(true);
    });

    it('decides on the raw request URI and forwards that same URI', () => {
      expect(nginx).toMatch(/proxy_set_header X-Original-URI\s+\$request_uri;/);
      expect(nginx).toMatch(/proxy_set_header X-Original-Method\s+\$request_method;/);
      expect(nginx).toMatch(/proxy_pass http:\/\/fhir_server\$pdp_upstream_uri;/);
      expect(nginx).toMatch(/auth_request_set \$pdp_query_append \$upstream_http_x_auth_query_append;/);
      expect(nginx).toMatch(/map "\$pdp_query_append \$request_uri" \$pdp_upstream_uri \{/);
      expect(nginx).toMatch(/proxy_pass http:\/\/fhir_pdp\/api\/decide;/);
      expect(nginx).toMatch(/error_page 500 = @fhir_pdp_unavailable;/);
    });
  });

  describe('Traefik forwardAuth', () => {
    const dynamic = docSnippet('traefik-dynamic');
    const address = new URL(yamlValue(dynamic, 'address'));
    const keyMiddleware = /fhir-pdp-key:\s*\n\s*headers:\s*\n\s*customRequestHeaders:\s*\n\s*X-Functions-Key: "([^"]*)"/.exec(dynamic);
    const stripMiddleware = /fhir-pdp-key-strip:\s*\n\s*headers:\s*\n\s*customRequestHeaders:\s*\n\s*X-Functions-Key: "([^"]*)"/.exec(dynamic);
    const key = substitute(keyMiddleware?.[1] ?? '', '__PDP_API_KEY__', API_KEY);

    /** What forwardAuth sends for a client request, per the documented middlewares. */
    function traefik(method: string, uri: string, authorization?: string | string[]): RawRequest {
      return {
        method: 'GET',
        path: `${address.pathname}${address.search}`,
        headers: {
          host: pdpHost,
          'user-agent': 'Go-http-client/1.1',
          ...(authorization !== undefined ? { authorization } : {}),
          'x-functions-key': key,
          'x-forwarded-for': '203.0.113.7',
          'x-forwarded-method': method,
          'x-forwarded-proto': 'https',
          'x-forwarded-host': 'fhir.example.org',
          'x-forwarded-uri': uri,
          'accept-encoding': 'gzip',
        },
      };
    }

    it('is configured to copy only the credential, the key and the method overrides, and to carry every identity header', () => {
      expect(address.pathname).toBe('/api/decide');
      // The key is a header set by a middleware, never a query parameter of the auth URL.
      expect(address.search).toBe('');
      expect(dynamic).not.toMatch(/code=/);
      expect(dynamic).toMatch(/middlewares: \["fhir-pdp-key", "fhir-pdp", "fhir-pdp-key-strip"\]/);
      expect(keyMiddleware?.[1]).toBe('__PDP_API_KEY__');
      expect(stripMiddleware?.[1]).toBe('');
      expect(yamlValue(dynamic, 'trustForwardHeader')).toBe('false');
      expect(yamlList(dynamic, 'authRequestHeaders')).toEqual(['Authorization', 'X-Functions-Key', 'X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override']);
      expect(lower(yamlList(dynamic, 'authResponseHeaders'))).toEqual(identityAndDecisionId);
      expect(docSnippet('traefik-static')).toMatch(/providers:\s*\n\s*file:/);
    });

    it('refuses a request that mixes X-Forwarded-* with client-added X-Original-* headers, whatever they say', async () => {
      // Traefik copies client headers unless authRequestHeaders is set: a client adding
      // X-Original-Method: GET must not turn a DELETE into a read.
      const mixed = traefik('DELETE', '/Patient/p1', await bearer());
      const res = await ask({ ...mixed, headers: { ...mixed.headers, 'x-original-method': 'GET' } });
      expect(res.status).toBe(403);
      expect(res.headers['x-decision-reason']).toBe('action_not_permitted');
      const repeated = traefik('GET', '/Patient/p1', await bearer());
      const twice = await ask({ ...repeated, headers: { ...repeated.headers, 'x-forwarded-uri': ['/Patient/p1', '/Patient/p2'] } });
      expect(twice.status).toBe(403);
      expect(twice.headers['x-decision-reason']).toBe('action_not_permitted');
    });

    it('allows with the identity headers Traefik copies to the upstream request', async () => {
      const res = await ask(traefik('GET', '/Patient/p1?_elements=name', await bearer()));
      expect(res.status).toBe(200);
      expect(res.headers).toMatchObject({
        'x-auth-principal': DEV_OBJECT_ID,
        'x-auth-tenant': DEV_TENANT_ID,
        'x-auth-application': DEV_APP_ID,
        'x-auth-scopes': 'user_impersonation',
        'x-decision-reason': 'allowed',
      });
      expect(res.headers['x-decision-id']).toMatch(UUID);
      const carried = new Set(lower(yamlList(dynamic, 'authResponseHeaders')));
      for (const name of Object.keys(res.headers).filter((h) => h.startsWith('x-auth-'))) expect(carried.has(name)).toBe(true);
    });

    it.each([
      { name: 'DELETE', method: 'DELETE', uri: '/Patient/p1', status: 403, reason: 'action_not_permitted', challenge: /error="insufficient_scope"/ },
      { name: 'POST', method: 'POST', uri: '/Observation', status: 403, reason: 'action_not_permitted', challenge: /error="insufficient_scope"/ },
      { name: 'GET', method: 'GET', uri: '/Patient/p1', status: 200, reason: 'allowed', challenge: undefined },
    ])('decides on X-Forwarded-Method ($name), not on the GET Traefik asks with', async ({ method, uri, status, reason, challenge }) => {
      const res = await ask(traefik(method, uri, await bearer()));
      expect(res.status).toBe(status);
      expect(res.headers['x-decision-reason']).toBe(reason);
      if (challenge) expect(res.headers['www-authenticate']).toMatch(challenge);
      else expect(res.headers['www-authenticate']).toBeUndefined();
    });

    it.each([
      { name: 'no token', auth: async () => undefined, reason: 'missing_token', challenge: /^Bearer realm="fhir-pdp"$/ },
      { name: 'an expired token', auth: () => bearer({ expiresInSeconds: -3600 }), reason: 'token_expired', challenge: /error="invalid_token"/ },
      { name: 'a caller granted nothing', auth: () => bearer({ oid: STRANGER_OID }), reason: 'principal_not_allowed', challenge: /error="insufficient_scope"/ },
    ])('denies $name with the answer Traefik returns to the client as is', async ({ auth, reason, challenge }) => {
      const res = await ask(traefik('GET', '/Patient/p1', await auth()));
      const body = jsonOf(res);
      expect(res.status).toBe(body.status);
      expect(body).toMatchObject({ decision: 'deny', reason });
      expect(res.headers['x-decision-reason']).toBe(reason);
      expect(res.headers['x-decision-id']).toBe(body.decisionId);
      expect(res.headers['www-authenticate']).toMatch(challenge);
      expect(res.headers['content-type']).toMatch(/^application\/json/);
      expect(body.hint).toBeUndefined();
      for (const h of IDENTITY_HEADERS) expect(res.headers[h]).toBeUndefined();
    });

    it('reads the query of X-Forwarded-Uri: an access_token there is a second credential', async () => {
      const search = await ask(traefik('GET', '/Patient?family=Doe&_count=5', await bearer()));
      expect(search.status).toBe(200);
      const doubled = await ask(traefik('GET', '/Patient/p1?access_token=abc', await bearer()));
      expect(doubled.status).toBe(401);
      expect(doubled.headers['x-decision-reason']).toBe('malformed_token');
    });

    it.each([{ first: true }, { first: false }])('refuses two Authorization values (valid first: $first)', async ({ first }) => {
      const valid = await bearer();
      const res = await ask(traefik('GET', '/Patient/p1', first ? [valid, 'Bearer abc.def.ghi'] : ['Bearer abc.def.ghi', valid]));
      expect(res.status).toBe(401);
      expect(res.headers['x-decision-reason']).toBe('malformed_token');
    });

    it('refuses a method override the client sends (authRequestHeaders copies it to fhir-pdp)', async () => {
      const req = traefik('GET', '/Patient/p1', await bearer());
      const res = await ask({ ...req, headers: { ...req.headers, 'x-http-method-override': 'DELETE' } });
      expect(res.status).toBe(403);
      expect(res.headers['x-decision-reason']).toBe('action_not_permitted');
    });

    it.each(['/metadata', '/.well-known/smart-configuration'])('allows anonymous GET %s (SMART discovery), setting no identity', async (uri) => {
      const res = await ask(traefik('GET', uri));
      expect(res.status).toBe(200);
      for (const h of IDENTITY_HEADERS) expect(res.headers[h]).toBeUndefined();
    });

    it('answers a wrong key in the key header 503, which Traefik passes to the client as is', async () => {
      const req = traefik('GET', '/Patient/p1', await bearer());
      const res = await ask({ ...req, headers: { ...req.headers, 'x-functions-key': 'rotated-away' } });
      expect(res.status).toBe(503);
      expect(jsonOf(res)).toMatchObject({ error: 'gateway_key_refused' });
      expect(res.headers['x-decision-reason']).toBeUndefined();
    });

    it('answers an auth request without the key header 503 (passed on as is), before any decision', async () => {
      const req = traefik('GET', '/Patient/p1', await bearer());
      const { 'x-functions-key': _key, ...withoutKey } = req.headers as Record<string, string>;
      const res = await ask({ ...req, headers: withoutKey });
      expect(res.status).toBe(503);
      expect(jsonOf(res)).toMatchObject({ error: 'gateway_key_refused' });
      expect(res.headers['x-decision-reason']).toBeUndefined();
    });
  });

  describe('Envoy ext_authz HTTP service', () => {
    const envoy = docSnippet('envoy');
    const pathPrefix = yamlValue(envoy, 'path_prefix');
    const keyHeader = yamlValue(envoy, '- key');
    const keyValue = substitute(yamlValue(envoy, 'value'), '__PDP_API_KEY__', API_KEY);

    /** What Envoy's HTTP ext_authz client sends for a client request, per the documented filter. */
    function envoyCheck(method: string, path: string, authorization?: string | string[], extra: Record<string, string> = {}): RawRequest {
      return {
        method,
        path: `${pathPrefix}${path}`,
        headers: {
          host: 'fhir.example.org',
          'content-length': '0',
          ...(authorization !== undefined ? { authorization } : {}),
          'x-request-id': randomUUID(),
          [keyHeader]: keyValue,
          'x-envoy-internal': 'true',
          'x-forwarded-for': '10.0.0.5',
          'x-envoy-expected-rq-timeout-ms': '6000',
          ...extra,
        },
      };
    }

    it('is configured with fhir-pdp prefix, a header key, every identity header, and 503 on error', () => {
      expect(pathPrefix).toBe('/api/decide');
      expect(keyHeader).toBe('x-functions-key');
      expect(lower(yamlList(envoy, 'allowed_upstream_headers'))).toEqual(identityAndDecisionId);
      // The method overrides reach fhir-pdp, which refuses them.
      expect(yamlList(envoy, 'allowed_headers')).toEqual(['x-request-id', 'x-http-method-override', 'x-http-method', 'x-method-override']);
      const removed = [...envoy.matchAll(/^\s*- remove: (\S+)$/gm)].map((m) => m[1]!);
      expect(lower(removed)).toEqual(identityAndDecisionId);
      expect(envoy.indexOf('envoy.filters.http.header_mutation')).toBeLessThan(envoy.indexOf('envoy.filters.http.ext_authz'));
      expect(envoy).toMatch(/status_on_error: \{ code: ServiceUnavailable \}/);
      expect(envoy).toMatch(/failure_mode_allow: false/);
    });

    it('allows a read with the identity headers Envoy sets on the upstream request', async () => {
      const res = await ask(envoyCheck('GET', '/Patient/p1', await bearer()));
      expect(res.status).toBe(200);
      // Headers fhir-pdp leaves unset are named for Envoy to strip from the upstream request.
      expect(String(res.headers['x-envoy-auth-headers-to-remove']).split(',')).toEqual(expect.arrayContaining(['x-auth-compartment']));
      expect(String(res.headers['x-envoy-auth-headers-to-remove'])).not.toContain('x-auth-principal');
      expect(res.headers).toMatchObject({ 'x-auth-principal': DEV_OBJECT_ID, 'x-auth-tenant': DEV_TENANT_ID, 'x-auth-application': DEV_APP_ID });
      const allowed = new Set(lower(yamlList(envoy, 'allowed_upstream_headers')));
      for (const name of Object.keys(res.headers).filter((h) => h.startsWith('x-auth-'))) expect(allowed.has(name)).toBe(true);
    });

    it.each([
      { method: 'DELETE', path: '/Patient/p1', status: 403, reason: 'action_not_permitted' },
      { method: 'POST', path: '/Observation', status: 403, reason: 'action_not_permitted' },
      { method: 'PUT', path: '/Patient/p1', status: 403, reason: 'action_not_permitted' },
      { method: 'GET', path: '/Patient?family=Doe&_count=5', status: 200, reason: 'allowed' },
      { method: 'HEAD', path: '/Patient/p1', status: 200, reason: 'allowed' },
    ])('keeps the method and the query: $method $path → $status', async ({ method, path, status, reason }) => {
      const res = await ask(envoyCheck(method, path, await bearer()));
      expect(res.status).toBe(status);
      expect(res.headers['x-decision-reason']).toBe(reason);
    });

    it('reads the original query: an access_token there is a second credential', async () => {
      const res = await ask(envoyCheck('GET', '/Patient/p1?access_token=abc', await bearer()));
      expect(res.status).toBe(401);
      expect(res.headers['x-decision-reason']).toBe('malformed_token');
    });

    it('takes the key from the header only: a code parameter belongs to the client request', async () => {
      const authorization = await bearer();
      const inQuery = envoyCheck('GET', `/Patient/p1?code=${encodeURIComponent(API_KEY)}`, authorization);
      const headers = { ...inQuery.headers } as Record<string, string>;
      delete headers[keyHeader];
      const refused = await ask({ ...inQuery, headers });
      // 5xx: Envoy answers the client status_on_error (503), not the 4xx it would pass on.
      expect(refused.status).toBe(503);
      expect(jsonOf(refused)).toMatchObject({ error: 'gateway_key_refused' });
      expect(refused.headers['x-decision-reason']).toBeUndefined();

      const decided = await ask(envoyCheck('GET', '/Patient/p1?code=not-a-key', authorization));
      expect(decided.status).toBe(200);
    });

    it.each([
      { name: 'no token', auth: async () => undefined, status: 401, reason: 'missing_token' },
      { name: 'a token for another audience', auth: () => bearer({ audience: 'https://other.example.test' }), status: 401, reason: 'audience_mismatch' },
      { name: 'a caller granted nothing', auth: () => bearer({ oid: STRANGER_OID }), status: 403, reason: 'principal_not_allowed' },
    ])('denies $name with only headers allowed_client_headers passes to the client', async ({ auth, status, reason }) => {
      const res = await ask(envoyCheck('GET', '/Patient/p1', await auth()));
      expect(res.status).toBe(status);
      expect(res.headers['x-decision-reason']).toBe(reason);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="fhir-pdp"/);
      const passed = new Set(lower(yamlList(envoy, 'allowed_client_headers')));
      const needed = Object.keys(res.headers).filter((h) => !TRANSPORT_HEADERS.has(h));
      expect(needed.filter((h) => !passed.has(h))).toEqual([]);
    });

    it.each(['/metadata', '/.well-known/smart-configuration'])('allows anonymous GET %s (SMART discovery)', async (path) => {
      const res = await ask(envoyCheck('GET', path));
      expect(res.status).toBe(200);
      expect(String(res.headers['x-envoy-auth-headers-to-remove']).split(',')).toEqual(expect.arrayContaining([...IDENTITY_HEADERS]));
    });

    it('answers a wrong key 5xx, which status_on_error turns into 503 for the client', async () => {
      const res = await ask(envoyCheck('GET', '/Patient/p1', await bearer(), { [keyHeader]: 'rotated-away' }));
      expect(res.status).toBe(503);
      expect(yamlValue(envoy, 'status_on_error')).toMatch(/ServiceUnavailable/);
    });

    it.each([{ first: true }, { first: false }])('refuses two Authorization headers (valid first: $first)', async ({ first }) => {
      const valid = await bearer();
      const res = await ask(envoyCheck('GET', '/Patient/p1', first ? [valid, 'Bearer abc.def.ghi'] : ['Bearer abc.def.ghi', valid]));
      expect(res.status).toBe(401);
      expect(res.headers['x-decision-reason']).toBe('malformed_token');
    });
  });

  describe('Azure API Management send-request policy', () => {
    const policy = docSnippet('apim');
    const readPaths = [...new Set([...policy.matchAll(/SelectToken\("([^"]+)"\)/g)].map((m) => m[1]!))];

    /** The body the policy's set-body builds, for an API whose URL suffix is already removed. */
    function policyBody(method: string, pathAndQuery: string, authorization: readonly string[]): string {
      return JSON.stringify({ method, path: pathAndQuery, headers: { authorization } });
    }

    function postDecide(body: string, key = API_KEY): Promise<RawResponse> {
      return ask({ method: 'POST', path: '/api/decide', headers: { 'x-functions-key': key, 'content-type': 'application/json' }, body });
    }

    /** The policy's WWW-Authenticate expressions, transcribed. */
    function policyChallenge(answer: Record<string, unknown>): string | undefined {
      const description = String(answer.message).replace(/["\\]/g, '');
      if (answer.status === 401)
        return answer.reason === 'missing_token' ? 'Bearer realm="fhir-pdp"' : `Bearer realm="fhir-pdp", error="invalid_token", error_description="${description}"`;
      if (answer.status === 403) return `Bearer realm="fhir-pdp", error="insufficient_scope", error_description="${description}"`;
      return undefined;
    }

    function resolve(value: unknown, path: string): unknown {
      return path.split('.').reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), value);
    }

    it('posts JSON mode to /api/decide with the key as a header and the fields JSON mode takes', () => {
      expect(policy).toContain('<set-url>{{fhir-pdp-url}}/api/decide</set-url>');
      expect(policy).toContain('<set-method>POST</set-method>');
      expect(policy).toMatch(/<set-header name="x-functions-key" exists-action="override">\s*<value>\{\{fhir-pdp-key\}\}<\/value>/);
      const body = /<set-body>@\{([\s\S]*?)\}<\/set-body>/.exec(policy)![1]!;
      expect([...body.matchAll(/new JProperty\("([^"]+)"/g)].map((m) => m[1])).toEqual(['method', 'path', 'headers', 'authorization', 'body']);
      // The Bundle of a POST to the FHIR base goes as `body`, so its entries are decided.
      expect(body).toMatch(/if \(context\.Request\.Method == "POST" && path == "\/"\) \{ question\.Add\(new JProperty\("body", context\.Request\.Body\.As<JObject>\(preserveContent: true\)\)\); \}/);
      expect(policy).toMatch(/ignore-error="true"/);
    });

    it('reads only fields of the decision contract', () => {
      const full: Decision = {
        decisionId: randomUUID(),
        decision: 'allow',
        status: 200,
        reason: 'allowed',
        message: 'The request is allowed.',
        principal: { issuer: 'https://idp.example', objectId: DEV_OBJECT_ID, tenantId: DEV_TENANT_ID, applicationId: DEV_APP_ID, fhirUser: 'Patient/1', scopes: ['patient/*.rs'] },
        dataActions: ['read'],
        compartment: 'Patient/1',
        queryAppend: 'patient=Patient/1',
        durationMs: 1,
        cacheHit: false,
      };
      const answer = decisionBody(full, false);
      expect(readPaths.length).toBeGreaterThanOrEqual(10);
      expect(readPaths.filter((p) => resolve(answer, p) === undefined)).toEqual([]);
    });

    it('rewrites a narrowed search to the decided path and query with queryAppend after it, and no parameter twice', () => {
      const rewrite = /<rewrite-uri copy-unmatched-params="false" template="@\{([\s\S]*?)\}" \/>/.exec(policy);
      expect(rewrite).not.toBeNull();
      expect(policy).toMatch(/SelectToken\("queryAppend"\) != null\)">\s*<rewrite-uri/);
      // The C# of the template, transcribed line by line.
      const lines = rewrite![1]!.trim().split('\n').map((l) => l.trim());
      expect(lines).toEqual([
        'var path = context.Request.OriginalUrl.Path;',
        'var apiPath = "/" + context.Api.Path.Trim(\'/\');',
        'if (apiPath.Length > 1) {',
        'if (path.StartsWith(apiPath + "/", StringComparison.OrdinalIgnoreCase)) { path = path.Substring(apiPath.Length); }',
        'else if (string.Equals(path, apiPath, StringComparison.OrdinalIgnoreCase)) { path = "/"; }',
        '}',
        'var query = context.Request.OriginalUrl.QueryString ?? "";',
        'if (query.StartsWith("?")) { query = query.Substring(1); }',
        'var append = (string)((JObject)context.Variables["pdpDecision"]).SelectToken("queryAppend");',
        'return path + "?" + (query.Length > 0 ? query + "&" : "") + append;',
      ]);
      const template = (originalPath: string, apiPath: string, queryString: string, append: string): string => {
        let path = originalPath;
        const api = `/${apiPath.replace(/^\/+|\/+$/g, '')}`;
        if (api.length > 1) {
          if (path.toLowerCase().startsWith(`${api.toLowerCase()}/`)) path = path.slice(api.length);
          else if (path.toLowerCase() === api.toLowerCase()) path = '/';
        }
        let query = queryString;
        if (query.startsWith('?')) query = query.slice(1);
        return `${path}?${query.length > 0 ? `${query}&` : ''}${append}`;
      };
      expect(template('/fhir/Observation', 'fhir', '', 'patient=Patient/1')).toBe('/Observation?patient=Patient/1');
      expect(template('/fhir/Observation', 'fhir', '?_count=5', 'patient=Patient/1&category=laboratory')).toBe('/Observation?_count=5&patient=Patient/1&category=laboratory');
    });

    it('removes every identity header before setting fhir-pdp values', () => {
      const deleted = [...policy.matchAll(/<set-header name="([^"]+)" exists-action="delete" \/>/g)].map((m) => m[1]!);
      expect(lower(deleted)).toEqual(lower(IDENTITY_HEADERS));
    });

    it.each([
      { name: 'an allowed read', method: 'GET', path: '/Patient/p1?_elements=name', auth: async () => [await bearer()], status: 200, reason: 'allowed' },
      { name: 'no Authorization header', method: 'GET', path: '/Patient/p1', auth: async () => [], status: 401, reason: 'missing_token' },
      { name: 'an expired token', method: 'GET', path: '/Patient/p1', auth: async () => [await bearer({ expiresInSeconds: -3600 })], status: 401, reason: 'token_expired' },
      { name: 'a DELETE not granted', method: 'DELETE', path: '/Patient/p1', auth: async () => [await bearer()], status: 403, reason: 'action_not_permitted' },
      { name: 'a caller granted nothing', method: 'GET', path: '/Patient', auth: async () => [await bearer({ oid: STRANGER_OID })], status: 403, reason: 'principal_not_allowed' },
      { name: 'two Authorization values', method: 'GET', path: '/Patient/p1', auth: async () => ['Bearer abc.def.ghi', await bearer()], status: 401, reason: 'malformed_token' },
    ])('answers $name with what the policy maps to the client', async ({ method, path, auth, status, reason }) => {
      const authorization = await auth();
      const res = await postDecide(policyBody(method, path, authorization));
      expect(res.status).toBe(200);
      const answer = jsonOf(res);
      expect(answer).toMatchObject({ status, reason });
      for (const field of ['decision', 'status', 'reason', 'message', 'decisionId']) expect(answer[field]).toBeDefined();
      expect(res.headers['x-decision-id']).toBe(answer.decisionId);
      if (status === 200) {
        expect(resolve(answer, 'principal.objectId')).toBe(DEV_OBJECT_ID);
        expect(resolve(answer, 'principal.tenantId')).toBe(DEV_TENANT_ID);
        expect(resolve(answer, 'principal.applicationId')).toBe(DEV_APP_ID);
        return;
      }
      // The challenge the policy builds is the one fhir-pdp itself sends in the gateway modes.
      const gateway = await ask({
        method: 'GET',
        path: '/api/decide',
        headers: { 'x-functions-key': API_KEY, 'x-original-method': method, 'x-original-uri': path, ...(authorization.length ? { authorization } : {}) },
      });
      expect(gateway.status).toBe(status);
      expect(gateway.headers['x-decision-reason']).toBe(reason);
      expect(policyChallenge(answer)).toBe(gateway.headers['www-authenticate']);
    });

    it.each(['/metadata', '/.well-known/smart-configuration'])('gets an allow for anonymous GET %s (SMART discovery)', async (path) => {
      const answer = jsonOf(await postDecide(policyBody('GET', path, []), API_KEY));
      expect(answer).toMatchObject({ decision: 'allow', status: 200 });
      expect(resolve(answer, 'principal')).toBeUndefined();
      // So the policy sets X-Auth-Principal only under a principal.
      expect(policy).toMatch(/SelectToken\("principal"\) != null\)">\s*<set-header name="X-Auth-Principal"/);
    });

    it.each([
      { name: 'a wrong key', body: () => policyBody('GET', '/Patient/p1', []), key: 'wrong-key' },
      { name: 'a malformed question', body: () => JSON.stringify({ path: '/Patient/p1' }), key: API_KEY },
    ])('answers $name with an HTTP status the policy treats as indeterminate', async ({ body, key }) => {
      const res = await postDecide(body(), key);
      expect(res.status).not.toBe(200);
      expect([400, 401]).toContain(res.status);
    });
  });

  describe('when fhir-pdp cannot decide in time', () => {
    it('answers 503 in every convention (Traefik relays it, Envoy maps it, the policy reads it)', async () => {
      const kid = idp.rotateKey();
      const token = await mint({ kid });
      idp.down('hang');
      try {
        const [traefik, envoy, json] = await Promise.all([
          ask({ method: 'GET', path: `/api/decide?code=${API_KEY}`, headers: { authorization: `Bearer ${token}`, 'x-forwarded-method': 'GET', 'x-forwarded-uri': '/Patient/p1' } }),
          ask({ method: 'GET', path: '/api/decide/Patient/p1', headers: { authorization: `Bearer ${token}`, 'x-functions-key': API_KEY } }),
          ask({
            method: 'POST',
            path: '/api/decide',
            headers: { 'x-functions-key': API_KEY, 'content-type': 'application/json' },
            body: JSON.stringify({ method: 'GET', path: '/Patient/p1', headers: { authorization: [`Bearer ${token}`] } }),
          }),
        ]);
        for (const res of [traefik, envoy]) {
          expect(res.status).toBe(503);
          expect(res.headers['x-decision-reason']).toBe('issuer_unavailable');
          expect(res.headers['www-authenticate']).toBeUndefined();
          for (const h of IDENTITY_HEADERS) expect(res.headers[h]).toBeUndefined();
        }
        expect(json.status).toBe(200);
        expect(jsonOf(json)).toMatchObject({ decision: 'indeterminate', status: 503, reason: 'issuer_unavailable' });
      } finally {
        idp.up();
      }
    });
  });
});
