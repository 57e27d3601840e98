/**
 * The Eraser interface: one erasure method, fitted on data, applied as an intervention at named
 * hook points.
 *
 * Every method is one file that exports a factory returning an `Eraser`. An eraser
 *  - `fit`s on a `FitContext` (the frozen model and SAEs, the activation cache, labelled splits and
 *    the biased probe);
 *  - applies itself through `edits()`: hook edits on token activations `[n, seq, d]`, usable in any
 *    `Model.run`, cached or not;
 *  - when it acts at the probe's own hook with no layer in between, also through `erasePooled`,
 *    which maps cached mean-pooled values straight to erased pooled representations. This is exact
 *    for every method here because each edit is affine per token (masks, projections, zero
 *    ablation) and mean pooling commutes with affine maps;
 *  - may replace the probe head (`retrainedProbe`, as SHIFT + retrain does);
 *  - `describe`s what it removes, and saves itself as safetensors + JSON.
 */
import type { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import type { Batch, Edit, HookName, Model } from '../models/model.js';
import type { Probe } from '../probe/probe.js';

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
  /** SAEs by hook. */
  saes: Readonly<Record<HookName, EraserSae>>;
  /** The hook the probe reads (mean-pooled). */
  probeHook: HookName;
  /** The biased probe, trained on `train`. Erasers must not modify it. */
  probe: Probe;
  /** The training split (ambiguous: task and concept perfectly correlated). */
  train: LabelledSplit;
  /** A small concept-labelled set (natural distribution, no balanced task labels), for concept objectives. */
  concept: LabelledSplit;
  /** Balanced training data, only for methods that are allowed to use it (the oracle). */
  balanced?: LabelledSplit;
  seed: number;
  /** Method options from the experiment config. */
  options: Readonly<Record<string, unknown>>;
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

export interface Eraser {
  readonly method: MethodName;
  fit(ctx: FitContext): Promise<void>;
  /** Token-level hook edits that apply the erasure in a forward pass. */
  edits(): Record<HookName, Edit>;
  /**
   * Erased mean-pooled representation at the probe hook for the given cache rows, or undefined
   * when the eraser acts upstream of the probe hook (then evaluate through `edits()`).
   */
  erasePooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D | undefined;
  /** Texts edited before tokenisation (word deletion), or undefined. */
  editTexts?(texts: readonly string[]): string[];
  /** A probe head retrained on erased representations, when the method retrains; else undefined. */
  retrainedProbe?(): Probe | undefined;
  describe(): EraserDescription;
  /** Writes `dir/eraser.safetensors` and `dir/eraser.json` atomically. */
  save(dir: string): void;
  dispose(): void;
}

/** Shape check shared by erasers applying a `[d]`-wide edit at a hook. */
export function checkWidth(method: MethodName, hook: HookName, want: number, got: number): void {
  if (want !== got) throw new Error(`${method} eraser at ${hook}: expects width ${want}, the activation has width ${got}`);
}
