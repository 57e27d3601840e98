/**
 * Zero ablation of SAE features with the SAE error preserved: the intervention of SHIFT (Sparse
 * Feature Circuits, Marks et al. 2024), shared by `shift`, `shift_retrain` and the `random` control.
 *
 * ## Math
 * An SAE at a hook writes x = decode(f(x)) + e(x) with decode(f) = sum_i f_i v_i + b_dec (v_i the
 * decoder rows) and e(x) the SAE error. Zeroing the features of a set S while keeping the error:
 *   x' = decode(f with f_S = 0) + e(x) = x - sum_{i in S} f_i(x) v_i .
 * At token level this is applied at every token of the hook (`zeroAblationEdit`); with edits at
 * several hooks, each downstream hook encodes the activation that the upstream edits produced, as
 * in the SFC notebook (one trace, all submodules edited in forward order).
 * Mean pooling over real tokens is linear, so at the probe's own hook
 *   mean_t x'_t = x̄ - sum_{i in S} f̄_i v_i ,    f̄_i = mean_t f_i(x_t) ,
 * exactly: the erased pooled representation follows from the cached pooled activations and pooled
 * SAE codes, with no forward pass (`zeroAblatePooled`). Features at hooks upstream of the probe hook
 * change what later layers compute, so their effect needs a forward pass with `edits()` (or, on
 * ONNX Runtime, its graph form `zeroAblationGraphEdit`, which encodes only the features of S).
 *
 * The eraser these methods share, and its checkpoint format, are in feature-ablation.ts.
 */
import { matMulT, tf } from '../engine/engine.js';
import type { CsrRows } from '../cache/cache.js';
import { valuesOf } from '../models/graphs.js';
import type { Edit, GraphEdit, HookName, Model } from '../models/model.js';
import { int, type OnnxGraph } from '../onnx/graph.js';
import { flattenTokens, unflattenTokens } from '../onnx/ops.js';
import { hasGraph, saeNodes } from '../sae/graph.js';
import { AffineSae, type Sae, type SaeActivation } from '../sae/sae.js';
import { checkHooksUpToProbe, checkWidth, type EraserSae, type MethodName } from './eraser.js';

/** Ablated SAE features per hook: sorted, distinct indices into the hook's SAE. */
export type FeatureSets = Record<HookName, Int32Array>;

/** Dense SAE codes per chunk stay under this many floats (16 MB), whatever the SAE width. */
const CHUNK_FLOATS = 1 << 22;

/** Token rows per chunk for an SAE of width dSae. */
export function chunkRows(dSae: number): number {
  return Math.max(1, Math.floor(CHUNK_FLOATS / dSae));
}

/** Checks that `features` are distinct integers in [0, dSae) and returns them sorted. */
export function checkFeatures(what: string, features: ArrayLike<number>, dSae: number): Int32Array {
  for (let i = 0; i < features.length; i++) {
    if (!Number.isInteger(features[i])) throw new Error(`${what}: feature index ${features[i]} is not an integer`);
  }
  const out = Int32Array.from(features).sort();
  for (let i = 0; i < out.length; i++) {
    if (out[i]! < 0 || out[i]! >= dSae) throw new Error(`${what}: feature index ${out[i]} is outside [0, ${dSae})`);
    if (i > 0 && out[i] === out[i - 1]) throw new Error(`${what}: feature index ${out[i]} is listed twice`);
  }
  return out;
}

/**
 * The decoder rows v_i of `features`, `[k, dIn]`. `decoderDirections()` returns a new tensor that
 * the caller owns (the Sae contract), which this disposes.
 */
export function decoderRows(sae: EraserSae, features: Int32Array): tf.Tensor2D {
  return tf.tidy(() => {
    const all = sae.decoderDirections();
    if (all.shape[0] !== sae.dSae || all.shape[1] !== sae.dIn) {
      throw new Error(`SAE decoderDirections() has shape [${all.shape.join(', ')}], expected [${sae.dSae}, ${sae.dIn}]`);
    }
    return tf.gather(all, tf.tensor1d(features, 'int32')) as tf.Tensor2D;
  });
}

/**
 * sum_{i in S} f_i(x) v_i for token rows `x [T, dIn]` -> `[T, dIn]`, encoding `chunkRows(dSae)`
 * rows at a time so that no more than a bounded block of dense codes exists at once.
 */
export function ablatedComponent(sae: EraserSae, features: Int32Array, directions: tf.Tensor2D, x2d: tf.Tensor2D): tf.Tensor2D {
  const [tokens, dIn] = x2d.shape;
  const rows = chunkRows(sae.dSae);
  return tf.tidy(() => {
    const idx = tf.tensor1d(features, 'int32');
    const parts: tf.Tensor2D[] = [];
    for (let start = 0; start < tokens; start += rows) {
      const size = Math.min(rows, tokens - start);
      const xc = tokens <= rows ? x2d : tf.slice(x2d, [start, 0], [size, dIn]);
      const codes = tf.gather(sae.encode(xc), idx, 1) as tf.Tensor2D;
      parts.push(matMulT(codes, directions) as tf.Tensor2D);
    }
    return parts.length === 1 ? parts[0]! : tf.concat(parts, 0);
  });
}

/** x' = x - sum_{i in S} f_i(x) v_i for `x [..., dIn]` (any leading shape). Differentiable. */
export function zeroAblate(sae: EraserSae, features: Int32Array, directions: tf.Tensor2D, x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    if (features.length === 0) return tf.clone(x);
    const d = x.shape[x.rank - 1]!;
    const flat = tf.reshape(x, [-1, d]) as tf.Tensor2D;
    return tf.reshape(tf.sub(flat, ablatedComponent(sae, features, directions, flat)), x.shape);
  });
}

/** The token-level hook edit of a zero ablation; checks the activation width. */
export function zeroAblationEdit(method: MethodName, hook: HookName, sae: EraserSae, features: Int32Array, directions: tf.Tensor2D): Edit {
  return (activation) => {
    checkWidth(method, hook, sae.dIn, activation.shape[2]);
    return zeroAblate(sae, features, directions, activation) as tf.Tensor3D;
  };
}

/**
 * The SAE restricted to `features`: f_S(x) = act((x - s b_dec) W_enc[:, S] + b_enc[S]) (threshold
 * entries S for JumpReLU), which equals f(x) on S for activations acting on each feature alone
 * (ReLU, JumpReLU; not top-k, which compares all of them). The caller disposes it.
 */
function restrictedSae(sae: AffineSae, features: Int32Array): AffineSae {
  const act = sae.activation;
  if (act.kind === 'topk') throw new Error('internal: a top-k SAE cannot be restricted to some of its features');
  const idx = tf.tensor1d(features, 'int32');
  try {
    const activation: SaeActivation = act.kind === 'jumprelu' ? { kind: 'jumprelu', threshold: tf.gather(act.threshold, idx) } : act;
    const weights = {
      wEnc: tf.gather(sae.wEnc, idx, 1),
      bEnc: tf.gather(sae.bEnc, idx),
      wDec: tf.gather(sae.wDec, idx),
      bDec: tf.clone(sae.bDec),
      subtractDecoderBiasFromInput: sae.subtractDecoderBiasFromInput,
      activation,
    };
    return new AffineSae(weights, { ...sae.metadata, source: `${sae.metadata.source} (${features.length} of its features)` });
  } finally {
    idx.dispose();
  }
}

/**
 * sum_{i in S} w_i f_i(x) v_i as ONNX nodes for tokens `x [N, dIn]` -> `[N, dIn]`, with S =
 * `features` (non-empty) and w_i = 1 when `weights` `[k]` is omitted. ReLU and JumpReLU SAEs encode
 * only the features of S (`restrictedSae`: k columns instead of dSae); top-k needs every
 * pre-activation, so there the whole code is computed and S gathered from it.
 */
export function weightedFeatureNodes(g: OnnxGraph, sae: AffineSae, x: string, features: Int32Array, weights?: Float32Array): string {
  const k = features.length;
  if (k === 0) throw new Error('internal: weightedFeatureNodes needs at least one feature');
  if (weights !== undefined && weights.length !== k) throw new Error(`internal: ${weights.length} weights for ${k} features`);
  let codes: string;
  if (sae.activation.kind === 'topk') {
    codes = g.op('Gather', [saeNodes(g, sae, x, false).codes, g.ints(Array.from(features))], { axis: int(1) });
  } else {
    const restricted = restrictedSae(sae, features);
    try {
      codes = saeNodes(g, restricted, x, false).codes;
    } finally {
      restricted.dispose();
    }
  }
  const scaled = weights === undefined ? codes : g.op('Mul', [codes, g.constant('feature_weights', weights, [k])]);
  const rows = decoderRows(sae, features);
  try {
    return g.op('MatMul', [scaled, g.constant('feature_directions', valuesOf(rows), [k, sae.dIn])]);
  } finally {
    rows.dispose();
  }
}

/** The SAE as an `AffineSae` when it has an ONNX form (`saeNodes`), else undefined. */
export function graphSae(sae: EraserSae): AffineSae | undefined {
  const full = sae as Sae;
  return hasGraph(full) ? full : undefined;
}

/**
 * `zeroAblationEdit` as ONNX nodes (x' = x - sum_{i in S} f_i(x) v_i per token, the same math),
 * or undefined when the SAE has no ONNX form; checks the hook width when the graph is built.
 */
export function zeroAblationGraphEdit(method: MethodName, hook: HookName, sae: EraserSae, features: Int32Array): GraphEdit | undefined {
  const affine = graphSae(sae);
  if (affine === undefined) return undefined;
  return (g, x, d) => {
    checkWidth(method, hook, sae.dIn, d);
    if (features.length === 0) return x;
    const flat = flattenTokens(g, x, d);
    return unflattenTokens(g, g.op('Sub', [flat, weightedFeatureNodes(g, affine, flat, features)]), x, d);
  };
}

/** Values of columns `features` of CSR rows `rows`, dense `[rows.length, features.length]`. */
export function csrColumns(csr: CsrRows, rows: ArrayLike<number>, features: Int32Array): Float32Array {
  const k = features.length;
  const column = new Map<number, number>();
  features.forEach((f, j) => column.set(f, j));
  const out = new Float32Array(rows.length * k);
  const nRows = csr.offsets.length - 1;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    if (!Number.isInteger(r) || r < 0 || r >= nRows) throw new Error(`cache row ${r} is outside [0, ${nRows})`);
    for (let p = csr.offsets[r]!; p < csr.offsets[r + 1]!; p++) {
      const j = column.get(csr.indices[p]!);
      if (j !== undefined) out[i * k + j] = csr.values[p]!;
    }
  }
  return out;
}

/** x̄' = x̄ - F̄_S V_S for pooled rows `x̄ [n, d]`, pooled codes `F̄_S [n, k]` and rows `V_S [k, d]`. */
export function zeroAblatePooled(pooled: tf.Tensor2D, pooledCodes: Float32Array, directions: tf.Tensor2D): tf.Tensor2D {
  const [n] = pooled.shape;
  const k = directions.shape[0];
  if (pooledCodes.length !== n * k) throw new Error(`zeroAblatePooled: ${pooledCodes.length} pooled codes for ${n} rows x ${k} features`);
  if (k === 0) return tf.clone(pooled);
  return tf.tidy(() => tf.sub(pooled, matMulT(tf.tensor2d(pooledCodes, [n, k]), directions)) as tf.Tensor2D);
}

/** Hooks that have an SAE and come at or before `probeHook` in the model's forward order. */
export function hooksUpToProbe(model: Model, saes: Readonly<Record<HookName, EraserSae>>, probeHook: HookName, only?: readonly HookName[]): HookName[] {
  checkHooksUpToProbe(model, probeHook, only ?? [], 'SAE hooks to edit');
  for (const h of only ?? []) if (saes[h] === undefined) throw new Error(`hook "${h}" has no SAE (SAEs at: ${Object.keys(saes).join(', ') || 'none'})`);
  const probeIndex = model.hookNames.indexOf(probeHook);
  return model.hookNames.filter((h, i) => i <= probeIndex && saes[h] !== undefined && (only === undefined || only.includes(h)));
}
