/**
 * The README's first command: `npm run dev` prints requests whose answers are an allow, a 401 and
 * a 403 (and a gateway-mode request). This runs the built sandbox as a subprocess on port 0,
 * reads what it prints, and sends exactly those requests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const DEV = new URL('../../dist/testkit/dev.js', import.meta.url).pathname;

describe('npm run dev (the development sandbox)', () => {
  let child: ChildProcess;
  let printed = '';

  beforeAll(async () => {
    child = spawn(process.execPath, [DEV], { env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.setEncoding('utf8');
    // Wait for the last line of the banner, not for a time.
    await new Promise<void>((resolve, reject) => {
      child.stderr!.on('data', (chunk: string) => {
        printed += chunk;
        if (printed.includes('Ctrl-C stops')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`dev exited (${code}) before it was ready:\n${printed}`)));
    });
  });

  afterAll(async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  });

  /** The JSON-mode commands, in the order printed: `curl -s URL -H 'x-functions-key: K' ... -d '<json>'`. */
  function jsonCommands(): Array<{ url: string; key: string; body: string }> {
    const out: Array<{ url: string; key: string; body: string }> = [];
    const re = /curl -s (\S+) -H 'x-functions-key: ([^']+)' -H 'content-type: application\/json' \\\n\s+-d '([^']+)'/g;
    for (const m of printed.matchAll(re)) out.push({ url: m[1]!, key: m[2]!, body: m[3]! });
    return out;
  }

  it('prints three ready-to-run requests answered allow, 401 and 403', async () => {
    const commands = jsonCommands();
    expect(commands).toHaveLength(3);
    const answers = [];
    for (const c of commands) {
      const res = await fetch(c.url, { method: 'POST', headers: { 'x-functions-key': c.key, 'content-type': 'application/json' }, body: c.body });
      expect(res.status).toBe(200);
      answers.push((await res.json()) as { decision: string; status: number; reason: string; hint?: string });
    }
    expect(answers.map((a) => [a.status, a.reason])).toEqual([
      [200, 'allowed'],
      [401, 'audience_mismatch'],
      [403, 'principal_not_allowed'],
    ]);
    // The admin key in the printed commands shows the operator hint.
    expect(answers[1]!.hint).toContain('aud is the client id');
  });

  it('prints a gateway-mode request whose HTTP status is the decision', async () => {
    const m = /curl -i (\S+) -H 'x-functions-key: ([^']+)' -H 'X-Original-Method: (\w+)' -H 'X-Original-URI: (\S+)' -H 'Authorization: ([^']+)'/.exec(printed);
    expect(m).not.toBeNull();
    const res = await fetch(m![1]!, { headers: { 'x-functions-key': m![2]!, 'x-original-method': m![3]!, 'x-original-uri': m![4]!, authorization: m![5]! } });
    expect(res.status).toBe(403);
    expect(res.headers.get('x-decision-reason')).toBe('action_not_permitted');
    expect(res.headers.get('www-authenticate')).toContain('insufficient_scope');
  });
});
