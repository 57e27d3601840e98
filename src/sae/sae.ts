/**
 * The Sae interface, and `AffineSae`, the one class every supported format loads into.
 *
 * Every SAE here has the shape affine encoder -> activation -> affine decoder:
 *   f(x)    = act( W_enc^T (x - s * b_dec) + b_enc )       W_enc [dIn, dSae], b_enc [dSae]
 *   xHat(f) = W_dec^T f + b_dec                             W_dec [dSae, dIn], b_dec [dIn]
 * with s = 1 when the format subtracts the decoder bias from the input before encoding
 * (dictionary_learning, SAELens `apply_b_dec_to_input`, sparsify) and 0 otherwise, and
 *   act = relu                 : max(0, h)
 *       | topk(k)              : keep the k largest entries of max(0, h) per token, zero the rest
 *       | jumprelu(threshold)  : h * [h > threshold_i] (threshold per feature, >= 0), then max(0, .)
 * The rows v_i of W_dec are the decoder directions: x ~= b_dec + sum_i f_i(x) v_i, which is what
 * SHIFT's zero ablation x' = x - sum_{i in S} f_i(x) v_i uses.
 */
import { tf, matMulT } from '../engine/engine.js';
import type { HookName } from '../models/model.js';

export type SaeFormat = 'dictionary_learning' | 'saelens' | 'sparsify' | 'sae-eraser';

export type SaeActivation = { kind: 'relu' } | { kind: 'topk'; k: number } | { kind: 'jumprelu'; threshold: tf.Tensor1D };

export interface SaeMetadata {
  /** Our hook point (`embed`, `layers.{i}.resid_out`, ...), when known. */
  hook?: HookName;
  /** The hook name as the source format spells it (e.g. `blocks.3.hook_resid_post`), when it differs. */
  sourceHook?: string;
  /** The model the SAE was trained on, when known (e.g. `EleutherAI/pythia-70m-deduped`). */
  model?: string;
  format: SaeFormat;
  /** The file or folder the SAE was loaded from. */
  source: string;
}

/** Nonzero SAE codes of `tokens` rows in CSR layout: token t owns entries offsets[t]..offsets[t+1]-1. */
export interface SparseCodes {
  tokens: number;
  dSae: number;
  /** `[tokens + 1]` */
  offsets: Int32Array;
  /** `[nnz]` feature indices, ascending within each token. */
  indices: Int32Array;
  /** `[nnz]` feature activations. */
  values: Float32Array;
}

export interface Sae {
  readonly dIn: number;
  readonly dSae: number;
  readonly metadata: SaeMetadata;
  /** `x [..., dIn] -> f [..., dSae]`. Differentiable for ReLU and JumpReLU SAEs (not top-k). */
  encode(x: tf.Tensor): tf.Tensor;
  /** `f [..., dSae] -> xHat [..., dIn]`. Differentiable. */
  decode(f: tf.Tensor): tf.Tensor;
  /** The SAE error `x - decode(encode(x))`, `[..., dIn]`. */
  error(x: tf.Tensor): tf.Tensor;
  /**
   * The nonzero codes of `x [tokens, dIn]`, computed `chunkTokens` rows at a time so that no more
   * than `chunkTokens x dSae` dense codes exist at once.
   */
  encodeSparse(x: tf.Tensor2D, options?: { chunkTokens?: number }): SparseCodes;
  /** The decoder directions v_i as `[dSae, dIn]` (a new tensor the caller disposes). */
  decoderDirections(): tf.Tensor2D;
  dispose(): void;
}

export interface AffineSaeWeights {
  /** `[dIn, dSae]` */
  wEnc: tf.Tensor2D;
  /** `[dSae]` */
  bEnc: tf.Tensor1D;
  /** `[dSae, dIn]` */
  wDec: tf.Tensor2D;
  /** `[dIn]` */
  bDec: tf.Tensor1D;
  /** Subtract b_dec from the input before encoding. */
  subtractDecoderBiasFromInput: boolean;
  activation: SaeActivation;
}

/** Default rows per chunk of `encodeSparse`: keeps the dense chunk near 32 MB. */
export function defaultChunkTokens(dSae: number): number {
  return Math.max(1, Math.floor((8 * 1024 * 1024) / dSae));
}

/** Throws an error naming the source and tensor when a weight holds NaN or infinity. */
export function checkFinite(source: string, name: string, values: ArrayLike<number>): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i]!)) {
      throw new Error(`${source}: tensor "${name}" holds a non-finite value (${values[i]}) at flat index ${i}; the SAE weights are corrupt`);
    }
  }
}

/** The affine-encoder / activation / affine-decoder SAE. Owns its weight tensors. */
export class AffineSae implements Sae {
  readonly dIn: number;
  readonly dSae: number;
  readonly wEnc: tf.Tensor2D;
  readonly bEnc: tf.Tensor1D;
  readonly wDec: tf.Tensor2D;
  readonly bDec: tf.Tensor1D;
  readonly subtractDecoderBiasFromInput: boolean;
  readonly activation: SaeActivation;

  constructor(
    weights: AffineSaeWeights,
    readonly metadata: SaeMetadata,
  ) {
    const { wEnc, bEnc, wDec, bDec, activation } = weights;
    const src = metadata.source;
    if (wEnc.rank !== 2 || wDec.rank !== 2) throw new Error(`${src}: encoder and decoder weights must be matrices`);
    const [dIn, dSae] = wEnc.shape;
    if (wDec.shape[0] !== dSae || wDec.shape[1] !== dIn) {
      throw new Error(`${src}: decoder weight has shape [${wDec.shape}] but the encoder weight [${wEnc.shape}] needs [${dSae}, ${dIn}]`);
    }
    if (bEnc.shape[0] !== dSae || bEnc.rank !== 1) throw new Error(`${src}: encoder bias has shape [${bEnc.shape}], expected [${dSae}]`);
    if (bDec.shape[0] !== dIn || bDec.rank !== 1) throw new Error(`${src}: decoder bias has shape [${bDec.shape}], expected [${dIn}]`);
    if (activation.kind === 'topk' && (!Number.isInteger(activation.k) || activation.k < 1 || activation.k > dSae)) {
      throw new Error(`${src}: top-k activation needs an integer k in [1, ${dSae}], got ${activation.k}`);
    }
    if (activation.kind === 'jumprelu' && (activation.threshold.rank !== 1 || activation.threshold.shape[0] !== dSae)) {
      throw new Error(`${src}: JumpReLU threshold has shape [${activation.threshold.shape}], expected [${dSae}]`);
    }
    this.dIn = dIn;
    this.dSae = dSae;
    this.wEnc = wEnc;
    this.bEnc = bEnc;
    this.wDec = wDec;
    this.bDec = bDec;
    this.subtractDecoderBiasFromInput = weights.subtractDecoderBiasFromInput;
    this.activation = activation;
  }

  private checkLastDim(t: tf.Tensor, want: number, what: string): void {
    if (t.shape[t.rank - 1] !== want) {
      throw new Error(`${this.metadata.source}: ${what} has last dimension ${t.shape[t.rank - 1]} (shape [${t.shape}]) but this SAE needs ${want}`);
    }
  }

  /** Pre-activations `h = W_enc^T (x - s b_dec) + b_enc` for `x [n, dIn]`. */
  preActivations(x2d: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const centred = this.subtractDecoderBiasFromInput ? tf.sub(x2d, this.bDec) : x2d;
      return tf.add(matMulT(centred, this.wEnc), this.bEnc) as tf.Tensor2D;
    });
  }

  /**
   * The activation applied to pre-activations `[n, dSae]`. ReLU and JumpReLU are differentiable; for
   * top-k tfjs has no gradient of the selection (TopK), so differentiate through `decode` (as
   * attribution patching does) rather than through a top-k `encode`.
   */
  activate(h: tf.Tensor2D): tf.Tensor2D {
    const act = this.activation;
    return tf.tidy(() => {
      switch (act.kind) {
        case 'relu':
          return tf.relu(h);
        case 'jumprelu':
          // step(h - t) = [h > t], with a (zero) gradient registered, unlike Greater.
          return tf.mul(tf.relu(h), tf.step(tf.sub(h, act.threshold))) as tf.Tensor2D;
        case 'topk':
          return tf.mul(h, topkMask(h, act.k)) as tf.Tensor2D;
      }
    });
  }

  encode(x: tf.Tensor): tf.Tensor {
    this.checkLastDim(x, this.dIn, 'SAE input');
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      const f = this.activate(this.preActivations(tf.reshape(x, [-1, this.dIn]) as tf.Tensor2D));
      return tf.reshape(f, [...lead, this.dSae]);
    });
  }

  decode(f: tf.Tensor): tf.Tensor {
    this.checkLastDim(f, this.dSae, 'SAE codes');
    return tf.tidy(() => {
      const lead = f.shape.slice(0, -1);
      const xHat = tf.add(matMulT(tf.reshape(f, [-1, this.dSae]), this.wDec), this.bDec);
      return tf.reshape(xHat, [...lead, this.dIn]);
    });
  }

  error(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => tf.sub(x, this.decode(this.encode(x))));
  }

  encodeSparse(x: tf.Tensor2D, options: { chunkTokens?: number } = {}): SparseCodes {
    if (x.rank !== 2) throw new Error(`${this.metadata.source}: encodeSparse expects [tokens, dIn], got shape [${x.shape}]`);
    this.checkLastDim(x, this.dIn, 'SAE input');
    const tokens = x.shape[0];
    const chunk = options.chunkTokens ?? defaultChunkTokens(this.dSae);
    const offsets = new Int32Array(tokens + 1);
    let cap = Math.max(16, tokens * 8);
    let indices = new Int32Array(cap);
    let values = new Float32Array(cap);
    let nnz = 0;
    for (let start = 0; start < tokens; start += chunk) {
      const rows = Math.min(chunk, tokens - start);
      const codes = tf.tidy(() => this.encode(tf.slice(x, [start, 0], [rows, this.dIn])));
      const dense = codes.dataSync() as Float32Array;
      codes.dispose();
      for (let r = 0; r < rows; r++) {
        const base = r * this.dSae;
        for (let j = 0; j < this.dSae; j++) {
          const v = dense[base + j]!;
          if (v !== 0) {
            if (nnz === cap) {
              cap *= 2;
              const ni = new Int32Array(cap);
              ni.set(indices);
              indices = ni;
              const nv = new Float32Array(cap);
              nv.set(values);
              values = nv;
            }
            indices[nnz] = j;
            values[nnz] = v;
            nnz++;
          }
        }
        offsets[start + r + 1] = nnz;
      }
    }
    return { tokens, dSae: this.dSae, offsets, indices: indices.slice(0, nnz), values: values.slice(0, nnz) };
  }

  decoderDirections(): tf.Tensor2D {
    return tf.clone(this.wDec);
  }

  dispose(): void {
    tf.dispose([this.wEnc, this.bEnc, this.wDec, this.bDec]);
    if (this.activation.kind === 'jumprelu') this.activation.threshold.dispose();
  }
}

/**
 * 1 where h is among the k largest of its row and positive, else 0: TopK(ReLU(h)) = h * mask.
 * An entry tied with the k-th largest value is kept too (ties have probability 0 for float data).
 */
export function topkMask(h: tf.Tensor2D, k: number): tf.Tensor2D {
  return tf.tidy(() => {
    const kth = tf.slice(tf.topk(h, k).values, [0, k - 1], [-1, 1]);
    return tf.mul(tf.cast(tf.greaterEqual(h, kth), 'float32'), tf.cast(tf.greater(h, 0), 'float32')) as tf.Tensor2D;
  });
}

/** Dense codes `[tokens, dSae]` from sparse ones (for tests and small inputs). */
export function sparseToDense(codes: SparseCodes): Float32Array {
  const out = new Float32Array(codes.tokens * codes.dSae);
  for (let t = 0; t < codes.tokens; t++) {
    for (let p = codes.offsets[t]!; p < codes.offsets[t + 1]!; p++) out[t * codes.dSae + codes.indices[p]!] = codes.values[p]!;
  }
  return out;
}
