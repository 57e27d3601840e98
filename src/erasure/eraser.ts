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
import { z } from 'zod';
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
   * An activation cache over other texts (same model as `cache`), for methods that edit texts
   * before the model reads them (word deletion). It holds the probe hook (pooled and per token);
   * other hooks and SAE codes may be absent. Rows follow `texts`.
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
  /**
   * The training split (ambiguous: task and concept perfectly correlated). Its task labels are
   * `ambiguous_task` in a method's `Supervision`; its concept labels are read by no method.
   */
  train: LabelledSplit;
  /**
   * A small concept-labelled set (natural distribution), for concept objectives. It carries task
   * labels too: a method that reads them says so (`concept_task`), as one reading `z` says
   * `concept_gender`.
   */
  concept: LabelledSplit;
  /** Balanced training data, only for methods that are allowed to use it (the oracle; a mask with taskSplit "balanced" says `balanced_task`). */
  balanced?: LabelledSplit;
  seed: number;
  /** Receives training curves (losses, temperature) of fitters that train, for the run's history. */
  log?: HistoryLog;
}

/**
 * The labels a method's fit may read, named by split and label (task y = profession, concept z =
 * gender; the splits are `FitContext`'s):
 *  - `ambiguous_task`: task labels of the ambiguous training split, where y = z on every example.
 *    Every eraser reads them at least through the biased probe (trained on them), which it keeps or
 *    replaces by a head retrained on them;
 *  - `concept_gender`: gender labels of the concept-labelled set (natural distribution);
 *  - `concept_task`: task labels of the concept-labelled set;
 *  - `balanced_task`: task labels of the balanced training split (the oracle's supervision).
 */
export const LABEL_SOURCES = ['ambiguous_task', 'concept_gender', 'concept_task', 'balanced_task'] as const;

export type LabelSource = (typeof LABEL_SOURCES)[number];

/** Short names of the label sources, for tables. */
export const LABEL_SHORT_NAMES: Readonly<Record<LabelSource, string>> = {
  ambiguous_task: 'amb. task',
  concept_gender: 'concept gender',
  concept_task: 'concept task',
  balanced_task: 'balanced task',
};

/** What supervised a method's fit: the labels it read and whether a person chose what it removes. */
export interface Supervision {
  /** The labels read, in `LABEL_SOURCES` order, each once. */
  labels: LabelSource[];
  /** True when part of the erasure was chosen by hand (a word list, SAE features listed in the config). */
  handPicked: boolean;
}

/** Supervision of `labels` (any order; repeats and false/undefined entries dropped), in canonical form. */
export function supervision(labels: Iterable<LabelSource | false | undefined>, handPicked = false): Supervision {
  const given = new Set(labels);
  return { labels: LABEL_SOURCES.filter((l) => given.has(l)), handPicked };
}

/** `s` with more labels read. */
export function withLabels(s: Supervision, ...labels: LabelSource[]): Supervision {
  return supervision([...s.labels, ...labels], s.handPicked);
}

/** Short text of a supervision for tables: "amb. task, concept gender", with "+ hand-picked" when it is. Unknown names pass through. */
export function supervisionText(s: { labels: readonly string[]; handPicked: boolean }): string {
  const names = s.labels.map((l) => LABEL_SHORT_NAMES[l as LabelSource] ?? l).join(', ');
  return s.handPicked ? `${names === '' ? '' : `${names} + `}hand-picked` : names === '' ? 'none' : names;
}

/** Checkpoint and results schema of a `Supervision`. */
export const supervisionSchema = z
  .strictObject({
    labels: z.array(z.enum(LABEL_SOURCES)).describe('The labels the fit read (see LABEL_SOURCES in src/erasure/eraser.ts).'),
    handPicked: z.boolean().describe('Whether part of the erasure was chosen by hand (a word list, listed SAE features).'),
  })
  .describe('What supervised the fit.');

export interface EraserDescription {
  method: MethodName;
  /**
   * The labels the fit read and whether it was hand-picked, stated by the code that reads them
   * (each fitter, from the options it ran with).
   */
  supervision: Supervision;
  /** Hooks the eraser edits. */
  hooks: HookName[];
  /** Number of units (features, neurons, directions) removed. */
  unitsRemoved: number;
  /** What is removed, in words, for the report. */
  summary: string;
  /** Per-hook details: removed SAE feature or neuron indices, or the rank of a removed subspace. */
  removed: Record<HookName, { kind: 'sae_features' | 'neurons' | 'directions' | 'tokens'; indices?: number[]; rank?: number }>;
  /** How the units were chosen, for methods that select SAE features (SHIFT, the random control; word deletion by SAE features, where the features choose the words it removes). */
  selection?: SelectionDescription;
}

/** How a feature-selecting method chose its features (those it removes, or those that choose what it removes). */
export interface SelectionDescription {
  /** The rule, in words (the end of the description's summary). */
  rule: string;
  /**
   * The rule's settings as the fit ran: SHIFT's options with defaults filled in (attribution kind,
   * steps, candidates, score, concept thresholds, ...) plus the examples it actually read and the
   * concept rules its candidates were scored by; the random control's draws.
   */
  parameters: Record<string, unknown>;
  /** Per hook the rule chose from: how many features were candidates there and how many were selected. */
  perHook: Record<HookName, { candidates: number; selected: number }>;
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
