/**
 * A batch or transaction Bundle's entries, as much as deciding them needs: each entry's
 * request.method and request.url, and the type of the resource it sends. Pure; never throws.
 */

/** Most entries of a bundle decided in one question (the body limit bounds it too). */
export const MAX_BUNDLE_ENTRIES = 1000;

export interface BundleEntry {
  readonly method: string;
  readonly url: string;
  /** `resource.resourceType` when the entry carries a resource with a string resourceType. */
  readonly resourceType?: string;
}

export function readBundle(body: unknown): { entries: BundleEntry[] } | { problem: string } {
  if (typeof body !== 'object' || body === null || (body as { resourceType?: unknown }).resourceType !== 'Bundle')
    return { problem: 'the body is not a Bundle' };
  const b = body as { type?: unknown; entry?: unknown };
  if (b.type !== 'batch' && b.type !== 'transaction') return { problem: `Bundle.type is ${JSON.stringify(b.type)}; only batch and transaction bundles are processed by a FHIR server` };
  if (b.entry === undefined) return { entries: [] };
  if (!Array.isArray(b.entry)) return { problem: 'Bundle.entry is not an array' };
  if (b.entry.length > MAX_BUNDLE_ENTRIES) return { problem: `more than ${MAX_BUNDLE_ENTRIES} entries` };
  const entries: BundleEntry[] = [];
  for (const [i, e] of b.entry.entries()) {
    const entry = e as { request?: { method?: unknown; url?: unknown }; resource?: { resourceType?: unknown } } | null;
    const req = entry?.request;
    if (!req || typeof req.method !== 'string' || typeof req.url !== 'string' || !req.url)
      return { problem: `entry ${i} has no request.method and request.url` };
    const type = entry?.resource?.resourceType;
    entries.push(typeof type === 'string' ? { method: req.method, url: req.url, resourceType: type } : { method: req.method, url: req.url });
  }
  return { entries };
}
