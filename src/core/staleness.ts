/**
 * The one staleness rule (maxStaleSeconds): data fetched at `fetchedAt` may still be used at `now`
 * while its age is at most maxStale. Keys, the group index and cached Graph answers all age by it.
 */
export function isFresh(fetchedAt: number, now: number, maxStaleMs: number): boolean {
  return now - fetchedAt <= maxStaleMs;
}
