/**
 * JSON.parse keeps the last of two members with the same name, so `{"aud":"a","aud":"b"}` reads as
 * "b" here and possibly as "a" in another component. RFC 7515 §5.2 (step 3/8) and RFC 7519 §4 say a
 * JWT with duplicate Header Parameter or claim names MUST be rejected; this does that, after
 * JSON.parse has established that the text is valid JSON.
 */
export function hasDuplicateMemberNames(text: string): boolean {
  // One Set of names per open object; arrays push null. `expectName` tracks whether the next string
  // in the innermost object is a member name (after `{` or `,`) or a value (after `:`).
  const stack: Array<Set<string> | null> = [];
  let expectName = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      while (j < text.length) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j += 2;
          continue;
        }
        if (d === 0x22) break;
        j++;
      }
      const top = stack[stack.length - 1];
      if (top && expectName) {
        const raw = text.slice(i, j + 1);
        const name = escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        if (top.has(name)) return true;
        top.add(name);
        expectName = false;
      }
      i = j;
    } else if (c === 0x7b /* { */) {
      stack.push(new Set());
      expectName = true;
    } else if (c === 0x5b /* [ */) {
      stack.push(null);
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
    } else if (c === 0x2c /* , */) {
      expectName = stack[stack.length - 1] != null;
    }
  }
  return false;
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
  if (hasDuplicateMemberNames(text)) return { ok: false, problem: 'duplicate member names' };
  return { ok: true, value: value as Record<string, unknown> };
}
