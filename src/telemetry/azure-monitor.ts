/**
 * Azure Monitor (Application Insights) through @azure/monitor-opentelemetry: loaded only when
 * APPLICATIONINSIGHTS_CONNECTION_STRING is set (a dynamic import, kept out of the bundle), so an
 * instance without it loads none of it and sends nothing. It registers the global tracer and meter
 * providers; the Prometheus reader, when metrics are on, joins its meter provider, so both see the
 * same instruments.
 */
import type { AzureMonitorOpenTelemetryOptions } from '@azure/monitor-opentelemetry';
import { trace } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { MetricReader } from '@opentelemetry/sdk-metrics';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';

export interface AzureMonitorSetup {
  readonly connectionString: string;
  /** Extra readers of the same meter provider (the Prometheus endpoint's). */
  readonly metricReaders?: readonly MetricReader[];
  /** Extra span processors (tests: an in-memory exporter). */
  readonly spanProcessors?: readonly SpanProcessor[];
}

/** The distro's options for this service: what a test inspects, and what useAzureMonitor is given. */
export function azureMonitorOptions(setup: AzureMonitorSetup): AzureMonitorOpenTelemetryOptions {
  return {
    azureMonitorExporterOptions: { connectionString: setup.connectionString },
    // Application Insights' cloud role: the service's name rather than "unknown_service:node".
    resource: resourceFromAttributes({ 'service.name': 'fhir-pdp' }),
    // The decision span is the request (kind SERVER, continuing the gateway's traceparent); the
    // http instrumentation would add a second server span per question and parse the header again.
    // Azure SDK calls (Blob, identity) keep their spans.
    instrumentationOptions: { http: { enabled: false }, azureSdk: { enabled: true } },
    // No console capture: decision lines are logged on purpose, and the token never is.
    enableLiveMetrics: false,
    ...(setup.metricReaders?.length ? { metricReaders: [...setup.metricReaders] } : {}),
    ...(setup.spanProcessors?.length ? { spanProcessors: [...setup.spanProcessors] } : {}),
  };
}

export async function startAzureMonitor(setup: AzureMonitorSetup): Promise<{ shutdown(): Promise<void> }> {
  const { useAzureMonitor, shutdownAzureMonitor } = await import('@azure/monitor-opentelemetry');
  useAzureMonitor(azureMonitorOptions(setup));
  return {
    // Spans still waiting in the batch processor are sent first: shutting the distro down alone
    // can close the exporter before the batch is flushed, and the last decisions' spans are lost.
    shutdown: async () => {
      const provider = trace.getTracerProvider() as { getDelegate?: () => { forceFlush?: () => Promise<void> } };
      await provider.getDelegate?.().forceFlush?.();
      await shutdownAzureMonitor();
    },
  };
}
