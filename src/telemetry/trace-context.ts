/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) for a question: the `traceparent` a
 * gateway or client sent is continued, never replaced, so the gateway's trace and log lines join
 * fhir-pdp's by trace id. A header that does not parse is ignored, as §3.2.2 requires ("If the
 * vendor failed to parse traceparent, it MUST NOT attempt to parse tracestate"; the request is then
 * treated as one without a trace); it is never a reason to refuse the question.
 */
import { defaultTextMapGetter, isSpanContextValid, ROOT_CONTEXT, trace, type Context, type SpanContext } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';

/** Longest traceparent read: version 00 is 55 characters; a later version may append fields (§3.2.4). */
export const MAX_TRACEPARENT_LENGTH = 512;

const propagator = new W3CTraceContextPropagator();

/**
 * The one traceparent of a request, normalised to version 00, or undefined when there is none, more
 * than one (§3.2: a request carries one traceparent; two cannot both be continued), or it is invalid
 * (all-zero ids, bad hex, version ff).
 */
export function traceparentOf(values: readonly string[]): string | undefined {
  if (values.length !== 1) return undefined;
  const span = spanContextOf(values[0]!);
  return span ? formatTraceparent(span) : undefined;
}

function spanContextOf(value: string): SpanContext | undefined {
  if (value.length === 0 || value.length > MAX_TRACEPARENT_LENGTH) return undefined;
  const ctx = propagator.extract(ROOT_CONTEXT, { traceparent: value }, defaultTextMapGetter);
  const span = trace.getSpanContext(ctx);
  return span && isSpanContextValid(span) ? span : undefined;
}

export function formatTraceparent(s: SpanContext): string {
  return `00-${s.traceId}-${s.spanId}-${(s.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** The trace id (32 lower-case hex digits) of a traceparent traceparentOf returned. */
export function traceIdOf(traceparent: string): string {
  return traceparent.slice(3, 35);
}

/** The OpenTelemetry context whose remote parent is this (already validated) traceparent. */
export function parentContext(traceparent: string): Context {
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId: traceparent.slice(3, 35),
    spanId: traceparent.slice(36, 52),
    traceFlags: Number.parseInt(traceparent.slice(53, 55), 16),
    isRemote: true,
  });
}
