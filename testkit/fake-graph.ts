/**
 * A fake Microsoft Graph on 127.0.0.1 that speaks Graph's wire format, for tests of
 * src/directory/ through the real `@microsoft/microsoft-graph-client`.
 *
 * Endpoints (all under /v1.0, bearer required):
 * - POST {directoryObjects|users|servicePrincipals|groups}/{id}/checkMemberGroups  {groupIds ≤ 20}
 * - POST {…}/{id}/getMemberObjects                                               {securityEnabledOnly}
 * - GET  groups/{id}/transitiveMembers and groups/{id}/members, `$select`, `$top` (≤ 999, default
 *        100), `@odata.nextLink` with `$skiptoken`
 * - POST $batch (≤ 20 requests, responses in a different order than asked)
 * - GET  directoryObjects/{id} with `@odata.type`
 * Links name https://graph.microsoft.com, as Graph's do; errors use Graph's error body.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AccessToken, TokenCredential } from '@azure/identity';
import { closeServer, listenOnLoopback } from './loopback.js';

const GRAPH = 'https://graph.microsoft.com/v1.0';
const JSON_TYPE = 'application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8';
const MAX_BODY_BYTES = 1 << 20;
const MAX_CHECK_GROUPS = 20;
const MAX_BATCH_REQUESTS = 20;
const MAX_PAGE_SIZE = 999;
const DEFAULT_PAGE_SIZE = 100;

export type DirectoryObjectType = 'user' | 'group' | 'servicePrincipal' | 'application';

export type Fault =
  | { readonly status: 429; readonly retryAfterSeconds: number }
  | { readonly status: 503; readonly retryAfterSeconds?: number };

/**
 * A 200 answer gone wrong: `padBytes` adds a property of that many bytes (a faulty proxy, an
 * oversized page); `nextLink: 'self'` makes the page's `@odata.nextLink` name the page itself,
 * `'first'` makes a later page's (one asked for with a `$skiptoken`) name the first page (a cycle).
 */
export type Tamper = { readonly padBytes: number } | { readonly nextLink: 'self' | 'first' };

/**
 * Which requests a fault or a count applies to. `path` is the full path with /v1.0 (a string must
 * be contained in it). A fault without `path` hits the next top-level request only; with `path`
 * it also hits `$batch` sub-requests.
 */
export interface RequestMatch {
  readonly method?: string;
  readonly path?: string | RegExp;
  /** For counts: only sub-requests of a `$batch` (true) or only top-level requests (false). */
  readonly inBatch?: boolean;
}

export interface LoggedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly inBatch: boolean;
  readonly status: number;
}

export interface FakeGraphOptions {
  /** The bearer the fake accepts. Default 'fake-graph-token'. */
  readonly token?: string;
}

export interface NewObject {
  readonly id?: string;
  readonly displayName?: string;
}

export interface FakeGraph {
  /** http://127.0.0.1:port — pass as the graph client's baseUrl. */
  readonly origin: string;
  readonly token: string;
  addUser(object?: NewObject): string;
  addServicePrincipal(object?: NewObject & { readonly appId?: string }): string;
  addApplication(object?: NewObject & { readonly appId?: string }): string;
  addGroup(object?: NewObject): string;
  /** Direct membership; a member may be a user, a service principal or another group. */
  addMember(groupId: string, memberId: string): void;
  removeMember(groupId: string, memberId: string): void;
  /** The next `count` matching requests get `fault` instead of an answer. */
  failNext(count: number, fault: Fault, match?: RequestMatch): void;
  /** The next `count` matching top-level 200 answers are altered as `tamper` says. */
  tamperNext(count: number, tamper: Tamper, match?: RequestMatch): void;
  /** 'refuse' closes the listener (connection refused); '503' answers every request with 503. */
  down(mode?: 'refuse' | '503'): Promise<void>;
  up(): Promise<void>;
  readonly requests: readonly LoggedRequest[];
  count(match?: RequestMatch): number;
  clearLog(): void;
  close(): Promise<void>;
}

/** A TokenCredential that always returns `token` (what @azure/identity would hand the client). */
export function graphCredential(token: string): TokenCredential {
  return {
    getToken: async (): Promise<AccessToken> => ({ token, expiresOnTimestamp: Date.now() + 3_600_000 }),
  };
}

interface DirectoryObject {
  readonly id: string;
  readonly type: DirectoryObjectType;
  readonly displayName: string;
  readonly appId?: string;
}

interface FaultRule {
  remaining: number;
  readonly fault: Fault;
  readonly match: RequestMatch | undefined;
}

interface Reply {
  readonly status: number;
  readonly headers?: Record<string, string>;
  readonly body?: unknown;
}

export async function startFakeGraph(options: FakeGraphOptions = {}): Promise<FakeGraph> {
  const token = options.token ?? 'fake-graph-token';

  const objects = new Map<string, DirectoryObject>();
  const members = new Map<string, Set<string>>(); // group -> direct members
  const parents = new Map<string, Set<string>>(); // object -> groups it is a direct member of
  const faults: FaultRule[] = [];
  const tampers: { remaining: number; readonly tamper: Tamper; readonly match: RequestMatch | undefined }[] = [];
  const log: LoggedRequest[] = [];
  let mode: 'up' | 'refuse' | '503' = 'up';

  const add = (type: DirectoryObjectType, object: NewObject & { appId?: string }): string => {
    const id = (object.id ?? randomUUID()).toLowerCase();
    if (objects.has(id)) throw new Error(`fake graph: ${id} exists`);
    objects.set(id, {
      id,
      type,
      displayName: object.displayName ?? `${type} ${id.slice(0, 8)}`,
      ...(type === 'servicePrincipal' || type === 'application' ? { appId: object.appId ?? randomUUID() } : {}),
    });
    if (type === 'group') members.set(id, new Set());
    return id;
  };

  const transitiveMembers = (groupId: string): string[] => {
    const seen = new Set<string>();
    const queue = [groupId];
    while (queue.length > 0) {
      for (const member of members.get(queue.shift() as string) ?? []) {
        if (seen.has(member) || member === groupId) continue;
        seen.add(member);
        if (members.has(member)) queue.push(member);
      }
    }
    return [...seen];
  };

  const transitiveGroups = (objectId: string): Set<string> => {
    const seen = new Set<string>();
    const queue = [objectId];
    while (queue.length > 0) {
      for (const group of parents.get(queue.shift() as string) ?? []) {
        if (seen.has(group)) continue;
        seen.add(group);
        queue.push(group);
      }
    }
    return seen;
  };

  const ref = (id: string, withName: boolean): Record<string, unknown> => {
    const object = objects.get(id);
    const type = object?.type ?? 'user';
    return {
      '@odata.type': `#microsoft.graph.${type}`,
      id,
      ...(withName && object ? { displayName: object.displayName } : {}),
    };
  };

  const graphError = (status: number, code: string, message: string, headers?: Record<string, string>): Reply => {
    const requestId = randomUUID();
    return {
      status,
      ...(headers ? { headers } : {}),
      body: {
        error: {
          code,
          message,
          innerError: { date: new Date().toISOString().slice(0, 19), 'request-id': requestId, 'client-request-id': requestId },
        },
      },
    };
  };

  const notFound = (id: string): Reply =>
    graphError(404, 'Request_ResourceNotFound', `Resource '${id}' does not exist or one of its queried reference-property objects are not present.`);

  const badRequest = (message: string): Reply => graphError(400, 'Request_BadRequest', message);

  const matches = (match: RequestMatch, method: string, path: string): boolean =>
    (match.method === undefined || match.method.toUpperCase() === method) &&
    (match.path === undefined ||
      (typeof match.path === 'string' ? path.includes(match.path) : match.path.test(path)));

  const takeFault = (method: string, path: string, inBatch: boolean): Fault | undefined => {
    const rule = faults.find(
      (candidate) =>
        candidate.remaining > 0 &&
        (candidate.match?.path === undefined ? !inBatch : true) &&
        matches(candidate.match ?? {}, method, path),
    );
    if (!rule) return undefined;
    rule.remaining -= 1;
    return rule.fault;
  };

  const faultReply = (fault: Fault): Reply => {
    const retryAfter =
      fault.retryAfterSeconds !== undefined ? { 'Retry-After': String(fault.retryAfterSeconds) } : undefined;
    return fault.status === 429
      ? graphError(429, 'TooManyRequests', 'Too many requests.', retryAfter)
      : graphError(503, 'serviceNotAvailable', 'Service unavailable.', retryAfter);
  };

  const page = (items: readonly unknown[], url: URL, context: string, pathForLinks: string): Reply => {
    const topParam = url.searchParams.get('$top');
    const top = topParam === null ? DEFAULT_PAGE_SIZE : Number(topParam);
    if (!Number.isInteger(top) || top < 1 || top > MAX_PAGE_SIZE) return badRequest('Invalid page size specified.');
    const skipToken = url.searchParams.get('$skiptoken');
    const offset = skipToken === null ? 0 : decodeToken(skipToken)?.offset;
    if (typeof offset !== 'number') return badRequest('Invalid skip token.');
    const slice = items.slice(offset, offset + top);
    const next = offset + top < items.length;
    const query = new URLSearchParams();
    for (const [key, value] of url.searchParams) if (key !== '$skiptoken') query.set(key, value);
    query.set('$skiptoken', encodeToken({ offset: offset + top }));
    return {
      status: 200,
      body: {
        '@odata.context': `${GRAPH}/$metadata#${context}`,
        ...(next ? { '@odata.nextLink': `${GRAPH}${pathForLinks}?${decodeURIComponent(query.toString())}` } : {}),
        value: slice,
      },
    };
  };

  const route = (method: string, url: URL, body: unknown): Reply => {
    const path = url.pathname;
    if (!path.startsWith('/v1.0/')) return graphError(400, 'BadRequest', 'Invalid version.');
    const segments = path.slice('/v1.0/'.length).split('/').map(decodeURIComponent);
    const [collection, id, action] = segments;
    const objectCollections = ['directoryObjects', 'users', 'servicePrincipals', 'groups'];

    if (method === 'POST' && segments.length === 3 && objectCollections.includes(collection as string) &&
        (action === 'checkMemberGroups' || action === 'getMemberObjects')) {
      const object = objects.get((id as string).toLowerCase());
      if (!object || (collection !== 'directoryObjects' && `${object.type}s` !== collection)) return notFound(id as string);
      const groups = transitiveGroups(object.id);
      if (action === 'getMemberObjects') {
        return { status: 200, body: { '@odata.context': `${GRAPH}/$metadata#Collection(Edm.String)`, value: [...groups] } };
      }
      const groupIds = (body as { groupIds?: unknown } | undefined)?.groupIds;
      if (!Array.isArray(groupIds) || !groupIds.every((g) => typeof g === 'string')) {
        return badRequest("Invalid value for 'groupIds'.");
      }
      if (groupIds.length > MAX_CHECK_GROUPS) return badRequest(`At most ${MAX_CHECK_GROUPS} groups can be checked per request.`);
      return {
        status: 200,
        body: {
          '@odata.context': `${GRAPH}/$metadata#Collection(Edm.String)`,
          value: groupIds.filter((g) => groups.has(g.toLowerCase())),
        },
      };
    }

    if (method === 'GET' && collection === 'groups' && segments.length === 3 &&
        (action === 'transitiveMembers' || action === 'members')) {
      const groupId = (id as string).toLowerCase();
      if (!members.has(groupId)) return notFound(id as string);
      const select = url.searchParams.get('$select');
      const ids = action === 'members' ? [...(members.get(groupId) as Set<string>)] : transitiveMembers(groupId);
      const withName = select === null || select.split(',').includes('displayName');
      return page(ids.map((m) => ref(m, withName)), url, select === null ? 'directoryObjects' : `directoryObjects(${select})`, `/groups/${groupId}/${action}`);
    }

    if (method === 'GET' && collection === 'directoryObjects' && segments.length === 2) {
      const object = objects.get((id as string).toLowerCase());
      if (!object) return notFound(id as string);
      return {
        status: 200,
        body: {
          '@odata.context': `${GRAPH}/$metadata#directoryObjects/$entity`,
          '@odata.type': `#microsoft.graph.${object.type}`,
          id: object.id,
          displayName: object.displayName,
          ...(object.appId !== undefined ? { appId: object.appId } : {}),
        },
      };
    }

    return graphError(400, 'BadRequest', `Resource not found for the segment '${collection ?? ''}'.`);
  };

  const dispatch = (method: string, url: URL, body: unknown, inBatch: boolean): Reply => {
    const fault = takeFault(method, url.pathname, inBatch);
    const reply = fault ? faultReply(fault) : route(method, url, body);
    if (inBatch) log.push({ method, path: url.pathname, query: url.search, inBatch, status: reply.status });
    return reply;
  };

  const batch = (body: unknown): Reply => {
    const requests = (body as { requests?: unknown } | undefined)?.requests;
    if (!Array.isArray(requests) || requests.length === 0) return badRequest('Invalid batch payload format.');
    if (requests.length > MAX_BATCH_REQUESTS) {
      return graphError(400, 'BadRequest', `Limit of ${MAX_BATCH_REQUESTS} requests in a batch exceeded.`);
    }
    const responses = requests.map((request: unknown) => {
      const { id, method, url } = (request ?? {}) as { id?: unknown; method?: unknown; url?: unknown };
      if (typeof id !== 'string' || typeof method !== 'string' || typeof url !== 'string' || !url.startsWith('/')) {
        return { id: String(id), status: 400, body: badRequest('Invalid batch request.').body };
      }
      const reply = dispatch(method.toUpperCase(), new URL(`/v1.0${url}`, 'http://fake'), (request as { body?: unknown }).body, true);
      return { id, status: reply.status, headers: { 'Content-Type': JSON_TYPE, ...reply.headers }, body: reply.body };
    });
    // Graph answers batch steps in any order; clients must match them by id.
    return { status: 200, body: { responses: responses.reverse() } };
  };

  const tampered = (reply: Reply, method: string, url: URL): Reply => {
    if (reply.status !== 200 || reply.body === null || typeof reply.body !== 'object') return reply;
    const later = url.searchParams.has('$skiptoken');
    const rule = tampers.find(
      (t) => t.remaining > 0 && matches(t.match ?? {}, method, url.pathname) && (!('nextLink' in t.tamper) || t.tamper.nextLink === 'self' || later),
    );
    if (!rule) return reply;
    rule.remaining -= 1;
    const body = reply.body as Record<string, unknown>;
    const { tamper } = rule;
    if ('padBytes' in tamper) return { ...reply, body: { ...body, padding: 'x'.repeat(tamper.padBytes) } };
    const self = `${GRAPH}${url.pathname.slice('/v1.0'.length)}${decodeURIComponent(url.search)}`;
    const first = new URL(self);
    first.searchParams.delete('$skiptoken');
    return { ...reply, body: { ...body, '@odata.nextLink': tamper.nextLink === 'self' ? self : decodeURIComponent(first.toString()) } };
  };

  const send = (res: ServerResponse, reply: Reply, clientRequestId: string | undefined): void => {
    const payload = reply.body === undefined ? '' : JSON.stringify(reply.body);
    res.writeHead(reply.status, {
      'Content-Type': JSON_TYPE,
      'request-id': randomUUID(),
      'client-request-id': clientRequestId ?? randomUUID(),
      ...reply.headers,
    });
    res.end(payload);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = new URL(req.url ?? '/', 'http://fake');
    const clientRequestId = typeof req.headers['client-request-id'] === 'string' ? req.headers['client-request-id'] : undefined;
    const raw = await readBody(req);
    if (raw === undefined) {
      send(res, graphError(413, 'Request_EntityTooLarge', 'The request is too large.'), clientRequestId);
      return;
    }
    const reply = ((): Reply => {
      if (mode === '503') return faultReply({ status: 503 });
      if (req.headers.authorization !== `Bearer ${token}`) {
        const missing = req.headers.authorization === undefined;
        return graphError(401, 'InvalidAuthenticationToken', missing ? 'Access token is empty.' : 'Access token validation failure.', {
          'WWW-Authenticate': 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"',
        });
      }
      let body: unknown;
      if (raw.length > 0) {
        try {
          body = JSON.parse(raw);
        } catch {
          return badRequest('Unable to read JSON request payload.');
        }
      }
      if (method === 'POST' && url.pathname === '/v1.0/$batch') {
        const fault = takeFault(method, url.pathname, false);
        return fault ? faultReply(fault) : batch(body);
      }
      return dispatch(method, url, body, false);
    })();
    log.push({ method, path: url.pathname, query: url.search, inBatch: false, status: reply.status });
    send(res, tampered(reply, method, url), clientRequestId);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  const port = await listenOnLoopback(server);

  return {
    origin: `http://127.0.0.1:${port}`,
    token,
    addUser: (object = {}) => add('user', object),
    addServicePrincipal: (object = {}) => add('servicePrincipal', object),
    addApplication: (object = {}) => add('application', object),
    addGroup: (object = {}) => add('group', object),
    addMember(groupId, memberId) {
      const group = members.get(groupId.toLowerCase());
      const member = memberId.toLowerCase();
      if (!group) throw new Error(`fake graph: no group ${groupId}`);
      const object = objects.get(member);
      if (!object) throw new Error(`fake graph: no object ${memberId}`);
      if (object.type === 'application') throw new Error('fake graph: applications cannot be group members');
      group.add(member);
      const set = parents.get(member) ?? new Set<string>();
      set.add(groupId.toLowerCase());
      parents.set(member, set);
    },
    removeMember(groupId, memberId) {
      const member = memberId.toLowerCase();
      members.get(groupId.toLowerCase())?.delete(member);
      parents.get(member)?.delete(groupId.toLowerCase());
    },
    failNext(count, fault, match) {
      faults.push({ remaining: count, fault, match });
    },
    tamperNext(count, tamper, match) {
      tampers.push({ remaining: count, tamper, match });
    },
    async down(downMode = 'refuse') {
      if (downMode === '503') {
        mode = '503';
        return;
      }
      if (mode === 'refuse') return;
      mode = 'refuse';
      await closeServer(server);
    },
    async up() {
      if (mode === 'refuse') await listenOnLoopback(server, port);
      mode = 'up';
    },
    get requests() {
      return log;
    },
    count(match = {}) {
      return log.filter(
        (entry) =>
          (match.inBatch === undefined || entry.inBatch === match.inBatch) && matches(match, entry.method, entry.path),
      ).length;
    },
    clearLog() {
      log.length = 0;
    },
    async close() {
      if (mode === 'refuse') return;
      await closeServer(server);
      mode = 'refuse';
    },
  };
}

/** The body as text, or undefined when it is larger than MAX_BODY_BYTES. */
async function readBody(req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function encodeToken(value: Record<string, unknown>): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function decodeToken(token: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    return value !== null && typeof value === 'object' ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
