/**
 * The log line for a request to /api/decide whose key is missing or not recognised. Such a request
 * is usually a gateway with an old or mistyped key (a rotation half done): an outage of the
 * gateway's credential that its clients see as 503, so the operator needs to hear of it here.
 * The line names the gateway (remote address), how it asked, and the key's fingerprint, never
 * the key. Bounded: at most LINES_PER_WINDOW lines per WINDOW_MS, the rest counted into the next.
 */
import type { DecideMode } from './decide-api.js';
import type { PresentedKey } from './keys.js';

export interface KeyRefusal {
  readonly mode: DecideMode;
  /** Undefined when the request presented no key at all. */
  readonly key?: PresentedKey;
  readonly remoteAddress?: string;
  /** The HTTP status answered. */
  readonly status: number;
}

export const WINDOW_MS = 60_000;
export const LINES_PER_WINDOW = 20;

/** A logger of key refusals writing JSON lines to `log`; `clock` for tests. */
export function keyRefusalLogger(log: (line: string) => void, clock: () => number = Date.now): (refusal: KeyRefusal) => void {
  let windowStart = -Infinity;
  let written = 0;
  let suppressed = 0;
  return (refusal) => {
    const now = clock();
    if (now - windowStart >= WINDOW_MS) {
      windowStart = now;
      written = 0;
    }
    if (written >= LINES_PER_WINDOW) {
      suppressed++;
      return;
    }
    written++;
    const line: Record<string, unknown> = {
      type: 'key_refused',
      time: new Date(now).toISOString(),
      route: '/api/decide',
      mode: refusal.mode,
      status: refusal.status,
      key: refusal.key ? 'not_recognised' : 'missing',
    };
    if (refusal.key) {
      line.keySource = refusal.key.source;
      line.keyFingerprint = refusal.key.fingerprint;
    }
    if (refusal.remoteAddress) line.remoteAddress = refusal.remoteAddress;
    if (suppressed > 0) line.suppressedBefore = suppressed;
    suppressed = 0;
    log(JSON.stringify(line));
  };
}
