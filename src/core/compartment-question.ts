/**
 * What fhir-pdp asks the FHIR server when the URL of a read by id cannot prove the resource is in
 * the patient's compartment (compartmentLookup): does `{resourceType}?_id={id}&{parameter}=Patient/{patient}`
 * find it? Made by src/fhir/scopes.ts, answered by the lookup edge (src/lookup).
 */
export interface CompartmentQuestion {
  readonly resourceType: string;
  /** A FHIR id (the request parser checked it). */
  readonly id: string;
  /** The search parameter that places the type in the Patient compartment: `patient` or `subject`. */
  readonly parameter: 'patient' | 'subject';
  /** The patient id in context. */
  readonly patient: string;
}

/** One cache key per (type, id, patient); the parameter follows from the type. */
export function compartmentQuestionKey(q: CompartmentQuestion): string {
  return `${q.resourceType}/${q.id}|${q.patient}`;
}
