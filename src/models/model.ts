/**
 * The Model interface: a frozen transformer whose hidden states can be read and replaced at named
 * hook points.
 *
 * Hook names (the keys of captures, edits, SAE maps, caches and eraser checkpoints):
 *  - `embed`: the token (+ position) embedding that enters layer 0;
 *  - `layers.{i}.attn_out`: the attention block's output projection, before it joins the residual;
 *  - `layers.{i}.mlp_out`: the MLP's output projection, before it joins the residual;
 *  - `layers.{i}.resid_out`: the hidden state after layer i (for BERT, after its final LayerNorm).
 */
import type { tf } from '../engine/engine.js';
import type { OnnxGraph } from '../onnx/graph.js';

export type HookName = string;

/** A function of a hook's activation `[n, seq, d]` that returns its replacement (same shape). */
export type Edit = (activation: tf.Tensor3D) => tf.Tensor3D;

import type { Batch } from '../data/tokenize.js';

export type { Batch };

export interface ForwardOptions {
  /** Hooks whose activations are returned. */
  capture?: readonly HookName[];
  /** Hook edits, applied in forward order; the edited value flows on and is what `capture` returns. */
  edits?: Readonly<Record<HookName, Edit>>;
  /**
   * End the pass once this hook is computed. Defaults to the last hook named in `capture` or
   * `edits` when `logits` is false, so no unneeded layer (nor the unembedding) runs.
   */
  stopAfter?: HookName;
  /** Compute the output logits (language models) or the final hidden state; off by default. */
  logits?: boolean;
}

export interface ForwardResult {
  /** Captured activations `[n, seq, d]` keyed by hook name. The caller disposes them. */
  captures: Record<HookName, tf.Tensor3D>;
  /** `[n, seq, vocab]` when `logits` was requested. */
  logits?: tf.Tensor3D;
}

/**
 * An `Edit` as ONNX nodes, for `Model.forwardGraph`: adds to `g` the nodes computing the
 * replacement of the hook value `value` `[n, seq, d]` (float32, `d` the hook's width) and returns
 * the replacement's value name (same shape; `value` itself leaves the hook unchanged).
 */
export type GraphEdit = (g: OnnxGraph, value: string, d: number) => string;

/** The value names of a forward graph's inputs (see `Model.forwardGraph`). */
export interface GraphInputs {
  inputIds: string;
  attentionMask: string;
}

export interface ModelConfigBase {
  modelType: string;
  nLayers: number;
  dModel: number;
  vocabSize: number;
  maxPositions: number;
}

export interface Model {
  readonly config: ModelConfigBase;
  /** Every hook point, in forward order. */
  readonly hookNames: readonly HookName[];
  /**
   * One forward pass. Works under autograd (`tf.grad`, `tf.variableGrads`): gradients reach edited
   * activations and any variables an edit uses.
   */
  run(batch: Batch, options?: ForwardOptions): ForwardResult;
  /**
   * Language models only: the logits that directions `[n, d]` of the residual stream write through
   * the unembedding, `[n, vocab]` (no final layer norm: a logit-lens reading of a direction, such
   * as an SAE feature's decoder row). Absent for encoders.
   */
  directionLogits?(directions: tf.Tensor2D): tf.Tensor2D;
  /**
   * The same forward pass as ONNX nodes, for ONNX Runtime (inference only: no logits, no
   * gradients). Adds to `g` the nodes that compute `hooks` (each `[n, seq, d]` float32) from the
   * graph values `inputs.inputIds` and `inputs.attentionMask` (both int64 `[n, seq]`, right padding,
   * mask 1 on real tokens) and returns their value names. `edits` are applied where `run` applies
   * `ForwardOptions.edits`: the edited value flows on and is what a hook in `hooks` returns. The
   * graph stops after the last hook named in `hooks` or `edits`, as `run` does. Weights are the
   * model's own (read once from its tensors), so the two executors cannot disagree on them.
   */
  forwardGraph?(g: OnnxGraph, inputs: GraphInputs, hooks: readonly HookName[], edits?: Readonly<Record<HookName, GraphEdit>>): Record<HookName, string>;
  /** Frees the weights. */
  dispose(): void;
}

/** The hook names of an `nLayers`-layer model, in forward order. */
export function standardHookNames(nLayers: number): HookName[] {
  const names: HookName[] = ['embed'];
  for (let i = 0; i < nLayers; i++) {
    names.push(`layers.${i}.attn_out`, `layers.${i}.mlp_out`, `layers.${i}.resid_out`);
  }
  return names;
}

/** Parses a hook name; throws a clear error naming the valid hooks when it does not exist. */
export function parseHook(name: HookName, nLayers: number): { kind: 'embed' } | { kind: 'attn_out' | 'mlp_out' | 'resid_out'; layer: number } {
  if (name === 'embed') return { kind: 'embed' };
  const m = /^layers\.(\d+)\.(attn_out|mlp_out|resid_out)$/.exec(name);
  if (m === null || Number(m[1]) >= nLayers) {
    throw new Error(`unknown hook "${name}": this model has hooks embed and layers.{0..${nLayers - 1}}.{attn_out,mlp_out,resid_out}`);
  }
  return { kind: m[2] as 'attn_out' | 'mlp_out' | 'resid_out', layer: Number(m[1]) };
}

/** Shorthand for `layers.{layer}.resid_out`. */
export function residOut(layer: number): HookName {
  return `layers.${layer}.resid_out`;
}
