/**
 * The transformer building blocks the architectures share, written as plain tensor math on
 * `[n, seq, d]` activations so each model file reads like its equations. Weights of linear maps
 * are stored transposed, `[in, out]`, so a linear layer is a plain matMul (`x W^T + b` with `W^T`
 * precomputed at load time).
 *
 * Accuracy: the wasm matMul (XNNPACK) accumulates each output along the whole `in` axis in one
 * running float32 sum, so its rounding error grows with `in` and exceeds PyTorch's by ~4x on long
 * products with large terms (trained MLPs reach |mlp_out| ~ 200; error > 1e-4). Every product is
 * therefore cut into blocks of at most BLOCK inputs whose partial products are added pairwise:
 *   x W^T = sum_k x[:, K_k] W^T[K_k, :].
 * The MLP is also computed in blocks of BLOCK hidden units, so its hidden activation never needs
 * cutting: f(x) = sum_b act(x W1[B_b]^T + b1[B_b]) W2[:, B_b]^T + b2. Same FLOPs; on
 * all-MiniLM-L6-v2 the mlp_out error against a float64 pass drops below PyTorch's own.
 */
import { matMulT, tf, transposeLast2 } from '../engine/engine.js';
import type { Checkpoint } from './checkpoint.js';
import type { HiddenAct } from './config.js';

/** y = x W^T + b. */
export interface Linear {
  /** `W^T` `[in, out]`, cut along `in` into the row blocks of `blockSizes(in)` (or left whole). */
  weightT: tf.Tensor2D[];
  bias?: tf.Tensor1D;
}

/** A two-layer MLP split into blocks of hidden units (see the header). */
export interface Mlp {
  /** Per block of at most BLOCK hidden units: its rows of W1 (as a Linear) and its `[units, d]` rows of W2^T. */
  blocks: { in: Linear; outWeightT: tf.Tensor2D }[];
  outBias: tf.Tensor1D;
  act: HiddenAct;
}

/** The longest float32 running sum a product may use (see the header). */
export const BLOCK = 128;

/** Sizes of consecutive blocks of at most BLOCK covering `d`. */
export function blockSizes(d: number): number[] {
  return Array.from({ length: Math.ceil(d / BLOCK) }, (_, k) => Math.min(BLOCK, d - k * BLOCK));
}

/** Cuts `W^T` `[in, out]` into its row blocks (taking ownership of it). */
export function blockRows(weightT: tf.Tensor2D): tf.Tensor2D[] {
  const sizes = blockSizes(weightT.shape[0]);
  if (sizes.length === 1) return [weightT];
  const blocks = tf.split(weightT, sizes, 0) as tf.Tensor2D[];
  weightT.dispose();
  return blocks;
}

/**
 * A linear layer from `W` `[out, in]` given row-major, and its bias. `blocked: false` keeps `W^T`
 * whole (for the unembedding, whose partial products would be vocabulary-sized).
 */
export function linearFromRows(weight: Float32Array, dOut: number, dIn: number, bias?: Float32Array, blocked = true): Linear {
  const weightT = tf.tidy(() => tf.transpose(tf.tensor2d(weight, [dOut, dIn])) as tf.Tensor2D);
  const blocks = blocked ? blockRows(weightT) : [weightT];
  return bias === undefined ? { weightT: blocks } : { weightT: blocks, bias: tf.tensor1d(bias) };
}

/** Rows `rows` of a row-major matrix with `rowLen` columns, as a new row-major array. */
export function selectRows(data: Float32Array, rowLen: number, rows: readonly number[]): Float32Array {
  const out = new Float32Array(rows.length * rowLen);
  rows.forEach((r, i) => out.set(data.subarray(r * rowLen, (r + 1) * rowLen), i * rowLen));
  return out;
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

/** `x` `[n, seq, d]` flattened to `[n * seq, d]` and cut into the column blocks of `blockSizes(d)`. */
export function columnBlocks(x: tf.Tensor3D): tf.Tensor2D[] {
  const [n, seq, d] = x.shape;
  const x2 = tf.reshape(x, [n * seq, d]) as tf.Tensor2D;
  const sizes = blockSizes(d);
  return sizes.length === 1 ? [x2] : (tf.split(x2, sizes, 1) as tf.Tensor2D[]);
}

/** sum_k x_k W^T_k (+ b), pairwise over the blocks: `[n * seq, out]`. */
function blockedProduct(xBlocks: readonly tf.Tensor2D[], layer: Linear): tf.Tensor2D {
  if (xBlocks.length !== layer.weightT.length) {
    throw new Error(`internal: ${xBlocks.length} input blocks for a weight in ${layer.weightT.length} blocks`);
  }
  const y = pairwiseSum(layer.weightT.map((w, k) => matMulT(xBlocks[k]!, w)));
  return (layer.bias === undefined ? y : tf.add(y, layer.bias)) as tf.Tensor2D;
}

/**
 * Applies a linear map to the last axis of `x` `[n, seq, in]` -> `[n, seq, out]`. Pass `xBlocks`
 * (`columnBlocks(x)`) to share the cutting between several maps of the same input.
 */
export function linear(x: tf.Tensor3D, layer: Linear, xBlocks?: readonly tf.Tensor2D[]): tf.Tensor3D {
  return tf.tidy(() => {
    const [n, seq, d] = x.shape;
    const blocks = xBlocks ?? (layer.weightT.length === 1 ? [tf.reshape(x, [n * seq, d]) as tf.Tensor2D] : columnBlocks(x));
    return tf.reshape(blockedProduct(blocks, layer), [n, seq, layer.weightT[0]!.shape[1]]);
  });
}

/** The MLP `act(x W1^T + b1) W2^T + b2` on `[n, seq, d]`, block by block. */
export function mlp(x: tf.Tensor3D, m: Mlp): tf.Tensor3D {
  return tf.tidy(() => {
    const [n, seq, d] = x.shape;
    const xBlocks = columnBlocks(x);
    const partials = m.blocks.map((b) => matMulT(activation(m.act, blockedProduct(xBlocks, b.in)), b.outWeightT));
    return tf.reshape(tf.add(pairwiseSum(partials), m.outBias), [n, seq, d]);
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
    const allowed = causal ? tf.mul(keyAllowed, tf.reshape(tf.linalg.bandPart(tf.ones([seq, seq]), -1, 0), [1, 1, seq, seq])) : keyAllowed;
    return tf.mul(tf.sub(1, allowed), MASKED) as tf.Tensor4D;
  });
}

/**
 * Batched product `a @ b` over the last two axes (`[..., m, d] x [..., d, n]`, one product per
 * sequence and head), with the inner axis cut into blocks of at most BLOCK terms added pairwise
 * (see the header): a b = sum_k a[..., K_k] b[..., K_k, :].
 */
export function batchedProduct(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const sizes = blockSizes(a.shape[a.rank - 1]!);
    if (sizes.length === 1) return matMulT(a, b);
    const aBlocks = tf.split(a, sizes, a.rank - 1);
    const bBlocks = tf.split(b, sizes, b.rank - 2);
    return pairwiseSum(aBlocks.map((block, k) => matMulT(block, bBlocks[k]!)));
  });
}

/**
 * softmax(q k^T * scale + bias) v for `[n, heads, seq, headDim]` queries, keys and values.
 * Both products are batched over (sequence, head); the engine runs each item as one XNNPACK
 * product (engine fix 4). The second sums over keys, so it is blocked once seq > BLOCK.
 */
export function attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, bias: tf.Tensor4D, scale: number): tf.Tensor4D {
  return tf.tidy(() => {
    const scores = tf.add(tf.mul(batchedProduct(q, transposeLast2(k)), scale), bias);
    return batchedProduct(tf.softmax(scores, -1), v) as tf.Tensor4D;
  });
}

/**
 * Embedding lookup: rows of `table` (`[vocab, d]`, row-major) for ids `[n, seq]` -> `[n, seq, d]`.
 * Done as a row copy rather than a gather kernel: the wasm gather moves one element at a time,
 * and the table needs no gradient.
 */
export function embedding(table: Float32Array, d: number, ids: tf.Tensor2D): tf.Tensor3D {
  const [n, seq] = ids.shape;
  const idValues = ids.dataSync();
  const out = new Float32Array(n * seq * d);
  for (let t = 0; t < idValues.length; t++) out.set(table.subarray(idValues[t]! * d, (idValues[t]! + 1) * d), t * d);
  return tf.tensor3d(out, [n, seq, d]);
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
  const weightT = blockRows(ckpt.readTransposed(`${name}.weight`));
  return bias ? { weightT, bias: ckpt.read(`${name}.bias`) as tf.Tensor1D } : { weightT };
}

/**
 * Reads a checked MLP (`inName` `[dFf, d]` + bias, `outName` `[d, dFf]` + bias) into blocks of
 * BLOCK hidden units.
 */
export function readMlp(ckpt: Checkpoint, inName: string, outName: string, d: number, dFf: number, act: HiddenAct): Mlp {
  const w1 = ckpt.float32(`${inName}.weight`);
  const b1 = ckpt.float32(`${inName}.bias`);
  const w2 = ckpt.float32(`${outName}.weight`);
  const blocks: Mlp['blocks'] = [];
  for (let start = 0; start < dFf; start += BLOCK) {
    const size = Math.min(BLOCK, dFf - start);
    // W2[:, start:start+size]^T, `[size, d]`: row i is column start+i of W2.
    const outT = new Float32Array(size * d);
    for (let i = 0; i < size; i++) for (let j = 0; j < d; j++) outT[i * d + j] = w2[j * dFf + start + i]!;
    blocks.push({
      in: linearFromRows(w1.subarray(start * d, (start + size) * d), size, d, b1.subarray(start, start + size)),
      outWeightT: tf.tensor2d(outT, [size, d]),
    });
  }
  return { blocks, outBias: ckpt.read(`${outName}.bias`) as tf.Tensor1D, act };
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
    else if (ArrayBuffer.isView(v)) return;
    else if (Array.isArray(v)) v.forEach(walk);
    else if (typeof v === 'object' && v !== null) Object.values(v).forEach(walk);
  };
  walk(weights);
  return out;
}
