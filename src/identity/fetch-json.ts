/**
 * Bounded JSON fetch for discovery documents and JWKS: a timeout, a size limit enforced while
 * reading (a lying or absent Content-Length cannot make us buffer more), no redirects to other
 * schemes, and every failure thrown as a FetchJsonError with a stable code.
 */
import { isLoopbackHost } from '../core/loopback.js';

export class FetchJsonError extends Error {
  constructor(
    readonly code: 'timeout' | 'network' | 'http_status' | 'too_large' | 'not_json' | 'insecure_url',
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'FetchJsonError';
  }
}

export interface FetchJsonOptions {
  readonly timeoutMs: number;
  readonly maxBytes: number;
  readonly fetch?: typeof fetch;
}

export function isAllowedFetchUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopbackHost(url.hostname));
  } catch {
    return false;
  }
}

export async function fetchJson(url: string, options: FetchJsonOptions): Promise<unknown> {
  if (!isAllowedFetchUrl(url)) throw new FetchJsonError('insecure_url', `refusing to fetch ${url}: https (or loopback http) required`);
  const doFetch = options.fetch ?? fetch;
  let res: Response;
  try {
    res = await doFetch(url, {
      headers: { accept: 'application/json' },
      redirect: 'error',
      signal: AbortSignal.timeout(options.timeoutMs),
    });
  } catch (err) {
    const e = err as Error;
    if (e.name === 'TimeoutError') throw new FetchJsonError('timeout', `${url}: no answer within ${options.timeoutMs} ms`);
    throw new FetchJsonError('network', `${url}: ${describeNetworkError(e)}`);
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw new FetchJsonError('http_status', `${url}: HTTP ${res.status}`, res.status);
  }
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > options.maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    throw new FetchJsonError('too_large', `${url}: ${declared} bytes exceeds the limit of ${options.maxBytes}`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    if (res.body) {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        total += chunk.byteLength;
        if (total > options.maxBytes) throw new FetchJsonError('too_large', `${url}: more than ${options.maxBytes} bytes`);
        chunks.push(chunk);
      }
    }
  } catch (err) {
    if (err instanceof FetchJsonError) throw err;
    const e = err as Error;
    throw new FetchJsonError(e.name === 'TimeoutError' ? 'timeout' : 'network', `${url}: ${describeNetworkError(e)}`);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new FetchJsonError('not_json', `${url}: the answer is not JSON`);
  }
}

function describeNetworkError(err: Error): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? err.message;
}
