import { describe, expect, it } from 'vitest';
import { audienceHint, tenantOf, untrustedIssuerHint } from '../../../src/identity/hints.js';

const TENANT = '8f6d2c1e-4b7a-4e39-9c5d-2a1b3c4d5e6f';
const OTHER_TENANT = '0b8c1a2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d';
const CLIENT = '1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b';
const V1 = `https://sts.windows.net/${TENANT}/`;
const V2 = `https://login.microsoftonline.com/${TENANT}/v2.0`;
const FHIR = 'https://fhir.example.test';

describe('tenantOf', () => {
  it.each([
    [V1, TENANT],
    [`https://login.microsoftonline.com/${TENANT.toUpperCase()}/v2.0`, TENANT],
    ['https://idp.example.test/realms/fhir', undefined],
  ])('%s -> %s', (iss, tenant) => {
    expect(tenantOf(iss)).toBe(tenant);
  });
});

describe('audienceHint: names the aud found and the audiences accepted, and says what to change', () => {
  it('a Microsoft Graph token (by app id and by URL)', () => {
    for (const aud of ['00000003-0000-0000-c000-000000000000', 'https://graph.microsoft.com']) {
      const hint = audienceHint([aud], [FHIR]);
      expect(hint).toContain('Microsoft Graph');
      expect(hint).toContain(aud);
      expect(hint).toContain(FHIR);
    }
  });

  it('an aud that differs only by a trailing slash', () => {
    const hint = audienceHint([`${FHIR}/`], [FHIR]);
    expect(hint).toContain('trailing slash');
    expect(hint).toContain(`${FHIR}/`);
    expect(hint).toContain(FHIR);
  });

  it('an aud that is the client id while the App ID URI is configured', () => {
    const hint = audienceHint([CLIENT], [FHIR, `api://${CLIENT}`]);
    expect(hint).toContain(`client id ${CLIENT}`);
    expect(hint).toContain(`api://${CLIENT}`);
    expect(hint).toContain('`audiences`');
  });

  it('an aud that is a client id with no App ID URI configured', () => {
    const hint = audienceHint([CLIENT], [FHIR]);
    expect(hint).toContain(CLIENT);
    expect(hint).toContain(`[${FHIR}]`);
    expect(hint).toContain(`${FHIR}/.default`);
  });

  it('an App ID URI while only the client id is configured', () => {
    const hint = audienceHint([`api://${CLIENT}`], [CLIENT]);
    expect(hint).toContain(`api://${CLIENT}`);
    expect(hint).toContain(`client id ${CLIENT}`);
  });

  it('any other audience, listing every value of an array aud', () => {
    const hint = audienceHint(['https://other.example', 'urn:x'], [FHIR, 'api://fhir']);
    expect(hint).toContain('[https://other.example, urn:x]');
    expect(hint).toContain(`[${FHIR}, api://fhir]`);
  });
});

describe('untrustedIssuerHint: names the iss found and the issuers trusted', () => {
  it('a token of another tenant', () => {
    const iss = `https://login.microsoftonline.com/${OTHER_TENANT}/v2.0`;
    const hint = untrustedIssuerHint(iss, [V1, V2]);
    expect(hint).toContain(OTHER_TENANT);
    expect(hint).toContain(TENANT);
    expect(hint).toContain('another tenant');
  });

  it('a v2 token where only the v1 issuer is trusted', () => {
    const hint = untrustedIssuerHint(V2, [V1]);
    expect(hint).toContain(V2);
    expect(hint).toContain(V1);
    expect(hint).toContain('v2.0 issuer');
  });

  it('a v1 token where only the v2 issuer is trusted (authority ends with /v2.0)', () => {
    const hint = untrustedIssuerHint(V1, [V2]);
    expect(hint).toContain(V1);
    expect(hint).toContain(V2);
    expect(hint).toContain('accessTokenAcceptedVersion');
  });

  it('an unrelated issuer', () => {
    const hint = untrustedIssuerHint('https://evil.example.test/', [V1, V2]);
    expect(hint).toContain('https://evil.example.test/');
    expect(hint).toContain(`[${V1}, ${V2}]`);
  });
});
