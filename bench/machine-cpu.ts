/**
 * What else used the machine's CPUs while a round ran, from /proc (Linux; elsewhere undefined). On a
 * small shared machine a percentile moves with work that is neither the server nor the load
 * generator (kernel threads such as the VM's memory monitor, other processes) and with time the
 * hypervisor gave to other guests (steal); a report that records both can tell a slow round from a
 * disturbed one.
 */
import { readdirSync, readFileSync } from 'node:fs';

/** USER_HZ: /proc reports CPU time in ticks of 1/100 s on Linux. */
const TICKS_PER_SECOND = 100;

export interface CpuSnapshot {
  /** CPU ticks (user + system) of every other process and kernel thread, by pid. */
  readonly others: ReadonlyMap<number, number>;
  /** Steal ticks of all CPUs (/proc/stat). */
  readonly steal: number;
}

/** CPU ticks (utime + stime, all threads) from a /proc/<pid>/stat line, or undefined. */
function processTicks(stat: string): number | undefined {
  // Fields after the parenthesised command name (which may hold spaces and parentheses);
  // utime and stime are fields 14 and 15 of the line.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? ticks : undefined;
}

/** CPU seconds (user + system, all threads) a process has used, from its /proc/<pid>/stat line. */
export function processCpuSeconds(stat: string): number | undefined {
  const ticks = processTicks(stat);
  return ticks === undefined ? undefined : ticks / TICKS_PER_SECOND;
}

/**
 * Every process but `exclude` (the server and the generator), summed per process rather than read
 * off /proc/stat's machine totals: those are sampled differently from per-process times, and the
 * two disagree by more than the work being looked for.
 */
export function cpuSnapshot(exclude: readonly number[]): CpuSnapshot | undefined {
  try {
    const steal = Number(readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/)[8]);
    if (!Number.isFinite(steal)) return undefined;
    const others = new Map<number, number>();
    for (const name of readdirSync('/proc')) {
      const pid = Number(name);
      if (!Number.isInteger(pid) || exclude.includes(pid)) continue;
      try {
        const ticks = processTicks(readFileSync(`/proc/${pid}/stat`, 'utf8'));
        if (ticks !== undefined) others.set(pid, ticks);
      } catch {
        // Gone between the listing and the read.
      }
    }
    return { others, steal };
  } catch {
    return undefined;
  }
}

export interface Interference {
  /** CPU time used by neither the server nor the load generator, ms (kernel threads, other processes). */
  readonly otherCpuMs: number;
  /** Time the hypervisor ran something else while this guest's CPUs wanted to run, ms. */
  readonly stealMs: number;
}

/** Between two snapshots. A process that started in between counts whole; one that ended, not at all. */
export function interference(before: CpuSnapshot, after: CpuSnapshot): Interference {
  let ticks = 0;
  for (const [pid, t] of after.others) ticks += Math.max(0, t - (before.others.get(pid) ?? 0));
  const ms = (t: number): number => Math.round((t * 1000) / TICKS_PER_SECOND);
  return { otherCpuMs: ms(ticks), stealMs: ms(after.steal - before.steal) };
}
