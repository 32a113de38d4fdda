/**
 * The Prometheus text for GET /api/metrics: an OpenTelemetry MeterProvider read on demand by the
 * Prometheus exporter in pull mode, without the exporter's own HTTP server (the host's router
 * serves it, behind the same key check as the admin routes).
 */
import type { Meter } from '@opentelemetry/api';
import { PrometheusExporter, PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { MeterProvider, type MetricReader } from '@opentelemetry/sdk-metrics';
import { METER_NAME } from './metrics.js';

export class PrometheusMetrics {
  readonly reader: PrometheusExporter;
  // No target_info / otel_scope_info series: the resource's attributes (host, process) describe
  // the machine to anyone who can scrape, and Prometheus labels the target itself.
  private readonly serializer = new PrometheusSerializer(undefined, false, undefined, true, true);

  constructor() {
    this.reader = new PrometheusExporter({ preventServerStart: true, withoutTargetInfo: true, withoutScopeInfo: true });
  }

  /** The current values of every metric, as Prometheus text. */
  async text(): Promise<string> {
    const { resourceMetrics, errors } = await this.reader.collect();
    if (errors.length > 0) throw new AggregateError(errors, 'collecting metrics failed');
    return this.serializer.serialize(resourceMetrics);
  }
}

/** A meter provider of our own (not the global one) whose only reader is `reader`, and its meter. */
export function localMeter(readers: readonly MetricReader[]): { provider: MeterProvider; meter: Meter } {
  const provider = new MeterProvider({ readers: [...readers] });
  return { provider, meter: provider.getMeter(METER_NAME) };
}
