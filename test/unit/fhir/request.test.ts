import { describe, expect, it } from 'vitest';
import { parseFhirRequest } from '../../../src/fhir/request.js';
import type { FhirRequest } from '../../../src/fhir/types.js';

function parsed(method: string, target: string, basePath?: string): FhirRequest {
  const result = parseFhirRequest(method, target, basePath);
  if (!result.ok) throw new Error(`expected ${method} ${target} to parse, got: ${result.problem}`);
  return result.request;
}

describe('parseFhirRequest: FHIR URL forms', () => {
  const cases: Array<[string, string, Partial<FhirRequest>]> = [
    ['GET', '/metadata', { interaction: 'capabilities', path: '/metadata' }],
    ['GET', '/?_type=Patient', { interaction: 'search-system', path: '/' }],
    ['GET', '/', { interaction: 'search-system' }],
    ['POST', '/_search', { interaction: 'search-system' }],
    ['GET', '/_history', { interaction: 'history-system' }],
    ['POST', '/', { interaction: 'batch' }],
    ['GET', '/Patient', { interaction: 'search-type', resourceType: 'Patient' }],
    ['POST', '/Patient/_search', { interaction: 'search-type', resourceType: 'Patient' }],
    ['GET', '/Patient/_history', { interaction: 'history-type', resourceType: 'Patient' }],
    ['POST', '/Patient', { interaction: 'create', resourceType: 'Patient' }],
    ['GET', '/Patient/123', { interaction: 'read', resourceType: 'Patient', id: '123' }],
    ['HEAD', '/Patient/123', { interaction: 'read', method: 'HEAD', id: '123' }],
    ['get', '/Patient/123', { interaction: 'read', method: 'GET' }],
    ['PUT', '/Patient/a-b.c', { interaction: 'update', id: 'a-b.c' }],
    ['PATCH', '/Patient/1', { interaction: 'patch', id: '1' }],
    ['DELETE', '/Patient/1', { interaction: 'delete', id: '1', hardDelete: false }],
    ['PUT', '/Patient?identifier=x', { interaction: 'conditional-update', resourceType: 'Patient' }],
    ['PATCH', '/Patient?identifier=x', { interaction: 'conditional-patch' }],
    ['DELETE', '/Patient?identifier=x', { interaction: 'conditional-delete' }],
    ['GET', '/Patient/1/_history', { interaction: 'history-instance', id: '1' }],
    ['GET', '/Patient/1/_history/2', { interaction: 'vread', id: '1', versionId: '2' }],
    [
      'GET',
      '/Patient/1/Observation?code=x',
      { interaction: 'search-compartment', resourceType: 'Observation', compartment: { type: 'Patient', id: '1', targetType: 'Observation' } },
    ],
    ['GET', '/Patient/1/*', { interaction: 'search-compartment', compartment: { type: 'Patient', id: '1', targetType: '*' } }],
    ['POST', '/Patient/1/Observation/_search', { interaction: 'search-compartment', resourceType: 'Observation' }],
    ['GET', '/$export', { interaction: 'operation', operation: '$export' }],
    ['GET', '/Patient/$export', { interaction: 'operation', operation: '$export', resourceType: 'Patient' }],
    ['GET', '/Patient/1/$everything', { interaction: 'operation', operation: '$everything', resourceType: 'Patient', id: '1' }],
    ['GET', '/Patient/1/_history/2/$meta', { interaction: 'operation', operation: '$meta', id: '1', versionId: '2' }],
    ['DELETE', '/Patient/1/$purge-history', { interaction: 'operation', operation: '$purge-history' }],
    ['GET', '/Patient/', { interaction: 'search-type', path: '/Patient' }],
    ['GET', '/Patient/%31%32', { interaction: 'read', id: '12', path: '/Patient/12' }],
    ['GET', '/Patient/...', { interaction: 'read', id: '...' }],
    ['GET', '/.well-known/smart-configuration', { interaction: 'smart-configuration', path: '/.well-known/smart-configuration' }],
    ['GET', '/_operations/export/42', { interaction: 'export-status', id: '42', path: '/_operations/export/42' }],
    ['DELETE', '/_operations/export/a1-b2', { interaction: 'export-status', id: 'a1-b2' }],
    ['GET', '/_operations/export/42/Patient-1.ndjson', { interaction: 'export-file', id: '42', file: 'Patient-1.ndjson' }],
    ['GET', '/job/0b7c6d5e-4f3a/status', { interaction: 'export-status', id: '0b7c6d5e-4f3a' }],
    ['DELETE', '/job/0b7c6d5e-4f3a/status', { interaction: 'export-status' }],
    ['GET', '/$export-poll-status?_jobId=42', { interaction: 'operation', operation: '$export-poll-status' }],
    // Shapes FHIR defines, with a method it does not define for them: recognised and refused.
    ['POST', '/.well-known/smart-configuration', { interaction: 'unknown', requires: [] }],
    ['POST', '/_operations/export/42', { interaction: 'unknown', requires: [] }],
    ['PUT', '/job/42/status', { interaction: 'unknown', requires: [] }],
    ['DELETE', '/_operations/export/42/Patient-1.ndjson', { interaction: 'unknown', requires: [] }],
    ['DELETE', '/metadata', { interaction: 'unknown', requires: [] }],
    ['GET', '/_search', { interaction: 'unknown' }],
    ['PUT', '/Patient', { interaction: 'unknown' }],
    ['DELETE', '/Patient', { interaction: 'unknown' }],
    ['POST', '/Patient/1', { interaction: 'unknown' }],
    ['PUT', '/Patient/1/_history/2', { interaction: 'unknown' }],
  ];
  it.each(cases)('%s %s', (method, target, expected) => {
    expect(parsed(method, target)).toMatchObject(expected);
  });

  it('leaves resourceType unset for system operations and compartment searches of every type', () => {
    expect(parsed('GET', '/$export')).not.toHaveProperty('resourceType');
    expect(parsed('GET', '/Patient/1/*')).not.toHaveProperty('resourceType');
  });

  it('fills requires from the interaction table', () => {
    expect(parsed('GET', '/Patient/1').requires).toEqual([['read', 'readById']]);
    expect(parsed('GET', '/Patient/1/$unknown-op').requires).toEqual([]);
  });
});

describe('parseFhirRequest: discovery and bulk export job URLs outside the known shapes', () => {
  it.each([
    '/.well-known/openid-configuration',
    '/.well-known/smart-configuration/x',
    '/_operations/import/42',
    '/_operations/export',
    '/_operations/export/42/Patient-1.ndjson/x',
    '/_operations/export/4%202',
    '/_operations/export/42/.hidden',
    '/job/42',
    '/job/42/output',
    '/job/42/status/x',
  ])('refuses GET %s', (target) => {
    expect(parseFhirRequest('GET', target)).toMatchObject({ ok: false });
  });
});

describe('parseFhirRequest: query', () => {
  it('keeps parameters in order, repeats kept, + as space, percent-decoded', () => {
    const r = parsed('GET', '/Patient?name=a+b&name=c%20d&_count=10&flag&&x=%3D%26');
    expect(r.query).toEqual([
      ['name', 'a b'],
      ['name', 'c d'],
      ['_count', '10'],
      ['flag', ''],
      ['x', '=&'],
    ]);
  });

  const hardDelete: Array<[string, string, boolean]> = [
    ['DELETE', '/Patient/1?_hardDelete=true', true],
    ['DELETE', '/Patient/1?_HARDDELETE=True', true],
    ['DELETE', '/Patient/1?_hardDelete=%20TRUE%20', true],
    ['DELETE', '/Patient/1?_hardDelete=false&_hardDelete=true', true],
    ['DELETE', '/Patient?name=x&_purgeHistory=true', true],
    ['DELETE', '/$bulk-delete?_hardDelete=true', true],
    ['DELETE', '/Patient/1?_hardDelete=false', false],
    ['DELETE', '/Patient/1?hardDelete=true', false],
    ['GET', '/Patient?_hardDelete=true', false],
  ];
  it.each(hardDelete)('%s %s -> hardDelete %s', (method, target, expected) => {
    expect(parsed(method, target).hardDelete).toBe(expected);
  });
});

describe('parseFhirRequest: base path and absolute URLs', () => {
  const cases: Array<[string, string, string]> = [
    ['/fhir/Patient/1', '/fhir', '/Patient/1'],
    ['/fhir/Patient/1', '/fhir/', '/Patient/1'],
    ['/fhir', '/fhir', '/'],
    ['/fhir/', '/fhir', '/'],
    ['/a/b/Patient', '/a/b', '/Patient'],
    ['/Patient/1', '', '/Patient/1'],
    ['/%66hir/Patient/1', '/fhir', '/Patient/1'],
    ['https://fhir.example/fhir/Patient/1?x=1', '/fhir', '/Patient/1'],
    ['HTTP://fhir.example:8080/Patient/1', '/', '/Patient/1'],
    ['https://fhir.example', '/', '/'],
    ['https://fhir.example?_type=Patient', '/', '/'],
  ];
  it.each(cases)('%s under base %s is %s', (target, base, path) => {
    expect(parsed('GET', target, base).path).toBe(path);
  });

  const outside: Array<[string, string]> = [
    ['/Patient/1', '/fhir'],
    ['/fhirx/Patient/1', '/fhir'],
    ['/FHIR/Patient/1', '/fhir'],
    ['/other/fhir/Patient', '/fhir'],
  ];
  it.each(outside)('%s is outside base %s', (target, base) => {
    const r = parseFhirRequest('GET', target, base);
    expect(r).toMatchObject({ ok: false });
    expect(!r.ok && r.problem).toMatch(/outside/);
  });
});

describe('parseFhirRequest: rejections', () => {
  const rejected: Array<[string, string, RegExp]> = [
    ['OPTIONS', '/Patient', /method/],
    ['TRACE', '/Patient', /method/],
    ['poſt', '/Patient', /method/],
    ['', '/Patient', /method/],
    ['GET', 'Patient/1', /start with/],
    ['GET', '', /start with/],
    ['GET', 'ftp://x/Patient', /http/],
    ['GET', '/Patient/../Observation', /dot segment/],
    ['GET', '/Patient/./1', /dot segment/],
    ['GET', '/Patient/%2e%2E', /dot segment/],
    ['GET', '/Patient/.%2e/x', /dot segment/],
    ['GET', '/Patient/%2E', /dot segment/],
    ['GET', '/Patient/a%2Fb', /encoded slash/],
    ['GET', '/Patient/a%2fb', /encoded slash/],
    ['GET', '/Patient\\1', /backslash/],
    ['GET', '/Patient/%5C1', /backslash/],
    ['GET', '/Patient/1\u0000', /control/],
    ['GET', '/Patient/%00', /control/],
    ['GET', '/Patient?x=\r\n', /control/],
    ['GET', '/Patient//1', /empty segment/],
    ['GET', '//Patient', /empty segment/],
    ['GET', '/Patient/%zz', /percent-encoding/],
    ['GET', '/Patient/%C3', /percent-encoding/],
    ['GET', '/Patient?x=%E0%A4', /percent-encoding/],
    ['GET', '/Patient?%=1', /percent-encoding/],
    ['GET', `/${'A'.repeat(4096)}`, /path is longer/],
    ['GET', `/Patient?x=${'a'.repeat(16384)}`, /query is longer/],
    ['GET', `/Patient?${Array.from({ length: 201 }, (_, i) => `p${i}=1`).join('&')}`, /more than 200/],
    ['GET', '/Patient#frag', /fragment/],
    ['POST', '/Patient?_method=DELETE', /_method, a method override/],
    ['GET', '/Patient/1?%5Fmethod=DELETE', /_method, a method override/],
    ['GET', '/patient/1', /resource type/],
    ['GET', '/Pat1ent', /resource type/],
    ['GET', `/${'A'.repeat(65)}`, /resource type/],
    ['GET', '/_operations/reindex/1', /only _operations URLs/],
    ['GET', '/Patient/a_b', /FHIR id/],
    ['GET', `/Patient/${'a'.repeat(65)}`, /FHIR id/],
    ['GET', '/Patient/%C3%A9', /FHIR id/],
    ['GET', '/Patient/1/_history/v_1', /version id/],
    ['GET', '/Patient/1/observation', /compartment/],
    ['GET', '/$1export', /operation name/],
    ['GET', '/$', /operation name/],
    ['GET', '/Patient/$ex_port', /operation name/],
    ['GET', '/$export/x', /extra path segments/],
    ['GET', '/Patient/$export/x', /extra path segments/],
    ['GET', '/Patient/1/$everything/x', /extra path segments/],
    ['GET', '/Patient/1/_history/2/x', /extra segments/],
    ['GET', '/Patient/1/Observation/x', /extra segments/],
  ];
  it.each(rejected)('%s %j', (method, target, problem) => {
    const r = parseFhirRequest(method, target);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.problem).toMatch(problem);
  });

  it('accepts the limits themselves: 200 parameters, a 4096-character path, a 64-character id', () => {
    const q = Array.from({ length: 200 }, (_, i) => `p${i}=1`).join('&');
    expect(parseFhirRequest('GET', `/Patient?${q}`).ok).toBe(true);
    const base = `/${'x'.repeat(4087)}`;
    expect(`${base}/Patient`).toHaveLength(4096);
    expect(parseFhirRequest('GET', `${base}/Patient`, base).ok).toBe(true);
    expect(parseFhirRequest('GET', `/Patient?x=${'a'.repeat(16382)}`).ok).toBe(true);
    expect(parseFhirRequest('GET', `/Patient/${'a'.repeat(64)}`).ok).toBe(true);
  });

  it('refuses non-string input without throwing', () => {
    expect(parseFhirRequest(undefined as unknown as string, '/Patient').ok).toBe(false);
    expect(parseFhirRequest('GET', null as unknown as string).ok).toBe(false);
    expect(parseFhirRequest('GET', '/Patient', 42 as unknown as string).ok).toBe(false);
  });
});

describe('parseFhirRequest: fuzz', () => {
  // Deterministic PRNG (mulberry32) so a failure reproduces.
  function rng(seed: number): () => number {
    return () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  const pieces = ['/', '/', '%', '%2', '%2F', '%2e', '.', '..', '?', '&', '=', '+', '#', '\\', '$', '_history', '_search',
    'Patient', 'metadata', '1', '*', '\u0000', '\ud800', 'é', 'http://', 'a', 'Z', '-', '%C3%A9', '%zz', ' ', ':'];
  const segments = ['Patient', 'Observation', '1', 'a.b', '_history', '_search', 'metadata', '*', '$export',
    '$everything', '%31', '..', '%2F', '', 'fhir'];
  const methods = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'get', 'BREW', '', '\u0000'];

  it('never throws and always answers ok true or false', () => {
    const random = rng(20240601);
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      // Half the targets are slash-joined plausible segments, so the later checks are reached too.
      const structured = random() < 0.5;
      const length = Math.floor(random() * (structured ? 6 : 12));
      let target = '';
      for (let j = 0; j < length; j++) {
        if (structured) target += `/${segments[Math.floor(random() * segments.length)]!}`;
        else target += random() < 0.8
          ? pieces[Math.floor(random() * pieces.length)]!
          : String.fromCharCode(Math.floor(random() * 0x10000));
      }
      if (structured && random() < 0.3) target += `?${pieces[Math.floor(random() * pieces.length)]!}=1`;
      const method = methods[Math.floor(random() * methods.length)]!;
      const base = random() < 0.5 ? '/' : '/fhir';
      const r = parseFhirRequest(method, target, base);
      expect(typeof r.ok).toBe('boolean');
      if (r.ok) {
        accepted++;
        expect(r.request.path.startsWith('/')).toBe(true);
        expect(Array.isArray(r.request.requires)).toBe(true);
      } else {
        expect(r.problem.length).toBeGreaterThan(0);
      }
    }
    // The generator must also reach the accepting paths, or the fuzz tests only the first check.
    expect(accepted).toBeGreaterThan(50);
  });
});
