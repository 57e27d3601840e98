/**
 * GPT-NeoX (the Pythia family), matching transformers' GPTNeoXForCausalLM in fp32.
 *
 * Forward pass, for token ids t and attention mask m (`[n, seq]`, right padding):
 *   x_0 = E_in[t]                                                           hook `embed`
 *   layer i (pre-LN):
 *     a_i = Attn(LN1(x)) W_O^T + b_O                                        hook `layers.i.attn_out`
 *     parallel residual:   f_i = MLP(LN2(x));      x' = x + a_i + f_i
 *     sequential residual: f_i = MLP(LN2(x + a_i)); x' = x + a_i + f_i     hook `layers.i.mlp_out`
 *     x' is the layer output                                                hook `layers.i.resid_out`
 *   logits = LN_final(x_L) E_out^T
 * with MLP(y) = GELU(y W_1^T + b_1) W_2^T + b_2 (exact erf GELU).
 *
 * Attention: the fused projection `query_key_value` gives, per head h, a contiguous block
 * [q_h | k_h | v_h] of 3 * headDim features. Rotary embedding acts on the first
 * rotaryDims = floor(headDim * rotary_pct) dims of each q and k head (the rest pass through):
 *   rope(x) = x * cos(p theta) + rotate_half(x) * sin(p theta),  rotate_half([x1, x2]) = [-x2, x1],
 * with theta_j = base^(-2j / rotaryDims), the angle vector being [p theta, p theta] (halves repeated),
 * and positions p = 0..seq-1 (right padding keeps real tokens at their positions).
 * Scores q k^T / sqrt(headDim), plus a causal and key-padding mask, softmax over keys.
 */
import { tf } from '../engine/engine.js';
import { Checkpoint } from './checkpoint.js';
import type { GptNeoxConfig } from './config.js';
import { checkBatch, HookRunner, tidyRun } from './hooks.js';
import {
  activation,
  attend,
  attentionBias,
  embedding,
  layerNorm,
  layerNormSpecs,
  linear,
  linearSpecs,
  makeLinear,
  mergeHeads,
  readLayerNorm,
  readLinear,
  tensorsOf,
  type LayerNorm,
  type Linear,
  type TensorSpec,
} from './layers.js';
import { standardHookNames, type Batch, type HookName, type Model, type RunOptions, type RunResult } from './model.js';

interface NeoxLayer {
  inputLayerNorm: LayerNorm;
  postAttentionLayerNorm: LayerNorm;
  queryKeyValue: Linear;
  attentionDense: Linear;
  mlpIn: Linear;
  mlpOut: Linear;
}

interface NeoxWeights {
  embedIn: tf.Tensor2D;
  layers: NeoxLayer[];
  finalLayerNorm: LayerNorm;
}

/** Checkpoint name prefixes: GPTNeoXForCausalLM saves `gpt_neox.*`, GPTNeoXModel bare names. */
const PREFIXES = ['gpt_neox.', ''];
const UNEMBEDDING = 'embed_out.weight';

/** The tensors of the base model (everything but the unembedding), for a config. */
function tensorSpecs(c: GptNeoxConfig): TensorSpec[] {
  const specs: TensorSpec[] = [{ name: 'embed_in.weight', shape: [c.vocabSize, c.dModel], why: 'vocab_size x hidden_size' }];
  for (let i = 0; i < c.nLayers; i++) {
    const p = `layers.${i}`;
    specs.push(
      ...layerNormSpecs(`${p}.input_layernorm`, c.dModel, 'hidden_size'),
      ...layerNormSpecs(`${p}.post_attention_layernorm`, c.dModel, 'hidden_size'),
      ...linearSpecs(`${p}.attention.query_key_value`, c.dModel, 3 * c.dModel, c.attentionBias, '3 * hidden_size x hidden_size'),
      ...linearSpecs(`${p}.attention.dense`, c.dModel, c.dModel, c.attentionBias, 'hidden_size x hidden_size'),
      ...linearSpecs(`${p}.mlp.dense_h_to_4h`, c.dModel, c.dFf, true, 'intermediate_size x hidden_size'),
      ...linearSpecs(`${p}.mlp.dense_4h_to_h`, c.dFf, c.dModel, true, 'hidden_size x intermediate_size'),
    );
  }
  specs.push(...layerNormSpecs('final_layer_norm', c.dModel, 'hidden_size'));
  return specs;
}

/**
 * Rotary tables `[maxPositions, rotaryDims]`: cos and sin of the angle p * theta_j, the
 * `rotaryDims / 2` frequencies repeated twice. Computed in float32 steps as transformers does
 * (inv_freq = 1 / base^(2j / rotaryDims) in float32, angle = float32(inv_freq * p)).
 */
export function rotaryTables(c: GptNeoxConfig): { cos: Float32Array; sin: Float32Array } {
  const r = c.rotaryDims;
  const half = r / 2;
  const invFreq = new Float32Array(half);
  for (let j = 0; j < half; j++) invFreq[j] = 1 / Math.fround(c.rotaryBase ** Math.fround((2 * j) / r));
  const cos = new Float32Array(c.maxPositions * r);
  const sin = new Float32Array(c.maxPositions * r);
  for (let p = 0; p < c.maxPositions; p++) {
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(invFreq[j]! * p);
      cos[p * r + j] = cos[p * r + j + half] = Math.cos(angle);
      sin[p * r + j] = sin[p * r + j + half] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/** rope(x) on the first `cos.shape[1]` dims of the last axis of `x` `[n, heads, seq, headDim]`. */
function applyRotary(x: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor4D {
  return tf.tidy(() => {
    const headDim = x.shape[3];
    const r = cos.shape[1];
    const rot = tf.slice(x, [0, 0, 0, 0], [-1, -1, -1, r]);
    const [x1, x2] = tf.split(rot, 2, -1) as [tf.Tensor4D, tf.Tensor4D];
    const rotateHalf = tf.concat([tf.neg(x2), x1], -1);
    const rotated = tf.add(tf.mul(rot, cos), tf.mul(rotateHalf, sin)) as tf.Tensor4D;
    if (r === headDim) return rotated;
    return tf.concat([rotated, tf.slice(x, [0, 0, 0, r], [-1, -1, -1, headDim - r])], -1);
  });
}

export class GptNeoxModel implements Model {
  readonly hookNames: readonly HookName[];
  private unembedding: Linear | undefined;

  private constructor(
    readonly config: GptNeoxConfig,
    private readonly weights: NeoxWeights,
    private readonly rotaryCos: tf.Tensor2D,
    private readonly rotarySin: tf.Tensor2D,
    /** Reads `E_out^T` `[d, vocab]` on first use (checked at load), or explains why there is none. */
    private readonly loadUnembedding: () => Linear,
  ) {
    this.hookNames = standardHookNames(config.nLayers);
  }

  /**
   * Loads a checkpoint folder's weights for `config`. Every tensor's presence, dtype and shape is
   * checked before any is read. The unembedding (`embed_out.weight`, or `embed_in` when
   * tie_word_embeddings) is checked now but read only when logits are first requested.
   */
  static load(dir: string, config: GptNeoxConfig): GptNeoxModel {
    const root = Checkpoint.open(dir);
    const ckpt = root.withPrefix(PREFIXES, 'embed_in.weight');
    for (const s of tensorSpecs(config)) ckpt.check(s.name, s.shape, s.why);
    const hasEmbedOut = root.hasRaw(UNEMBEDDING);
    if (hasEmbedOut) root.check(UNEMBEDDING, [config.vocabSize, config.dModel], 'vocab_size x hidden_size');

    const c = config;
    const weights: NeoxWeights = {
      embedIn: ckpt.read('embed_in.weight') as tf.Tensor2D,
      layers: [],
      finalLayerNorm: readLayerNorm(ckpt, 'final_layer_norm', c.layerNormEps),
    };
    for (let i = 0; i < c.nLayers; i++) {
      const p = `layers.${i}`;
      weights.layers.push({
        inputLayerNorm: readLayerNorm(ckpt, `${p}.input_layernorm`, c.layerNormEps),
        postAttentionLayerNorm: readLayerNorm(ckpt, `${p}.post_attention_layernorm`, c.layerNormEps),
        queryKeyValue: readLinear(ckpt, `${p}.attention.query_key_value`, c.attentionBias),
        attentionDense: readLinear(ckpt, `${p}.attention.dense`, c.attentionBias),
        mlpIn: readLinear(ckpt, `${p}.mlp.dense_h_to_4h`, true),
        mlpOut: readLinear(ckpt, `${p}.mlp.dense_4h_to_h`, true),
      });
    }
    const { cos, sin } = rotaryTables(c);
    const loadUnembedding = (): Linear => {
      if (hasEmbedOut) return makeLinear(root.readTransposed(UNEMBEDDING));
      if (c.tieWordEmbeddings) return makeLinear(tf.transpose(weights.embedIn));
      throw new Error(`${dir}: logits need "${UNEMBEDDING}", which the checkpoint lacks (and tie_word_embeddings is false)`);
    };
    return new GptNeoxModel(
      c,
      weights,
      tf.tensor2d(cos, [c.maxPositions, c.rotaryDims]),
      tf.tensor2d(sin, [c.maxPositions, c.rotaryDims]),
      loadUnembedding,
    );
  }

  run(batch: Batch, options: RunOptions = {}): RunResult {
    const c = this.config;
    checkBatch(batch, c.vocabSize, c.maxPositions);
    const hooks = new HookRunner(this.hookNames, c.nLayers, options);
    // Read lazily outside the tidy below, which would otherwise dispose it.
    if (hooks.wantLogits) this.unembedding ??= this.loadUnembedding();
    return tidyRun(() => {
      const seq = batch.inputIds.shape[1];
      const cos = tf.slice(this.rotaryCos, [0, 0], [seq, -1]);
      const sin = tf.slice(this.rotarySin, [0, 0], [seq, -1]);
      const bias = attentionBias(batch.attentionMask, true);
      let x: tf.Tensor3D | undefined;
      if (hooks.needs('embed')) x = hooks.at('embed', embedding(this.weights.embedIn, batch.inputIds));
      for (let i = 0; i < c.nLayers && x !== undefined; i++) x = this.layer(i, x, bias, cos, sin, hooks);
      const result: { captures: Record<HookName, tf.Tensor3D>; logits?: tf.Tensor3D } = { captures: hooks.captures };
      if (hooks.wantLogits) {
        if (x === undefined) throw new Error('internal: logits requested but the pass stopped early');
        result.logits = linear(layerNorm(x, this.weights.finalLayerNorm), this.unembedding!);
      }
      return result;
    });
  }

  /** Layer i on hidden state x; undefined when the pass stops inside this layer. */
  private layer(i: number, x: tf.Tensor3D, bias: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D, hooks: HookRunner): tf.Tensor3D | undefined {
    const w = this.weights.layers[i]!;
    const attnHook = `layers.${i}.attn_out`;
    const mlpHook = `layers.${i}.mlp_out`;
    const residHook = `layers.${i}.resid_out`;
    if (!hooks.needs(attnHook)) return undefined;
    const attnOut = hooks.at(attnHook, this.attention(layerNorm(x, w.inputLayerNorm), w, bias, cos, sin));
    if (!hooks.needs(mlpHook)) return undefined;
    if (this.config.parallelResidual) {
      const mlpOut = hooks.at(mlpHook, this.mlp(layerNorm(x, w.postAttentionLayerNorm), w));
      if (!hooks.needs(residHook)) return undefined;
      return hooks.at(residHook, tf.add(tf.add(mlpOut, attnOut), x));
    }
    const mid = tf.add(attnOut, x) as tf.Tensor3D;
    const mlpOut = hooks.at(mlpHook, this.mlp(layerNorm(mid, w.postAttentionLayerNorm), w));
    if (!hooks.needs(residHook)) return undefined;
    return hooks.at(residHook, tf.add(mlpOut, mid));
  }

  /** Causal self-attention with rotary positions, through the output projection: `[n, seq, d]`. */
  private attention(h: tf.Tensor3D, w: NeoxLayer, bias: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor3D {
    const { nHeads, headDim } = this.config;
    const [n, seq] = h.shape;
    // Per head, the fused projection holds [q_h | k_h | v_h].
    const qkv = tf.transpose(tf.reshape(linear(h, w.queryKeyValue), [n, seq, nHeads, 3 * headDim]), [0, 2, 1, 3]);
    const [q, k, v] = tf.split(qkv, 3, -1) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
    const context = attend(applyRotary(q, cos, sin), applyRotary(k, cos, sin), v, bias, headDim ** -0.5);
    return linear(mergeHeads(context), w.attentionDense);
  }

  private mlp(h: tf.Tensor3D, w: NeoxLayer): tf.Tensor3D {
    return linear(activation(this.config.hiddenAct, linear(h, w.mlpIn)) as tf.Tensor3D, w.mlpOut);
  }

  dispose(): void {
    tf.dispose(tensorsOf(this.weights));
    tf.dispose([this.rotaryCos, this.rotarySin]);
    tf.dispose(tensorsOf(this.unembedding));
    this.unembedding = undefined;
  }
}
