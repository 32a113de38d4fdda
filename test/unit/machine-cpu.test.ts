/**
 * The benchmark's reading of a process's CPU time (bench/machine-cpu.ts) from its /proc/<pid>/stat line.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { processCpuSeconds } from '../../bench/machine-cpu.js';

describe('processCpuSeconds', () => {
  it('reads utime + stime after a command name that holds spaces and parentheses', () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime …
    const stat = '4242 (node (worker) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 11 0';
    expect(processCpuSeconds(stat)).toBe(3.25);
  });

  it('says undefined for a line it cannot read, never NaN', () => {
    expect(processCpuSeconds('garbage')).toBeUndefined();
  });

  it.runIf(process.platform === 'linux')("reads this process's own line", () => {
    expect(processCpuSeconds(readFileSync(`/proc/${process.pid}/stat`, 'utf8'))).toBeGreaterThan(0);
  });
});
