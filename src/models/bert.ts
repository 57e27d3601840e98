/**
 * BERT encoder (e.g. all-MiniLM-L6-v2), matching transformers' BertModel in fp32 (eval mode).
 *
 * Forward pass, for token ids t and attention mask m (`[n, seq]`, right padding), token types all 0
 * and positions p = 0..seq-1:
 *   x_0 = LN_emb(E_word[t] + E_type[0] + E_pos[p])                          hook `embed`
 *   layer i (post-LN):
 *     a_i = Attn(x) W_O^T + b_O                                             hook `layers.i.attn_out`
 *     y   = LN_attn(x + a_i)
 *     f_i = GELU(y W_1^T + b_1) W_2^T + b_2                                 hook `layers.i.mlp_out`
 *     x'  = LN_out(y + f_i)                                                 hook `layers.i.resid_out`
 * Attention is bidirectional: scores q k^T / sqrt(headDim) with a large negative bias on padded keys
 * (padded query rows still see every real key, so they stay finite). GELU is the exact erf form.
 * The pooler and any task head are not part of this model; `logits: true` returns the final hidden
 * state x_L.
 *
 * `forwardGraph` writes the same pass as ONNX nodes (blocks in graphs.ts), method for method
 * beside `run`: E_word[t] by Gather, E_type[0] a constant row, E_pos sliced to rows 0..seq-1; q, k,
 * v from one MatMul against [W_q^T | W_k^T | W_v^T]; the key-padding bias from the mask; n and
 * seq symbolic; no nodes after the last hook asked for.
 */
import { tf } from '../engine/engine.js';
import { Checkpoint, layerIndex } from './checkpoint.js';
import type { BertConfig } from './config.js';
import { checkBatch, HookRunner, tidyRun } from './hook-runner.js';
import {
  attend,
  attentionBias,
  columnBlocks,
  embedding,
  layerNorm,
  layerNormSpecs,
  linear,
  linearSpecs,
  mergeHeads,
  mlp,
  readLayerNorm,
  readLinear,
  readMlp,
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
import type { OnnxGraph } from '../onnx/graph.js';
import { pushAll } from '../util/arrays.js';

interface BertLayer {
  query: Linear;
  key: Linear;
  value: Linear;
  attentionDense: Linear;
  attentionLayerNorm: LayerNorm;
  /** intermediate.dense, GELU, output.dense. */
  mlp: Mlp;
  outputLayerNorm: LayerNorm;
}

interface BertWeights {
  /** E_word, `[vocab, d]` row-major (looked up on the JS side; see `embedding`). */
  wordEmbeddings: Float32Array;
  positionEmbeddings: tf.Tensor2D;
  /** E_type[0], `[1, d]`: token types are always 0. */
  typeZeroEmbedding: tf.Tensor2D;
  embeddingLayerNorm: LayerNorm;
  layers: BertLayer[];
}

/** BertForMaskedLM and friends save `bert.*`; BertModel (all-MiniLM-L6-v2) saves bare names. */
const PREFIXES = ['bert.', ''];

function tensorSpecs(c: BertConfig): TensorSpec[] {
  const specs: TensorSpec[] = [
    { name: 'embeddings.word_embeddings.weight', shape: [c.vocabSize, c.dModel], why: 'vocab_size x hidden_size' },
    { name: 'embeddings.position_embeddings.weight', shape: [c.maxPositions, c.dModel], why: 'max_position_embeddings x hidden_size' },
    { name: 'embeddings.token_type_embeddings.weight', shape: [c.typeVocabSize, c.dModel], why: 'type_vocab_size x hidden_size' },
    ...layerNormSpecs('embeddings.LayerNorm', c.dModel, 'hidden_size'),
  ];
  for (let i = 0; i < c.nLayers; i++) {
    const p = `encoder.layer.${i}`;
    for (const m of ['query', 'key', 'value']) {
      pushAll(specs, linearSpecs(`${p}.attention.self.${m}`, c.dModel, c.dModel, true, 'hidden_size x hidden_size'));
    }
    specs.push(
      ...linearSpecs(`${p}.attention.output.dense`, c.dModel, c.dModel, true, 'hidden_size x hidden_size'),
      ...layerNormSpecs(`${p}.attention.output.LayerNorm`, c.dModel, 'hidden_size'),
      ...linearSpecs(`${p}.intermediate.dense`, c.dModel, c.dFf, true, 'intermediate_size x hidden_size'),
      ...linearSpecs(`${p}.output.dense`, c.dFf, c.dModel, true, 'hidden_size x intermediate_size'),
      ...layerNormSpecs(`${p}.output.LayerNorm`, c.dModel, 'hidden_size'),
    );
  }
  return specs;
}

export class BertModel implements Model {
  readonly hookNames: readonly HookName[];

  private constructor(
    readonly config: BertConfig,
    private readonly weights: BertWeights,
  ) {
    this.hookNames = standardHookNames(config.nLayers);
  }

  /** Loads a checkpoint folder's weights for `config`, checking every tensor before reading any. */
  static load(dir: string, config: BertConfig): BertModel {
    const c = config;
    const ckpt = Checkpoint.open(dir).withPrefix(PREFIXES, 'embeddings.word_embeddings.weight');
    for (const s of tensorSpecs(c)) ckpt.check(s.name, s.shape, s.why);
    ckpt.checkLayerCount(c.nLayers, (name) => layerIndex(/^encoder\.layer\.(\d+)\./, name), 'num_hidden_layers');
    const typeZeroEmbedding = tf.tidy(() => tf.slice(ckpt.read('embeddings.token_type_embeddings.weight'), [0, 0], [1, -1]) as tf.Tensor2D);
    const weights: BertWeights = {
      wordEmbeddings: ckpt.float32('embeddings.word_embeddings.weight'),
      positionEmbeddings: ckpt.read('embeddings.position_embeddings.weight') as tf.Tensor2D,
      typeZeroEmbedding,
      embeddingLayerNorm: readLayerNorm(ckpt, 'embeddings.LayerNorm', c.layerNormEps),
      layers: [],
    };
    for (let i = 0; i < c.nLayers; i++) {
      const p = `encoder.layer.${i}`;
      weights.layers.push({
        query: readLinear(ckpt, `${p}.attention.self.query`, true),
        key: readLinear(ckpt, `${p}.attention.self.key`, true),
        value: readLinear(ckpt, `${p}.attention.self.value`, true),
        attentionDense: readLinear(ckpt, `${p}.attention.output.dense`, true),
        attentionLayerNorm: readLayerNorm(ckpt, `${p}.attention.output.LayerNorm`, c.layerNormEps),
        mlp: readMlp(ckpt, `${p}.intermediate.dense`, `${p}.output.dense`, c.dModel, c.dFf, c.hiddenAct),
        outputLayerNorm: readLayerNorm(ckpt, `${p}.output.LayerNorm`, c.layerNormEps),
      });
    }
    return new BertModel(c, weights);
  }

  run(batch: Batch, options: ForwardOptions = {}): ForwardResult {
    const c = this.config;
    checkBatch(batch, c.vocabSize, c.maxPositions);
    const runner = new HookRunner(this.hookNames, c.nLayers, options);
    return tidyRun(() => {
      const seq = batch.inputIds.shape[1];
      const bias = attentionBias(batch.attentionMask, false);
      let x: tf.Tensor3D | undefined;
      if (runner.needs('embed')) {
        // (word + type 0) + position, in transformers' order.
        const words = embedding(this.weights.wordEmbeddings, c.dModel, batch.inputIds);
        const positions = tf.slice(this.weights.positionEmbeddings, [0, 0], [seq, -1]);
        const summed = tf.add(tf.add(words, this.weights.typeZeroEmbedding), positions) as tf.Tensor3D;
        x = runner.at('embed', layerNorm(summed, this.weights.embeddingLayerNorm));
      }
      for (let i = 0; i < c.nLayers && x !== undefined; i++) x = this.layer(i, x, bias, runner);
      const result: { captures: Record<HookName, tf.Tensor3D>; logits?: tf.Tensor3D } = { captures: runner.captures };
      if (runner.wantLogits) {
        if (x === undefined) throw new Error('internal: final hidden state requested but the pass stopped early');
        result.logits = x;
      }
      return result;
    });
  }

  /** Layer i on hidden state x; undefined when the pass stops inside this layer. */
  private layer(i: number, x: tf.Tensor3D, bias: tf.Tensor4D, runner: HookRunner): tf.Tensor3D | undefined {
    const w = this.weights.layers[i]!;
    const attnHook = `layers.${i}.attn_out`;
    const mlpHook = `layers.${i}.mlp_out`;
    const residHook = `layers.${i}.resid_out`;
    if (!runner.needs(attnHook)) return undefined;
    const attnOut = runner.at(attnHook, this.attention(x, w, bias));
    if (!runner.needs(mlpHook)) return undefined;
    const y = layerNorm(tf.add(attnOut, x) as tf.Tensor3D, w.attentionLayerNorm);
    const mlpOut = runner.at(mlpHook, mlp(y, w.mlp));
    if (!runner.needs(residHook)) return undefined;
    return runner.at(residHook, layerNorm(tf.add(mlpOut, y) as tf.Tensor3D, w.outputLayerNorm));
  }

  /** Bidirectional self-attention through the output projection (before residual and LayerNorm). */
  private attention(x: tf.Tensor3D, w: BertLayer, bias: tf.Tensor4D): tf.Tensor3D {
    const { nHeads, headDim } = this.config;
    const xBlocks = columnBlocks(x);
    const [q, k, v] = [w.query, w.key, w.value].map((l) => splitHeads(linear(x, l, xBlocks), nHeads)) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
    const context = attend(q, k, v, bias, 1 / Math.sqrt(headDim));
    return linear(mergeHeads(context), w.attentionDense);
  }

  /** `run` as ONNX nodes (see `Model.forwardGraph` and the header). */
  forwardGraph(g: OnnxGraph, inputs: GraphInputs, hooks: readonly HookName[], edits: Readonly<Record<HookName, GraphEdit>> = {}): Record<HookName, string> {
    const c = this.config;
    const w = this.weights;
    const runner = new GraphHooks(g, this.hookNames, c.nLayers, c.dModel, hooks, edits);
    let x: string | undefined;
    if (runner.needs('embed')) {
      // (word + type 0) + position, in transformers' order.
      const words = embeddingGraph(g, w.wordEmbeddings, c.dModel, inputs.inputIds, 'embeddings.word_embeddings.weight');
      const typeZero = g.constant('embeddings.token_type_embeddings.0', valuesOf(w.typeZeroEmbedding), [c.dModel]);
      const positions = positionRows(g, valuesOf(w.positionEmbeddings), c.dModel, sequenceLength(g, inputs.inputIds), 'embeddings.position_embeddings.weight');
      const summed = g.op('Add', [g.op('Add', [words, typeZero]), positions]);
      x = runner.at('embed', layerNormGraph(g, summed, w.embeddingLayerNorm, 'embeddings.LayerNorm'));
    }
    if (x !== undefined && runner.needs('layers.0.attn_out')) {
      const bias = attentionBiasGraph(g, inputs.attentionMask, false);
      for (let i = 0; i < c.nLayers && x !== undefined; i++) x = this.layerGraph(g, i, x, bias, runner);
    }
    return runner.values;
  }

  /** `layer` as ONNX nodes: layer i on hidden state x; undefined when the graph stops inside this layer. */
  private layerGraph(g: OnnxGraph, i: number, x: string, bias: string, runner: GraphHooks): string | undefined {
    const w = this.weights.layers[i]!;
    const p = `encoder.layer.${i}`;
    const [attnHook, mlpHook, residHook] = [`layers.${i}.attn_out`, `layers.${i}.mlp_out`, `layers.${i}.resid_out`];
    if (!runner.needs(attnHook)) return undefined;
    const attnOut = runner.at(attnHook, this.attentionGraph(g, p, x, w, bias));
    if (!runner.needs(mlpHook)) return undefined;
    const y = layerNormGraph(g, g.op('Add', [attnOut, x]), w.attentionLayerNorm, `${p}.attention.output.LayerNorm`);
    const mlpOut = runner.at(mlpHook, mlpGraph(g, y, w.mlp, `${p}.mlp`));
    if (!runner.needs(residHook)) return undefined;
    return runner.at(residHook, layerNormGraph(g, g.op('Add', [mlpOut, y]), w.outputLayerNorm, `${p}.output.LayerNorm`));
  }

  /** `attention` as ONNX nodes, with q, k and v from one MatMul. */
  private attentionGraph(g: OnnxGraph, p: string, x: string, w: BertLayer, bias: string): string {
    const { nHeads, headDim } = this.config;
    const [q, k, v] = linearsGraph(g, x, [w.query, w.key, w.value], `${p}.attention.self.qkv`).map((t) => splitHeadsGraph(g, t, nHeads, headDim)) as [
      string,
      string,
      string,
    ];
    const context = attendGraph(g, q, k, v, bias, 1 / Math.sqrt(headDim));
    return linearGraph(g, mergeHeadsGraph(g, context), w.attentionDense, `${p}.attention.output.dense`);
  }

  dispose(): void {
    tf.dispose(tensorsOf(this.weights));
  }
}
