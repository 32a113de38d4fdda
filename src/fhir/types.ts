import type { ActionRequirement } from '../core/data-actions.js';

/** FHIR RESTful interactions (https://hl7.org/fhir/R4/http.html), plus operations and bundles. */
export type Interaction =
  | 'read' // GET [type]/[id]
  | 'vread' // GET [type]/[id]/_history/[vid]
  | 'search-type' // GET|POST [type] , [type]/_search
  | 'search-system' // GET / ?params, /_search
  | 'search-compartment' // GET [type]/[id]/[type2] or [type]/[id]/*
  | 'history-instance'
  | 'history-type'
  | 'history-system'
  | 'capabilities' // GET /metadata
  | 'smart-configuration' // GET /.well-known/smart-configuration (SMART App Launch discovery)
  | 'export-status' // GET|DELETE /_operations/export/[job] (Microsoft), /job/[job]/status (Medplum)
  | 'export-file' // GET /_operations/export/[job]/[file]: an output file served below its status URL
  | 'create' // POST [type]
  | 'update' // PUT [type]/[id]
  | 'conditional-update' // PUT [type]?params
  | 'patch' // PATCH [type]/[id]
  | 'conditional-patch' // PATCH [type]?params
  | 'delete' // DELETE [type]/[id]
  | 'conditional-delete' // DELETE [type]?params
  | 'batch' // POST / with a Bundle
  | 'operation' // $name at system, type or instance level
  | 'unknown';

/** A FHIR request, as far as the URL and method can say. Produced by parseFhirRequest, pure. */
export interface FhirRequest {
  readonly method: string; // upper case
  /** Path relative to the FHIR base, starting with `/`, percent-decoded per segment. */
  readonly path: string;
  readonly interaction: Interaction;
  readonly resourceType?: string;
  /** The resource id; for `export-status` and `export-file`, the export job's id. */
  readonly id?: string;
  readonly versionId?: string;
  /** For search-compartment (`/Patient/1/Observation`), the compartment and the searched type (`*` for all). */
  readonly compartment?: { readonly type: string; readonly id: string; readonly targetType: string };
  /** For `export-file`, the file name below the job's status URL. */
  readonly file?: string;
  /** Operation name with its `$`, e.g. `$export`; set when interaction is `operation`. */
  readonly operation?: string;
  /** Query parameters in order, decoded (`+` as space). Repeats kept. */
  readonly query: ReadonlyArray<readonly [string, string]>;
  /** `_hardDelete=true` on a DELETE (Microsoft FHIR server). */
  readonly hardDelete: boolean;
  /** The data actions this request needs (from the table in src/fhir/interactions.ts). */
  readonly requires: ActionRequirement;
}

export type ParsedFhirRequest = { ok: true; request: FhirRequest } | { ok: false; problem: string };
