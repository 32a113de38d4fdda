/**
 * W3C traceparent (https://www.w3.org/TR/trace-context/ §3.2): a valid one is continued as is, an
 * invalid or repeated one is ignored; and without APPLICATIONINSIGHTS_CONNECTION_STRING the Azure
 * Monitor distro is never loaded.
 */
import { describe, expect, it } from 'vitest';
import { startTelemetry } from '../../../src/telemetry/start.js';
import { MAX_TRACEPARENT_LENGTH, parentContext, traceIdOf, traceparentOf } from '../../../src/telemetry/trace-context.js';
import { trace } from '@opentelemetry/api';

const VALID = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('traceparentOf', () => {
  it('continues a valid traceparent', () => {
    expect(traceparentOf([VALID])).toBe(VALID);
    expect(traceparentOf(['00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00'])).toBe('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00');
    expect(traceIdOf(VALID)).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
  });

  it('reads a later version by its version-00 fields (§3.2.4)', () => {
    expect(traceparentOf(['cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds'])).toBe(VALID);
  });

  it.each([
    ['all-zero trace id', '00-00000000000000000000000000000000-00f067aa0ba902b7-01'],
    ['all-zero parent id', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01'],
    ['version ff', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'],
    ['upper-case hex', '00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01'],
    ['short trace id', '00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01'],
    ['garbage', 'not a traceparent'],
    ['empty', ''],
    ['oversized', `cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-${'x'.repeat(MAX_TRACEPARENT_LENGTH)}`],
  ])('ignores %s', (_, value) => {
    expect(traceparentOf([value])).toBeUndefined();
  });

  it('ignores a repeated header: two parents cannot both be continued', () => {
    expect(traceparentOf([VALID, VALID])).toBeUndefined();
    expect(traceparentOf([])).toBeUndefined();
  });

  it('makes the remote parent context of the span', () => {
    const span = trace.getSpanContext(parentContext(VALID));
    expect(span).toMatchObject({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', traceFlags: 1, isRemote: true });
  });
});

describe('startTelemetry without APPLICATIONINSIGHTS_CONNECTION_STRING', () => {
  it('loads no Azure Monitor code and keeps the Prometheus meter', async () => {
    const setup = await startTelemetry({});
    // The distro sets this variable when its module is evaluated.
    expect(process.env.AZURE_MONITOR_DISTRO_VERSION).toBeUndefined();
    expect(setup.azureMonitor).toBe(false);
    expect(setup.prometheus).toBeDefined();
    await setup.shutdown();
  });

  it('PDP_METRICS=off: no meter, no Prometheus text', async () => {
    const setup = await startTelemetry({ PDP_METRICS: 'off' });
    expect(setup.meter).toBeUndefined();
    expect(setup.prometheus).toBeUndefined();
  });
});
