/**
 * The HTTP shape every host speaks: the standalone node:http server and the Azure Functions adapter
 * both turn their requests into a PdpHttpRequest and write a PdpHttpResponse back, so routing,
 * modes, keys and the mapping of decisions to HTTP exist once.
 */
export interface PdpHttpRequest {
  readonly method: string;
  /** Path and query as received, e.g. `/api/decide/Patient/1?x=y`. */
  readonly url: string;
  /** Every value of a header, by lower-case name (a repeated header keeps all its values). */
  header(name: string): readonly string[];
  /** The body, already bounded by the host; undefined when there is none. */
  readonly body?: Buffer;
  /** True when the host had to stop reading because the body exceeded the limit. */
  readonly bodyTooLarge?: boolean;
  /** The peer's address (for a gateway, the gateway's), for operational log lines. */
  readonly remoteAddress?: string;
}

export interface PdpHttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string;
}

export function firstHeader(req: PdpHttpRequest, name: string): string | undefined {
  return req.header(name)[0];
}

export function json(status: number, value: unknown, headers: Record<string, string> = {}): PdpHttpResponse {
  return jsonText(status, JSON.stringify(value), headers);
}

/** An answer whose JSON text is already made (src/http/answer.ts). */
export function jsonText(status: number, body: string, headers: Record<string, string> = {}): PdpHttpResponse {
  const all: Record<string, string> = { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' };
  for (const name in headers) all[name] = headers[name]!;
  return { status, headers: all, body };
}
