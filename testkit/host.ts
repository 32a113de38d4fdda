/**
 * The standalone host as `npm start` composes it from app settings (`startHost`) on 127.0.0.1:0
 * (the PdpService alone behind node:http, with a clock the test moves, is testkit/service.ts), a
 * raw HTTP client that sends headers exactly as a gateway would (repeated headers, a foreign Host),
 * and the configuration snippets of docs/gateways.md, so the tests exercise the very text operators
 * copy.
 */
import { readFileSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { startHost, type StartedHost } from '../src/host/main.js';

export const GATEWAYS_DOC = new URL('../docs/gateways.md', import.meta.url);

/** The identity headers fhir-pdp sets on an allow (src/http/decide-api.ts, gatewayAnswer). */
export const IDENTITY_HEADERS = [
  'x-auth-principal',
  'x-auth-tenant',
  'x-auth-application',
  'x-auth-fhir-user',
  'x-auth-scopes',
  'x-auth-compartment',
] as const;

export type SnippetName = 'nginx' | 'nginx-smart-configuration' | 'traefik-static' | 'traefik-dynamic' | 'envoy' | 'apim';

/**
 * The fenced code block that follows `<!-- snippet: NAME -->` in a doc. Throws when the marker is
 * missing or repeated or the fence does not follow it, so a docs edit that drops a tested snippet
 * fails the tests.
 */
export function fencedSnippet(doc: URL, name: string): string {
  const text = readFileSync(doc, 'utf8');
  const file = doc.pathname.split('/').slice(-2).join('/');
  const marker = `<!-- snippet: ${name} -->`;
  const at = text.indexOf(marker);
  if (at < 0 || text.indexOf(marker, at + marker.length) >= 0) throw new Error(`${file} must hold exactly one "${marker}"`);
  const fence = /^```[a-z]*\n([\s\S]*?)^```$/m.exec(text.slice(at + marker.length));
  if (!fence || fence.index > 2) throw new Error(`"${marker}" must be followed directly by a fenced code block`);
  return fence[1]!;
}

/** A snippet of docs/gateways.md. */
export function docSnippet(name: SnippetName): string {
  return fencedSnippet(GATEWAYS_DOC, name);
}

/** Replaces a placeholder that must occur exactly `times` times, so a renamed placeholder fails loudly. */
export function substitute(text: string, placeholder: string, value: string, times = 1): string {
  const parts = text.split(placeholder);
  if (parts.length - 1 !== times) throw new Error(`expected "${placeholder}" ${times} time(s) in the snippet, found ${parts.length - 1}`);
  return parts.join(value);
}

export interface PdpHostOptions {
  readonly config: Record<string, unknown>;
  /** Extra app settings (PDP_API_KEYS, PDP_ADMIN_KEYS, PDP_LOG_DECISIONS...). */
  readonly settings?: Readonly<Record<string, string>>;
  readonly log?: (line: string) => void;
}

/** The standalone host on 127.0.0.1, any free port, decision logs off unless asked for. */
export function startPdpHost(options: PdpHostOptions): Promise<StartedHost> {
  return startHost(
    {
      PORT: '0',
      PDP_HOST: '127.0.0.1',
      PDP_LOG_DECISIONS: 'false',
      PDP_CONFIG: JSON.stringify(options.config),
      ...options.settings,
    },
    options.log ?? (() => undefined),
  );
}

export interface RawResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

export interface RawRequest {
  readonly method?: string;
  readonly path: string;
  /** A header given as an array is sent as that many header lines, in order. */
  readonly headers?: Readonly<Record<string, string | readonly string[]>>;
  readonly body?: string | Buffer;
}

/** One HTTP/1.1 request with exactly these headers (node:http; fetch would merge repeated ones). */
export function rawRequest(origin: string, req: RawRequest): Promise<RawResponse> {
  const url = new URL(origin);
  return new Promise((resolve, reject) => {
    const outgoing = request(
      {
        host: url.hostname,
        port: url.port,
        method: req.method ?? 'GET',
        path: req.path,
        headers: { ...(req.headers as Record<string, string | string[]>) },
        agent: false,
        timeout: 20_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    outgoing.on('timeout', () => outgoing.destroy(new Error(`no answer from ${origin}${req.path}`)));
    outgoing.on('error', reject);
    outgoing.end(req.body);
  });
}

export function jsonOf(res: RawResponse): Record<string, unknown> {
  return JSON.parse(res.body) as Record<string, unknown>;
}
