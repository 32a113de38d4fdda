/**
 * How a caller of each /api/decide mode sends the request body, in that mode's own terms. The
 * pipeline's hint for a batch or transaction Bundle whose entries were not seen ends with it
 * (DecisionInput.bodyAdvice): the pipeline knows no binding's vocabulary.
 */

/** JSON mode, and API Management, which asks in JSON mode. */
export const JSON_BODY_ADVICE = 'send the Bundle as `body` in the JSON question (the API Management policy must include the request body for POST to the FHIR base)';
export const ENVOY_BODY_ADVICE = 'enable with_request_body in the Envoy ext_authz filter so the Bundle reaches fhir-pdp';
export const FORWARD_AUTH_BODY_ADVICE =
  'nginx and Traefik do not send the request body to fhir-pdp: use a gateway that does (Envoy with with_request_body, API Management with the body in the JSON question)';
