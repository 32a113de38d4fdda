/**
 * src/http/answer.ts writes a decision's answer and its log line without serialising again what
 * does not change; each text must be exactly the JSON.stringify of its object, whatever a token or
 * a request put in the strings, and a memoised part must never go stale.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decisionBody, decisionJson, decisionLine } from '../../../src/http/answer.js';
import type { Decision, DecisionEvent, PrincipalSummary } from '../../../src/decision/types.js';
import { REASONS, type ReasonCode } from '../../../src/core/reasons.js';

const NASTY = ['', 'plain', 'quote " and backslash \\', 'newline\nand tab\t', 'control \u0001\u001f', 'unicode é ☃ 𝄞', 'lone surrogate \ud800 end', '</script>', '{"injected":true}', 'a'.repeat(600)];
const REASON_CODES = Object.keys(REASONS) as ReasonCode[];

function random(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
}

function generators(seed: number) {
  const rnd = random(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const maybe = (): string | undefined => (rnd() < 0.3 ? undefined : pick(NASTY));
  const principal = (): PrincipalSummary => {
    const p: Record<string, unknown> = { issuer: pick(NASTY) };
    for (const k of ['objectId', 'tenantId', 'applicationId', 'fhirUser'] as const) {
      const v = maybe();
      if (v !== undefined) p[k] = v;
    }
    if (rnd() < 0.6) p.scopes = NASTY.filter(() => rnd() < 0.3);
    const summary = p as unknown as PrincipalSummary;
    if (rnd() < 0.5) {
      if (summary.scopes) Object.freeze(summary.scopes);
      Object.freeze(summary);
    }
    return summary;
  };
  return { rnd, pick, maybe, principal };
}

describe('decisionJson', () => {
  it('is JSON.stringify(decisionBody(d, admin)) for 3,000 decisions of every reason, frozen or not, with hostile strings', () => {
    const { rnd, pick, maybe, principal } = generators(7);
    const shared = Array.from({ length: 8 }, principal);
    for (let i = 0; i < 3000; i++) {
      const reason = pick(REASON_CODES);
      const def = REASONS[reason];
      const d: Record<string, unknown> = {
        decisionId: randomUUID(),
        decision: def.decision,
        status: def.status,
        reason,
        // Now and then a decision whose fixed members are not its reason's: the general path.
        message: rnd() < 0.05 ? pick(NASTY) : def.message,
        durationMs: rnd(),
        cacheHit: rnd() < 0.5,
      };
      const hint = maybe();
      if (hint !== undefined) d.hint = hint;
      if (rnd() < 0.8) d.principal = rnd() < 0.5 ? pick(shared) : principal();
      if (rnd() < 0.6) d.dataActions = NASTY.filter(() => rnd() < 0.3);
      const compartment = maybe();
      if (compartment !== undefined) d.compartment = compartment;
      const queryAppend = maybe();
      if (queryAppend !== undefined) d.queryAppend = queryAppend;
      const decision = d as unknown as Decision;
      for (const admin of [false, true]) expect(decisionJson(decision, admin)).toBe(JSON.stringify(decisionBody(decision, admin)));
    }
  });

  it("is JSON.stringify(decisionBody(d)) as a cached principal's answers alternate reasons and frozen data actions", () => {
    // The answer after its decisionId is memoised per frozen principal and data-action list: every
    // switch of reason, list or principal must show.
    const { rnd, pick, principal } = generators(11);
    const principals = Array.from({ length: 3 }, () => {
      const p = principal();
      if (p.scopes) Object.freeze(p.scopes);
      return Object.freeze(p);
    });
    const lists = [Object.freeze(['read']), Object.freeze(['read', 'write']), Object.freeze([] as string[]), undefined];
    for (let i = 0; i < 2000; i++) {
      const reason = pick(['allowed', 'action_not_permitted', 'principal_not_allowed', 'token_expired'] as const);
      const def = REASONS[reason];
      const d = {
        decisionId: randomUUID(),
        decision: def.decision,
        status: def.status,
        reason,
        message: def.message,
        durationMs: 0,
        cacheHit: true,
        principal: pick(principals),
        ...(rnd() < 0.8 ? { dataActions: pick(lists) } : {}),
        ...(rnd() < 0.1 ? { compartment: 'Patient/1' } : {}),
      } as Decision;
      expect(decisionJson(d, false)).toBe(JSON.stringify(decisionBody(d, false)));
    }
  });

  it('serialises a principal that is not frozen every time, so a change shows', () => {
    const principal = { issuer: 'https://issuer.example/', objectId: 'a' };
    const d = { decisionId: 'id', decision: 'allow', status: 200, reason: 'allowed', message: REASONS.allowed.message, durationMs: 0, cacheHit: true, principal } as Decision;
    expect(decisionJson(d, false)).toContain('"objectId":"a"');
    principal.objectId = 'b';
    expect(decisionJson(d, false)).toContain('"objectId":"b"');
  });

  it('cannot be made stale through a frozen principal', () => {
    const principal = Object.freeze({ issuer: 'https://issuer.example/', objectId: 'a', scopes: Object.freeze(['patient/*.read']) });
    const d = { decisionId: 'id', decision: 'allow', status: 200, reason: 'allowed', message: REASONS.allowed.message, durationMs: 0, cacheHit: true, principal } as Decision;
    const first = decisionJson(d, false);
    expect(() => ((principal as { objectId: string }).objectId = 'b')).toThrow(TypeError);
    expect(() => (principal.scopes as string[]).push('x')).toThrow(TypeError);
    expect(decisionJson(d, false)).toBe(first);
  });
});

describe('decisionLine', () => {
  it('is JSON.stringify of {type:"decision", ...event} for 3,000 events, with and without their principal, and hostile strings', () => {
    const { rnd, pick, maybe, principal } = generators(42);
    const shared = Array.from({ length: 8 }, principal);
    for (let i = 0; i < 3000; i++) {
      const reason = pick(REASON_CODES);
      const p = rnd() < 0.5 ? pick(shared) : principal();
      // Most events carry their principal's members (as the Pdp makes them); some do not match it.
      const own = rnd() < 0.8;
      const event: DecisionEvent = {
        decisionId: randomUUID(),
        time: new Date(Math.floor(rnd() * 4e12)).toISOString(),
        decision: rnd() < 0.05 ? pick(['allow', 'deny', 'indeterminate'] as const) : REASONS[reason].decision,
        reason,
        status: rnd() < 0.05 ? pick([200, 401, 403, 503]) : REASONS[reason].status,
        mode: rnd() < 0.3 ? undefined : pick(['json', 'forward-auth', 'envoy', 'explain']),
        issuer: own ? p.issuer : maybe(),
        tenantId: own ? p.tenantId : maybe(),
        objectId: own ? p.objectId : maybe(),
        applicationId: own ? p.applicationId : maybe(),
        method: pick(['GET', 'POST', ...NASTY]),
        path: pick(NASTY),
        durationMs: pick([0, 0.001, 0.412, 12.5, 1000, Math.round(rnd() * 1e6) / 1000]),
        cacheHit: rnd() < 0.5,
        ...(rnd() < 0.3 ? { narrowedBy: pick(NASTY) } : {}),
      };
      const expected = JSON.stringify({ type: 'decision', ...event });
      expect(decisionLine(event, p)).toBe(expected);
      expect(decisionLine(event)).toBe(expected);
      expect(JSON.parse(expected)).toEqual({ type: 'decision', ...JSON.parse(JSON.stringify(event)) });
    }
  });

  it("is JSON.stringify of the event as one principal's events alternate reasons, modes, trace ids and identity members", () => {
    // The members from decision to applicationId are memoised per frozen summary, reason and mode.
    const p = Object.freeze({ issuer: 'https://issuer.example/', tenantId: 't', objectId: 'o', applicationId: 'a' });
    const { rnd, pick } = generators(5);
    for (let i = 0; i < 2000; i++) {
      const reason = pick(['allowed', 'action_not_permitted', 'insufficient_scope'] as const);
      const own = rnd() < 0.8;
      const event: DecisionEvent = {
        decisionId: randomUUID(),
        time: pick(['2026-12-04T04:00:00.000Z', '2026-12-04T04:00:00.001Z', 'quote " time']),
        decision: REASONS[reason].decision,
        reason,
        status: REASONS[reason].status,
        mode: pick(['json', 'forward-auth', 'envoy', undefined]),
        // The line writes traceId after mode (where this literal puts it), between the memoised members.
        ...(rnd() < 0.3 ? { traceId: pick(['4bf92f3577b34da6a3ce929d0e0e4736', 'a"b']) } : {}),
        issuer: p.issuer,
        tenantId: p.tenantId,
        objectId: own ? p.objectId : 'someone else',
        applicationId: p.applicationId,
        method: pick(['GET', 'PO"ST']),
        path: pick(['/Patient/1', '/Patient/\u00e9', '/Obs\nervation']),
        durationMs: 0.5,
        cacheHit: rnd() < 0.5,
      };
      expect(decisionLine(event, p)).toBe(JSON.stringify({ type: 'decision', ...event }));
    }
  });

  it('writes a number that is not finite as null, as JSON.stringify does', () => {
    const event: DecisionEvent = { decisionId: 'd', time: 't', decision: 'deny', reason: 'missing_token', status: 401, method: 'GET', path: '/', durationMs: Number.NaN, cacheHit: false };
    expect(decisionLine(event)).toBe(JSON.stringify({ type: 'decision', ...event }));
  });
});
