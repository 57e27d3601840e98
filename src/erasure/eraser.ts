/**
 * The two halves of every erasure method, in the style of EleutherAI concept-erasure's
 * `LeaceFitter` / `LeaceEraser`:
 *
 *  - an `EraserFitter` holds the method's validated options and turns a `FitContext` (the frozen
 *    model and SAEs, the activation cache, labelled splits and the biased probe) into
 *  - an `Eraser`: immutable once made, it applies the erasure through `edits()` (hook edits on
 *    token activations `[n, seq, d]`, usable in any `Model.run`; `graphEdits()` gives the same
 *    edits as ONNX nodes for `Model.forwardGraph`) and, when it acts at the probe's
 *    own hook with no layer in between, through `erasePooled`, which maps cached mean-pooled values
 *    straight to erased pooled representations. This is exact for every method here because each
 *    edit is affine per token (masks, projections, zero ablation) and mean pooling commutes with
 *    affine maps. It may carry a probe `head` retrained on erased data (src/erasure/head.ts),
 *    `describe`s what it removes and gives its part of the checkpoint (`checkpoint()`), which
 *    `saveEraser` (src/erasure/checkpoint.ts) writes in the one checkpoint layout and
 *    `loadEraser` (src/erasure/load.ts) reads back through the method family's restorer.
 *
 * A method is one file (or folder) exporting its option schema and its fitter factory (registered
 * in src/erasure/methods.ts) and, for its checkpoint format, a restorer (registered in load.ts).
 */
import type { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import type { Batch, Edit, GraphEdit, HookName, Model } from '../models/model.js';
import type { Probe } from '../probe/probe.js';
import type { RawTensor } from '../io/safetensors.js';
import type { HistoryLog } from '../util/history.js';

export const METHOD_NAMES = [
  'original',
  'oracle',
  'sae_mask',
  'neuron_mask',
  'das_mask',
  'shift',
  'shift_retrain',
  'leace',
  'inlp',
  'random',
  'word_deletion',
] as const;

export type MethodName = (typeof METHOD_NAMES)[number];

export function isMethodName(s: string): s is MethodName {
  return (METHOD_NAMES as readonly string[]).includes(s);
}

/** A split as rows of the activation cache plus its labels: task `y` (profession) and concept `z` (gender). */
export interface LabelledSplit {
  /** Row indices into the cache. */
  rows: Int32Array;
  y: Int32Array;
  z: Int32Array;
  /** The split's texts, in the same order (for methods that edit inputs or rerun the model). */
  texts: readonly string[];
}

/** What the SAE-based methods need of an SAE (see src/sae/sae.ts for the full interface). */
export interface EraserSae {
  readonly dIn: number;
  readonly dSae: number;
  encode(x: tf.Tensor): tf.Tensor;
  decode(f: tf.Tensor): tf.Tensor;
  /** Decoder rows v_i `[dSae, dIn]`: decode(f) = sum_i f_i v_i + b_dec. */
  decoderDirections(): tf.Tensor2D;
}

export interface FitContext {
  model: Model;
  /** Right-padded batch for a list of texts. */
  tokenize: (texts: string[]) => Batch;
  cache: ActivationCache;
  /**
   * An activation cache over other texts (same model, hooks and SAEs as `cache`), for methods that
   * edit texts before the model reads them (word deletion). Rows follow `texts`.
   */
  recache: (texts: string[]) => Promise<ActivationCache>;
  /** Texts per forward pass when a method has to run the model. */
  batchSize: number;
  /** SAEs by hook. */
  saes: Readonly<Record<HookName, EraserSae>>;
  /** The hook the probe reads (mean-pooled). */
  probeHook: HookName;
  /** The biased probe, trained on `train`. Fitters must not modify it. */
  probe: Probe;
  /** The training split (ambiguous: task and concept perfectly correlated). */
  train: LabelledSplit;
  /** A small concept-labelled set (natural distribution, no balanced task labels), for concept objectives. */
  concept: LabelledSplit;
  /** Balanced training data, only for methods that are allowed to use it (the oracle). */
  balanced?: LabelledSplit;
  seed: number;
  /** Receives training curves (losses, temperature) of fitters that train, for the run's history. */
  log?: HistoryLog;
}

export interface EraserDescription {
  method: MethodName;
  /** Hooks the eraser edits. */
  hooks: HookName[];
  /** Number of units (features, neurons, directions) removed. */
  unitsRemoved: number;
  /** What is removed, in words, for the report. */
  summary: string;
  /** Per-hook details: removed SAE feature or neuron indices, or the rank of a removed subspace. */
  removed: Record<HookName, { kind: 'sae_features' | 'neurons' | 'directions' | 'tokens'; indices?: number[]; rank?: number }>;
}

/** Fits one method with the options it was made with; every call returns a new, independent eraser. */
export interface EraserFitter {
  readonly method: MethodName;
  fit(ctx: FitContext): Promise<Eraser>;
}

/** A fitted erasure, immutable; `dispose` frees its tensors. */
export interface Eraser {
  readonly method: MethodName;
  /** Token-level hook edits that apply the erasure in a forward pass. */
  edits(): Record<HookName, Edit>;
  /**
   * The same edits as ONNX nodes (`Model.forwardGraph`), for evaluation passes on ONNX Runtime
   * (`erasedPooled`): each computes what the `edits()` edit at its hook computes, from the same
   * tensors. Absent, or undefined, when they have no ONNX form (an SAE that is not an
   * `AffineSae`); those passes then run on tfjs.
   */
  graphEdits?(): Record<HookName, GraphEdit> | undefined;
  /**
   * Erased mean-pooled representation at the probe hook for the given cache rows, or undefined
   * when the eraser acts upstream of the probe hook (then evaluate through `edits()`).
   */
  erasePooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D | undefined;
  /** Texts edited before tokenisation (word deletion), or undefined. */
  editTexts?(texts: readonly string[]): string[];
  /** A probe head retrained on erased representations (replaces the biased probe), or undefined. */
  readonly head: Probe | undefined;
  describe(): EraserDescription;
  /** What the checkpoint holds besides the head; `saveEraser` (checkpoint.ts) writes it. */
  checkpoint(): CheckpointContent;
  dispose(): void;
}

/** An eraser's part of its checkpoint (layout in src/erasure/checkpoint.ts). */
export interface CheckpointContent {
  /** The method family's format name (`sae-eraser/mask`, ...); `loadEraser` dispatches on it. */
  format: string;
  /** The family's JSON fields (not `format`, `version`, `method` or `head`, which are added). */
  fields: Record<string, unknown>;
  /** Tensors by name. tf.Tensors here belong to the caller: `saveEraser` disposes them after writing. */
  tensors: Record<string, tf.Tensor | RawTensor>;
}

/** Shape check shared by erasers applying a `[d]`-wide edit at a hook. */
export function checkWidth(method: MethodName, hook: HookName, want: number, got: number): void {
  if (want !== got) throw new Error(`${method} eraser at ${hook}: expects width ${want}, the activation has width ${got}`);
}

/**
 * Checks that `probeHook` and every hook in `hooks` are hooks of `model`, and that none comes after
 * the probe hook (an edit there could not change what the probe reads). `what` prefixes errors.
 */
export function checkHooksUpToProbe(model: Model, probeHook: HookName, hooks: readonly HookName[], what: string): void {
  const names = model.hookNames;
  const probeAt = names.indexOf(probeHook);
  if (probeAt < 0) throw new Error(`${what}: the probe hook "${probeHook}" is not a hook of the model (hooks: ${names.join(', ')})`);
  for (const h of hooks) {
    const at = names.indexOf(h);
    if (at < 0) throw new Error(`${what}: the hook list names "${h}", which is not a hook of the model (hooks: ${names.join(', ')})`);
    if (at > probeAt) {
      throw new Error(
        `${what}: hook "${h}" comes after the probe hook "${probeHook}", so an edit there could not change what the probe reads; use hooks at or before it`,
      );
    }
  }
}
