/** Directory object ids, tenant ids and client ids are GUIDs (8-4-4-4-12 hex digits). */
const GUID_DIGITS = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const GUID = new RegExp(`^${GUID_DIGITS}$`, 'i');
/** The first GUID anywhere in a string (an issuer URL's tenant segment). */
export const GUID_IN_TEXT = new RegExp(GUID_DIGITS, 'i');

export function isGuid(value: string): boolean {
  return GUID.test(value);
}
