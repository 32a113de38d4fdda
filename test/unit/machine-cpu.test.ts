/**
 * The benchmark's account of other work on the machine (bench/machine-cpu.ts): parsing /proc and
 * turning two snapshots into "CPU time used by neither server nor generator".
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { cpuSnapshot, interference, processCpuSeconds } from '../../bench/machine-cpu.js';

describe('processCpuSeconds', () => {
  it('reads utime + stime after a command name that holds spaces and parentheses', () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
    const stat = '4242 (node (worker) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 11 0';
    expect(processCpuSeconds(stat)).toBe(3.25);
  });

  it('says undefined for a line it cannot read, never NaN', () => {
    expect(processCpuSeconds('garbage')).toBeUndefined();
  });
});

describe('interference', () => {
  it('sums what every other process used in between, in ms, and the steal', () => {
    const before = { others: new Map([[1, 100], [2, 50], [3, 7]]), steal: 10 };
    // pid 1 used 5 ticks, pid 2 none, pid 3 ended, pid 4 started and used 3.
    const after = { others: new Map([[1, 105], [2, 50], [4, 3]]), steal: 12 };
    expect(interference(before, after)).toEqual({ otherCpuMs: 80, stealMs: 20 });
  });

  it('never counts a process as giving time back (a pid reused by a younger process)', () => {
    expect(interference({ others: new Map([[9, 500]]), steal: 0 }, { others: new Map([[9, 2]]), steal: 0 }).otherCpuMs).toBe(0);
  });
});

describe.runIf(process.platform === 'linux')('cpuSnapshot', () => {
  it('reads every process but the excluded ones', () => {
    const snap = cpuSnapshot([process.pid])!;
    expect(snap.others.has(process.pid)).toBe(false);
    expect(snap.others.has(process.ppid)).toBe(true);
    expect(snap.steal).toBeGreaterThanOrEqual(0);
    expect(processCpuSeconds(readFileSync(`/proc/${process.pid}/stat`, 'utf8'))).toBeGreaterThan(0);
  });

  it('sees CPU time spent by another process in between', async () => {
    const { spawn } = await import('node:child_process');
    const before = cpuSnapshot([process.pid])!;
    // A child that burns about 150 ms of CPU, says so, and stays until it is killed (so it is still
    // there for the second snapshot).
    const child = spawn(process.execPath, ['-e', "const end = Date.now() + 150; while (Date.now() < end); process.stdout.write('burnt'); setInterval(() => {}, 1000)"]);
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    const after = cpuSnapshot([process.pid])!;
    child.kill();
    expect(interference(before, after).otherCpuMs).toBeGreaterThanOrEqual(100);
  });
});
