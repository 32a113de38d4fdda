/**
 * compartmentLookup against the real FHIR upstream (testkit/fhir-upstream.ts, @medplum/fhir-router):
 * a patient-scoped principal reads an Observation by id, and fhir-pdp asks the FHIR server,
 * `Observation?_id=…&patient=Patient/…&_summary=count`, whether it is in the patient's compartment.
 * Its own token comes from @azure/identity's real managed identity path (IDENTITY_ENDPOINT +
 * IDENTITY_HEADER, the App Service / Functions source) served by a local stand-in, and the upstream
 * records that it was sent. A second server answers the ways a FHIR server can fail.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PdpConfigInput } from '../../src/config/schema.js';
import { FhirCompartmentLookup } from '../../src/lookup/fhir-lookup.js';
import { DevIdentityProvider } from '../../testkit/dev-idp.js';
import { startFhirUpstream, type FhirUpstream } from '../../testkit/fhir-upstream.js';
import { ManagedIdentityEndpoint } from '../../testkit/managed-identity.js';
import { E2E_AUDIENCE, outcome, startE2ePdp, type E2ePdp } from '../../testkit/service.js';

const PATIENT_USER = '1d2c3b4a-5f6e-4a7b-8c9d-0e1f2a3b4c5d';
const MI_CLIENT_ID = '6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f';

const SEED = [
  { resourceType: 'Patient' as const, id: 'A' },
  { resourceType: 'Patient' as const, id: 'B' },
  { resourceType: 'Observation' as const, id: 'obs-a', status: 'final' as const, code: { text: 'glucose' }, subject: { reference: 'Patient/A' } },
  { resourceType: 'Observation' as const, id: 'obs-b', status: 'final' as const, code: { text: 'glucose' }, subject: { reference: 'Patient/B' } },
  { resourceType: 'Observation' as const, id: 'obs-a2', status: 'final' as const, code: { text: 'weight' }, subject: { reference: 'Patient/A' } },
];

let entra: DevIdentityProvider;
let upstream: FhirUpstream;

function configWith(compartmentLookup: PdpConfigInput['compartmentLookup'], extra: Partial<PdpConfigInput> = {}): PdpConfigInput {
  return {
    authority: entra.authority,
    audience: E2E_AUDIENCE,
    accessPolicies: [{ objectId: PATIENT_USER, dataActions: ['read', 'smart'] }],
    fetchTimeoutMs: 2000,
    ...(compartmentLookup ? { compartmentLookup } : {}),
    ...extra,
  };
}

/** A patient-scoped token of patient A (fhirUser) or another. */
function patientToken(patient = 'A', scp = 'launch/patient patient/Observation.rs'): Promise<string> {
  return entra.mint({ audience: E2E_AUDIENCE, oid: PATIENT_USER, scp, fhirUser: `Patient/${patient}` });
}

function lookups(): string[] {
  return upstream.requests.filter((r) => r.url.includes('_summary=count')).map((r) => r.url);
}

beforeAll(async () => {
  [entra, upstream] = await Promise.all([DevIdentityProvider.start(), startFhirUpstream({ seed: SEED })]);
});

afterAll(async () => {
  await Promise.all([entra?.close(), upstream?.close()]);
});

describe('a read by id, proven by asking the FHIR server', () => {
  let pdp: E2ePdp;
  let identity: ManagedIdentityEndpoint;
  const saved = { endpoint: process.env.IDENTITY_ENDPOINT, header: process.env.IDENTITY_HEADER };

  beforeAll(async () => {
    identity = await ManagedIdentityEndpoint.start();
    // @azure/identity's App Service managed identity source, read when the credential is made.
    process.env.IDENTITY_ENDPOINT = identity.url;
    process.env.IDENTITY_HEADER = identity.identityHeader;
    pdp = await startE2ePdp(configWith({ fhirBaseUrl: upstream.origin, credential: { kind: 'managedIdentity', clientId: MI_CLIENT_ID } }));
    await pdp.service.prepare();
  });

  afterAll(async () => {
    await pdp?.close();
    await identity?.close();
    restoreEnv('IDENTITY_ENDPOINT', saved.endpoint);
    restoreEnv('IDENTITY_HEADER', saved.header);
  });

  it("allows patient A's read of A's Observation, after the FHIR server counted it, with fhir-pdp's own token", async () => {
    upstream.clearRequests();
    const a = await pdp.ask({ path: '/Observation/obs-a', token: await patientToken() });
    expect(outcome(a)).toEqual({ reason: 'allowed', status: 200 });
    // Proven, not delegated: the gateway is told no compartment to enforce.
    expect(a.body.compartment).toBeUndefined();
    expect(lookups()).toEqual(['/Observation?_id=obs-a&patient=Patient/A&_summary=count']);
    const asked = upstream.requests[0]!;
    expect(asked.headers.authorization).toEqual([`Bearer ${identity.issued.at(-1)}`]);
    expect(asked.headers.prefer).toEqual(['handling=strict']);
    // The scope {fhirBaseUrl}/.default, as the managed identity endpoint's resource; the user-assigned identity named.
    expect(identity.requests.at(-1)).toEqual({ resource: upstream.origin, clientId: MI_CLIENT_ID, identityHeaderOk: true });
  });

  it("refuses patient A's read of B's Observation (insufficient_scope), on the FHIR server's count of 0", async () => {
    upstream.clearRequests();
    const b = await pdp.ask({ path: '/Observation/obs-b', token: await patientToken() });
    expect(outcome(b)).toEqual({ reason: 'insufficient_scope', status: 403 });
    expect(b.body.hint).toMatch(/does not find Observation\/obs-b in the compartment of Patient\/A/);
    expect(lookups()).toEqual(['/Observation?_id=obs-b&patient=Patient/A&_summary=count']);
    // The same resource is patient B's own.
    expect(outcome(await pdp.ask({ path: '/Observation/obs-b', token: await patientToken('B') }))).toEqual({ reason: 'allowed', status: 200 });
  });

  it('answers again from the cache, found and not found alike, without a second request; a vread shares the answer', async () => {
    upstream.clearRequests();
    const token = await patientToken();
    expect(outcome(await pdp.ask({ path: '/Observation/obs-a', token }))).toEqual({ reason: 'allowed', status: 200 });
    expect(outcome(await pdp.ask({ path: '/Observation/obs-a/_history/1', token }))).toEqual({ reason: 'allowed', status: 200 });
    expect(outcome(await pdp.ask({ path: '/Observation/obs-b', token }))).toEqual({ reason: 'insufficient_scope', status: 403 });
    expect(lookups()).toEqual([]);
  });

  it('asks once for concurrent identical reads, and again once the answer is older than cacheSeconds', async () => {
    upstream.clearRequests();
    const token = await patientToken();
    const answers = await Promise.all(Array.from({ length: 8 }, () => pdp.ask({ path: '/Observation/obs-a2', token })));
    expect(answers.map((a) => a.body.reason)).toEqual(Array(8).fill('allowed'));
    expect(lookups()).toEqual(['/Observation?_id=obs-a2&patient=Patient/A&_summary=count']);
    pdp.clock.advance(61);
    expect(outcome(await pdp.ask({ path: '/Observation/obs-a2', token: await patientToken() }))).toEqual({ reason: 'allowed', status: 200 });
    expect(lookups()).toHaveLength(2);
  });

  it('shows the lookup in the explain trace: asked, then the cache answering', async () => {
    const token = await patientToken();
    const input = { method: 'GET', target: '/Observation/obs-a', credentials: { authorization: [`Bearer ${token}`] }, mode: 'explain' as const };
    pdp.clock.advance(61);
    const first = await pdp.service.decide(input, { trace: true });
    const second = await pdp.service.decide(input, { trace: true });
    const step = (d: typeof first) => d.trace!.find((s) => s.id === 'compartmentLookup')!;
    expect(step(first)).toMatchObject({ outcome: 'pass', found: expect.stringMatching(/^the FHIR server finds Observation\/obs-a in the compartment of Patient\/A/) });
    expect(step(second)).toMatchObject({ outcome: 'pass', found: expect.stringMatching(/^the cached answer of the FHIR server finds/) });
    expect(first.trace!.find((s) => s.id === 'compartment')!.found).toMatch(/to be proven by the FHIR server/);
  });

  it('a managed identity endpoint that refuses fhir-pdp is a 503, and the FHIR server is not asked', async () => {
    // Another identity: @azure/identity keeps managed identity tokens in a cache shared by the process.
    const refused = await startE2ePdp(configWith({ fhirBaseUrl: upstream.origin, credential: { kind: 'managedIdentity', clientId: '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d' } }));
    identity.refuse = true;
    try {
      upstream.clearRequests();
      const a = await refused.ask({ path: '/Observation/obs-a', token: await patientToken() });
      expect(outcome(a)).toEqual({ reason: 'directory_unavailable', status: 503 });
      expect(a.body.hint).toMatch(/failed \(lookup_credential\): no token for the FHIR server/);
      expect(lookups()).toEqual([]);
    } finally {
      identity.refuse = false;
      await refused.close();
    }
  });

  it('asks nothing for what the URL decides: the patient itself, a search naming the patient, another type', async () => {
    upstream.clearRequests();
    const token = await patientToken('A', 'launch/patient patient/Observation.rs patient/Patient.rs');
    expect(outcome(await pdp.ask({ path: '/Patient/A', token }))).toEqual({ reason: 'allowed', status: 200 });
    expect(outcome(await pdp.ask({ path: '/Patient/B', token }))).toEqual({ reason: 'insufficient_scope', status: 403 });
    expect(outcome(await pdp.ask({ path: '/Observation?patient=A', token }))).toEqual({ reason: 'allowed', status: 200 });
    expect(outcome(await pdp.ask({ path: '/Condition/c1', token }))).toEqual({ reason: 'insufficient_scope', status: 403 });
    expect(lookups()).toEqual([]);
  });
});

describe('the lookup edge on its own', () => {
  it('shares one request between identical lookups in flight, and keys by patient', async () => {
    upstream.clearRequests();
    const outcomes: string[] = [];
    const lookup = new FhirCompartmentLookup({ baseUrl: upstream.origin, timeoutMs: 2000, cacheSeconds: 60, maxEntries: 10, maxResponseBytes: 4096, onLookup: (o) => outcomes.push(o) });
    const q = { resourceType: 'Observation', id: 'obs-a', parameter: 'patient' as const, patient: 'A' };
    const first = lookup.check(q);
    const second = lookup.check(q);
    expect(second).toBe(first);
    const other = lookup.check({ ...q, patient: 'B' });
    expect(await Promise.all([first, second, other])).toEqual([
      { found: true, source: 'server' },
      { found: true, source: 'server' },
      { found: false, source: 'server' },
    ]);
    expect(lookups()).toEqual(['/Observation?_id=obs-a&patient=Patient/A&_summary=count', '/Observation?_id=obs-a&patient=Patient/B&_summary=count']);
    // Answered from memory now: a value, not a promise.
    expect(lookup.check(q)).toEqual({ found: true, source: 'cache' });
    expect(outcomes.sort()).toEqual(['cache_hit', 'found', 'not_found']);
  });

  it('asks by subject for a type whose patient parameter is subject only', async () => {
    upstream.clearRequests();
    const lookup = new FhirCompartmentLookup({ baseUrl: upstream.origin, timeoutMs: 2000, cacheSeconds: 0, maxEntries: 10, maxResponseBytes: 4096 });
    expect(await lookup.check({ resourceType: 'Observation', id: 'obs-a', parameter: 'subject', patient: 'A' })).toEqual({ found: true, source: 'server' });
    expect(lookups()).toEqual(['/Observation?_id=obs-a&subject=Patient/A&_summary=count']);
  });
});

describe('with no compartmentLookup configured', () => {
  it('refuses (compartmentMode refuse) or delegates (delegate) a read by id as before, asking nothing', async () => {
    const [strict, delegating] = await Promise.all([startE2ePdp(configWith(undefined)), startE2ePdp(configWith(undefined, { compartmentMode: 'delegate' }))]);
    try {
      upstream.clearRequests();
      const token = await patientToken();
      expect(outcome(await strict.ask({ path: '/Observation/obs-a', token }))).toEqual({ reason: 'insufficient_scope', status: 403 });
      const delegated = await delegating.ask({ path: '/Observation/obs-a', token });
      expect(outcome(delegated)).toEqual({ reason: 'allowed', status: 200 });
      expect(delegated.body.compartment).toBe('Patient/A');
      expect(upstream.requests).toEqual([]);
    } finally {
      await Promise.all([strict.close(), delegating.close()]);
    }
  });
});

describe('a lookup that fails is indeterminate (503), never an allow, and is not cached', () => {
  let bad: BadFhirServer;
  let pdp: E2ePdp;

  beforeAll(async () => {
    bad = await BadFhirServer.start();
    pdp = await startE2ePdp(
      configWith({ fhirBaseUrl: bad.origin, credential: { kind: 'none' }, timeoutMs: 300, maxResponseBytes: 1024 }, { decisionBudgetMs: 2000 }),
    );
  });

  afterAll(async () => {
    await pdp?.close();
    await bad?.close();
  });

  it.each<[BadMode, RegExp]>([
    ['status500', /failed \(lookup_status\): the FHIR server answered HTTP 500/],
    ['slow', /failed \(lookup_timeout\)/],
    ['stalls-mid-body', /failed \(lookup_timeout\)/],
    ['redirect', /failed \(lookup_status\): the FHIR server answered HTTP 302/],
    ['not-json', /failed \(lookup_malformed\): .*not JSON/],
    ['operation-outcome', /failed \(lookup_malformed\): the FHIR server answered a OperationOutcome, not a searchset Bundle/],
    ['no-total', /failed \(lookup_malformed\): .*no numeric total/],
    ['oversized-declared', /failed \(lookup_oversized\): .*declares/],
    ['oversized-chunked', /failed \(lookup_oversized\): .*longer than maxResponseBytes \(1024\)/],
  ])('%s', async (mode, hint) => {
    bad.mode = mode;
    const a = await pdp.ask({ path: `/Observation/${mode}`, token: await patientToken() });
    expect(outcome(a)).toEqual({ reason: 'directory_unavailable', status: 503 });
    expect(a.body.hint).toMatch(hint);
    // Failures are not cached: the server answering again is asked again, and its answer decides.
    bad.mode = 'found';
    expect(outcome(await pdp.ask({ path: `/Observation/${mode}`, token: await patientToken() }))).toEqual({ reason: 'allowed', status: 200 });
  });

  it('sends no Authorization header with credential kind none', () => {
    expect(bad.authorizations.every((h) => h === undefined)).toBe(true);
    expect(bad.authorizations.length).toBeGreaterThan(0);
  });

  it('a FHIR server that is down is a 503', async () => {
    const gone = await BadFhirServer.start();
    const origin = gone.origin;
    await gone.close();
    const down = await startE2ePdp(configWith({ fhirBaseUrl: origin, credential: { kind: 'none' } }));
    try {
      const a = await down.ask({ path: '/Observation/obs-a', token: await patientToken() });
      expect(outcome(a)).toEqual({ reason: 'directory_unavailable', status: 503 });
      expect(a.body.hint).toMatch(/failed \(lookup_unreachable\)/);
    } finally {
      await down.close();
    }
  });

  it("runs inside the decision's budget: a lookup slower than decisionBudgetMs is a 503 naming the budget", async () => {
    const slowPdp = await startE2ePdp(configWith({ fhirBaseUrl: bad.origin, credential: { kind: 'none' }, timeoutMs: 5000 }, { decisionBudgetMs: 200 }));
    try {
      bad.mode = 'slow';
      const token = await patientToken();
      // The first decision verifies the token too; the budget is measured on the cached one.
      await slowPdp.ask({ path: '/Observation/warm', token });
      const a = await slowPdp.ask({ path: '/Observation/budget', token });
      expect(outcome(a)).toEqual({ reason: 'directory_unavailable', status: 503 });
      expect(a.body.hint).toMatch(/decisionBudgetMs \(200 ms\) during compartment lookup/);
    } finally {
      bad.releaseHanging();
      await slowPdp.close();
    }
  });
});

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

type BadMode =
  | 'found'
  | 'status500'
  | 'slow'
  | 'stalls-mid-body'
  | 'redirect'
  | 'not-json'
  | 'operation-outcome'
  | 'no-total'
  | 'oversized-declared'
  | 'oversized-chunked';

/** A FHIR server that answers each lookup the way `mode` says. */
class BadFhirServer {
  mode: BadMode = 'found';
  readonly authorizations: Array<string | undefined> = [];
  private readonly hanging = new Set<ServerResponse>();
  private constructor(
    private readonly server: Server,
    readonly origin: string,
  ) {}

  static async start(): Promise<BadFhirServer> {
    const server = createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    const s = new BadFhirServer(server, `http://127.0.0.1:${port}`);
    server.on('request', (req, res) => s.answer(req, res));
    return s;
  }

  private answer(req: IncomingMessage, res: ServerResponse): void {
    this.authorizations.push(req.headers.authorization);
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/fhir+json' }).end(JSON.stringify(body));
    };
    switch (this.mode) {
      case 'found':
        return json(200, { resourceType: 'Bundle', type: 'searchset', total: 1 });
      case 'status500':
        return json(500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception' }] });
      case 'slow':
        this.hanging.add(res);
        return;
      case 'stalls-mid-body':
        res.writeHead(200, { 'content-type': 'application/fhir+json' });
        res.write('{"resourceType":"Bundle",');
        this.hanging.add(res);
        return;
      case 'redirect':
        res.writeHead(302, { location: 'http://127.0.0.1:1/elsewhere' }).end();
        return;
      case 'not-json':
        res.writeHead(200, { 'content-type': 'text/html' }).end('<html>login</html>');
        return;
      case 'operation-outcome':
        return json(200, { resourceType: 'OperationOutcome', issue: [] });
      case 'no-total':
        return json(200, { resourceType: 'Bundle', type: 'searchset', entry: [] });
      case 'oversized-declared': {
        const body = JSON.stringify({ resourceType: 'Bundle', type: 'searchset', total: 1, padding: 'x'.repeat(4096) });
        res.writeHead(200, { 'content-type': 'application/fhir+json', 'content-length': Buffer.byteLength(body) }).end(body);
        return;
      }
      case 'oversized-chunked':
        res.writeHead(200, { 'content-type': 'application/fhir+json' });
        res.write('{"resourceType":"Bundle","type":"searchset","total":1,"padding":"');
        res.write('x'.repeat(4096));
        res.end('"}');
        return;
    }
  }

  releaseHanging(): void {
    for (const res of this.hanging) res.destroy();
    this.hanging.clear();
  }

  close(): Promise<void> {
    this.releaseHanging();
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

