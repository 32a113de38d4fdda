/**
 * The Graph client's observer against the fake Graph (Graph's wire format): each HTTP exchange is
 * counted by outcome, a 429's Retry-After is added up, a call the open breaker refuses is counted as
 * short_circuited, and each exchange is a client span without URL or token.
 */
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGraphClient, withoutSdkRetries, type GraphCallObserver } from '../../src/directory/graph-client.js';
import { graphCredential, startFakeGraph, type FakeGraph } from '../../testkit/fake-graph.js';

let fake: FakeGraph;
let group: string;
let member: string;

beforeAll(async () => {
  fake = await startFakeGraph();
  group = fake.addGroup({ displayName: 'readers' });
  member = fake.addUser();
  fake.addMember(group, member);
});

afterAll(async () => {
  await fake.close();
});

describe('Graph calls observed', () => {
  it('counts ok, throttled (with Retry-After), failed and short-circuited calls, one span each', async () => {
    const calls: Array<[string, number | undefined]> = [];
    const exporter = new InMemorySpanExporter();
    const tracer = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }).getTracer('test');
    const observer: GraphCallObserver = { onCall: (outcome, retryAfterMs) => calls.push([outcome, retryAfterMs]), tracer };
    const client = createGraphClient({ credential: graphCredential(fake.token), baseUrl: fake.origin, breaker: { failureThreshold: 2, openMs: 60_000 }, observer });
    const check = () => client.api(`/users/${member}/checkMemberGroups`).middlewareOptions(withoutSdkRetries()).post({ groupIds: [group] });

    expect((await check()).value).toEqual([group]);
    fake.failNext(1, { status: 429, retryAfterSeconds: 7 });
    await expect(check()).rejects.toBeDefined();
    fake.failNext(1, { status: 503 });
    await expect(check()).rejects.toBeDefined();
    // Two failures opened the breaker: the next call is refused without an exchange.
    await expect(check()).rejects.toBeDefined();

    expect(calls.map(([o]) => o)).toEqual(['ok', 'throttled', 'failed', 'short_circuited']);
    expect(calls[1]![1]).toBe(7000);
    const spans = exporter.getFinishedSpans();
    expect(spans.map((s) => s.name)).toEqual(['Microsoft Graph POST', 'Microsoft Graph POST', 'Microsoft Graph POST']);
    expect(spans.map((s) => s.attributes['http.response.status_code'])).toEqual([200, 429, 503]);
    const exported = JSON.stringify(spans.map((s) => ({ name: s.name, attributes: s.attributes })));
    expect(exported).not.toContain(member);
    expect(exported).not.toContain(fake.token);
  });
});
