/**
 * Fixed counter names, declared in one place (Envoy's stats.h). Reported by GET /api/health and
 * included in decision logs' context; never labelled with anything a caller controls.
 */
export const COUNTERS = [
  'allowed',
  'denied',
  'indeterminate',
  'jwks_fetch_ok',
  'jwks_fetch_failed',
  'discovery_fetch_ok',
  'discovery_fetch_failed',
  'graph_call_ok',
  'graph_call_failed',
  'token_cache_hit',
  'token_cache_miss',
  'refresh_ok',
  'refresh_failed',
] as const;

export type CounterName = (typeof COUNTERS)[number];

export class Counters {
  // A record with a field per name, not a Map: two of these are counted on every decision.
  private readonly values: Record<CounterName, number> = Object.fromEntries(COUNTERS.map((c) => [c, 0])) as Record<CounterName, number>;

  inc(name: CounterName, by = 1): void {
    this.values[name] += by;
  }

  get(name: CounterName): number {
    return this.values[name];
  }

  snapshot(): Record<CounterName, number> {
    return { ...this.values };
  }
}
