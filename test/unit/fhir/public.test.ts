import { describe, expect, it } from 'vitest';
import { publicDiscovery } from '../../../src/fhir/public.js';

describe('publicDiscovery: SMART discovery is public, nothing else', () => {
  it.each([
    ['GET', '/metadata', '/'],
    ['HEAD', '/metadata', '/'],
    ['get', '/metadata', '/'],
    ['GET', '/metadata?_format=json', '/'],
    ['GET', '/metadata/', '/'],
    ['GET', '/.well-known/smart-configuration', '/'],
    ['HEAD', '/.well-known/smart-configuration', '/'],
    ['GET', '/fhir/metadata', '/fhir'],
    ['GET', '/fhir/.well-known/smart-configuration', '/fhir/'],
    ['GET', 'https://fhir.example/fhir/metadata', '/fhir'],
  ])('%s %s (base %s) is public', (method, target, base) => {
    expect(publicDiscovery(method, target, base)).toMatchObject({ path: expect.stringMatching(/^\/(metadata|\.well-known\/smart-configuration)$/) });
  });

  it.each([
    // Other methods on the same paths.
    ['POST', '/metadata', '/'],
    ['DELETE', '/metadata', '/'],
    ['PUT', '/.well-known/smart-configuration', '/'],
    ['OPTIONS', '/metadata', '/'],
    ['GEt\u017f', '/metadata', '/'],
    // The same names anywhere but at the FHIR base.
    ['GET', '/metadata', '/fhir'],
    ['GET', '/other/metadata', '/fhir'],
    ['GET', '/fhir/x/metadata', '/fhir'],
    ['GET', '/Patient/metadata', '/'],
    ['GET', '/Patient/1/metadata', '/'],
    ['GET', '/x/.well-known/smart-configuration', '/'],
    ['GET', '/.well-known/openid-configuration', '/'],
    ['GET', '/.well-known/smart-configuration/x', '/'],
    // Paths that a server might normalise into discovery, and ones that only look like it.
    ['GET', '/x/../metadata', '/'],
    ['GET', '/%2e%2e/metadata', '/'],
    ['GET', '/metadata#x', '/'],
    ['GET', '/metadata%2F', '/'],
    ['GET', '/metadata2', '/'],
    ['GET', '/Patient?x=/metadata', '/'],
    ['GET', '/', '/'],
    ['GET', '/Patient/1', '/'],
  ])('%s %s (base %s) is not public', (method, target, base) => {
    expect(publicDiscovery(method, target, base)).toBeUndefined();
  });
});
