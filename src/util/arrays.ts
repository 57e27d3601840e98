/**
 * Reductions over arrays of any length. `Math.max(...values)` passes every element as an argument
 * and overflows the call stack past about 10^5 elements (e.g. the token lengths of 200,000 texts);
 * these loop instead. The lint config forbids spreading into calls in src/ for that reason.
 */

/** The largest value (-Infinity for none), like `Math.max` over the elements. */
export function maxOf(values: Iterable<number>): number {
  let best = -Infinity;
  for (const v of values) {
    if (Number.isNaN(v)) return NaN;
    if (v > best) best = v;
  }
  return best;
}

/** The smallest value (Infinity for none), like `Math.min` over the elements. */
export function minOf(values: Iterable<number>): number {
  let best = Infinity;
  for (const v of values) {
    if (Number.isNaN(v)) return NaN;
    if (v < best) best = v;
  }
  return best;
}

/** Appends every item of `items` to `target` (in place), for any number of items. */
export function pushAll<T>(target: T[], items: Iterable<T>): void {
  for (const item of items) target.push(item);
}

/** Typed arrays end to end, in one new array of the same type (`ctor`). */
export function concatTyped<T extends Float32Array | Int32Array>(parts: readonly T[], ctor: new (n: number) => T): T {
  const out = new ctor(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
