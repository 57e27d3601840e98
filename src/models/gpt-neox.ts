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
 * [q_h | k_h | v_h] of 3 * headDim features; the loader splits it into separate q, k and v
 * projections. Rotary embedding acts on the first rotaryDims = floor(headDim * rotary_pct) dims of
 * each q and k head (the rest pass through):
 *   rope(x) = x * cos(p theta) + rotate_half(x) * sin(p theta),  rotate_half([x1, x2]) = [-x2, x1],
 * with theta_j = base^(-2j / rotaryDims), the angle vector being [p theta, p theta] (halves repeated),
 * and positions p = 0..seq-1 (right padding keeps real tokens at their positions). Written over
 * the whole head as rope(x) = x * C + (x R) * S, where C is cos on the rotary dims and 1 elsewhere,
 * S is sin on the rotary dims and 0 elsewhere, and R is the signed permutation matrix of
 * rotate_half (exact in float32: each output is one input times +-1).
 * Scores q k^T / sqrt(headDim), plus a causal and key-padding mask, softmax over keys.
 *
 * `forwardGraph` writes the same pass as ONNX nodes (blocks in graphs.ts), method for method
 * beside `run`: x_0 = Gather(E_in, t); q, k, v from one MatMul against [W_q^T | W_k^T | W_v^T];
 * rope on heads `[n, seq, heads, headDim]` as [x1 cos - x2 sin | x2 cos + x1 sin | rest] with the
 * tables' first rotaryDims / 2 columns sliced to rows 0..seq-1; the causal and key-padding bias
 * from the mask (Trilu of ones `[seq, seq]` times m_j); n and seq symbolic; no nodes after the
 * last hook asked for.
 */
import { matMulT, tf } from '../engine/engine.js';
import { Checkpoint, layerIndex } from './checkpoint.js';
import type { GptNeoxConfig } from './config.js';
import { checkBatch, HookRunner, tidyRun } from './hook-runner.js';
import {
  attend,
  attentionBias,
  columnBlocks,
  embedding,
  layerNorm,
  layerNormSpecs,
  linear,
  linearFromRows,
  linearSpecs,
  mergeHeads,
  mlp,
  readLayerNorm,
  readMlp,
  readLinear,
  selectRows,
  splitHeads,
  tensorsOf,
  type LayerNorm,
  type Linear,
  type Mlp,
  type TensorSpec,
} from './layers.js';
import {
  attendGraph,
  attentionBiasGraph,
  embeddingGraph,
  GraphHooks,
  layerNormGraph,
  linearGraph,
  linearsGraph,
  mergeHeadsGraph,
  mlpGraph,
  positionRows,
  sequenceLength,
  splitHeadsGraph,
  valuesOf,
} from './graphs.js';
import {
  standardHookNames,
  type Batch,
  type GraphEdit,
  type GraphInputs,
  type HookName,
  type Model,
  type ForwardOptions,
  type ForwardResult,
} from './model.js';
import { int, type OnnxGraph } from '../onnx/graph.js';
import { pushAll } from '../util/arrays.js';

interface NeoxLayer {
  inputLayerNorm: LayerNorm;
  postAttentionLayerNorm: LayerNorm;
  query: Linear;
  key: Linear;
  value: Linear;
  attentionDense: Linear;
  mlp: Mlp;
}

interface NeoxWeights {
  /** E_in, `[vocab, d]` row-major (looked up on the JS side; see `embedding`). */
  embedIn: Float32Array;
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
  pushAll(specs, layerNormSpecs('final_layer_norm', c.dModel, 'hidden_size'));
  return specs;
}

/**
 * Rotary tables over whole heads, `[maxPositions, headDim]`: C = cos(p theta_j) on the rotary dims
 * (the rotaryDims / 2 frequencies repeated twice) and 1 on the rest; S = sin(p theta_j) on the
 * rotary dims and 0 on the rest. Computed in float32 steps as transformers does
 * (inv_freq = 1 / base^(2j / rotaryDims) in float32, angle = float32(inv_freq * p)).
 */
export function rotaryTables(c: GptNeoxConfig): { cos: Float32Array; sin: Float32Array } {
  const r = c.rotaryDims;
  const hd = c.headDim;
  const half = r / 2;
  const invFreq = new Float32Array(half);
  for (let j = 0; j < half; j++) invFreq[j] = 1 / Math.fround(c.rotaryBase ** Math.fround((2 * j) / r));
  const cos = new Float32Array(c.maxPositions * hd).fill(1);
  const sin = new Float32Array(c.maxPositions * hd);
  for (let p = 0; p < c.maxPositions; p++) {
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(invFreq[j]! * p);
      cos[p * hd + j] = cos[p * hd + j + half] = Math.cos(angle);
      sin[p * hd + j] = sin[p * hd + j + half] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/**
 * R `[headDim, headDim]` with (x R) = rotate_half on the first rotaryDims dims and 0 on the rest:
 * output j < r/2 is -x[j + r/2], output r/2 <= j < r is x[j - r/2].
 */
export function rotateHalfMatrix(headDim: number, rotaryDims: number): Float32Array {
  const half = rotaryDims / 2;
  const m = new Float32Array(headDim * headDim);
  for (let j = 0; j < half; j++) m[(j + half) * headDim + j] = -1;
  for (let j = half; j < rotaryDims; j++) m[(j - half) * headDim + j] = 1;
  return m;
}

/** rope(x) = x C + (x R) S for `x` `[n, seq, nHeads * headDim]`, tables `[seq, headDim]`. */
function applyRotary(x: tf.Tensor3D, nHeads: number, cos: tf.Tensor2D, sin: tf.Tensor2D, rotateHalf: tf.Tensor2D): tf.Tensor3D {
  return tf.tidy(() => {
    const [n, seq, d] = x.shape;
    const headDim = d / nHeads;
    const heads = tf.reshape(x, [n, seq, nHeads, headDim]);
    const rotated = tf.reshape(matMulT(tf.reshape(x, [n * seq * nHeads, headDim]), rotateHalf), [n, seq, nHeads, headDim]);
    const c = tf.reshape(cos, [1, seq, 1, headDim]);
    const s = tf.reshape(sin, [1, seq, 1, headDim]);
    return tf.reshape(tf.add(tf.mul(heads, c), tf.mul(rotated, s)), [n, seq, d]);
  });
}

/**
 * rope(x) on `x` `[n, seq, heads, headDim]` as ONNX nodes, from the tables' first rotaryDims / 2
 * columns `[seq, 1, rotaryDims / 2]` (cos(p theta_j), sin(p theta_j)): with x = [x1 | x2 | rest]
 * (rotaryDims / 2, rotaryDims / 2 and headDim - rotaryDims dims),
 *   rope(x) = [x1 cos - x2 sin | x2 cos + x1 sin | rest],
 * the same products and sums, in the same order, as x C + (x R) S in `applyRotary`.
 */
function rotaryGraph(g: OnnxGraph, x: string, cos: string, sin: string, headDim: number, rotaryDims: number): string {
  const half = rotaryDims / 2;
  const sizes = rotaryDims === headDim ? [half, half] : [half, half, headDim - rotaryDims];
  const [x1, x2, ...rest] = g.nodeN('Split', [x, g.ints(sizes)], sizes.length, { axis: int(-1) }) as [string, string, ...string[]];
  const mul = (a: string, b: string): string => g.op('Mul', [a, b]);
  const first = g.op('Sub', [mul(x1, cos), mul(x2, sin)]);
  const second = g.op('Add', [mul(x2, cos), mul(x1, sin)]);
  return g.op('Concat', [first, second, ...rest], { axis: int(-1) });
}

/** Columns 0..width-1 of a row-major `[rows, cols]` table. */
function leadingColumns(table: Float32Array, cols: number, width: number): Float32Array {
  const rows = table.length / cols;
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) out.set(table.subarray(r * cols, r * cols + width), r * width);
  return out;
}

/**
 * Splits the fused `query_key_value` projection (`[3d, d]`, per head the rows [q_h | k_h | v_h])
 * into separate q, k and v projections.
 */
function splitQkv(ckpt: Checkpoint, name: string, c: GptNeoxConfig): { query: Linear; key: Linear; value: Linear } {
  const w = ckpt.float32(`${name}.weight`);
  const b = c.attentionBias ? ckpt.float32(`${name}.bias`) : undefined;
  const part = (which: number): Linear => {
    const rows: number[] = [];
    for (let h = 0; h < c.nHeads; h++) for (let j = 0; j < c.headDim; j++) rows.push(h * 3 * c.headDim + which * c.headDim + j);
    return linearFromRows(selectRows(w, c.dModel, rows), c.dModel, c.dModel, b === undefined ? undefined : selectRows(b, 1, rows));
  };
  return { query: part(0), key: part(1), value: part(2) };
}

export class GptNeoxModel implements Model {
  readonly hookNames: readonly HookName[];
  private unembedding: Linear | undefined;

  private constructor(
    readonly config: GptNeoxConfig,
    private readonly weights: NeoxWeights,
    private readonly rotaryCos: tf.Tensor2D,
    private readonly rotarySin: tf.Tensor2D,
    private readonly rotateHalf: tf.Tensor2D,
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
    ckpt.checkLayerCount(config.nLayers, (name) => layerIndex(/^layers\.(\d+)\./, name), 'num_hidden_layers');
    const hasEmbedOut = root.hasRaw(UNEMBEDDING);
    if (hasEmbedOut) root.check(UNEMBEDDING, [config.vocabSize, config.dModel], 'vocab_size x hidden_size');

    const c = config;
    const weights: NeoxWeights = {
      embedIn: ckpt.float32('embed_in.weight'),
      layers: [],
      finalLayerNorm: readLayerNorm(ckpt, 'final_layer_norm', c.layerNormEps),
    };
    for (let i = 0; i < c.nLayers; i++) {
      const p = `layers.${i}`;
      weights.layers.push({
        inputLayerNorm: readLayerNorm(ckpt, `${p}.input_layernorm`, c.layerNormEps),
        postAttentionLayerNorm: readLayerNorm(ckpt, `${p}.post_attention_layernorm`, c.layerNormEps),
        ...splitQkv(ckpt, `${p}.attention.query_key_value`, c),
        attentionDense: readLinear(ckpt, `${p}.attention.dense`, c.attentionBias),
        mlp: readMlp(ckpt, `${p}.mlp.dense_h_to_4h`, `${p}.mlp.dense_4h_to_h`, c.dModel, c.dFf, c.hiddenAct),
      });
    }
    const { cos, sin } = rotaryTables(c);
    const loadUnembedding = (): Linear => {
      // Left whole: blocked partial products would each be [tokens, vocab].
      if (hasEmbedOut) return { weightT: [root.readTransposed(UNEMBEDDING)] };
      if (c.tieWordEmbeddings) return linearFromRows(weights.embedIn, c.vocabSize, c.dModel, undefined, false);
      throw new Error(`${dir}: logits need "${UNEMBEDDING}", which the checkpoint lacks (and tie_word_embeddings is false)`);
    };
    return new GptNeoxModel(
      c,
      weights,
      tf.tensor2d(cos, [c.maxPositions, c.headDim]),
      tf.tensor2d(sin, [c.maxPositions, c.headDim]),
      tf.tensor2d(rotateHalfMatrix(c.headDim, c.rotaryDims), [c.headDim, c.headDim]),
      loadUnembedding,
    );
  }

  run(batch: Batch, options: ForwardOptions = {}): ForwardResult {
    const c = this.config;
    checkBatch(batch, c.vocabSize, c.maxPositions);
    const runner = new HookRunner(this.hookNames, c.nLayers, options);
    // Read lazily outside the tidy below, which would otherwise dispose it.
    if (runner.wantLogits) this.unembedding ??= this.loadUnembedding();
    return tidyRun(() => {
      const seq = batch.inputIds.shape[1];
      const cos = tf.slice(this.rotaryCos, [0, 0], [seq, -1]);
      const sin = tf.slice(this.rotarySin, [0, 0], [seq, -1]);
      const bias = attentionBias(batch.attentionMask, true);
      let x: tf.Tensor3D | undefined;
      if (runner.needs('embed')) x = runner.at('embed', embedding(this.weights.embedIn, c.dModel, batch.inputIds));
      for (let i = 0; i < c.nLayers && x !== undefined; i++) x = this.layer(i, x, bias, cos, sin, runner);
      const result: { captures: Record<HookName, tf.Tensor3D>; logits?: tf.Tensor3D } = { captures: runner.captures };
      if (runner.wantLogits) {
        if (x === undefined) throw new Error('internal: logits requested but the pass stopped early');
        result.logits = linear(layerNorm(x, this.weights.finalLayerNorm), this.unembedding!);
      }
      return result;
    });
  }

  directionLogits(directions: tf.Tensor2D): tf.Tensor2D {
    this.unembedding ??= this.loadUnembedding();
    const unembedding = this.unembedding;
    return tf.tidy(() => {
      const [n, d] = directions.shape;
      return tf.reshape(linear(tf.reshape(directions, [1, n, d]) as tf.Tensor3D, unembedding), [n, -1]) as tf.Tensor2D;
    });
  }

  /** Layer i on hidden state x; undefined when the pass stops inside this layer. */
  private layer(i: number, x: tf.Tensor3D, bias: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D, runner: HookRunner): tf.Tensor3D | undefined {
    const w = this.weights.layers[i]!;
    const attnHook = `layers.${i}.attn_out`;
    const mlpHook = `layers.${i}.mlp_out`;
    const residHook = `layers.${i}.resid_out`;
    if (!runner.needs(attnHook)) return undefined;
    const attnOut = runner.at(attnHook, this.attention(layerNorm(x, w.inputLayerNorm), w, bias, cos, sin));
    if (!runner.needs(mlpHook)) return undefined;
    if (this.config.parallelResidual) {
      const mlpOut = runner.at(mlpHook, mlp(layerNorm(x, w.postAttentionLayerNorm), w.mlp));
      if (!runner.needs(residHook)) return undefined;
      return runner.at(residHook, tf.add(tf.add(mlpOut, attnOut), x));
    }
    const mid = tf.add(attnOut, x) as tf.Tensor3D;
    const mlpOut = runner.at(mlpHook, mlp(layerNorm(mid, w.postAttentionLayerNorm), w.mlp));
    if (!runner.needs(residHook)) return undefined;
    return runner.at(residHook, tf.add(mlpOut, mid));
  }

  /** Causal self-attention with rotary positions, through the output projection: `[n, seq, d]`. */
  private attention(h: tf.Tensor3D, w: NeoxLayer, bias: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor3D {
    const { nHeads, headDim } = this.config;
    const hBlocks = columnBlocks(h);
    const q = splitHeads(applyRotary(linear(h, w.query, hBlocks), nHeads, cos, sin, this.rotateHalf), nHeads);
    const k = splitHeads(applyRotary(linear(h, w.key, hBlocks), nHeads, cos, sin, this.rotateHalf), nHeads);
    const v = splitHeads(linear(h, w.value, hBlocks), nHeads);
    return linear(mergeHeads(attend(q, k, v, bias, headDim ** -0.5)), w.attentionDense);
  }

  /** `run` as ONNX nodes (see `Model.forwardGraph` and the header). */
  forwardGraph(g: OnnxGraph, inputs: GraphInputs, hooks: readonly HookName[], edits: Readonly<Record<HookName, GraphEdit>> = {}): Record<HookName, string> {
    const c = this.config;
    const runner = new GraphHooks(g, this.hookNames, c.nLayers, c.dModel, hooks, edits);
    let x: string | undefined;
    if (runner.needs('embed')) x = runner.at('embed', embeddingGraph(g, this.weights.embedIn, c.dModel, inputs.inputIds, 'embed_in.weight'));
    if (x !== undefined && runner.needs('layers.0.attn_out')) {
      const seq = sequenceLength(g, inputs.inputIds);
      const half = c.rotaryDims / 2;
      // [seq, 1, half]: broadcast over the head axis of [n, seq, heads, half].
      const table = (t: tf.Tensor2D, name: string): string =>
        g.op('Unsqueeze', [positionRows(g, leadingColumns(valuesOf(t), c.headDim, half), half, seq, name), g.ints([1])]);
      const cos = table(this.rotaryCos, 'rotary.cos');
      const sin = table(this.rotarySin, 'rotary.sin');
      const bias = attentionBiasGraph(g, inputs.attentionMask, true);
      for (let i = 0; i < c.nLayers && x !== undefined; i++) x = this.layerGraph(g, i, x, bias, cos, sin, runner);
    }
    return runner.values;
  }

  /** `layer` as ONNX nodes: layer i on hidden state x; undefined when the graph stops inside this layer. */
  private layerGraph(g: OnnxGraph, i: number, x: string, bias: string, cos: string, sin: string, runner: GraphHooks): string | undefined {
    const w = this.weights.layers[i]!;
    const p = `layers.${i}`;
    const [attnHook, mlpHook, residHook] = [`${p}.attn_out`, `${p}.mlp_out`, `${p}.resid_out`];
    const add = (a: string, b: string): string => g.op('Add', [a, b]);
    if (!runner.needs(attnHook)) return undefined;
    const attnOut = runner.at(attnHook, this.attentionGraph(g, p, layerNormGraph(g, x, w.inputLayerNorm, `${p}.input_layernorm`), w, bias, cos, sin));
    if (!runner.needs(mlpHook)) return undefined;
    if (this.config.parallelResidual) {
      const mlpOut = runner.at(mlpHook, mlpGraph(g, layerNormGraph(g, x, w.postAttentionLayerNorm, `${p}.post_attention_layernorm`), w.mlp, `${p}.mlp`));
      if (!runner.needs(residHook)) return undefined;
      return runner.at(residHook, add(add(mlpOut, attnOut), x));
    }
    const mid = add(attnOut, x);
    const mlpOut = runner.at(mlpHook, mlpGraph(g, layerNormGraph(g, mid, w.postAttentionLayerNorm, `${p}.post_attention_layernorm`), w.mlp, `${p}.mlp`));
    if (!runner.needs(residHook)) return undefined;
    return runner.at(residHook, add(mlpOut, mid));
  }

  /** `attention` as ONNX nodes: q, k and v from one MatMul, rotary on q and k. */
  private attentionGraph(g: OnnxGraph, p: string, h: string, w: NeoxLayer, bias: string, cos: string, sin: string): string {
    const { nHeads, headDim, rotaryDims } = this.config;
    const [q, k, v] = linearsGraph(g, h, [w.query, w.key, w.value], `${p}.attention.qkv`).map((t) => splitHeadsGraph(g, t, nHeads, headDim)) as [
      string,
      string,
      string,
    ];
    const rope = (t: string): string => rotaryGraph(g, t, cos, sin, headDim, rotaryDims);
    const context = attendGraph(g, rope(q), rope(k), v, bias, headDim ** -0.5);
    return linearGraph(g, mergeHeadsGraph(g, context), w.attentionDense, `${p}.attention.dense`);
  }

  dispose(): void {
    tf.dispose(tensorsOf(this.weights));
    tf.dispose([this.rotaryCos, this.rotarySin, this.rotateHalf]);
    tf.dispose(tensorsOf(this.unembedding));
    this.unembedding = undefined;
  }
}
