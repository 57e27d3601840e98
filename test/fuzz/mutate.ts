/**
 * Mutations of valid inputs for the fuzz tests: byte-level edits of a file (flips, overwrites with
 * boundary values, truncation, insertion, deletion) and structural edits of a JSON document (field
 * deletion, type swaps, boundary values, unknown fields). Positions are drawn as plain naturals and
 * taken modulo the input's size, so fast-check shrinks a failing case towards the first byte or
 * field and towards fewer edits.
 */
import fc from 'fast-check';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One byte-level edit; `at` is taken modulo the length of the input it applies to. */
export type ByteEdit =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'word'; at: number; bytes: number[] }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: number[] }
  | { kind: 'delete'; at: number; count: number };

/**
 * Little-endian words a parser reading a length, count or offset should fear: zero, all ones,
 * the signed and unsigned 32-bit extremes, 2^53 and 2^63.
 */
const BOUNDARY_WORDS: readonly number[][] = [
  [0, 0, 0, 0],
  [0xff, 0xff, 0xff, 0xff],
  [0xff, 0xff, 0xff, 0x7f],
  [0x00, 0x00, 0x00, 0x80],
  [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
  [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00],
  [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80],
  [0x01, 0x00],
  [0xff, 0xff],
];

export const byteEdit: fc.Arbitrary<ByteEdit> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('word' as const), at: fc.nat(), bytes: fc.constantFrom(...BOUNDARY_WORDS) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 16 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 16 }) }),
);

/** One to `max` byte edits. */
export function byteEdits(max = 4): fc.Arbitrary<ByteEdit[]> {
  return fc.array(byteEdit, { minLength: 1, maxLength: max });
}

/** `input` with `edits` applied in order (a new array; the input is not changed). */
export function applyByteEdits(input: Uint8Array, edits: readonly ByteEdit[]): Uint8Array {
  let out = Uint8Array.from(input);
  for (const e of edits) {
    const n = out.length;
    if (n === 0) break;
    const at = e.at % n;
    switch (e.kind) {
      case 'flip':
        out[at] = out[at]! ^ (1 << e.bit);
        break;
      case 'set':
        out[at] = e.value;
        break;
      case 'word':
        for (let i = 0; i < e.bytes.length && at + i < n; i++) out[at + i] = e.bytes[i]!;
        break;
      case 'truncate':
        out = out.slice(0, at);
        break;
      case 'insert': {
        const next = new Uint8Array(n + e.bytes.length);
        next.set(out.subarray(0, at));
        next.set(e.bytes, at);
        next.set(out.subarray(at), at + e.bytes.length);
        out = next;
        break;
      }
      case 'delete': {
        const next = new Uint8Array(at + Math.max(0, n - at - e.count));
        next.set(out.subarray(0, at));
        next.set(out.subarray(Math.min(n, at + e.count)), at);
        out = next;
        break;
      }
    }
  }
  return out;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Values that swap a field's type or push it to a boundary. */
const ODD_VALUES: readonly Json[] = [
  null,
  true,
  false,
  0,
  -1,
  1,
  0.5,
  -0.0,
  2 ** 31,
  2 ** 32 + 1,
  2 ** 53 + 2,
  1e300,
  -1e300,
  '',
  'x',
  '-1',
  '1e999',
  '__proto__',
  [],
  [0],
  [-1, 2 ** 53],
  {},
  { a: 1 },
];

/** One structural edit of a JSON document; `path` is taken modulo the number of places in it. */
export type JsonEdit =
  | { kind: 'delete'; path: number }
  | { kind: 'replace'; path: number; value: Json }
  | { kind: 'add'; path: number; key: string; value: Json }
  | { kind: 'nest'; path: number; depth: number };

const jsonLeaf: fc.Arbitrary<Json> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...ODD_VALUES) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json> },
);

export const jsonEdit: fc.Arbitrary<JsonEdit> = fc.oneof(
  fc.record({ kind: fc.constant('delete' as const), path: fc.nat() }),
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('replace' as const), path: fc.nat(), value: jsonLeaf }) },
  fc.record({ kind: fc.constant('add' as const), path: fc.nat(), key: fc.constantFrom('extra', '__proto__', 'constructor', ''), value: jsonLeaf }),
  fc.record({ kind: fc.constant('nest' as const), path: fc.nat(), depth: fc.integer({ min: 1, max: 300 }) }),
);

export function jsonEdits(max = 3): fc.Arbitrary<JsonEdit[]> {
  return fc.array(jsonEdit, { minLength: 1, maxLength: max });
}

/** Every place in `doc` as a path of keys / indices, the root (the empty path) first. */
function places(doc: Json): (string | number)[][] {
  // Iterative: `nest` edits make documents deeper than the call stack.
  const out: (string | number)[][] = [];
  const todo: [Json, (string | number)[]][] = [[doc, []]];
  while (todo.length > 0) {
    const [v, path] = todo.shift()!;
    out.push(path);
    if (Array.isArray(v)) v.forEach((x, i) => todo.push([x, [...path, i]]));
    else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) todo.push([x, [...path, k]]);
  }
  return out;
}

/** Sets an own property even when the key is "__proto__" (plain assignment would change the prototype). */
function setOwn(obj: Record<string, Json>, key: string, value: Json): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** `doc` with `edits` applied (a deep copy; the input is not changed). */
export function applyJsonEdits(doc: unknown, edits: readonly JsonEdit[]): unknown {
  let root = structuredClone(doc) as Json;
  for (const e of edits) {
    const all = places(root);
    const path = all[e.path % all.length]!;
    const parentPath = path.slice(0, -1);
    let parent: Json = root;
    for (const p of parentPath) parent = (parent as Record<string | number, Json>)[p as string]!;
    const key = path[path.length - 1];
    let value: Json | undefined;
    // Values are copied in: the boundary values are shared constants that later edits must not change.
    if (e.kind === 'replace') value = structuredClone(e.value);
    else if (e.kind === 'nest') {
      value = key === undefined ? root : (parent as Record<string | number, Json>)[key as string]!;
      for (let i = 0; i < e.depth; i++) value = [value];
    }
    if (e.kind === 'add') {
      const target: Json = key === undefined ? root : (parent as Record<string | number, Json>)[key as string]!;
      if (Array.isArray(target)) target.push(structuredClone(e.value));
      else if (target !== null && typeof target === 'object') setOwn(target, e.key, structuredClone(e.value));
      continue;
    }
    if (key === undefined) {
      // The root itself: deleting it leaves null.
      root = e.kind === 'delete' ? null : value!;
    } else if (Array.isArray(parent)) {
      if (e.kind === 'delete') parent.splice(key as number, 1);
      else parent[key as number] = value!;
    } else {
      const obj = parent as Record<string, Json>;
      if (e.kind === 'delete') delete obj[key as string];
      else setOwn(obj, key as string, value!);
    }
  }
  return root;
}

/** A temp folder per fuzz file, removed by `done()`; `write` puts one input at a fixed name inside. */
export function fuzzDir(prefix: string): {
  dir: string;
  path: (...parts: string[]) => string;
  write: (name: string, data: Uint8Array | string) => string;
  done: () => void;
} {
  const dir = mkdtempSync(join(tmpdir(), `sae-eraser-fuzz-${prefix}-`));
  return {
    dir,
    path: (...parts) => join(dir, ...parts),
    write: (name, data) => {
      const p = join(dir, name);
      mkdirSync(join(p, '..'), { recursive: true });
      writeFileSync(p, data);
      return p;
    },
    done: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Fails (with a plain assertion error, so the property fails and shrinks) unless `error` names `source`. */
export function expectNamed(error: Error, source: string): void {
  if (!error.message.includes(source)) throw new Error(`the error does not name ${source}: ${error.message}`);
}

/**
 * Fails (with a plain assertion error, so the property fails and shrinks) unless `error` is a clear
 * refusal: it names `source`, and it does not merely forward the text of an engine error (a
 * TypeError or RangeError in its cause chain, such as "x.split is not a function" from a library,
 * tells the user nothing about their file).
 */
export function expectClear(error: Error, source: string): void {
  expectNamed(error, source);
  for (let cause: unknown = error.cause, depth = 0; cause !== undefined && depth < 10; cause = (cause as { cause?: unknown }).cause, depth++) {
    if ((cause instanceof TypeError || cause instanceof RangeError) && error.message.includes(cause.message)) {
      throw new Error(`the error forwards an engine error: ${error.message}`, { cause: error });
    }
  }
}
