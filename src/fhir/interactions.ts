/**
 * Which data actions each FHIR interaction needs, as data.
 *
 * Sources: the FHIR R4 RESTful API (https://hl7.org/fhir/R4/http.html) for what each interaction
 * does, and the Microsoft FHIR server's request handlers (microsoft/fhir-server, the code behind
 * Azure API for FHIR and Azure Health Data Services) for which data actions it checks. Where the
 * two differ from a plain reading, the stricter one is kept: fail closed.
 *
 * A requirement is a list of groups; every group must be met by one of its actions
 * (src/core/data-actions.ts). `[]` refuses the request outright.
 */
import type { ActionRequirement, DataAction } from '../core/data-actions.js';
import type { FhirRequest, Interaction } from './types.js';

const READ_BY_ID: ActionRequirement = [['read', 'readById']];
const SEARCH: ActionRequirement = [['read', 'search']];
const READ: ActionRequirement = [['read']];
const CREATE: ActionRequirement = [['write', 'create']];
const UPDATE: ActionRequirement = [['write', 'update']];
const REFUSED: ActionRequirement = [];
const EVERY_ENTRY_ACTION: ActionRequirement = (
  ['read', 'write', 'delete', 'hardDelete', 'export', 'import', 'resourceValidate', 'convertData', 'reindex', 'searchParameter', 'bulkOperator', 'editProfileDefinitions'] as const
).map((a) => [a]);

export const INTERACTION_REQUIREMENTS: Readonly<Record<Exclude<Interaction, 'operation'>, ActionRequirement>> = {
  // FHIR read/vread; MS GetResourceHandler checks Read (SMART v2 granular: readById).
  read: READ_BY_ID,
  vread: READ_BY_ID,
  // FHIR search; MS SearchResourceHandler checks Read (SMART v2 granular: search).
  'search-type': SEARCH,
  'search-system': SEARCH,
  'search-compartment': SEARCH,
  // FHIR history reads stored versions; MS SearchResourceHistoryHandler checks Read.
  'history-instance': READ_BY_ID,
  'history-type': READ_BY_ID,
  'history-system': READ_BY_ID,
  // MS serves /metadata anonymously, and so does fhir-pdp for GET and HEAD at the FHIR base
  // (src/fhir/public.ts); inside a bundle, any reading right will do.
  capabilities: [['read', 'readById', 'search']],
  'smart-configuration': [['read', 'readById', 'search']],
  // Bulk Data IG status and output file requests belong to the export that made them: MS checks
  // Export on GetExportRequestHandler and CancelExportRequestHandler. Whose job it is, the server
  // decides (a job the caller may not see is 404, as for a job that does not exist).
  'export-status': [['export']],
  'export-file': [['export']],
  // MS CreateResourceHandler / UpsertResourceHandler / PatchResourceHandler check Write
  // (SMART v2 granular: create, update).
  create: CREATE,
  update: UPDATE,
  patch: UPDATE,
  // MS conditional handlers search first: legacy Read + Write, granular Search + Update.
  'conditional-update': [['read', 'search'], ['write', 'update']],
  'conditional-patch': [['read', 'search'], ['write', 'update']],
  // MS DeleteResourceHandler checks Delete (and HardDelete for _hardDelete, added below);
  // ConditionalDeleteResourceHandler also Read (granular: Search).
  delete: [['delete']],
  'conditional-delete': [['delete'], ['read', 'search']],
  // A batch/transaction may hold any entry. With its body, each entry is decided as its own request
  // (src/decision/pipeline.ts); unseen, it is refused, or (unseenBundles: requireEveryAction) needs every data
  // action an entry could need: the coarse ones, which cover their granular halves, and every other.
  batch: EVERY_ENTRY_ACTION,
  unknown: REFUSED,
};

interface OperationRule {
  readonly requires: ActionRequirement;
  /** HTTP methods the operation is invoked with; any other method is refused. */
  readonly methods: readonly string[];
  /** True when the operation changes stored resources, so the per-type write rules apply. */
  readonly modifiesResources?: boolean;
}

const GET_POST = ['GET', 'POST'] as const;

/**
 * Operations by name (case-sensitive, as FHIR names them). A name not listed here is refused:
 * an operation nobody reviewed is not allowed.
 */
export const OPERATION_RULES: ReadonlyMap<string, OperationRule> = new Map<string, OperationRule>([
  // MS ExportController / CreateExportRequestHandler: Export. Bulk Data v2 allows GET and POST kick-off.
  ['$export', { requires: [['export']], methods: GET_POST }],
  // HAPI's status URL for an export: GET polls, DELETE cancels (Bulk Data IG status request).
  ['$export-poll-status', { requires: [['export']], methods: ['GET', 'DELETE'] }],
  // MS ImportController / CreateImportRequestHandler: Import.
  ['$import', { requires: [['import']], methods: ['POST'] }],
  // MS ValidateController: ResourceValidate.
  ['$validate', { requires: [['resourceValidate']], methods: GET_POST }],
  // MS ConvertDataController: ConvertData.
  ['$convert-data', { requires: [['convertData']], methods: ['POST'] }],
  // MS ReindexController (system and single resource): Reindex.
  ['$reindex', { requires: [['reindex']], methods: GET_POST }],
  // MS CreateBulkDeleteHandler: Delete (+HardDelete for _hardDelete/_purgeHistory, added below);
  // the contract names bulkOperator for bulk delete, so both are required.
  ['$bulk-delete', { requires: [['delete'], ['bulkOperator']], methods: ['DELETE'], modifiesResources: true }],
  // MS CreateBulkUpdateHandler: BulkOperator ("only super writer can perform bulk update").
  ['$bulk-update', { requires: [['bulkOperator']], methods: ['PATCH'], modifiesResources: true }],
  // MS purge history is DeleteOperation.PurgeHistory: Delete + HardDelete.
  ['$purge-history', { requires: [['delete'], ['hardDelete']], methods: ['DELETE'], modifiesResources: true }],
  // MS EverythingOperation and MemberMatchHandler: Read.
  ['$everything', { requires: READ, methods: GET_POST }],
  ['$member-match', { requires: READ, methods: ['POST'] }],
  // FHIR $meta reads meta; $meta-add / $meta-delete change the resource.
  ['$meta', { requires: READ, methods: GET_POST }],
  ['$meta-add', { requires: UPDATE, methods: ['POST'], modifiesResources: true }],
  ['$meta-delete', { requires: UPDATE, methods: ['POST'], modifiesResources: true }],
  // Read-only terminology and observation operations (FHIR R4: affectsState false).
  ['$lastn', { requires: READ, methods: GET_POST }],
  ['$stats', { requires: READ, methods: GET_POST }],
  ['$expand', { requires: READ, methods: GET_POST }],
  ['$lookup', { requires: READ, methods: GET_POST }],
  ['$validate-code', { requires: READ, methods: GET_POST }],
  ['$translate', { requires: READ, methods: GET_POST }],
  ['$subsumes', { requires: READ, methods: GET_POST }],
]);

/**
 * Writes to these resource types need one more action. Keys are lower case and compared so:
 * a server that routes type names case-insensitively must not skip the rule.
 * searchParameter: the contract's rule for SearchParameter resources.
 * editProfileDefinitions: MS ProfileResourcesBehaviour (ValueSet, StructureDefinition, CodeSystem),
 * plus ConceptMap, which the issue adds.
 */
export const EXTRA_ACTION_FOR_WRITES: ReadonlyMap<string, DataAction> = new Map<string, DataAction>([
  ['searchparameter', 'searchParameter'],
  ['structuredefinition', 'editProfileDefinitions'],
  ['valueset', 'editProfileDefinitions'],
  ['codesystem', 'editProfileDefinitions'],
  ['conceptmap', 'editProfileDefinitions'],
]);

const WRITE_INTERACTIONS: ReadonlySet<Interaction> = new Set<Interaction>([
  'create',
  'update',
  'conditional-update',
  'patch',
  'conditional-patch',
  'delete',
  'conditional-delete',
]);

/** The data actions a request needs; `[]` when it must be refused whatever the caller holds. */
export function requirementFor(req: Omit<FhirRequest, 'requires'>): ActionRequirement {
  let base: ActionRequirement;
  let writes: boolean;
  if (req.interaction === 'operation') {
    const rule = req.operation === undefined ? undefined : OPERATION_RULES.get(req.operation);
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    if (!rule || !rule.methods.includes(method)) return REFUSED;
    base = rule.requires;
    writes = rule.modifiesResources === true;
  } else {
    base = INTERACTION_REQUIREMENTS[req.interaction] ?? REFUSED;
    writes = WRITE_INTERACTIONS.has(req.interaction);
  }
  if (base.length === 0) return REFUSED;

  const typeRule = writes && req.resourceType ? EXTRA_ACTION_FOR_WRITES.get(req.resourceType.toLowerCase()) : undefined;
  if (!typeRule && !req.hardDelete) return base;
  const extra: DataAction[] = [];
  if (typeRule) extra.push(typeRule);
  if (req.hardDelete) extra.push('hardDelete');
  const missing = extra.filter((a) => !base.some((g) => g.length === 1 && g[0] === a));
  return missing.length === 0 ? base : [...base, ...missing.map((a) => [a])];
}
