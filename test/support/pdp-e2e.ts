/**
 * End-to-end harness for the authorization (issue #3) and SMART (issue #4) suites: a PdpService
 * behind the standalone node:http server (createPdpServer), optionally wired to the fake Graph
 * through the real Graph client, and the two ways a caller asks it over HTTP (JSON mode and
 * forward-auth). Answers are read as the contract's JSON.
 */
import { parseConfig } from '../../src/config/load.js';
import type { PdpConfig, PdpConfigInput } from '../../src/config/schema.js';
import { createGraphClient } from '../../src/directory/graph-client.js';
import { createPdpServer, listen } from '../../src/host/server.js';
import { KeyRing } from '../../src/http/keys.js';
import type { DecisionLogger } from '../../src/decision/types.js';
import { PdpService } from '../../src/app.js';
import type { SnapshotStore } from '../../src/state/types.js';
import { TestClock, askForwardAuth as askForwardAt, askJson as askJsonAt, type HttpAnswer } from './pdp-fixtures.js';
import { graphCredential, type FakeGraph } from './fake-graph.js';

export const E2E_AUDIENCE = 'https://fhir.example.test';
export const E2E_API_KEY = 'e2e-api-key-0123456789';
/** Admin callers get the operator hint; the suites assert what hints name. */
export const E2E_ADMIN_KEY = 'e2e-admin-key-0123456789';

/** The contract's JSON answer. */
export interface DecisionBody {
  readonly decision: 'allow' | 'deny' | 'indeterminate';
  readonly status: number;
  readonly reason: string;
  readonly message: string;
  readonly hint?: string;
  readonly decisionId: string;
  readonly principal?: Record<string, unknown>;
  readonly dataActions?: readonly string[];
  readonly compartment?: string;
}

export interface E2eAnswer {
  /** HTTP status of the call to /api/decide. */
  readonly httpStatus: number;
  readonly headers: Headers;
  readonly body: DecisionBody;
}

export interface JsonQuestion {
  readonly method?: string;
  readonly path: string;
  readonly token?: string;
  /** A batch/transaction Bundle, sent as the question's `body`. */
  readonly body?: unknown;
  /** Default the admin key (hints included). */
  readonly key?: string;
}

export interface ForwardQuestion {
  readonly method?: string;
  readonly uri: string;
  readonly token?: string;
  readonly key?: string;
}

export interface E2ePdp {
  readonly url: string;
  readonly service: PdpService;
  readonly config: PdpConfig;
  readonly clock: TestClock;
  /** JSON mode: POST /api/decide. */
  ask(q: JsonQuestion): Promise<E2eAnswer>;
  /** Forward-auth (nginx auth_request): X-Original-Method + X-Original-URI. */
  forward(q: ForwardQuestion): Promise<E2eAnswer>;
  close(): Promise<void>;
}

export interface StartE2eOptions {
  /** Point the service's Graph client at this fake (else no Graph, unless config.graph). */
  readonly graph?: FakeGraph;
  readonly logger?: DecisionLogger;
  /** Share another instance's snapshot store (a scaled-out instance that did not refresh itself). */
  readonly store?: SnapshotStore;
}

export async function startE2ePdp(config: PdpConfigInput, options: StartE2eOptions = {}): Promise<E2ePdp> {
  const parsed = parseConfig(config);
  const clock = new TestClock();
  const graphClient = options.graph
    ? createGraphClient({ credential: graphCredential(options.graph.token), baseUrl: options.graph.origin, timeoutMs: 2000 })
    : undefined;
  const service = new PdpService({
    config: parsed,
    clock: clock.now,
    ...(graphClient ? { graphClient } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.store ? { store: options.store } : {}),
  });
  const server = createPdpServer(service, { keys: new KeyRing([E2E_API_KEY], [E2E_ADMIN_KEY]) });
  const address = await listen(server, 0, '127.0.0.1');
  const url = `http://127.0.0.1:${address.port}`;
  await service.start();
  return {
    url,
    service,
    config: parsed,
    clock,
    ask: (q) => askJson(url, q),
    forward: (q) => askForwardAuth(url, q),
    close: async () => {
      service.stop();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function e2eAnswer(a: HttpAnswer): E2eAnswer {
  return { httpStatus: a.status, headers: a.headers, body: a.body as unknown as DecisionBody };
}

/** JSON mode, with the admin key unless another is given (hints included). */
export async function askJson(url: string, q: JsonQuestion): Promise<E2eAnswer> {
  return e2eAnswer(
    await askJsonAt(url, {
      path: q.path,
      key: q.key ?? E2E_ADMIN_KEY,
      ...(q.method !== undefined ? { method: q.method } : {}),
      ...(q.token !== undefined ? { token: q.token } : {}),
      ...(q.body !== undefined ? { body: q.body } : {}),
    }),
  );
}

/** Forward-auth (nginx auth_request), with the admin key unless another is given. */
export async function askForwardAuth(url: string, q: ForwardQuestion): Promise<E2eAnswer> {
  return e2eAnswer(
    await askForwardAt(url, {
      path: q.uri,
      key: q.key ?? E2E_ADMIN_KEY,
      ...(q.method !== undefined ? { method: q.method } : {}),
      ...(q.token !== undefined ? { token: q.token } : {}),
    }),
  );
}

/** `{reason, status}` of an answer, for one toEqual per case. */
export function outcome(a: E2eAnswer): { reason: string; status: number } {
  return { reason: a.body.reason, status: a.body.status };
}

/** A batch Bundle whose entries are `METHOD url` lines. */
export function batchBundle(type: 'batch' | 'transaction', ...entries: string[]): Record<string, unknown> {
  return {
    resourceType: 'Bundle',
    type,
    entry: entries.map((line) => {
      const [method, url] = line.split(' ') as [string, string];
      // A create or update entry carries its resource, of the type its URL names.
      const [type, id] = url.split('?')[0]!.split('/');
      const resource = method === 'POST' || method === 'PUT' ? { resource: { resourceType: type, ...(method === 'PUT' && id ? { id } : {}) } } : {};
      return { request: { method, url }, ...resource };
    }),
  };
}
