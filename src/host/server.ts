/**
 * The standalone host (`npm start`): node:http in front of the shared router. Thin: it bounds
 * what it reads, turns node's request into a PdpHttpRequest and writes the answer.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KeyRing } from '../http/keys.js';
import { route, type PdpRuntime } from '../http/routes.js';
import { json, type PdpHttpRequest, type PdpHttpResponse } from '../http/types.js';

export const DEFAULT_MAX_BODY_BYTES = 256 * 1024;
/** Large enough for a 16 KiB token plus other headers, so an oversized token gets a reason, not a 431. */
export const MAX_HEADER_BYTES = 64 * 1024;

export interface HostOptions {
  readonly keys: KeyRing;
  readonly maxBodyBytes?: number;
}

function readBody(req: IncomingMessage, limit: number): Promise<{ body?: Buffer; tooLarge: boolean }> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume();
      resolve({ tooLarge: true });
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
    req.on('end', () => resolve(tooLarge ? { tooLarge } : { body: chunks.length ? Buffer.concat(chunks) : undefined, tooLarge }));
    req.on('error', reject);
  });
}

export function toPdpRequest(req: IncomingMessage, body: { body?: Buffer; tooLarge: boolean }): PdpHttpRequest {
  // headersDistinct keeps every value of a repeated header; `req.headers` keeps only the first
  // Authorization, which would hide a second credential.
  const distinct = req.headersDistinct;
  return {
    method: req.method ?? 'GET',
    url: req.url ?? '/',
    header: (name) => distinct[name.toLowerCase()] ?? [],
    ...(body.body ? { body: body.body } : {}),
    ...(body.tooLarge ? { bodyTooLarge: true } : {}),
  };
}

function write(res: ServerResponse, answer: PdpHttpResponse, head: boolean): void {
  res.writeHead(answer.status, answer.headers);
  res.end(head ? undefined : answer.body);
}

export function createPdpServer(runtime: PdpRuntime, options: HostOptions): Server {
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
    readBody(req, maxBody)
      .then((body) => route(runtime, toPdpRequest(req, body), { keys: options.keys }))
      .then(
        (answer) => write(res, answer, req.method === 'HEAD'),
        () => write(res, json(500, { error: 'internal_error' }), false),
      );
  });
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
