/**
 * The compartment lookup against a FHIR server's search API: for a read by id the URL cannot place,
 * `GET {base}/{type}?_id={id}&{patient|subject}=Patient/{patient}&_summary=count` with fhir-pdp's
 * own token, found when the searchset Bundle's `total` is at least 1.
 *
 * Answers are cached (AnswerCache), identical lookups in flight share one request, and anything
 * but a well-formed count (a timeout, a non-2xx status, a redirect, a body that is not a searchset
 * Bundle with a numeric total, a body over maxResponseBytes) is a CompartmentLookupError: the
 * decision is indeterminate, never an allow.
 */
import { compartmentQuestionKey, type CompartmentQuestion } from '../core/compartment-question.js';
import { AnswerCache } from './answer-cache.js';
import { CompartmentLookupError, type CompartmentAnswer, type CompartmentLookup, type LookupOutcome } from './types.js';

export interface FhirCompartmentLookupOptions {
  /** The FHIR base URL, without a trailing slash. */
  readonly baseUrl: string;
  /** fhir-pdp's bearer token for the FHIR server; absent: no Authorization header (loopback only). */
  readonly token?: () => Promise<string>;
  readonly timeoutMs: number;
  readonly cacheSeconds: number;
  readonly maxEntries: number;
  readonly maxResponseBytes: number;
  readonly fetch?: typeof fetch;
  /** Wall clock (ms since epoch) for cache ages. */
  readonly clock?: () => number;
  /** One call per check: its outcome (src/telemetry counts them). */
  readonly onLookup?: (outcome: LookupOutcome) => void;
}

// Frozen answers: a cache hit allocates nothing.
const FOUND_CACHED: CompartmentAnswer = Object.freeze({ found: true, source: 'cache' });
const NOT_FOUND_CACHED: CompartmentAnswer = Object.freeze({ found: false, source: 'cache' });
const FOUND: CompartmentAnswer = Object.freeze({ found: true, source: 'server' });
const NOT_FOUND: CompartmentAnswer = Object.freeze({ found: false, source: 'server' });

export class FhirCompartmentLookup implements CompartmentLookup {
  readonly #options: FhirCompartmentLookupOptions;
  readonly #cache: AnswerCache;
  readonly #inFlight = new Map<string, Promise<CompartmentAnswer>>();
  readonly #fetch: typeof fetch;
  readonly #clock: () => number;

  constructor(options: FhirCompartmentLookupOptions) {
    this.#options = options;
    this.#cache = new AnswerCache(options.maxEntries, options.cacheSeconds * 1000);
    this.#fetch = options.fetch ?? fetch;
    this.#clock = options.clock ?? Date.now;
  }

  check(question: CompartmentQuestion): CompartmentAnswer | Promise<CompartmentAnswer> {
    const key = compartmentQuestionKey(question);
    const cached = this.#cache.get(key, this.#clock());
    if (cached !== undefined) {
      this.#options.onLookup?.('cache_hit');
      return cached ? FOUND_CACHED : NOT_FOUND_CACHED;
    }
    const pending = this.#inFlight.get(key);
    if (pending) return pending;
    const asked = this.#ask(question).then(
      (found) => {
        this.#inFlight.delete(key);
        this.#cache.set(key, found, this.#clock());
        this.#options.onLookup?.(found ? 'found' : 'not_found');
        return found ? FOUND : NOT_FOUND;
      },
      (err: unknown) => {
        this.#inFlight.delete(key);
        this.#options.onLookup?.('failed');
        throw err;
      },
    );
    this.#inFlight.set(key, asked);
    return asked;
  }

  /** Cached answers now (for health and tests). */
  get cacheSize(): number {
    return this.#cache.size;
  }

  async #ask(q: CompartmentQuestion): Promise<boolean> {
    const { baseUrl, timeoutMs } = this.#options;
    // The type, id and patient were checked against the FHIR grammar (resource type, [A-Za-z0-9-.]{1,64}).
    const url = `${baseUrl}/${q.resourceType}?_id=${encodeURIComponent(q.id)}&${q.parameter}=Patient/${encodeURIComponent(q.patient)}&_summary=count`;
    const headers: Record<string, string> = {
      accept: 'application/fhir+json',
      // FHIR R4 search.html#errors: with strict handling a server refuses a parameter it does not
      // know instead of ignoring it, which would widen the search to every patient.
      prefer: 'handling=strict',
    };
    const signal = AbortSignal.timeout(timeoutMs);
    if (this.#options.token) {
      let token: string;
      try {
        token = await this.#options.token();
      } catch (err) {
        throw new CompartmentLookupError('lookup_credential', `no token for the FHIR server: ${describe(err)}`);
      }
      headers.authorization = `Bearer ${token}`;
    }
    let res: Response;
    try {
      // A redirect is not followed: the token is for this server only.
      res = await this.#fetch(url, { headers, signal, redirect: 'manual' });
    } catch (err) {
      throw signal.aborted
        ? new CompartmentLookupError('lookup_timeout', `the FHIR server did not answer within ${timeoutMs} ms`)
        : new CompartmentLookupError('lookup_unreachable', `the FHIR server could not be reached: ${describe(err)}`);
    }
    if (res.status < 200 || res.status > 299) {
      await res.body?.cancel().catch(() => undefined);
      throw new CompartmentLookupError('lookup_status', `the FHIR server answered HTTP ${res.status}`, res.status);
    }
    const text = await readBounded(res, this.#options.maxResponseBytes, signal, timeoutMs);
    return foundIn(text);
  }
}

/** The body as text, read no further than `max` bytes. */
async function readBounded(res: Response, max: number, signal: AbortSignal, timeoutMs: number): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > max) {
    await res.body?.cancel().catch(() => undefined);
    throw new CompartmentLookupError('lookup_oversized', `the FHIR server's answer declares ${declared} bytes, more than maxResponseBytes (${max})`);
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > max) {
        await reader.cancel().catch(() => undefined);
        throw new CompartmentLookupError('lookup_oversized', `the FHIR server's answer is longer than maxResponseBytes (${max})`);
      }
      chunks.push(value);
    }
  } catch (err) {
    if (err instanceof CompartmentLookupError) throw err;
    throw signal.aborted
      ? new CompartmentLookupError('lookup_timeout', `the FHIR server did not finish its answer within ${timeoutMs} ms`)
      : new CompartmentLookupError('lookup_unreachable', `the FHIR server's answer broke off: ${describe(err)}`);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** FHIR R4 search.html#summary: `_summary=count` answers a searchset Bundle whose `total` counts the matches. */
function foundIn(text: string): boolean {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new CompartmentLookupError('lookup_malformed', 'the FHIR server answered something that is not JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new CompartmentLookupError('lookup_malformed', 'the FHIR server answered JSON that is not a resource');
  const bundle = body as { resourceType?: unknown; type?: unknown; total?: unknown };
  if (bundle.resourceType !== 'Bundle' || bundle.type !== 'searchset')
    throw new CompartmentLookupError('lookup_malformed', `the FHIR server answered ${typeof bundle.resourceType === 'string' ? `a ${bundle.resourceType.slice(0, 64)}` : 'a resource'}${typeof bundle.type === 'string' ? ` of type ${bundle.type.slice(0, 64)}` : ''}, not a searchset Bundle`);
  if (typeof bundle.total !== 'number' || !Number.isInteger(bundle.total) || bundle.total < 0)
    throw new CompartmentLookupError('lookup_malformed', 'the FHIR server\'s searchset Bundle has no numeric total (does it support _summary=count?)');
  return bundle.total >= 1;
}

function describe(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return err instanceof Error ? `${err.message}${cause}`.slice(0, 300) : 'unknown error';
}
