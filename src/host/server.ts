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

const NO_VALUES: readonly string[] = Object.freeze([]);

/**
 * Every value of a header, in order, from node's raw header list. `req.headers` keeps only the
 * first Authorization, which would hide a second credential; `req.headersDistinct` keeps them all
 * but builds an array for every header of every request, when a decision reads three or four.
 * A name is lowercased only when its length is the wanted one's: a decision looks up eight or so
 * names, nearly all absent.
 */
export class RawHeaders {
  readonly #raw: readonly string[];

  constructor(raw: readonly string[]) {
    this.#raw = raw;
  }

  values(name: string): readonly string[] {
    const raw = this.#raw;
    const wanted = name.toLowerCase();
    let values: string[] | undefined;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const n = raw[i]!;
      if (n.length === wanted.length && (n === wanted || n.toLowerCase() === wanted)) (values ??= []).push(raw[i + 1]!);
    }
    // Most lookups find nothing (a JSON question has no X-Original-URI, no traceparent, …).
    return values ?? NO_VALUES;
  }
}

/** Reads the body, bounded, and calls `done` once (callbacks, not a promise: this runs per request). */
function readBody(req: IncomingMessage, headers: RawHeaders, limit: number, done: (body: ReadBody) => void, failed: () => void): void {
  const declared = Number(headers.values('content-length')[0] ?? NaN);
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
 * Node's request as the router reads it. A class, not an object literal with closures: one shape
 * for every request and nothing allocated but the instance. It keeps the raw headers and the
 * socket, never the IncomingMessage, so a request held a little longer (a promise chain, a log
 * line) does not keep node's request and response objects alive past a garbage collection.
 */
class HostRequest implements PdpHttpRequest {
  readonly method: string;
  readonly url: string;
  readonly body?: Buffer;
  readonly bodyTooLarge?: boolean;
  readonly #headers: RawHeaders;
  readonly #socket: IncomingMessage['socket'];

  constructor(req: IncomingMessage, headers: RawHeaders, body: ReadBody) {
    this.method = req.method ?? 'GET';
    this.url = req.url ?? '/';
    this.#headers = headers;
    this.#socket = req.socket;
    if (body.body) this.body = body.body;
    if (body.tooLarge) this.bodyTooLarge = true;
  }

  header(name: string): readonly string[] {
    return this.#headers.values(name);
  }

  /** Read only when a line is logged about this request (a refused key). */
  get remoteAddress(): string | undefined {
    return this.#socket.remoteAddress;
  }
}

export function toPdpRequest(req: IncomingMessage, headers: RawHeaders, body: ReadBody): PdpHttpRequest {
  return new HostRequest(req, headers, body);
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
  // A string, not a Buffer: node writes the head and a string body as one string; Buffer.from
  // took a slice of node's buffer pool and made a second chunk (6% fewer answers a second at peak).
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

/**
 * Answers decided in one event-loop turn, written together at its end (setImmediate runs after
 * the turn's I/O callbacks and their microtasks). Why: on loopback, as with a gateway beside the
 * service (a sidecar, nginx on the same node), each answer written to a client that waits in
 * epoll wakes it, and that wake-up is paid by the writer: at wrk's peak it was a fifth of the
 * host's CPU per request. Written in a burst, the answers of a turn find the client awake after
 * the first. An answer waits at most for the rest of its turn's requests to be decided
 * (bench/PROFILE.md, seventh pass).
 */
export class AnswerBatch {
  #pending: Array<() => void> = [];
  readonly #flush = (): void => {
    const pending = this.#pending;
    this.#pending = [];
    for (const write of pending) write();
  };

  add(write: () => void): void {
    if (this.#pending.push(write) === 1) setImmediate(this.#flush);
  }
}

export function createPdpServer(service: RoutedService, options: HostOptions): Server {
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const routeOptions: RouteOptions = { keys: options.keys, loopbackOnly: options.loopbackOnly === true, ...(options.onKeyRefused ? { onKeyRefused: options.onKeyRefused } : {}), ...(options.authzenPdpUrl ? { authzenPdpUrl: options.authzenPdpUrl } : {}) };
  const state: ServerState = { draining: false, inFlight: 0 };
  const batch = new AnswerBatch();
  const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
    state.inFlight++;
    let open = true;
    // Never an unhandled rejection (which would end the process): a failure before the answer is
    // written is a 500; one after its head went out ends the connection.
    const failed = (): void => {
      if (open) state.inFlight--;
      open = false;
      if (res.headersSent) res.destroy();
      else {
        try {
          write(res, INTERNAL_ERROR, false, state.draining);
        } catch {
          res.destroy();
        }
      }
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
    const decided = (answer: PdpHttpResponse): void => batch.add(() => answered(answer));
    const headers = new RawHeaders(req.rawHeaders);
    readBody(
      req,
      headers,
      maxBody,
      (body) => {
        const answer = route(service, toPdpRequest(req, headers, body), routeOptions);
        if (answer instanceof Promise) answer.then(decided, failed);
        else decided(answer);
      },
      failed,
    );
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
