/**
 * The claim table (src/identity/claim-types.ts) and docs/security.md's copy of it name the same
 * claims with the same types and uses, as reasons.test.ts does for the reason codes; and the type
 * check refuses what it must, with the reason the table gives.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  CLAIMS,
  CLAIM_NAMES,
  CLAIM_TYPE_TEXT,
  checkClaimTypes,
  describeJsonValue,
  hasClaimType,
  wrongTypeReason,
  type ClaimUse,
} from '../../../src/identity/claim-types.js';

const SECURITY_DOC = readFileSync(new URL('../../../docs/security.md', import.meta.url), 'utf8');

/** How docs/security.md writes a use: the reason a wrong type gets is part of it. */
function useText(use: ClaimUse): string {
  const reason = wrongTypeReason(use);
  const word = { required: 'required', oneOf: 'one of', optional: 'optional', notRead: 'not read' }[use];
  return reason === undefined ? word : `${word} → \`${reason}\``;
}

/** Rows `| \`claim\` | type | primary | SMART | used for |` of the claim table. */
function docRows(): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  const start = SECURITY_DOC.indexOf('### The claims fhir-pdp reads');
  const table = SECURITY_DOC.slice(start, SECURITY_DOC.indexOf('\n## ', start));
  for (const line of table.split('\n')) {
    const m = /^\|\s*`([A-Za-z_]+)`\s*\|(.*)\|\s*$/.exec(line);
    if (m) rows.set(m[1]!, m[2]!.split(' | ').map((c) => c.trim()));
  }
  return rows;
}

describe('CLAIMS and docs/security.md', () => {
  const rows = docRows();

  it('finds the table', () => {
    expect(rows.size).toBeGreaterThanOrEqual(25);
  });

  it.each(CLAIM_NAMES)('%s is documented with its type and its use for each authority kind', (name) => {
    const rule = CLAIMS[name];
    expect(rows.get(name)?.slice(0, 3)).toEqual([CLAIM_TYPE_TEXT[rule.type], useText(rule.entra), useText(rule.smart)]);
  });

  it('documents no claim the table lacks, in the same order', () => {
    expect([...rows.keys()]).toEqual([...CLAIM_NAMES]);
  });
});

describe('checkClaimTypes', () => {
  // One value per JSON type, and the empty string.
  const SAMPLES: ReadonlyArray<readonly [string, unknown]> = [
    ['number', 5],
    ['boolean', true],
    ['null', null],
    ['object', {}],
    ['array', []],
    ['empty string', ''],
  ];

  it.each(CLAIM_NAMES.flatMap((name) => SAMPLES.map(([what, value]) => [name, what, value] as const)))(
    '%s as %s: refused with the reason of its use, or accepted when it is of the type',
    (name, _what, value) => {
      const rule = CLAIMS[name];
      for (const kind of ['entra', 'smart'] as const) {
        const r = checkClaimTypes({ [name]: value }, kind);
        const expected = hasClaimType(rule.type, value) ? undefined : wrongTypeReason(rule[kind]);
        expect(r?.reason, kind).toBe(expected);
        if (r) expect(r.hint).toContain(`\`${name}\` is ${describeJsonValue(value)}`);
      }
    },
  );

  it('a required claim of the wrong type wins over an optional one, and every problem is named', () => {
    const r = checkClaimTypes({ tid: 5, oid: 7 }, 'entra');
    expect(r?.reason).toBe('missing_claim');
    expect(r?.hint).toContain('`tid` is the number 5');
    expect(r?.hint).toContain('`oid` is the number 7');
  });

  it.each<[string, unknown, boolean]>([
    ['numericDate', 1_700_000_000, true],
    ['numericDate', -1, false],
    ['numericDate', 1e12, false],
    ['numericDate', Infinity, false],
    ['audience', ['a', 'b'], true],
    ['audience', ['a', ''], false],
    ['stringArray', [], true],
    ['stringArray', ['a', 1], false],
    ['scopes', 'a b', true],
    ['scopes', ['a'], true],
    ['scopeString', ['a'], false],
    ['claimNames', { groups: 'src1' }, true],
    ['claimNames', { groups: 1 }, false],
    ['claimNames', ['groups'], false],
    ['clientAuth', '2', true],
    ['clientAuth', 1, false],
    ['tokenKind', 'application', false],
    ['version', '2.0', true],
    ['version', 2, false],
  ])('%s accepts %j: %s', (type, value, ok) => {
    expect(hasClaimType(type as keyof typeof CLAIM_TYPE_TEXT, value)).toBe(ok);
  });
});
