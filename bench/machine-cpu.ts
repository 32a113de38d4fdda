/**
 * CPU time of a process from /proc (Linux; elsewhere the callers get undefined): the server's CPU
 * per request moves far less than its requests per second when other work shares the machine.
 */

/** USER_HZ: /proc reports CPU time in ticks of 1/100 s on Linux. */
const TICKS_PER_SECOND = 100;

/** CPU seconds (user + system, all threads) a process has used, from its /proc/<pid>/stat line. */
export function processCpuSeconds(stat: string): number | undefined {
  // Fields after the parenthesised command name (which may hold spaces and parentheses);
  // utime and stime are fields 14 and 15 of the line.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return Number.isFinite(ticks) ? ticks / TICKS_PER_SECOND : undefined;
}
