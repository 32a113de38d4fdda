/**
 * A rolling deploy stops the standalone host with SIGTERM while requests are arriving. The host
 * (dist/bundle/main.js, as `npm start` runs it) must answer every request it had accepted, close
 * its keep-alive connections, write every decision-log line and exit 0; what it cannot finish
 * within PDP_DRAIN_TIMEOUT_SECONDS is closed then.
 *
 * "Accepted" is proven by the server itself: a request sent with `Expect: 100-continue` is
 * answered `100 Continue` only once the host has read its head, and every decision the host made
 * is a line of its decision log. Every logged decision must have reached its client.
 */
import { once } from 'node:events';
import { Agent, request, type ClientRequest, type IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, startNode, type RunningChild } from '../../testkit/child.js';
import { DEV_OBJECT_ID, DevIdentityProvider } from '../../testkit/dev-idp.js';

const MAIN = new URL('../../dist/bundle/main.js', import.meta.url).pathname;
const AUDIENCE = 'https://fhir.example.test';

let idp: DevIdentityProvider;
let token: string;

beforeAll(async () => {
  idp = await DevIdentityProvider.start();
  token = await idp.mint({ audience: AUDIENCE, scp: 'user_impersonation' });
});

afterAll(async () => {
  await idp.close();
});

interface Host {
  readonly running: RunningChild;
  readonly port: number;
  readonly stdout: () => string;
  readonly stderr: () => string;
  readonly exited: Promise<number | null>;
}

async function startHost(drainSeconds: number): Promise<Host> {
  const config = { authority: idp.authority, audience: AUDIENCE, accessPolicies: [{ objectId: DEV_OBJECT_ID, dataActions: ['read'] }] };
  const running = await startNode([MAIN], {
    env: cleanEnv({ PORT: '0', PDP_CONFIG: JSON.stringify(config), PDP_LOG_DECISIONS: 'true', PDP_DRAIN_TIMEOUT_SECONDS: String(drainSeconds) }),
    stream: 'stderr',
    pattern: /listening on loopback only \(http:\/\/127\.0\.0\.1:(\d+)\)/,
  });
  let out = '';
  let err = '';
  running.child.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  running.child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exited = once(running.child, 'exit').then(([code]) => code as number | null);
  return { running, port: Number(running.match[1]), stdout: () => out, stderr: () => err, exited };
}

const QUESTION = (): string => JSON.stringify({ method: 'GET', path: '/Patient/1', headers: { authorization: `Bearer ${token}` } });

interface Answer {
  readonly status: number;
  readonly connection: string | undefined;
  readonly body: { reason: string; decisionId: string };
}

function answerOf(req: ClientRequest): Promise<Answer> {
  return new Promise((resolve, reject) => {
    req.once('error', reject);
    req.once('response', (res: IncomingMessage) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.once('error', reject);
      res.once('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: JSON.parse(text) as Answer['body'] }));
    });
  });
}

/** A question whose head the host has read (it said 100 Continue) and whose body is still to come. */
async function acceptedButUnfinished(port: number): Promise<{ finish(): void; answer: Promise<Answer> }> {
  const body = QUESTION();
  const req = request({
    host: '127.0.0.1',
    port,
    method: 'POST',
    path: '/api/decide',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), expect: '100-continue' },
  });
  const answer = answerOf(req);
  answer.catch(() => undefined);
  req.flushHeaders();
  await once(req, 'continue');
  return { finish: () => req.end(body), answer };
}

/** Keep-alive clients asking one question after another until the host stops answering. */
function load(port: number, clients: number): { answered: string[]; failures: string[]; done: Promise<void>; firstAnswers: Promise<void> } {
  const agent = new Agent({ keepAlive: true, maxSockets: clients });
  const answered: string[] = [];
  const failures: string[] = [];
  let signalFirst: () => void = () => undefined;
  const firstAnswers = new Promise<void>((resolve) => (signalFirst = resolve));
  const client = async (): Promise<void> => {
    for (;;) {
      const body = QUESTION();
      const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/api/decide', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } });
      req.end(body);
      try {
        const a = await answerOf(req);
        answered.push(a.body.decisionId);
        if (answered.length >= clients * 5) signalFirst();
      } catch (err) {
        // After SIGTERM: the listener is closed (ECONNREFUSED), or an idle keep-alive connection
        // was closed as the request went out. Neither request was accepted.
        failures.push((err as NodeJS.ErrnoException).code ?? String(err));
        return;
      }
    }
  };
  const done = Promise.all(Array.from({ length: clients }, client)).then(() => agent.destroy());
  return { answered, failures, done, firstAnswers };
}

function loggedDecisionIds(stdout: string): string[] {
  return stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { decisionId: string }).decisionId);
}

describe('SIGTERM under load (dist/bundle/main.js)', () => {
  it('answers every accepted request, closes its connections, logs every decision, exits 0', async () => {
    const host = await startHost(20);
    const traffic = load(host.port, 8);
    await traffic.firstAnswers;
    const unfinished = await Promise.all(Array.from({ length: 6 }, () => acceptedButUnfinished(host.port)));

    const stopping = new Promise<void>((resolve) => {
      host.running.child.stderr!.on('data', () => {
        if (host.stderr().includes('SIGTERM: stopping')) resolve();
      });
    });
    host.running.child.kill('SIGTERM');
    await stopping;
    // Their bodies arrive after the signal: the host is still there to answer them.
    for (const u of unfinished) u.finish();
    const late = await Promise.all(unfinished.map((u) => u.answer));
    await traffic.done;
    const code = await host.exited;

    expect(code).toBe(0);
    for (const a of late) {
      expect(a).toMatchObject({ status: 200, body: { reason: 'allowed' } });
      // Told not to reuse the connection: the next request goes to another instance.
      expect(a.connection).toBe('close');
    }
    const received = new Set([...traffic.answered, ...late.map((a) => a.body.decisionId)]);
    const logged = loggedDecisionIds(host.stdout());
    // Accepted = decided (logged); every one of them was answered, and nothing answered went unlogged.
    expect(logged.filter((id) => !received.has(id))).toEqual([]);
    expect(logged.length).toBe(received.size);
    expect(traffic.failures.every((f) => f === 'ECONNREFUSED' || f === 'ECONNRESET')).toBe(true);
    const inFlight = Number(/stopped: (\d+) request\(s\) were in flight/.exec(host.stderr())?.[1]);
    expect(inFlight).toBeGreaterThanOrEqual(unfinished.length);
    expect(host.stderr()).not.toContain('drain timeout');
  });

  it('closes what is still open at PDP_DRAIN_TIMEOUT_SECONDS, and still exits 0', async () => {
    const host = await startHost(1);
    const never = await acceptedButUnfinished(host.port);
    host.running.child.kill('SIGTERM');
    const code = await host.exited;
    expect(code).toBe(0);
    await expect(never.answer).rejects.toThrow();
    expect(host.stderr()).toMatch(/stopped: 1 request\(s\) were in flight; 1 still open at the drain timeout were closed/);
  });
});
