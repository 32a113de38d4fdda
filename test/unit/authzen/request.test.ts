/**
 * The AuthZEN 1.0 request → FHIR question mapping (src/authzen/request.ts): pure, no host. Each
 * FHIR interaction name and HTTP method spelled as the request /api/decide would decide; defaults.
 */
import { describe, expect, it } from 'vitest';
import { fhirQuestionOf, readEvaluations, type Evaluation } from '../../../src/authzen/request.js';

const subject = { type: 'user', id: 'u', properties: { token: 'Bearer a.b.c' } };
const ev = (action: Evaluation['action'], resource: Evaluation['resource']): Evaluation => ({ subject, action, resource });
const target = (e: Evaluation, fhirBaseUrl?: string) => {
  const m = fhirQuestionOf(e, fhirBaseUrl ? { fhirBaseUrl } : {});
  return m.ok ? `${m.question.input.method} ${m.question.input.target}` : `problem: ${m.problem}`;
};

describe('action and resource → method and target', () => {
  it.each([
    [{ name: 'read' }, { type: 'Patient', id: '1' }, 'GET /Patient/1'],
    [{ name: 'vread' }, { type: 'Patient', id: '1', properties: { versionId: '3' } }, 'GET /Patient/1/_history/3'],
    [{ name: 'update' }, { type: 'Patient', id: '1' }, 'PUT /Patient/1'],
    [{ name: 'patch' }, { type: 'Patient', id: '1' }, 'PATCH /Patient/1'],
    [{ name: 'delete' }, { type: 'Patient', id: '1' }, 'DELETE /Patient/1'],
    [{ name: 'history-instance' }, { type: 'Patient', id: '1' }, 'GET /Patient/1/_history'],
    [{ name: 'create' }, { type: 'Patient', id: '' }, 'POST /Patient'],
    [{ name: 'search-type' }, { type: 'Observation', id: '' }, 'GET /Observation'],
    [{ name: 'history-type' }, { type: 'Observation', id: '' }, 'GET /Observation/_history'],
    [{ name: 'search-system' }, { type: 'system', id: '' }, 'GET /'],
    [{ name: 'history-system' }, { type: 'system', id: '' }, 'GET /_history'],
    [{ name: 'capabilities' }, { type: 'system', id: '' }, 'GET /metadata'],
    [{ name: 'batch' }, { type: 'system', id: '' }, 'POST /'],
    [{ name: '$export' }, { type: 'system', id: '' }, 'POST /$export'],
    [{ name: '$everything', properties: { method: 'GET' } }, { type: 'Patient', id: '1' }, 'GET /Patient/1/$everything'],
    [{ name: 'GET' }, { type: 'Patient', id: '1' }, 'GET /Patient/1'],
    [{ name: 'GET' }, { type: 'Patient', id: '' }, 'GET /Patient'],
    [{ name: 'POST' }, { type: 'Patient', id: '' }, 'POST /Patient'],
    [{ name: 'DELETE' }, { type: 'route', id: '/Patient?name=x' }, 'DELETE /Patient?name=x'],
  ] as const)('%j on %j is %s', (action, resource, expected) => {
    expect(target(ev(action, resource as Evaluation['resource']))).toBe(expected);
  });

  it('puts the FHIR base path in front of a type and id, not in front of a route', () => {
    expect(target(ev({ name: 'read' }, { type: 'Patient', id: '1' }), 'https://fhir.example/r4/')).toBe('GET https://fhir.example/r4/Patient/1');
    expect(target(ev({ name: 'GET' }, { type: 'route', id: '/r4/Patient/1' }), 'https://fhir.example/r4')).toBe('GET /r4/Patient/1');
  });

  it.each([
    [{ name: 'read' }, { type: 'Patient', id: '' }, /acts on one resource/],
    [{ name: 'create' }, { type: 'Patient', id: '1' }, /resource.id is ""/],
    [{ name: 'capabilities' }, { type: 'Patient', id: '' }, /system-level/],
    [{ name: 'vread' }, { type: 'Patient', id: '1' }, /versionId/],
    [{ name: 'read' }, { type: 'route', id: '/Patient/1' }, /HTTP method/],
    [{ name: 'GET' }, { type: 'route', id: 'Patient/1' }, /starting with/],
    [{ name: 'PUT' }, { type: 'Patient', id: '' }, /needs resource.id/],
    [{ name: 'Read' }, { type: 'Patient', id: '1' }, /lower case/],
    [{ name: '$x', properties: { method: 'PUT' } }, { type: 'system', id: '' }, /GET" or "POST/],
    [{ name: 'read' }, { type: 'patient', id: '1' }, /not a FHIR resource type/],
  ] as const)('%j on %j is a problem', (action, resource, problem) => {
    expect(target(ev(action, resource as Evaluation['resource']))).toMatch(problem);
  });

  it('asks in the decision mode "authzen", the Bundle from resource.properties.body', () => {
    const bundle = { resourceType: 'Bundle', type: 'batch', entry: [] };
    const m = fhirQuestionOf(ev({ name: 'batch' }, { type: 'system', id: '', properties: { body: bundle } }));
    expect(m.ok && m.question.input).toMatchObject({ method: 'POST', target: '/', mode: 'authzen', body: bundle });
  });

  it('reads the token from subject.properties.token, with or without "Bearer ", never from a header', () => {
    const m = fhirQuestionOf(ev({ name: 'read' }, { type: 'Patient', id: '1' }));
    expect(m.ok && m.question.input.credentials).toEqual({ authorization: [], token: 'a.b.c', queryToken: false });
    const bare = fhirQuestionOf({ subject: { type: 'user', id: 'u' }, action: { name: 'read' }, resource: { type: 'Patient', id: '1' } });
    expect(bare.ok && bare.question.input.credentials).toEqual({ authorization: [], queryToken: false });
    expect(fhirQuestionOf({ ...ev({ name: 'read' }, { type: 'Patient', id: '1' }), subject: { type: 'user', id: 'u', properties: { token: 42 } } }).ok).toBe(false);
  });
});

describe('evaluations: defaults and options', () => {
  it('an evaluation member replaces the default whole (no deep merge)', () => {
    const r = readEvaluations({
      subject,
      action: { name: 'read', properties: { a: 1 } },
      context: { time: 't' },
      evaluations: [{ resource: { type: 'Patient', id: '1' } }, { action: { name: 'update' }, resource: { type: 'Patient', id: '2' } }],
    });
    expect(r.ok && r.batch && r.evaluations).toEqual([
      { subject, action: { name: 'read', properties: { a: 1 } }, resource: { type: 'Patient', id: '1' }, context: { time: 't' } },
      { subject, action: { name: 'update' }, resource: { type: 'Patient', id: '2' }, context: { time: 't' } },
    ]);
    expect(r.ok && r.batch && r.semantic).toBe('execute_all');
  });

  it('ignores options it does not know and refuses too many distinct tokens', () => {
    const r = readEvaluations({ subject, action: { name: 'read' }, options: { evaluations_semantic: 'permit_on_first_permit', other: 1 }, evaluations: [{ resource: { type: 'Patient', id: '1' } }] });
    expect(r.ok && r.batch && r.semantic).toBe('permit_on_first_permit');
    const many = readEvaluations({
      action: { name: 'read' },
      resource: { type: 'Patient', id: '1' },
      evaluations: Array.from({ length: 11 }, (_, i) => ({ subject: { type: 'user', id: 'u', properties: { token: `t${i}` } } })),
    });
    expect(many.ok).toBe(false);
  });
});
