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
  private readonly values = new Map<CounterName, number>(COUNTERS.map((c) => [c, 0]));

  inc(name: CounterName, by = 1): void {
    this.values.set(name, (this.values.get(name) ?? 0) + by);
  }

  get(name: CounterName): number {
    return this.values.get(name) ?? 0;
  }

  snapshot(): Record<CounterName, number> {
    return Object.fromEntries(this.values) as Record<CounterName, number>;
  }
}
