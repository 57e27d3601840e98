/**
 * Strict parsing of user-supplied options against a zod schema, with errors that name where the
 * value came from, the field, what was expected and (for a typo) the known fields. Every option
 * block of the project (experiment configs, method options, probe recipes, SAE training specs)
 * goes through `parseStrict`, so nothing a user writes is silently ignored or coerced.
 */
import { z } from 'zod';

const POSITIVE_INT = 'must be a positive integer';

/** A positive-integer field; every way of missing (not a number, not an integer, below 1) says so in the same words. */
export function positiveInt(): z.ZodNumber {
  return z.number({ error: POSITIVE_INT }).int({ error: POSITIVE_INT }).min(1, { error: POSITIVE_INT });
}

/** `a.b[2].c` for a zod issue path. */
function pathText(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out;
}

/** Keys a strict object schema at `path` accepts (for "did you mean" lists), or undefined. */
function knownKeys(schema: z.ZodType, path: readonly PropertyKey[]): string[] | undefined {
  let s: z.ZodType | undefined = schema;
  for (const p of path) {
    s = unwrap(s);
    if (s instanceof z.ZodObject) s = (s.shape as Record<string, z.ZodType>)[String(p)];
    else if (s instanceof z.ZodRecord) s = s.valueType as z.ZodType;
    else if (s instanceof z.ZodArray) s = s.element as z.ZodType;
    else return undefined;
    if (s === undefined) return undefined;
  }
  s = unwrap(s);
  return s instanceof z.ZodObject ? Object.keys(s.shape as object) : undefined;
}

function unwrap(s: z.ZodType): z.ZodType {
  let cur = s;
  for (;;) {
    if (cur instanceof z.ZodDefault || cur instanceof z.ZodOptional || cur instanceof z.ZodNullable) cur = cur.unwrap() as z.ZodType;
    else if (cur instanceof z.ZodPipe) cur = cur.in as z.ZodType;
    else return cur;
  }
}

/** One line per issue: `field: message`. */
export function describeIssues(schema: z.ZodType, error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const at = pathText(issue.path);
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeys(schema, issue.path);
      const names = issue.keys.map((k) => `"${at === '' ? k : `${at}.${k}`}"`).join(', ');
      return `unknown field${issue.keys.length > 1 ? 's' : ''} ${names}${known === undefined ? '' : ` (known: ${known.join(', ')})`}`;
    }
    return at === '' ? issue.message : `field "${at}": ${issue.message}`;
  });
}

/**
 * Parses `value` with `schema` (use strict objects), returning the typed result with defaults
 * filled in, or throws an Error `where: <issue>; <issue>` naming every problem at once.
 */
export function parseStrict<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new Error(`${where}: ${describeIssues(schema, result.error).join('; ')}`);
}

/**
 * `values` with each field that is undefined there taken from `defaults`: how options whose
 * presence a schema checks (so they carry no schema default) get their documented defaults.
 */
export function withDefaults<T extends object, D extends { [K in keyof T]?: T[K] }>(
  values: T,
  defaults: D,
): T & { [K in keyof D]-?: Exclude<T[K & keyof T], undefined> } {
  const out: Record<string, unknown> = { ...(values as Record<string, unknown>) };
  for (const [key, fallback] of Object.entries(defaults)) if (out[key] === undefined) out[key] = fallback;
  return out as T & { [K in keyof D]-?: Exclude<T[K & keyof T], undefined> };
}
