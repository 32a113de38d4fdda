/**
 * docs/operations.md lists exactly the metrics src/telemetry/metrics.ts declares (as the reason
 * codes are kept in sync with their docs), and the Prometheus output uses only those names.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { METRICS } from '../../src/telemetry/metrics.js';

const DOC = readFileSync(new URL('../../docs/operations.md', import.meta.url), 'utf8');

function documentedMetrics(): string[] {
  const names: string[] = [];
  for (const line of DOC.split('\n')) {
    const m = /^\|\s*`(fhir_pdp_[a-z_]+)`\s*\|/.exec(line);
    if (m) names.push(m[1]!);
  }
  return names;
}

describe('docs/operations.md and the declared metrics', () => {
  it('the metric table names exactly the metrics of METRICS, once each', () => {
    const documented = documentedMetrics();
    expect(new Set(documented).size).toBe(documented.length);
    expect([...documented].sort()).toEqual(Object.keys(METRICS).sort());
  });

  it('every metric a PromQL alert uses is a declared one', () => {
    const used = new Set(DOC.match(/fhir_pdp_[a-z_]+/g) ?? []);
    const declared = new Set(Object.keys(METRICS));
    expect([...used].filter((n) => !declared.has(n) && !n.startsWith('fhir_pdp_decision_duration_seconds'))).toEqual([]);
  });

  it('holds the scrape snippet the end-to-end suite runs', () => {
    expect(DOC).toContain('<!-- snippet: prometheus -->');
  });
});
