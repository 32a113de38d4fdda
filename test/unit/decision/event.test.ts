import { describe, expect, it } from 'vitest';
import { eventFor, pathOnly } from '../../../src/decision/event.js';
import type { Decision } from '../../../src/decision/types.js';
import { decisionLine } from '../../../src/http/answer.js';

const allowed: Decision = { decisionId: 'd1', decision: 'allow', status: 200, reason: 'allowed', message: 'The request is allowed.', durationMs: 0.5, cacheHit: true };

describe('eventFor', () => {
  it('names the parameters of a narrowed search, never their values, and the line carries no query', () => {
    const event = eventFor({ ...allowed, queryAppend: 'patient=Patient/pa&category=laboratory' }, { method: 'GET', target: '/Observation?code=secret', credentials: { authorization: [] }, mode: 'forward-auth' });
    expect(event.narrowedBy).toBe('patient,category');
    const line = decisionLine(event);
    expect(JSON.parse(line)).toMatchObject({ type: 'decision', path: '/Observation', narrowedBy: 'patient,category' });
    expect(line).not.toContain('Patient/pa');
    expect(line).not.toContain('secret');
  });

  it('has no narrowedBy for a decision that is not narrowed', () => {
    const event = eventFor(allowed, { method: 'GET', target: '/Observation?patient=pa', credentials: { authorization: [] } });
    expect(event.narrowedBy).toBeUndefined();
    expect(decisionLine(event)).not.toContain('narrowedBy');
  });
});

describe('pathOnly', () => {
  it('drops the query', () => expect(pathOnly('/Observation?patient=pa')).toBe('/Observation'));
});
