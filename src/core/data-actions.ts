/**
 * Data actions: the rights a grant confers. The names are those of Azure API for FHIR / Azure Health
 * Data Services and the open-source Microsoft FHIR server's roles.json, plus the finer SMART v2
 * actions (`readById`, `search`, `create`, `update`). Matched case-insensitively (the portal writes
 * `Read`, roles.json writes `read`).
 */

export const DATA_ACTIONS = [
  'read',
  'readById',
  'search',
  'write',
  'create',
  'update',
  'delete',
  'hardDelete',
  'export',
  'import',
  'resourceValidate',
  'convertData',
  'reindex',
  'searchParameter',
  'bulkOperator',
  'editProfileDefinitions',
  'smart',
] as const;

export type DataAction = (typeof DATA_ACTIONS)[number];

const BY_LOWER = new Map<string, DataAction>(DATA_ACTIONS.map((a) => [a.toLowerCase(), a]));

/** `*` grants every action except `smart`, which narrows rights rather than widening them. */
export const ALL_BUT_SMART: readonly DataAction[] = DATA_ACTIONS.filter((a) => a !== 'smart');

/** Canonical spelling of a data action, or undefined when the name is not one. `*` is not an action. */
export function canonicalDataAction(name: string): DataAction | undefined {
  return BY_LOWER.get(name.toLowerCase());
}

/** Expands a validated list (which may contain `*`) into the set of actions it grants. */
export function expandDataActions(names: readonly string[]): Set<DataAction> {
  const out = new Set<DataAction>();
  for (const name of names) {
    if (name === '*') for (const a of ALL_BUT_SMART) out.add(a);
    else {
      const a = canonicalDataAction(name);
      if (a) out.add(a);
    }
  }
  return out;
}

/**
 * What a FHIR interaction needs: every group must be satisfied by at least one action in it.
 * `[['read','readById']]` = read or readById; `[['delete'],['hardDelete']]` = delete and hardDelete.
 * An empty list means the interaction is refused outright (unknown operation).
 */
export type ActionRequirement = ReadonlyArray<ReadonlyArray<DataAction>>;

export function satisfies(granted: ReadonlySet<DataAction>, need: ActionRequirement): boolean {
  if (need.length === 0) return false;
  return need.every((group) => group.some((a) => granted.has(a)));
}
