/**
 * The building blocks of `layers.ts` as ONNX nodes, for the forward graphs that ONNX Runtime runs
 * (`Model.forwardGraph`). Each function takes the same weight structs as its tfjs counterpart and
 * reads their values once (`dataSync`), so both executors compute with identical weights. Values
 * are `[n, seq, d]` float32 with symbolic n and seq:
 *   embedding   E[t]                                                  Gather
 *   linear      x W^T + b, W^T `[in, out]` a 2-D initializer         MatMul, Add
 *   layerNorm   (x - mean) / sqrt(var + eps) * weight + bias          LayerNormalization
 *   gelu        0.5 x (1 + erf(x / sqrt 2))                           Div, Erf, Add, Mul
 *   mlp         act(x W1^T + b1) W2^T + b2
 *   attention   softmax(q k^T * scale + bias) v per head              MatMul, Softmax
 *   bias        (1 - allowed) * MASKED, allowed from the mask (and j <= i when causal)
 *
 * What differs from the tfjs path without changing the math: the row blocks of a `Linear`'s `W^T`
 * and the hidden-unit blocks of an `Mlp` are joined back into whole matrices (ONNX Runtime's GEMM
 * needs no blocking: on all-MiniLM-L6-v2 its mlp_out is as close to a float64 pass as PyTorch's
 * own, see test/models/graphs.test.ts); projections of one input (q, k, v) are one MatMul against
 * their weights side by side; heads stay in `[n, seq, heads, headDim]` until the attention
 * products. MatMuls read 2-D initializers, which ONNX Runtime pre-packs once per session, and
 * ONNX Runtime fuses the GELU pattern (with its bias) and the score scale into single kernels.
 */
import { tf } from '../engine/engine.js';
import { float, int, ints, type OnnxGraph } from '../onnx/graph.js';
import { concatTyped } from '../util/arrays.js';
import { HookRunner } from './hook-runner.js';
import type { HiddenAct } from './config.js';
import type { LayerNorm, Linear, Mlp } from './layers.js';
import type { Edit, GraphEdit, HookName } from './model.js';

/** The additive bias of a masked key, as in `attentionBias`: exp(score + MASKED) underflows to exactly 0. */
const MASKED = -1e9;

/** A float32 tensor's values, read once from the engine. */
export function valuesOf(t: tf.Tensor): Float32Array {
  if (t.dtype !== 'float32') throw new Error(`internal: expected a float32 weight, got ${t.dtype} [${t.shape.join(', ')}]`);
  return t.dataSync() as Float32Array;
}

/** A row-major matrix with its width, for `concatColumns`. */
interface Matrix {
  data: Float32Array;
  cols: number;
}

/** Matrices with the same number of rows, side by side: `[rows, sum of cols]`. */
function concatColumns(parts: readonly Matrix[]): Matrix {
  const rows = parts[0]!.data.length / parts[0]!.cols;
  const cols = parts.reduce((s, p) => s + p.cols, 0);
  const out = new Float32Array(rows * cols);
  let offset = 0;
  for (const p of parts) {
    if (p.data.length !== rows * p.cols) throw new Error(`internal: cannot put a ${p.data.length / p.cols}-row matrix beside a ${rows}-row one`);
    for (let r = 0; r < rows; r++) out.set(p.data.subarray(r * p.cols, (r + 1) * p.cols), r * cols + offset);
    offset += p.cols;
  }
  return { data: out, cols };
}

/** A linear layer's whole `W^T` `[in, out]` (its row blocks stacked back together). */
function weightMatrix(layer: Linear): Matrix {
  return { data: concatTyped(layer.weightT.map(valuesOf), Float32Array), cols: layer.weightT[0]!.shape[1] };
}

/** `x W + b` for a `[in, out]` weight given as values (b omitted when undefined). */
function affine(g: OnnxGraph, x: string, weight: Matrix, bias: Float32Array | undefined, name: string): string {
  const rows = weight.data.length / weight.cols;
  const y = g.op('MatMul', [x, g.constant(`${name}.weight`, weight.data, [rows, weight.cols])]);
  return bias === undefined ? y : g.op('Add', [y, g.constant(`${name}.bias`, bias, [weight.cols])]);
}

/** Embedding lookup: rows `ids` `[n, seq]` (int64) of `table` (`[vocab, d]`, row-major) -> `[n, seq, d]`. */
export function embeddingGraph(g: OnnxGraph, table: Float32Array, d: number, ids: string, name: string): string {
  return g.op('Gather', [g.constant(name, table, [table.length / d, d]), ids], { axis: int(0) });
}

/** y = x W^T + b on the last axis of `x` `[n, seq, in]` -> `[n, seq, out]`. */
export function linearGraph(g: OnnxGraph, x: string, layer: Linear, name: string): string {
  return affine(g, x, weightMatrix(layer), layer.bias === undefined ? undefined : valuesOf(layer.bias), name);
}

/**
 * Several linear maps of the same input as one MatMul against their weights side by side
 * (`[in, sum of out]`), split back into one `[n, seq, out_i]` value per map. The maps must agree on
 * having a bias.
 */
export function linearsGraph(g: OnnxGraph, x: string, layers: readonly Linear[], name: string): string[] {
  const withBias = layers.filter((l) => l.bias !== undefined).length;
  if (withBias !== 0 && withBias !== layers.length) throw new Error(`internal: ${name}: fused linear maps must all have a bias or none`);
  const weights = layers.map(weightMatrix);
  const bias =
    withBias === 0
      ? undefined
      : concatTyped(
          layers.map((l) => valuesOf(l.bias!)),
          Float32Array,
        );
  const y = affine(g, x, concatColumns(weights), bias, name);
  return g.nodeN('Split', [y, g.ints(weights.map((w) => w.cols))], layers.length, { axis: int(-1) });
}

/**
 * LayerNorm over the last axis (biased variance), as `layerNorm`. ONNX Runtime's kernel is the more
 * accurate of the two on rows with a large mean (graphs.test.ts measures both against float64).
 */
export function layerNormGraph(g: OnnxGraph, x: string, ln: LayerNorm, name: string): string {
  const d = ln.weight.shape[0];
  return g.op('LayerNormalization', [x, g.constant(`${name}.weight`, valuesOf(ln.weight), [d]), g.constant(`${name}.bias`, valuesOf(ln.bias), [d])], {
    axis: int(-1),
    epsilon: float(ln.eps),
  });
}

/**
 * Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), written in the node pattern ONNX Runtime fuses into
 * one Gelu kernel.
 */
export function geluGraph(g: OnnxGraph, x: string): string {
  const erf = g.op('Erf', [g.op('Div', [x, g.scalar(Math.SQRT2)])]);
  return g.op('Mul', [g.op('Mul', [x, g.op('Add', [erf, g.scalar(1)])]), g.scalar(0.5)]);
}

/** The activation `name` on `x`, as `activation`. */
export function activationGraph(g: OnnxGraph, name: HiddenAct, x: string): string {
  switch (name) {
    case 'gelu':
      return geluGraph(g, x);
  }
}

/** The MLP act(x W1^T + b1) W2^T + b2 on `[n, seq, d]`, with the blocks of `m` joined into W1^T `[d, dFf]` and W2^T `[dFf, d]`. */
export function mlpGraph(g: OnnxGraph, x: string, m: Mlp, name: string): string {
  const w1 = concatColumns(m.blocks.map((b) => weightMatrix(b.in)));
  const b1 = concatTyped(
    m.blocks.map((b) => valuesOf(b.in.bias!)),
    Float32Array,
  );
  const w2 = {
    data: concatTyped(
      m.blocks.map((b) => valuesOf(b.outWeightT)),
      Float32Array,
    ),
    cols: m.outBias.shape[0],
  };
  const hidden = activationGraph(g, m.act, affine(g, x, w1, b1, `${name}.in`));
  return affine(g, hidden, w2, valuesOf(m.outBias), `${name}.out`);
}

/** The sequence length of `ids` `[n, seq]`, as a 1-D int64 value `[1]` (for slicing position tables). */
export function sequenceLength(g: OnnxGraph, ids: string): string {
  return g.op('Shape', [ids], { start: int(1), end: int(2) });
}

/** Rows 0..seq-1 of a `[maxPositions, width]` table (`data` row-major) -> `[seq, width]`. */
export function positionRows(g: OnnxGraph, data: Float32Array, width: number, seq: string, name: string): string {
  return g.op('Slice', [g.constant(name, data, [data.length / width, width]), g.ints([0]), seq, g.ints([0])]);
}

/**
 * The additive attention bias of `attentionBias` from `attentionMask` `[n, seq]` (int64, 1 = real
 * token): 0 where query i may attend to key j, MASKED elsewhere,
 *   bias = (1 - allowed) * MASKED,  allowed = m_j (key padding), times [j <= i] when causal;
 * `[n, 1, seq, seq]` (causal) or `[n, 1, 1, seq]`.
 */
export function attentionBiasGraph(g: OnnxGraph, attentionMask: string, causal: boolean): string {
  const keyAllowed = g.op('Unsqueeze', [g.op('Cast', [attentionMask], { to: int(1) }), g.ints([1, 2])]);
  let allowed = keyAllowed;
  if (causal) {
    const seq = sequenceLength(g, attentionMask);
    const ones = g.op('Expand', [g.scalar(1), g.op('Concat', [seq, seq], { axis: int(0) })]);
    allowed = g.op('Mul', [keyAllowed, g.op('Trilu', [ones], { upper: int(0) })]);
  }
  return g.op('Mul', [g.op('Sub', [g.scalar(1), allowed]), g.scalar(MASKED)]);
}

/**
 * `[n, seq, nHeads * headDim]` -> `[n, seq, nHeads, headDim]`: a view (the head axis moves in
 * `attendGraph`, straight into its products, so no other op pays for the transposed layout).
 */
export function splitHeadsGraph(g: OnnxGraph, x: string, nHeads: number, headDim: number): string {
  return g.op('Reshape', [x, g.ints([0, 0, nHeads, headDim])]);
}

/** `[n, seq, nHeads, headDim]` -> `[n, seq, nHeads * headDim]`. */
export function mergeHeadsGraph(g: OnnxGraph, x: string): string {
  return g.op('Reshape', [x, g.ints([0, 0, -1])]);
}

/**
 * softmax(q k^T * scale + bias) v per (sequence, head), as `attend`, for queries, keys and values
 * `[n, seq, heads, headDim]` (`splitHeadsGraph`) and `bias` broadcasting to `[n, heads, seq, seq]`;
 * returns `[n, seq, heads, headDim]`. The transposes to `[n, heads, seq, headDim]` (keys to
 * `[n, heads, headDim, seq]`) feed the products directly.
 */
export function attendGraph(g: OnnxGraph, q: string, k: string, v: string, bias: string, scale: number): string {
  const heads = (x: string, perm: readonly number[]): string => g.op('Transpose', [x], { perm: ints(perm) });
  const scores = g.op('Mul', [g.op('MatMul', [heads(q, [0, 2, 1, 3]), heads(k, [0, 2, 3, 1])]), g.scalar(scale)]);
  const context = g.op('MatMul', [g.op('Softmax', [g.op('Add', [scores, bias])], { axis: int(-1) }), heads(v, [0, 2, 1, 3])]);
  return heads(context, [0, 2, 1, 3]);
}

/** Stands in for a tfjs edit in the `HookRunner` that `GraphHooks` asks where to stop: never run. */
const notRun: Edit = () => {
  throw new Error('internal: GraphHooks never runs a tfjs edit');
};

/**
 * The graph counterpart of `HookRunner`: the same stop rule and hook-name checks (it delegates
 * `needs` to a HookRunner capturing `hooks` with edits at the hooks of `edits`), applying each
 * graph edit where `HookRunner` applies an `Edit` and recording the value name of each wanted hook.
 */
export class GraphHooks {
  /** Value names of the requested hooks computed so far (after their edits). */
  readonly values: Record<HookName, string> = {};
  private readonly runner: HookRunner;
  private readonly wanted: ReadonlySet<HookName>;

  /**
   * @param g The graph the edits add their nodes to.
   * @param width The width d of every hook value `[n, seq, d]` (passed to the edits).
   */
  constructor(
    private readonly g: OnnxGraph,
    hookNames: readonly HookName[],
    nLayers: number,
    private readonly width: number,
    hooks: readonly HookName[],
    private readonly edits: Readonly<Record<HookName, GraphEdit>> = {},
  ) {
    const placeholders = Object.fromEntries(Object.keys(edits).map((h) => [h, notRun]));
    this.runner = new HookRunner(hookNames, nLayers, { capture: hooks, edits: placeholders });
    this.wanted = new Set(hooks);
  }

  /** Whether the graph must compute hook `name` (it is at or before the last requested or edited hook). */
  needs(name: HookName): boolean {
    return this.runner.needs(name);
  }

  /** Applies the edit at `name` (if any), records the result as hook `name` when requested, and returns the value that flows on. */
  at(name: HookName, value: string): string {
    const edit = this.edits[name];
    const out = edit === undefined ? value : edit(this.g, value, this.width);
    if (typeof out !== 'string' || out === '') throw new Error(`the graph edit at hook "${name}" returned ${JSON.stringify(out)}; it must return a value name`);
    if (this.wanted.has(name)) this.values[name] = out;
    return out;
  }
}
