/**
 * The standalone host (`npm start`): node:http in front of the shared router. Thin: it bounds
 * what it reads, turns node's request into a PdpHttpRequest and writes the answer.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KeyRing } from '../http/keys.js';
import { route, type RoutedService, type RouteOptions } from '../http/routes.js';
import { json, type PdpHttpRequest, type PdpHttpResponse } from '../http/types.js';

export const DEFAULT_MAX_BODY_BYTES = 256 * 1024;
/** Large enough for a 16 KiB token plus other headers, so an oversized token gets a reason, not a 431. */
export const MAX_HEADER_BYTES = 64 * 1024;

export interface HostOptions {
  readonly keys: KeyRing;
  /** No keys, so bound to loopback only (src/http/routes.ts, RouteOptions). */
  readonly loopbackOnly?: boolean;
  readonly maxBodyBytes?: number;
  /** Told of every /api/decide request refused for its key. */
  readonly onKeyRefused?: RouteOptions['onKeyRefused'];
  /** PDP_AUTHZEN_PDP_URL (src/http/authzen.ts). */
  readonly authzenPdpUrl?: string;
}

interface ReadBody {
  readonly body?: Buffer;
  readonly tooLarge: boolean;
}

/** Reads the body, bounded, and calls `done` once (callbacks, not a promise: this runs per request). */
function readBody(req: IncomingMessage, limit: number, done: (body: ReadBody) => void, failed: () => void): void {
  // From the raw list: reading req.headers would build node's header object for every request.
  const declared = Number(headerValues(req.rawHeaders, 'content-length')[0] ?? NaN);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    done({ tooLarge: true });
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  req.on('data', (chunk: Buffer) => {
    if (tooLarge) return;
    size += chunk.length;
    if (size > limit) {
      tooLarge = true;
      chunks.length = 0;
      return;
    }
    chunks.push(chunk);
  });
  // A question fits one chunk as a rule; Buffer.concat would copy it all the same.
  req.on('end', () => done(tooLarge ? { tooLarge } : { body: chunks.length > 1 ? Buffer.concat(chunks) : chunks[0], tooLarge }));
  req.on('error', failed);
}

/**
 * Every value of one header, in order, from the raw header list. `req.headers` keeps only the first
 * Authorization, which would hide a second credential; `req.headersDistinct` keeps them all but
 * builds an array for every header of every request, when a decision reads three or four.
 */
export function headerValues(rawHeaders: readonly string[], name: string): string[] {
  const wanted = name.toLowerCase();
  const values: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const n = rawHeaders[i]!;
    if (n.length === wanted.length && n.toLowerCase() === wanted) values.push(rawHeaders[i + 1]!);
  }
  return values;
}

/**
 * Node's request as the router reads it. A class, not an object literal with closures: one shape
 * for every request and nothing allocated but the instance. It keeps the raw header list and the
 * socket, never the IncomingMessage, so a request held a little longer (a promise chain, a log
 * line) does not keep node's request and response objects alive past a garbage collection.
 */
class HostRequest implements PdpHttpRequest {
  readonly method: string;
  readonly url: string;
  readonly body?: Buffer;
  readonly bodyTooLarge?: boolean;
  readonly #rawHeaders: readonly string[];
  readonly #socket: IncomingMessage['socket'];

  constructor(req: IncomingMessage, body: ReadBody) {
    this.method = req.method ?? 'GET';
    this.url = req.url ?? '/';
    this.#rawHeaders = req.rawHeaders;
    this.#socket = req.socket;
    if (body.body) this.body = body.body;
    if (body.tooLarge) this.bodyTooLarge = true;
  }

  header(name: string): string[] {
    return headerValues(this.#rawHeaders, name);
  }

  /** Read only when a line is logged about this request (a refused key). */
  get remoteAddress(): string | undefined {
    return this.#socket.remoteAddress;
  }
}

export function toPdpRequest(req: IncomingMessage, body: ReadBody): PdpHttpRequest {
  return new HostRequest(req, body);
}

/**
 * The answer's headers as the flat [name, value, …] list writeHead takes, Content-Length last.
 * One writeHead with every header, no setHeader: setHeader first makes node merge the two into its
 * header map, per answer. With writeHead alone, node cannot add Content-Length at end() and falls
 * back to chunked encoding. A HEAD answer states the length its GET would have (RFC 9110 §8.6).
 */
export function headerList(answer: PdpHttpResponse): string[] {
  const list: string[] = [];
  for (const name in answer.headers) list.push(name, answer.headers[name]!);
  if (answer.body !== undefined) list.push('content-length', String(Buffer.byteLength(answer.body)));
  return list;
}

function write(res: ServerResponse, answer: PdpHttpResponse, head: boolean, closing: boolean): void {
  const headers = headerList(answer);
  // RFC 9112 §9.6: a server that is going to close the connection after this response sends
  // "Connection: close", so the client opens a new connection (to another instance) for its next request.
  if (closing) headers.push('connection', 'close');
  res.writeHead(answer.status, headers);
  res.end(head ? undefined : answer.body);
}

/** What a host's shutdown needs to know of its server: whether it drains, and how many requests are open. */
interface ServerState {
  draining: boolean;
  inFlight: number;
}

const serverStates = new WeakMap<Server, ServerState>();

export interface DrainResult {
  /** Requests being answered when the drain began. */
  readonly inFlightAtStart: number;
  /** Requests still unanswered at the drain timeout, whose connections were then closed. */
  readonly cutAtTimeout: number;
}

/**
 * Stops a server the way a rolling deploy needs: no new connections, every request already
 * received is answered (with `Connection: close`), idle keep-alive connections are closed now, and
 * whatever is still open after `timeoutMs` is closed. Resolves when every connection is gone.
 */
export function drainServer(server: Server, timeoutMs: number): Promise<DrainResult> {
  const state = serverStates.get(server) ?? { draining: false, inFlight: 0 };
  state.draining = true;
  const inFlightAtStart = state.inFlight;
  return new Promise((resolve) => {
    let cutAtTimeout = 0;
    const timer = setTimeout(() => {
      cutAtTimeout = state.inFlight;
      server.closeAllConnections();
    }, timeoutMs);
    // close() stops accepting; its callback runs once the last connection has ended.
    server.close(() => {
      clearTimeout(timer);
      resolve({ inFlightAtStart, cutAtTimeout });
    });
    server.closeIdleConnections();
  });
}

const INTERNAL_ERROR = json(500, { error: 'internal_error' });

export function createPdpServer(service: RoutedService, options: HostOptions): Server {
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const routeOptions: RouteOptions = { keys: options.keys, loopbackOnly: options.loopbackOnly === true, ...(options.onKeyRefused ? { onKeyRefused: options.onKeyRefused } : {}), ...(options.authzenPdpUrl ? { authzenPdpUrl: options.authzenPdpUrl } : {}) };
  const state: ServerState = { draining: false, inFlight: 0 };
  const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
    state.inFlight++;
    let open = true;
    // Never an unhandled rejection (which would end the process): a failure before the answer is
    // written is a 500; one after its head went out ends the connection.
    const failed = (): void => {
      if (open) state.inFlight--;
      open = false;
      if (res.headersSent) res.destroy();
      else write(res, INTERNAL_ERROR, false, state.draining);
    };
    const answered = (answer: PdpHttpResponse): void => {
      try {
        write(res, answer, req.method === 'HEAD', state.draining);
      } catch {
        failed();
        return;
      }
      state.inFlight--;
      open = false;
    };
    readBody(req, maxBody, (body) => route(service, toPdpRequest(req, body), routeOptions).then(answered, failed), failed);
  });
  serverStates.set(server, state);
  server.keepAliveTimeout = 65_000;
  return server;
}

export function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}
