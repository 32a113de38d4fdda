/**
 * JSON.parse keeps the last of two members with the same name, so `{"aud":"a","aud":"b"}` reads as
 * "b" here and possibly as "a" in another component. RFC 7515 §5.2 (step 3/8) and RFC 7519 §4 say a
 * JWT with duplicate Header Parameter or claim names MUST be rejected; this does that, after
 * JSON.parse has established that the text is valid JSON.
 *
 * How: JSON.parse turns each member of the text into one own property, except that a repeated name
 * (however it is escaped: `"alg"` and `"\u0061lg"` are one name) overwrites the earlier one. So the
 * text has duplicates exactly when it holds more member names than the parsed value has properties.
 * Counting both is a single pass with no allocation per name, where keeping a Set of names per
 * object allocates for every member; it runs on every cache miss.
 */

/** Member names in a valid JSON text, at every depth (strings in value position are not names). */
function countMemberNames(text: string): number {
  let count = 0;
  // One entry per open container: true for an object, false for an array.
  const open: boolean[] = [];
  let expectName = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      if (expectName) {
        count++;
        expectName = false;
      }
      // Jump to the closing quote: the first one not escaped by an odd run of backslashes.
      let j = text.indexOf('"', i + 1);
      for (;;) {
        let backslashes = 0;
        while (text.charCodeAt(j - 1 - backslashes) === 0x5c /* \ */) backslashes++;
        if (backslashes % 2 === 0) break;
        j = text.indexOf('"', j + 1);
      }
      i = j;
    } else if (c === 0x7b /* { */) {
      open.push(true);
      expectName = true;
    } else if (c === 0x5b /* [ */) {
      open.push(false);
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      open.pop();
    } else if (c === 0x2c /* , */) {
      expectName = open[open.length - 1] === true;
    }
  }
  return count;
}

/** Own properties of every object in a parsed JSON value, at every depth. */
function countProperties(value: unknown): number {
  if (typeof value !== 'object' || value === null) return 0;
  let n = 0;
  if (Array.isArray(value)) {
    for (const v of value) n += countProperties(v);
    return n;
  }
  const keys = Object.keys(value);
  n += keys.length;
  for (const k of keys) n += countProperties((value as Record<string, unknown>)[k]);
  return n;
}

function duplicatesIn(text: string, parsed: unknown): boolean {
  return countMemberNames(text) !== countProperties(parsed);
}

/** True when the JSON text repeats a member name in some object. `text` must be valid JSON. */
export function hasDuplicateMemberNames(text: string): boolean {
  return duplicatesIn(text, JSON.parse(text));
}

/** Parses any JSON text strictly: valid JSON and no duplicate member names at any depth. */
export function parseJsonStrict(text: string): { ok: true; value: unknown } | { ok: false; problem: 'not valid JSON' | 'duplicate member names' } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, problem: 'not valid JSON' };
  }
  if (duplicatesIn(text, value)) return { ok: false, problem: 'duplicate member names' };
  return { ok: true, value };
}

export type StrictParse = { ok: true; value: Record<string, unknown> } | { ok: false; problem: string };

/** Parses a JSON object strictly: valid JSON, an object at the top, no duplicate member names. */
export function parseJsonObjectStrict(text: string): StrictParse {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, problem: 'not valid JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return { ok: false, problem: 'not a JSON object' };
  if (duplicatesIn(text, value)) return { ok: false, problem: 'duplicate member names' };
  return { ok: true, value: value as Record<string, unknown> };
}
