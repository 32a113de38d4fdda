import { describe, expect, it } from 'vitest';
import { OPERATION_RULES, requirementFor } from '../../../src/fhir/interactions.js';
import { parseFhirRequest } from '../../../src/fhir/request.js';
import { expandDataActions, satisfies, type ActionRequirement, type DataAction } from '../../../src/core/data-actions.js';

function requires(method: string, target: string): ActionRequirement {
  const result = parseFhirRequest(method, target);
  if (!result.ok) throw new Error(`expected ${method} ${target} to parse, got: ${result.problem}`);
  return result.request.requires;
}

describe('requirementFor: one row per interaction', () => {
  const cases: Array<[string, string, ActionRequirement]> = [
    ['GET', '/Patient/1', [['read', 'readById']]],
    ['HEAD', '/Patient/1', [['read', 'readById']]],
    ['GET', '/Patient/1/_history/2', [['read', 'readById']]],
    ['GET', '/Patient', [['read', 'search']]],
    ['POST', '/Patient/_search', [['read', 'search']]],
    ['GET', '/?_type=Patient', [['read', 'search']]],
    ['GET', '/Patient/1/Observation', [['read', 'search']]],
    ['GET', '/Patient/1/_history', [['read', 'readById']]],
    ['GET', '/Patient/_history', [['read', 'readById']]],
    ['GET', '/_history', [['read', 'readById']]],
    ['GET', '/metadata', [['read', 'readById', 'search']]],
    ['POST', '/Patient', [['write', 'create']]],
    ['PUT', '/Patient/1', [['write', 'update']]],
    ['PATCH', '/Patient/1', [['write', 'update']]],
    ['PUT', '/Patient?identifier=x', [['read', 'search'], ['write', 'update']]],
    ['PATCH', '/Patient?identifier=x', [['read', 'search'], ['write', 'update']]],
    ['DELETE', '/Patient/1', [['delete']]],
    ['DELETE', '/Patient/1?_hardDelete=true', [['delete'], ['hardDelete']]],
    ['DELETE', '/Patient?identifier=x', [['delete'], ['read', 'search']]],
    ['DELETE', '/Patient?identifier=x&_hardDelete=true', [['delete'], ['read', 'search'], ['hardDelete']]],
    // An unseen Bundle (unseenBundles: requireEveryAction) needs every action an entry could need.
    ['POST', '/', ['read', 'write', 'delete', 'hardDelete', 'export', 'import', 'resourceValidate', 'convertData', 'reindex', 'searchParameter', 'bulkOperator', 'editProfileDefinitions'].map((a) => [a as DataAction])],
    ['DELETE', '/metadata', []],
    ['PUT', '/Patient', []],
    // Bulk Data status, cancel and output files: the export's own action (MS GetExportRequestHandler,
    // CancelExportRequestHandler), whatever server convention the status URL follows.
    ['GET', '/_operations/export/42', [['export']]],
    ['HEAD', '/_operations/export/42', [['export']]],
    ['DELETE', '/_operations/export/42', [['export']]],
    ['GET', '/_operations/export/42/Patient-1.ndjson', [['export']]],
    ['GET', '/job/42/status', [['export']]],
    ['DELETE', '/job/42/status', [['export']]],
    ['GET', '/$export-poll-status?_jobId=42', [['export']]],
    ['DELETE', '/$export-poll-status?_jobId=42', [['export']]],
    ['POST', '/$export-poll-status', []],
    ['DELETE', '/_operations/export/42/Patient-1.ndjson', []],
  ];
  it.each(cases)('%s %s', (method, target, expected) => {
    expect(requires(method, target)).toEqual(expected);
  });
});

describe('requirementFor: operations', () => {
  const cases: Array<[string, string, ActionRequirement]> = [
    ['GET', '/$export', [['export']]],
    ['POST', '/Patient/$export', [['export']]],
    ['GET', '/Group/1/$export', [['export']]],
    ['POST', '/$import', [['import']]],
    ['POST', '/Patient/$validate', [['resourceValidate']]],
    ['POST', '/$convert-data', [['convertData']]],
    ['POST', '/$reindex', [['reindex']]],
    ['POST', '/Patient/1/$reindex', [['reindex']]],
    ['DELETE', '/$bulk-delete', [['delete'], ['bulkOperator']]],
    ['DELETE', '/Patient/$bulk-delete?_hardDelete=true', [['delete'], ['bulkOperator'], ['hardDelete']]],
    ['PATCH', '/$bulk-update', [['bulkOperator']]],
    ['DELETE', '/Patient/1/$purge-history', [['delete'], ['hardDelete']]],
    ['DELETE', '/Patient/1/$purge-history?_hardDelete=true', [['delete'], ['hardDelete']]],
    ['GET', '/Patient/1/$everything', [['read']]],
    ['POST', '/Patient/$member-match', [['read']]],
    ['GET', '/Patient/1/$meta', [['read']]],
    ['POST', '/Patient/1/$meta-add', [['write', 'update']]],
    ['POST', '/Patient/1/$meta-delete', [['write', 'update']]],
    ['GET', '/Observation/$lastn', [['read']]],
    ['GET', '/Observation/$stats', [['read']]],
    ['GET', '/ValueSet/$expand', [['read']]],
    ['POST', '/ValueSet/$expand', [['read']]],
    ['GET', '/CodeSystem/$lookup', [['read']]],
    ['GET', '/ValueSet/$validate-code', [['read']]],
    ['GET', '/ConceptMap/$translate', [['read']]],
    ['GET', '/CodeSystem/$subsumes', [['read']]],
    // Unknown operations, a known name in another case, and a known operation with the wrong method.
    ['GET', '/$frobnicate', []],
    ['POST', '/Patient/$docref', []],
    ['GET', '/$EXPORT', []],
    ['GET', '/$import', []],
    ['DELETE', '/Patient/1/$everything', []],
    ['PUT', '/$export', []],
    ['GET', '/$bulk-delete', []],
  ];
  it.each(cases)('%s %s', (method, target, expected) => {
    expect(requires(method, target)).toEqual(expected);
  });

  it('names every operation in the FHIR operation-name form', () => {
    for (const name of OPERATION_RULES.keys()) expect(name).toMatch(/^\$[A-Za-z][A-Za-z0-9-]{0,63}$/);
  });
});

describe('requirementFor: resource types with their own write right', () => {
  const cases: Array<[string, string, ActionRequirement]> = [
    ['POST', '/SearchParameter', [['write', 'create'], ['searchParameter']]],
    ['PUT', '/SearchParameter/x', [['write', 'update'], ['searchParameter']]],
    ['DELETE', '/SearchParameter/x', [['delete'], ['searchParameter']]],
    ['DELETE', '/SEARCHPARAMETER/x', [['delete'], ['searchParameter']]],
    ['PUT', '/StructureDefinition/x', [['write', 'update'], ['editProfileDefinitions']]],
    ['POST', '/ValueSet', [['write', 'create'], ['editProfileDefinitions']]],
    ['PATCH', '/CodeSystem/x', [['write', 'update'], ['editProfileDefinitions']]],
    ['DELETE', '/ConceptMap?url=x', [['delete'], ['read', 'search'], ['editProfileDefinitions']]],
    ['DELETE', '/StructureDefinition/x?_hardDelete=true', [['delete'], ['editProfileDefinitions'], ['hardDelete']]],
    ['DELETE', '/SearchParameter/$bulk-delete', [['delete'], ['bulkOperator'], ['searchParameter']]],
    // Reads of these types need nothing more.
    ['GET', '/SearchParameter/x', [['read', 'readById']]],
    ['GET', '/StructureDefinition', [['read', 'search']]],
    ['POST', '/ValueSet/$expand', [['read']]],
  ];
  it.each(cases)('%s %s', (method, target, expected) => {
    expect(requires(method, target)).toEqual(expected);
  });
});

describe('requirementFor against granted actions', () => {
  const cases: Array<[string[], string, string, boolean]> = [
    [['read'], 'GET', '/Patient/1', true],
    [['readById'], 'GET', '/Patient/1', true],
    [['readById'], 'GET', '/Patient', false],
    [['search'], 'GET', '/Patient', true],
    [['search'], 'GET', '/metadata', true],
    [['read'], 'POST', '/Patient', false],
    [['write'], 'POST', '/Patient', true],
    [['create'], 'PUT', '/Patient/1', false],
    [['write'], 'PUT', '/Patient?identifier=x', false],
    [['search', 'update'], 'PUT', '/Patient?identifier=x', true],
    [['write'], 'DELETE', '/Patient/1', false],
    [['delete'], 'DELETE', '/Patient/1?_hardDelete=true', false],
    [['delete', 'hardDelete'], 'DELETE', '/Patient/1?_hardDelete=true', true],
    [['*'], 'GET', '/$frobnicate', false],
    [['*'], 'DELETE', '/Patient/$bulk-delete?_hardDelete=true', true],
    [['read', 'write'], 'POST', '/', false],
    [['read', 'write', 'delete'], 'POST', '/', false],
    [['read', 'write', 'delete', 'hardDelete', 'searchParameter', 'editProfileDefinitions'], 'POST', '/', false],
    [['*'], 'POST', '/', true],
    [['write'], 'POST', '/SearchParameter', false],
    [['write', 'searchParameter'], 'POST', '/SearchParameter', true],
  ];
  it.each(cases)('%j: %s %s -> %s', (granted, method, target, allowed) => {
    expect(satisfies(expandDataActions(granted), requires(method, target))).toBe(allowed);
  });

  it('refuses an operation request that names no operation', () => {
    const base = { method: 'GET', path: '/', query: [], hardDelete: false } as const;
    expect(requirementFor({ ...base, interaction: 'operation' })).toEqual([]);
    expect(requirementFor({ ...base, interaction: 'unknown' })).toEqual([]);
  });
});
