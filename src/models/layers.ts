/**
 * The transformer building blocks the architectures share, written as plain tensor math on
 * `[n, seq, d]` activations so each model file reads like its equations. Weights of linear maps
 * are stored transposed, `[in, out]`, so a linear layer is a plain matMul (`x W^T + b` with `W^T`
 * precomputed at load time).
 *
 * Accuracy: the wasm matMul (XNNPACK) accumulates each output along the whole `in` axis in one
 * running float32 sum. With `in` = 1536-2048 and large terms (MLP output projections of trained
 * models reach |y| ~ 200) its rounding error is ~4x PyTorch's and exceeds 1e-4. Long products are
 * therefore split into blocks of at most SUM_BLOCK inputs whose partial products are added
 * pairwise: x W^T = sum_b x[:, B_b] W^T[B_b, :]. Same FLOPs; on all-MiniLM-L6-v2 the mlp_out error
 * against a float64 pass drops from 2.3e-4 to 0.9e-4 (PyTorch fp32: 1.7e-4).
 */
import { matMulT, tf } from '../engine/engine.js';
import type { Checkpoint } from './checkpoint.js';
import type { HiddenAct } from './config.js';

/** y = x W^T + b. */
export interface Linear {
  /** `W^T` `[in, out]` cut along `in` into consecutive row blocks of at most SUM_BLOCK rows. */
  weightTBlocks: tf.Tensor2D[];
  bias?: tf.Tensor1D;
}

/** Longest run of products summed in one matMul accumulator (see the header). */
const SUM_BLOCK = 128;
/** Products with at most this many inputs are left whole. */
const SPLIT_ABOVE = 256;

/** A linear layer from `W^T` `[in, out]` (taken over: split into blocks, then disposed) and bias. */
export function makeLinear(weightT: tf.Tensor2D, bias?: tf.Tensor1D): Linear {
  const dIn = weightT.shape[0];
  if (dIn <= SPLIT_ABOVE) return bias === undefined ? { weightTBlocks: [weightT] } : { weightTBlocks: [weightT], bias };
  const nBlocks = Math.ceil(dIn / SUM_BLOCK);
  const sizes = Array.from({ length: nBlocks }, (_, b) => Math.min(SUM_BLOCK, dIn - b * SUM_BLOCK));
  const blocks = tf.split(weightT, sizes, 0) as tf.Tensor2D[];
  weightT.dispose();
  return bias === undefined ? { weightTBlocks: blocks } : { weightTBlocks: blocks, bias };
}

/** Sums tensors pairwise (a balanced tree), which keeps float32 rounding error low. */
function pairwiseSum(terms: tf.Tensor[]): tf.Tensor {
  let level = terms;
  while (level.length > 1) {
    const next: tf.Tensor[] = [];
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? tf.add(level[i]!, level[i + 1]!) : level[i]!);
    level = next;
  }
  return level[0]!;
}

/** y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance). */
export interface LayerNorm {
  weight: tf.Tensor1D;
  bias: tf.Tensor1D;
  eps: number;
}

/** Additive attention bias for masked-out keys: exp(score + MASKED) underflows to exactly 0. */
const MASKED = -1e9;

/** Applies a linear map to the last axis of `x` `[n, seq, in]` -> `[n, seq, out]`. */
export function linear(x: tf.Tensor3D, layer: Linear): tf.Tensor3D {
  return tf.tidy(() => {
    const [n, seq, dIn] = x.shape;
    const blocks = layer.weightTBlocks;
    const dOut = blocks[0]!.shape[1];
    const x2 = tf.reshape(x, [n * seq, dIn]);
    const xBlocks = blocks.length === 1 ? [x2] : tf.split(x2, blocks.map((b) => b.shape[0]), 1);
    let y = pairwiseSum(blocks.map((w, b) => matMulT(xBlocks[b]!, w)));
    if (layer.bias !== undefined) y = tf.add(y, layer.bias);
    return tf.reshape(y, [n, seq, dOut]);
  });
}

/** LayerNorm over the last axis. */
export function layerNorm(x: tf.Tensor3D, ln: LayerNorm): tf.Tensor3D {
  return tf.tidy(() => {
    const mean = tf.mean(x, -1, true);
    const centred = tf.sub(x, mean);
    const variance = tf.mean(tf.square(centred), -1, true);
    const normed = tf.mul(centred, tf.rsqrt(tf.add(variance, ln.eps)));
    return tf.add(tf.mul(normed, ln.weight), ln.bias);
  });
}

/** Exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (PyTorch's default, not the tanh form). */
export function gelu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1)));
}

export function activation(name: HiddenAct, x: tf.Tensor): tf.Tensor {
  switch (name) {
    case 'gelu':
      return gelu(x);
  }
}

/** `[n, seq, nHeads * headDim]` -> `[n, nHeads, seq, headDim]`. */
export function splitHeads(x: tf.Tensor3D, nHeads: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, seq, d] = x.shape;
    return tf.transpose(tf.reshape(x, [n, seq, nHeads, d / nHeads]), [0, 2, 1, 3]);
  });
}

/** `[n, nHeads, seq, headDim]` -> `[n, seq, nHeads * headDim]`. */
export function mergeHeads(x: tf.Tensor4D): tf.Tensor3D {
  return tf.tidy(() => {
    const [n, nHeads, seq, headDim] = x.shape;
    return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [n, seq, nHeads * headDim]);
  });
}

/**
 * Additive attention mask from an attention mask `[n, seq]` (1 = real token): 0 where query i may
 * attend to key j, MASKED elsewhere. Keys that are padding are masked; with `causal`, so are keys
 * after the query. Returns `[n, 1, seq, seq]` (causal) or `[n, 1, 1, seq]`. A query row whose keys
 * are all masked (a padded query of an all-padding row) gets uniform weights, never NaN.
 */
export function attentionBias(attentionMask: tf.Tensor2D, causal: boolean): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, seq] = attentionMask.shape;
    const keyAllowed = tf.reshape(tf.cast(attentionMask, 'float32'), [n, 1, 1, seq]);
    const allowed = causal
      ? tf.mul(keyAllowed, tf.reshape(tf.linalg.bandPart(tf.ones([seq, seq]), -1, 0), [1, 1, seq, seq]))
      : keyAllowed;
    return tf.mul(tf.sub(1, allowed), MASKED) as tf.Tensor4D;
  });
}

/** softmax(q k^T * scale + bias) v for `[n, heads, seq, headDim]` queries, keys and values. */
export function attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, bias: tf.Tensor4D, scale: number): tf.Tensor4D {
  return tf.tidy(() => {
    const scores = tf.add(tf.mul(matMulT(q, k, false, true), scale), bias);
    return matMulT(tf.softmax(scores, -1), v) as tf.Tensor4D;
  });
}

/** Embedding lookup: rows of `table` `[vocab, d]` for ids `[n, seq]` -> `[n, seq, d]`. */
export function embedding(table: tf.Tensor2D, ids: tf.Tensor2D): tf.Tensor3D {
  return tf.tidy(() => {
    const [n, seq] = ids.shape;
    return tf.reshape(tf.gather(table, tf.reshape(ids, [n * seq])), [n, seq, table.shape[1]]);
  });
}

/** A checkpoint tensor the loader needs: its name (without prefix), shape, and why (for errors). */
export interface TensorSpec {
  name: string;
  shape: readonly number[];
  why: string;
}

/** Specs of a linear layer `name` (`name.weight` `[out, in]`, `name.bias` `[out]` when `bias`). */
export function linearSpecs(name: string, dIn: number, dOut: number, bias: boolean, why: string): TensorSpec[] {
  const specs: TensorSpec[] = [{ name: `${name}.weight`, shape: [dOut, dIn], why }];
  if (bias) specs.push({ name: `${name}.bias`, shape: [dOut], why });
  return specs;
}

/** Specs of a LayerNorm `name` (`name.weight`, `name.bias`, both `[d]`). */
export function layerNormSpecs(name: string, d: number, why: string): TensorSpec[] {
  return [
    { name: `${name}.weight`, shape: [d], why },
    { name: `${name}.bias`, shape: [d], why },
  ];
}

/** Reads a checked linear layer, transposing its weight to `[in, out]`. */
export function readLinear(ckpt: Checkpoint, name: string, bias: boolean): Linear {
  const weightT = ckpt.readTransposed(`${name}.weight`);
  return makeLinear(weightT, bias ? (ckpt.read(`${name}.bias`) as tf.Tensor1D) : undefined);
}

/** Reads a checked LayerNorm. */
export function readLayerNorm(ckpt: Checkpoint, name: string, eps: number): LayerNorm {
  return { weight: ckpt.read(`${name}.weight`) as tf.Tensor1D, bias: ckpt.read(`${name}.bias`) as tf.Tensor1D, eps };
}

/** Every tensor held by a weights object (nested objects and arrays), for `dispose`. */
export function tensorsOf(weights: unknown): tf.Tensor[] {
  const out: tf.Tensor[] = [];
  const walk = (v: unknown): void => {
    if (v instanceof tf.Tensor) out.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (typeof v === 'object' && v !== null) Object.values(v).forEach(walk);
  };
  walk(weights);
  return out;
}
