/**
 * Reading wrk's report (bench/wrk.ts): the peak figure the HTTP benchmark's cached-decision target
 * is judged on, and the failures that make a round invalid.
 */
import { describe, expect, it } from 'vitest';
import { parseWrkOutput } from '../../bench/wrk.js';

// wrk 4.1.0's report, as Debian's build prints it.
const CLEAN = `Running 1s test @ http://127.0.0.1:35397/api/decide
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.88ms    1.33ms  17.40ms   92.20%
    Req/Sec    13.38k     5.88k   19.27k    63.64%
  14612 requests in 1.10s, 1.73MB read
Requests/sec:  13281.76
Transfer/sec:      1.57MB
`;

describe('parseWrkOutput', () => {
  it('reads requests/s and the request count of a clean run', () => {
    expect(parseWrkOutput(CLEAN)).toEqual({ requestsPerSecond: 13281.76, requests: 14612, failures: 0 });
  });

  it('counts answers that were not 2xx/3xx and every kind of socket error as failures', () => {
    const text = CLEAN.replace('1.73MB read\n', '1.73MB read\n  Socket errors: connect 1, read 2, write 3, timeout 4\n  Non-2xx or 3xx responses: 15055\n');
    expect(parseWrkOutput(text).failures).toBe(15055 + 1 + 2 + 3 + 4);
  });

  it('throws, naming the line, when the report lacks its figures (never a NaN)', () => {
    expect(() => parseWrkOutput('unable to connect to 127.0.0.1:1 Connection refused\n')).toThrow(/Requests\/sec:/);
    expect(() => parseWrkOutput(CLEAN.replace(/^Requests\/sec:.*$/m, ''))).toThrow(/Requests\/sec:/);
  });
});
