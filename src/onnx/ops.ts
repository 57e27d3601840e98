/**
 * Composite operations that several graphs share, written with `OnnxGraph` nodes.
 */
import { int, type OnnxGraph } from './graph.js';

/**
 * Mean over real tokens, as `meanPool` in src/models/pool.ts: for `x [n, seq, d]` and an int64
 * mask `[n, seq]` (1 on real tokens), pooled[b] = sum_t m[b,t] x[b,t] / max(1, sum_t m[b,t]).
 * Pad positions never count, whatever `x` holds there.
 */
export function meanPoolNodes(g: OnnxGraph, x: string, mask: string): string {
  const m = g.op('Cast', [mask], { to: int(1) });
  const summed = g.op('ReduceSum', [g.op('Mul', [x, g.op('Unsqueeze', [m, g.ints([2])])]), g.ints([1])], { keepdims: int(0) });
  const counts = g.op('Max', [g.op('ReduceSum', [m, g.ints([1])], { keepdims: int(1) }), g.scalar(1)]);
  return g.op('Div', [summed, counts]);
}

/** `x [n, seq, d] -> [n * seq, d]` (for per-token maps such as an SAE), with `d` known. */
export function flattenTokens(g: OnnxGraph, x: string, d: number): string {
  return g.op('Reshape', [x, g.ints([-1, d])]);
}

/** `x [n * seq, d] -> [n, seq, d]`, the sizes of `n` and `seq` taken from `like [n, seq, ...]`. */
export function unflattenTokens(g: OnnxGraph, x: string, like: string, d: number): string {
  const lead = g.op('Slice', [g.op('Shape', [like]), g.ints([0]), g.ints([2])]);
  return g.op('Reshape', [x, g.op('Concat', [lead, g.ints([d])], { axis: int(0) })]);
}
