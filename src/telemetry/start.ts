/**
 * Telemetry from app settings: a meter for the Prometheus endpoint (PDP_METRICS, default on) and,
 * with APPLICATIONINSIGHTS_CONNECTION_STRING, Azure Monitor for metrics and traces. Hosts call it
 * once before they build the service.
 */
import { metrics, type Meter, type TracerProvider } from '@opentelemetry/api';
import type { MetricReader } from '@opentelemetry/sdk-metrics';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { readSettings } from '../config/settings.js';
import { METER_NAME } from './metrics.js';
import { localMeter, PrometheusMetrics } from './prometheus.js';

export interface TelemetrySetup {
  /** Undefined when PDP_METRICS=off. */
  readonly meter?: Meter;
  /** Set by tests (an in-memory exporter); otherwise the global provider is used. */
  readonly tracerProvider?: TracerProvider;
  /** The Prometheus text, when metrics are on. */
  readonly prometheus?: PrometheusMetrics;
  /** True when Azure Monitor was started. */
  readonly azureMonitor: boolean;
  shutdown(): Promise<void>;
}

export interface StartTelemetryOptions {
  /** Extra span processors for Azure Monitor's tracer provider (tests). */
  readonly spanProcessors?: readonly SpanProcessor[];
  readonly metricReaders?: readonly MetricReader[];
  /** False where no /api/metrics is served (Azure Functions): metrics go to Azure Monitor only. Default true. */
  readonly prometheus?: boolean;
}

export async function startTelemetry(env: Record<string, string | undefined>, options: StartTelemetryOptions = {}): Promise<TelemetrySetup> {
  const settings = readSettings(env);
  const prometheus = settings.PDP_METRICS === 'on' && options.prometheus !== false ? new PrometheusMetrics() : undefined;
  const readers: MetricReader[] = [...(prometheus ? [prometheus.reader] : []), ...(options.metricReaders ?? [])];
  const connectionString = settings.APPLICATIONINSIGHTS_CONNECTION_STRING;
  if (connectionString) {
    const { startAzureMonitor } = await import('./azure-monitor.js');
    const azure = await startAzureMonitor({ connectionString, metricReaders: settings.PDP_METRICS === 'on' ? readers : [], ...(options.spanProcessors ? { spanProcessors: options.spanProcessors } : {}) });
    return {
      ...(settings.PDP_METRICS === 'on' ? { meter: metrics.getMeter(METER_NAME) } : {}),
      ...(prometheus ? { prometheus } : {}),
      azureMonitor: true,
      shutdown: () => azure.shutdown(),
    };
  }
  if (!prometheus && readers.length === 0) return { azureMonitor: false, shutdown: async () => undefined };
  const { provider, meter } = localMeter(readers);
  return { meter, ...(prometheus ? { prometheus } : {}), azureMonitor: false, shutdown: () => provider.shutdown() };
}
