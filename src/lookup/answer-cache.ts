/**
 * The lookup's answers, kept briefly: at most `maxEntries` (least recently used first out), each
 * for `ttlMs` from when the server gave it. Found and not found alike; failures are never stored.
 */
export class AnswerCache {
  readonly #entries = new Map<string, { readonly found: boolean; readonly until: number }>();

  constructor(
    private readonly maxEntries: number,
    private readonly ttlMs: number,
  ) {}

  /** The answer for `key` if it is younger than the TTL at `now`. */
  get(key: string, now: number): boolean | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    this.#entries.delete(key);
    if (entry.until <= now) return undefined;
    // Map order is insertion order: re-inserting makes it the most recently used.
    this.#entries.set(key, entry);
    return entry.found;
  }

  set(key: string, found: boolean, now: number): void {
    if (this.maxEntries === 0 || this.ttlMs === 0) return;
    this.#entries.delete(key);
    while (this.#entries.size >= this.maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
    this.#entries.set(key, { found, until: now + this.ttlMs });
  }

  get size(): number {
    return this.#entries.size;
  }
}
