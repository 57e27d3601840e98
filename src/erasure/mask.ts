/**
 * Learned-mask erasure: the shared gate, objectives, trainer, eraser class and checkpoint format of
 * `sae_mask`, `neuron_mask` and `das_mask` (the method files supply only their units).
 *
 * ## The mask
 * One logit m_j per unit j (an SAE feature, a neuron, a rotated direction) at each edited hook,
 * and the gate s_j = sigmoid(m_j / T). The temperature T is annealed linearly per optimiser step
 * from `tempStart` (0.1) to `tempEnd` (0.001), computed in float32, so s goes from soft to nearly
 * binary. A unit is "removed" when its hard gate is 0, i.e. s_j <= 0.5 (m_j <= 0).
 * Every method's edit is linear in the unit activations a_j(x) along unit directions v_j:
 *   x' = sum_j s_j a_j(x) v_j + rest(x)
 *   SAE      a = encode(x), v_j = decoder row j, rest = b_dec + error(x)  (x' = decode(s*f) + err)
 *   neurons  a = x,         v_j = e_j,            rest = 0                (x' = s * x)
 *   DAS      a = R^T x,     v_j = column j of R,  rest = 0                (x' = R diag(s) R^T x)
 *
 * ## Objectives (option `objective`)
 * - `task` (the original method): minimise CE(probe(x'), y) with the frozen biased probe, on the
 *   task split (`taskSplit`: `train`, or `balanced` as the original did, which needs balanced
 *   task labels).
 * - `concept` (default; needs no balanced task labels): on the ambiguous training split keep the
 *   task, CE(h(x'), y), while a small concept-labelled set (natural distribution, gender z)
 *   drives a gender probe g to chance:
 *     L = CE(h(x'_train), y) + conceptWeight * L_adv(g(x'_concept)) + l1 * sum_j (1 - s_j).
 *   g is a logistic probe on the current (soft-)masked concept representations, re-fitted
 *   (warm-started, full batch, `adversarySteps` AdamW steps) every `adversaryEvery` mask steps.
 *   Cross-fitting (`adversaryCrossFit`, default true): the concept set is split in two halves
 *   (stratified by z), one adversary is fitted on each, and mask steps alternate between the
 *   halves, each batch scored by the adversary fitted on the other half. An adversary fitted and
 *   scored on the same rows also weights noise units that correlate with z by chance in that
 *   sample, and the mask would remove them consistently; across halves such chance weights
 *   average out and only units that carry z in both halves keep being pushed out.
 *   The mask is pushed so that g's logits carry no information about z: on each concept batch,
 *     L_adv = Δ = mean_{z=1} l_i - mean_{z=0} l_i   (difference of the class means of g's logits l;
 *                                                  0 for a batch holding a single class).
 *   g is fitted so that Δ > 0 while it finds z; the mask lowers Δ by removing the units that
 *   carry z, and once none is left the re-fitted g has Δ ~ 0. Why this form: it is linear in the
 *   batch estimate, so batch noise has zero mean and gives no consistent push. Any convex function
 *   of the batch estimate (Δ^2, log cosh Δ, or BCE(g, 1/2), the spread of g's logits) adds the
 *   batch variance of Δ to the objective, which is lowered by removing every unit g weights,
 *   noise included, and Adam moves each logit by ~lr whatever the size of a consistent gradient,
 *   so such units do leave. It needs no target for g (unlike "maximise g's loss", which rewards
 *   flipping g's predictions, still informative, and is unbounded), and it ignores g's bias (the
 *   class prior of the concept set), which the mask cannot and should not change. Because g is
 *   re-fitted on the masked representations, scaling a gender unit down does not help (g's
 *   weight grows to compensate): only removing it does.
 *   The task head h starts as the biased probe; with `taskHead: 'adapt'` (default) it is re-fitted
 *   with the adversaries (same steps, on a fresh random sample of 128 training rows), so removing
 *   gender units stops costing task loss once h relies on the task units instead (with `frozen`,
 *   the biased head keeps pulling the gender units back). Heads change only at re-fits, so
 *   between re-fits their weights stay folded into the unit directions (see Efficiency). With `retrainHead` (default true for `concept`), a new
 *   probe is trained on the erased training representations after the mask is fixed, with the
 *   biased probe's training options, and exposed through `retrainedProbe()`.
 *
 * ## The original's weaknesses, as options (defaults are the fixed versions)
 * - `initKeep` (0.99): logits start at m0 = T0 logit(initKeep), so every unit starts kept
 *   (s = 0.99 at T0). `initKeep: 0.5` gives the zero-logit start, where every unit begins half
 *   removed and the first steps change the representation arbitrarily.
 * - `l1` (0.05): the cost l1 * sum_j (1 - s_j) of removed units, in loss units per unit (for the
 *   concept objective: a unit that lowers the adversary's class separation by less than
 *   l1 / conceptWeight logits is not worth removing). Without it (`l1: 0`) nothing opposes noise:
 *   Adam moves every logit by ~lr per step whatever the size of a consistent gradient, so units
 *   with small chance correlations (a finite concept set always has some) leave the mask.
 * - `hardMask` (true): the fitted eraser applies the hard gate [s > 0.5]; `false` applies the soft
 *   gate sigmoid(m / tempEnd), as the original did (then "removed" units can leak a little).
 * - `keepError` (SAE only, true): x' = decode(s * f) + error(x); `false` drops the SAE error as
 *   the original did, which removes everything the SAE does not reconstruct along with the mask.
 * - Pooling is always the mean over real tokens (the attention mask): the cache pools that way
 *   and the model path uses `meanPool`; the original summed over padded positions.
 * - Hook placement is checked: every masked hook must be the probe hook or upstream of it
 *   (an edit after the probe's hook has no effect on it), an error otherwise.
 *
 * ## Efficiency: where training runs
 * When the only masked hook is the probe's hook (the common case), training runs on cached
 * pooled values and never reruns the model: the edit is linear per token, so mean pooling
 * commutes with it, x̄' = sum_j s_j ā_j v_j + rest̄. Moreover every head here is affine
 * (z = x' W + b), so the decoder folds into the head: z = (s ⊙ ā) (V W) + rest̄ W + b with
 * V W `[units, out]` computed once per head update; a mask step costs O(batch x units) and no
 * pass over V, and the gradient of a head, x'^T r = ((r^T (s ⊙ ā)) V + r^T rest̄)^T, never forms
 * x' (head re-fits pass over V twice per step for all heads together, or form x' once when that
 * is cheaper). The probe must therefore be affine; its weights are read off `probe.logits` at 0
 * and the unit vectors and checked at random points. Measured (bench/masks.ts, 600 examples,
 * SAE 512 x 32768, 950 steps, one wasm thread): the task objective trains in ~17 s, the concept
 * objective in ~60 s, after one ~6 min pass of the model and SAE into the cache.
 * When a masked hook is upstream of the probe hook (layers between), each step runs the model on
 * the batch with the masks as edits under autograd and mean-pools the probe hook (correct but
 * slow: a forward and backward pass per step, and a forward pass over the concept set per
 * adversary refit). Future work: train from per-token cached SAE codes (the cache's `perToken`
 * CSR) so that only the layers between the hooks run.
 *
 * Several hooks at once (`hooks`, default [probeHook]): one mask per hook in one eraser (each SAE
 * mask with the SAE at its hook), trained jointly through the model path.
 */
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { matMulT, tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors, type RawTensor } from '../io/safetensors.js';
import type { Edit, HookName } from '../models/model.js';
import { meanPool } from '../models/pool.js';
import { mulberry32, randomNormal, shuffleInPlace } from '../data/prng.js';
import { AdamW } from '../probe/adamw.js';
import { LinearProbe, loadProbe } from '../probe/linear.js';
import { checkLabels, type Probe } from '../probe/probe.js';
import { progress } from '../util/progress.js';
import { checkWidth, type Eraser, type EraserDescription, type FitContext, type LabelledSplit } from './eraser.js';

export type MaskMethod = 'sae_mask' | 'neuron_mask' | 'das_mask';
export type MaskObjective = 'concept' | 'task';
export type UnitKind = 'sae_features' | 'neurons' | 'directions';

/** Resolved options of a mask eraser; see the module docstring for what each does. */
export interface MaskOptions {
  /** Hooks to mask; default [probeHook]. */
  hooks: HookName[] | undefined;
  objective: MaskObjective;
  /** Split of the `task` objective: `train` (default) or `balanced` (needs FitContext.balanced). */
  taskSplit: 'train' | 'balanced';
  epochs: number;
  batchSize: number;
  /** Adam learning rate of the mask logits (and DAS rotation). */
  lr: number;
  tempStart: number;
  tempEnd: number;
  initKeep: number;
  /** Std of Gaussian noise added to the initial logits, in units of m0 (DAS: breaks the symmetry of a uniform gate). */
  initNoise: number;
  l1: number;
  hardMask: boolean;
  keepError: boolean;
  conceptWeight: number;
  taskHead: 'adapt' | 'frozen';
  /** AdamW learning rate of the adapting task head and of the adversary. */
  headLr: number;
  adversaryEvery: number;
  adversarySteps: number;
  adversaryInitSteps: number;
  /** Fit two adversaries on halves of the concept set, each scoring the mask on the other half. */
  adversaryCrossFit: boolean;
  retrainHead: boolean;
  seed: number;
}

/** Options as they appear in a config, with defaults per method. */
const OPTION_NAMES = [
  'hooks', 'objective', 'taskSplit', 'epochs', 'batchSize', 'lr', 'tempStart', 'tempEnd', 'initKeep', 'initNoise', 'l1',
  'hardMask', 'keepError', 'conceptWeight', 'taskHead', 'headLr', 'adversaryEvery', 'adversarySteps', 'adversaryInitSteps',
  'adversaryCrossFit', 'retrainHead', 'seed',
] as const;

type OptionName = (typeof OPTION_NAMES)[number];

/**
 * Resolves raw options (factory defaults overridden by the experiment config) into `MaskOptions`,
 * with clear errors naming the option.
 */
export function resolveMaskOptions(method: MaskMethod, raw: Readonly<Record<string, unknown>>, seed: number): MaskOptions {
  for (const key of Object.keys(raw)) {
    if (!(OPTION_NAMES as readonly string[]).includes(key)) {
      throw new Error(`${method}: unknown option "${key}" (known: ${OPTION_NAMES.join(', ')})`);
    }
  }
  const where = (name: OptionName): string => `${method}: option ${name}`;
  const num = (name: OptionName, fallback: number, ok: (v: number) => boolean, want: string): number => {
    const v = raw[name];
    if (v === undefined) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v)) throw new Error(`${where(name)} is ${JSON.stringify(v)}, expected ${want}`);
    return v;
  };
  const int = (name: OptionName, fallback: number, min: number): number =>
    num(name, fallback, (v) => Number.isInteger(v) && v >= min, `an integer >= ${min}`);
  const bool = (name: OptionName, fallback: boolean): boolean => {
    const v = raw[name];
    if (v === undefined) return fallback;
    if (typeof v !== 'boolean') throw new Error(`${where(name)} is ${JSON.stringify(v)}, expected true or false`);
    return v;
  };
  const choice = <T extends string>(name: OptionName, fallback: T, allowed: readonly T[]): T => {
    const v = raw[name];
    if (v === undefined) return fallback;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      throw new Error(`${where(name)} is ${JSON.stringify(v)}, expected one of ${allowed.map((a) => `"${a}"`).join(', ')}`);
    }
    return v as T;
  };
  let hooks: HookName[] | undefined;
  if (raw.hooks !== undefined) {
    const h = raw.hooks;
    if (!Array.isArray(h) || h.length === 0 || !h.every((x): x is string => typeof x === 'string')) {
      throw new Error(`${where('hooks')} is ${JSON.stringify(h)}, expected a non-empty list of hook names`);
    }
    if (new Set(h).size !== h.length) throw new Error(`${where('hooks')} lists a hook twice: ${JSON.stringify(h)}`);
    hooks = [...h];
  }
  if (raw.keepError !== undefined && method !== 'sae_mask') throw new Error(`${where('keepError')} applies only to sae_mask`);
  const objective = choice<MaskObjective>('objective', 'concept', ['concept', 'task']);
  const positive = (v: number): boolean => v > 0;
  const tempStart = num('tempStart', 0.1, positive, 'a positive number');
  const tempEnd = num('tempEnd', 0.001, positive, 'a positive number');
  return {
    hooks,
    objective,
    taskSplit: choice('taskSplit', 'train', ['train', 'balanced'] as const),
    epochs: int('epochs', 25, 1),
    batchSize: int('batchSize', 16, 1),
    lr: num('lr', 1e-3, positive, 'a positive number'),
    tempStart,
    tempEnd,
    initKeep: num('initKeep', 0.99, (v) => v > 0 && v < 1, 'a number in (0, 1)'),
    initNoise: num('initNoise', method === 'das_mask' ? 0.05 : 0, (v) => v >= 0, 'a number >= 0'),
    l1: num('l1', 0.05, (v) => v >= 0, 'a number >= 0'),
    hardMask: bool('hardMask', true),
    keepError: bool('keepError', true),
    conceptWeight: num('conceptWeight', 1, (v) => v >= 0, 'a number >= 0'),
    taskHead: choice('taskHead', 'adapt', ['adapt', 'frozen'] as const),
    headLr: num('headLr', 1e-2, positive, 'a positive number'),
    adversaryEvery: int('adversaryEvery', 20, 1),
    adversarySteps: int('adversarySteps', 5, 1),
    adversaryInitSteps: int('adversaryInitSteps', 200, 1),
    adversaryCrossFit: bool('adversaryCrossFit', true),
    retrainHead: bool('retrainHead', objective === 'concept'),
    seed: int('seed', seed, -(2 ** 31)),
  };
}

/** Temperature at optimiser step `step` of `totalSteps`: linear from `start` to `end`, in float32. */
export function temperatureAt(step: number, totalSteps: number, start: number, end: number): number {
  // torch.linspace(start, end, totalSteps) in float32: from the start for the first half, from the
  // end for the second, so both endpoints are exact.
  const f = Math.fround;
  if (totalSteps <= 1) return f(start);
  const delta = f(f(f(end) - f(start)) / (totalSteps - 1));
  return step < totalSteps / 2 ? f(f(start) + f(delta * step)) : f(f(end) - f(delta * (totalSteps - 1 - step)));
}

/** The logit m0 with sigmoid(m0 / t0) = keep. */
export function initialLogit(keep: number, t0: number): number {
  return Math.fround(t0 * Math.log(keep / (1 - keep)));
}

/** Soft gate sigmoid(m / T) `[units]`. */
export function softGate(logits: tf.Tensor1D, temperature: number): tf.Tensor1D {
  return tf.tidy(() => tf.sigmoid(tf.div(logits, temperature)) as tf.Tensor1D);
}

/** Hard gate [m > 0] (= [sigmoid(m / T) > 0.5] for every T > 0) `[units]`. */
export function hardGate(logits: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => tf.cast(tf.greater(logits, 0), 'float32') as tf.Tensor1D);
}

// ---------------------------------------------------------------------------------------------
// Affine heads

/** An affine map z = x W + b on `[n, d]` rows, W stored as `wT [d, out]` (row-major) and b `[out]`. */
export interface AffineHead {
  d: number;
  nOut: number;
  wT: Float32Array;
  b: Float32Array;
}

/**
 * Reads the affine map of a probe from its logits: b = z(0), row j of W = z(e_j) - z(0), then
 * checks z(x) = x W + b at a few random points. Throws when the probe is not affine (the mask
 * trainer folds the head into the unit directions, which needs an affine head).
 */
export function affineOfProbe(probe: Probe, d: number, seed = 42): AffineHead {
  if (probe.dIn !== d) throw new Error(`mask eraser: the probe reads width ${probe.dIn}, the probe hook has width ${d}`);
  const nOut = probe.nClasses === 2 ? 1 : probe.nClasses;
  const basis = new Float32Array((d + 1) * d);
  for (let j = 0; j < d; j++) basis[(j + 1) * d + j] = 1;
  const z = logitsArray(probe, basis, d + 1, d);
  const b = z.slice(0, nOut);
  const wT = new Float32Array(d * nOut);
  for (let j = 0; j < d; j++) for (let o = 0; o < nOut; o++) wT[j * nOut + o] = z[(j + 1) * nOut + o]! - b[o]!;
  const rng = mulberry32(seed);
  const probes = 3;
  const x = Float32Array.from({ length: probes * d }, () => randomNormal(rng));
  const got = logitsArray(probe, x, probes, d);
  for (let i = 0; i < probes; i++) {
    for (let o = 0; o < nOut; o++) {
      let want = b[o]!;
      let scale = Math.abs(b[o]!);
      for (let j = 0; j < d; j++) {
        want += x[i * d + j]! * wT[j * nOut + o]!;
        scale += Math.abs(x[i * d + j]! * wT[j * nOut + o]!);
      }
      if (Math.abs(got[i * nOut + o]! - want) > 1e-4 * (1 + scale)) {
        throw new Error(`mask eraser: the probe (kind "${probe.kind}") is not affine in its input; mask erasers need a linear probe`);
      }
    }
  }
  return { d, nOut, wT, b };
}

function logitsArray(probe: Probe, x: Float32Array, n: number, d: number): Float32Array {
  return tf.tidy(() => {
    const z = probe.logits(tf.tensor2d(x, [n, d]));
    return Float32Array.from(z.dataSync());
  });
}

/** A head whose parameters are tensors; `version` changes whenever they do (for caching V W). */
class Head {
  readonly wT: tf.Variable<tf.Rank.R2>;
  readonly b: tf.Variable<tf.Rank.R1>;
  version = 0;
  private readonly optimizer: AdamW | undefined;

  constructor(init: AffineHead, trainable: boolean, lr: number, name: string) {
    this.wT = variableFrom(tf.tensor2d(init.wT, [init.d, init.nOut]), `${name}_wT`);
    this.b = variableFrom(tf.tensor1d(init.b), `${name}_b`);
    this.optimizer = trainable ? new AdamW([this.wT, this.b], { lr, weightDecay: 0.01 }) : undefined;
  }

  get nOut(): number {
    return this.wT.shape[1]!;
  }

  /** One AdamW step on the gradients (wT `[d, out]`, b `[out]`). */
  step(gradWT: tf.Tensor, gradB: tf.Tensor): void {
    if (this.optimizer === undefined) throw new Error('internal: stepping a frozen head');
    this.optimizer.step([gradWT, gradB]);
    this.version++;
  }

  dispose(): void {
    this.optimizer?.dispose();
    this.wT.dispose();
    this.b.dispose();
  }
}

let idCounter = 0;
function uniqueId(): number {
  return idCounter++;
}

/** A variable holding `initial` (which is disposed: tf.variable keeps its own reference). */
export function variableFrom<R extends tf.Rank>(initial: tf.Tensor<R>, prefix: string): tf.Variable<R> {
  const v = tf.variable(initial, true, uniqueVariableName(prefix));
  initial.dispose();
  return v;
}

/** A variable name unique in this process (tfjs variable names must be). */
export function uniqueVariableName(prefix: string): string {
  return `${prefix}_${uniqueId()}`;
}

/** Mean cross-entropy of logits `z [B, out]` against class labels: BCE with logits when out = 1. */
function taskLoss(z: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    if (z.shape[1] === 1) return tf.mean(tf.add(tf.sub(tf.relu(z), tf.mul(z, targets)), tf.log1p(tf.exp(tf.neg(tf.abs(z)))))) as tf.Scalar;
    return tf.mean(tf.sub(tf.logSumExp(z, 1), tf.sum(tf.mul(z, targets), 1))) as tf.Scalar;
  });
}

/** d(mean CE)/dz for logits `z [B, out]`: (sigmoid(z) - y) / B, or (softmax(z) - onehot) / B. */
function taskLossGradient(z: tf.Tensor2D, targets: tf.Tensor2D, rows: number): tf.Tensor2D {
  return tf.tidy(() => tf.div(tf.sub(z.shape[1] === 1 ? tf.sigmoid(z) : tf.softmax(z), targets), rows) as tf.Tensor2D);
}

/**
 * L_adv = Δ = mean_{z=1} l - mean_{z=0} l, for adversary logits `l [B, 1]` and concept labels
 * z `[B, 1]` (0/1); 0 when the batch holds a single class.
 */
export function adversaryLoss(l: tf.Tensor2D, z: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const n1 = tf.sum(z);
    const n0 = tf.sub(z.shape[0], n1);
    const both = tf.cast(tf.logicalAnd(tf.greater(n1, 0), tf.greater(n0, 0)), 'float32');
    const mean1 = tf.div(tf.sum(tf.mul(l, z)), tf.maximum(n1, 1));
    const mean0 = tf.div(tf.sum(tf.mul(l, tf.sub(1, z))), tf.maximum(n0, 1));
    return tf.mul(tf.sub(mean1, mean0), both) as tf.Scalar;
  });
}

/** Targets `[n, out]`: the labels as a column for out = 1, one-hot rows otherwise. */
function targetsOf(labels: Int32Array, nOut: number): tf.Tensor2D {
  return tf.tidy(() =>
    nOut === 1 ? tf.tensor2d(Float32Array.from(labels), [labels.length, 1]) : (tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), nOut), 'float32') as tf.Tensor2D),
  );
}

// ---------------------------------------------------------------------------------------------
// Units (supplied by the method files)

/** The per-step view of a unit space; tensors it creates belong to the caller's tidy scope. */
export interface UnitFrame {
  /** Unit activations of inputs `raw [B, rawWidth]` (pooled or per token): SAE f, neurons x, DAS x R. */
  units(raw: tf.Tensor2D): tf.Tensor2D;
  /** Unit directions `[units, d]` (rows v_j), or null for the standard basis (neurons). */
  readonly directions: tf.Tensor2D | null;
  /** Whether `directions` stays fixed during training (so head weights folded into it can be cached). */
  readonly constantDirections: boolean;
  /** The token-level edit `x [n, seq, d] -> x'` with gate `[units]`. */
  edit(x: tf.Tensor3D, gate: tf.Tensor1D): tf.Tensor3D;
  /** Erased mean-pooled values `[rows, d]` of cache rows at the hook, with gate `[units]`. */
  erasePooled(cache: ActivationCache, rows: ArrayLike<number>, gate: tf.Tensor1D): tf.Tensor2D;
}

/** The units of one hook, with any trainable parameters besides the mask (the DAS rotation). */
export interface UnitSpace {
  readonly hook: HookName;
  readonly nUnits: number;
  readonly dIn: number;
  readonly unitKind: UnitKind;
  /** Trainable tensors other than the mask logits, by name. */
  readonly variables: Readonly<Record<string, tf.Variable>>;
  /** Pooled inputs of cache rows: `raw [rows, rawWidth]` and the gate-independent `rest [rows, d]` (null for 0). */
  pooledInputs(cache: ActivationCache, rows: ArrayLike<number>): { raw: tf.Tensor2D; rest: tf.Tensor2D | null };
  frame(): UnitFrame;
  /** Fixes the trained parameters so that `frame()` creates no tensors any more (for application). */
  freeze(): void;
  /** Extra fields for the checkpoint JSON (for example the SAE width). */
  checkpointInfo(): Record<string, unknown>;
  /** Tensors to save besides the mask logits, by name (saved as `<hook>.<name>`). */
  savedTensors(): Record<string, tf.Tensor | RawTensor>;
  dispose(): void;
}

/** What a method supplies to the shared eraser. */
export interface MaskKind {
  readonly method: MaskMethod;
  /** The units at a hook, fresh for fitting. */
  create(hook: HookName, ctx: FitContext, options: MaskOptions): UnitSpace;
  /** The units at a hook from a checkpoint. */
  restore(entry: CheckpointHook, file: CheckpointTensors, target: MaskLoadTarget, options: MaskOptions): UnitSpace;
}

// ---------------------------------------------------------------------------------------------
// Representations: x' for a batch of rows, in factored or explicit form

/** Head weights folded into unit directions: V W `[units, out]` (W itself when x' is explicit or V = I). */
type Folded = (head: Head) => tf.Tensor2D;

/** Masked representations of a batch of rows, as far as affine heads need them. */
interface Represented {
  readonly rows: number;
  /** Whether x' is held as (s ⊙ a, V, rest) rather than formed. */
  readonly factored: boolean;
  /** Head logits `[B, out]`, given the head's folded weights; differentiable through the mask. */
  logits(head: Head, folded: tf.Tensor2D): tf.Tensor2D;
  /**
   * r^T x' `[out, d]` for `r [B, out]` (the head's weight gradient, transposed), in two parts:
   * `units` `[out, units]` still to be multiplied by V (null when there is none to apply) and
   * `direct` `[out, d]`; r^T x' = units V + direct. Intermediates belong to the caller's scope.
   */
  gradientParts(r: tf.Tensor2D): { units: tf.Tensor2D | null; direct: tf.Tensor2D | null };
  /** A copy detached from the tape whose tensors survive the current scope; `dispose` frees it. */
  keepDetached(): Represented & { dispose(): void };
  /** Like `keepDetached`, with x' formed explicitly `[B, d]` (cheaper when a head takes many steps on it). */
  keepExplicit(): Represented & { dispose(): void };
}

/** x' = (s ⊙ a) V + rest, never formed: heads act through V W. */
class FactoredRep implements Represented {
  readonly factored = true;

  constructor(
    private readonly sa: tf.Tensor2D,
    private readonly rest: tf.Tensor2D | null,
    /** V `[units, d]`, or null for the standard basis. */
    readonly directions: tf.Tensor2D | null,
    /** Whether `directions` belongs to the unit space (fixed, shared, not copied) rather than to this step. */
    private readonly fixedDirections: boolean,
  ) {}

  get rows(): number {
    return this.sa.shape[0];
  }

  logits(head: Head, folded: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      let z = tf.matMul(this.sa, folded);
      if (this.rest !== null) z = tf.add(z, tf.matMul(this.rest, head.wT));
      return tf.add(z, head.b) as tf.Tensor2D;
    });
  }

  /** (Intermediates belong to the caller's tidy scope.) */
  gradientParts(r: tf.Tensor2D): { units: tf.Tensor2D | null; direct: tf.Tensor2D | null } {
    const rT = tf.transpose(r);
    const through = tf.matMul(rT, this.sa) as tf.Tensor2D;
    const restPart = this.rest === null ? null : (tf.matMul(rT, this.rest) as tf.Tensor2D);
    if (this.directions !== null) return { units: through, direct: restPart };
    // Standard basis: the unit part is already in activation space.
    return { units: null, direct: restPart === null ? through : (tf.add(through, restPart) as tf.Tensor2D) };
  }

  keepDetached(): FactoredRep & { dispose(): void } {
    // Copies (tf.clone copies on wasm): small per-batch tensors, and step-dependent directions
    // (DAS, d x d); fixed directions (an SAE decoder) are shared.
    const copy = (t: tf.Tensor2D | null): tf.Tensor2D | null => (t === null ? null : tf.keep(tf.clone(t)));
    const sa = copy(this.sa)!;
    const rest = copy(this.rest);
    const directions = this.fixedDirections ? this.directions : copy(this.directions);
    const owned = [sa, rest, this.fixedDirections ? null : directions].filter((t): t is tf.Tensor2D => t !== null);
    return Object.assign(new FactoredRep(sa, rest, directions, this.fixedDirections), { dispose: () => tf.dispose(owned) });
  }

  keepExplicit(): ExplicitRep & { dispose(): void } {
    const x = tf.keep(
      tf.tidy(() => {
        let v: tf.Tensor2D = this.directions === null ? tf.clone(this.sa) : (tf.matMul(this.sa, this.directions) as tf.Tensor2D);
        if (this.rest !== null) v = tf.add(v, this.rest) as tf.Tensor2D;
        return v;
      }),
    );
    return Object.assign(new ExplicitRep(x), { dispose: () => x.dispose() });
  }
}

/** x' formed explicitly `[B, d]` (the model path, and head fits with many steps). */
class ExplicitRep implements Represented {
  readonly factored = false;

  constructor(private readonly x: tf.Tensor2D) {}

  get rows(): number {
    return this.x.shape[0];
  }

  logits(head: Head): tf.Tensor2D {
    return tf.tidy(() => tf.add(tf.matMul(this.x, head.wT), head.b) as tf.Tensor2D);
  }

  gradientParts(r: tf.Tensor2D): { units: null; direct: tf.Tensor2D } {
    return { units: null, direct: matMulT(r, this.x, true, false) as tf.Tensor2D };
  }

  keepDetached(): ExplicitRep & { dispose(): void } {
    const x = tf.keep(tf.clone(this.x));
    return Object.assign(new ExplicitRep(x), { dispose: () => x.dispose() });
  }

  keepExplicit(): ExplicitRep & { dispose(): void } {
    return this.keepDetached();
  }
}

/** Gates and frames of every masked hook for one step. */
interface StepView {
  gates: Map<HookName, tf.Tensor1D>;
  frames: Map<HookName, UnitFrame>;
}

/** Makes masked representations of rows of one split. */
interface RowSource {
  readonly n: number;
  /** Unit directions shared by every representation this source makes (fixed during training), or null. */
  fixedDirections(view: StepView): tf.Tensor2D | null;
  represent(positions: ArrayLike<number>, view: StepView): Represented;
}

/** Pooled path: rows of the activation cache at the probe hook. */
class PooledSource implements RowSource {
  constructor(
    private readonly cache: ActivationCache,
    private readonly space: UnitSpace,
    private readonly cacheRows: Int32Array,
  ) {}

  get n(): number {
    return this.cacheRows.length;
  }

  fixedDirections(view: StepView): tf.Tensor2D | null {
    const frame = view.frames.get(this.space.hook)!;
    return frame.constantDirections ? frame.directions : null;
  }

  represent(positions: ArrayLike<number>, view: StepView): Represented {
    const rows = Array.from(positions, (p) => this.cacheRows[p]!);
    const { raw, rest } = this.space.pooledInputs(this.cache, rows);
    const frame = view.frames.get(this.space.hook)!;
    const sa = tf.mul(frame.units(raw), view.gates.get(this.space.hook)!) as tf.Tensor2D;
    return new FactoredRep(sa, rest, frame.directions, frame.constantDirections);
  }
}

/** Model path: run the model with the masks as edits and mean-pool the probe hook. */
class ModelSource implements RowSource {
  constructor(
    private readonly ctx: FitContext,
    private readonly texts: readonly string[],
    private readonly spaces: readonly UnitSpace[],
  ) {}

  get n(): number {
    return this.texts.length;
  }

  fixedDirections(): null {
    return null;
  }

  represent(positions: ArrayLike<number>, view: StepView): Represented {
    const batch = this.ctx.tokenize(Array.from(positions, (p) => this.texts[p]!));
    const edits: Record<HookName, Edit> = {};
    for (const s of this.spaces) {
      const frame = view.frames.get(s.hook)!;
      const gate = view.gates.get(s.hook)!;
      edits[s.hook] = (x) => frame.edit(x, gate);
    }
    const { captures } = this.ctx.model.run(batch, { capture: [this.ctx.probeHook], edits, stopAfter: this.ctx.probeHook });
    const acts = captures[this.ctx.probeHook];
    if (acts === undefined) throw new Error(`mask eraser: the model returned no activation at the probe hook "${this.ctx.probeHook}"`);
    return new ExplicitRep(meanPool(acts, batch.attentionMask));
  }
}

// ---------------------------------------------------------------------------------------------
// Training

/** Per-step information passed to `onStep` (diagnostics, tests). */
export interface MaskStepInfo {
  step: number;
  totalSteps: number;
  epoch: number;
  temperature: number;
  loss: number;
  taskLoss: number;
  adversaryLoss: number;
}

export interface MaskEraserHooks {
  /** Called after every optimiser step. */
  onStep?: (info: MaskStepInfo) => void;
}

interface TrainSetup {
  spaces: UnitSpace[];
  logits: tf.Variable[];
  taskSource: RowSource;
  taskLabels: Int32Array;
  conceptSource: RowSource | undefined;
  conceptLabels: Int32Array | undefined;
  probeHead: AffineHead;
  options: MaskOptions;
  label: string;
  /** Rows per chunk when re-fitting heads (bounds memory on the model path). */
  refitChunk: number;
  onStep: ((info: MaskStepInfo) => void) | undefined;
}

/**
 * Positions 0..n-1 of the concept set split into `k` folds, stratified by label (each fold gets
 * every class in proportion), shuffled with `rng`.
 */
export function conceptFolds(labels: Int32Array, k: number, rng: () => number): Int32Array[] {
  const byClass = [0, 1].map((c) => shuffleInPlace(Array.from(labels.keys()).filter((i) => labels[i] === c), rng));
  const folds: number[][] = Array.from({ length: k }, () => []);
  let next = 0;
  for (const members of byClass) for (const i of members) folds[next++ % k]!.push(i);
  return folds.map((f) => Int32Array.from(f));
}

/** Positions 0..n-1 in chunks of `size`. */
function chunks(n: number, size: number): Int32Array[] {
  const out: Int32Array[] = [];
  for (let s = 0; s < n; s += size) out.push(Int32Array.from({ length: Math.min(size, n - s) }, (_, i) => s + i));
  return out;
}

/** A head to re-fit: its rows (positions in `source`) and their targets `[rows, out]`. */
interface HeadFit {
  head: Head;
  source: RowSource;
  positions: Int32Array;
  targets: tf.Tensor2D;
}

/** Rows `positions` of `t` (a new tensor). */
function rowsOf(t: tf.Tensor2D, positions: ArrayLike<number>): tf.Tensor2D {
  return tf.tidy(() => tf.gather(t, tf.tensor1d(Int32Array.from(positions), 'int32')) as tf.Tensor2D);
}

/** Training rows of the adapting task head at each re-fit (a fresh random sample). */
const TASK_HEAD_ROWS = 128;

/** Trains the mask logits (and unit parameters) in place. */
function trainMasks(setup: TrainSetup): void {
  const o = setup.options;
  const { spaces, logits } = setup;
  const nTask = setup.taskSource.n;
  const stepsPerEpoch = Math.ceil(nTask / o.batchSize);
  const totalSteps = stepsPerEpoch * o.epochs;
  const unitVars = spaces.flatMap((s) => Object.values(s.variables));
  const trainable = [...logits, ...unitVars];
  const optimizer = new AdamW(trainable, { lr: o.lr, weightDecay: 0 });
  const concept = o.objective === 'concept';
  const adaptTaskHead = concept && o.taskHead === 'adapt';
  const taskHead = new Head(setup.probeHead, adaptTaskHead, o.headLr, 'task_head');
  const zeroHead: AffineHead = { d: setup.probeHead.d, nOut: 1, wT: new Float32Array(setup.probeHead.d), b: new Float32Array(1) };
  const rng = mulberry32(o.seed);
  // Concept folds: with cross-fitting, adversary f is fitted on fold f and scores batches of the
  // other fold; without, one adversary and one fold (the whole concept set).
  const folds = setup.conceptLabels === undefined ? [] : conceptFolds(setup.conceptLabels, o.adversaryCrossFit ? 2 : 1, rng);
  const adversaries = folds.map(() => new Head(zeroHead, true, o.headLr, 'adversary'));
  const taskTargets = targetsOf(setup.taskLabels, taskHead.nOut);
  const conceptTargets = setup.conceptLabels === undefined ? undefined : targetsOf(setup.conceptLabels, 1);
  // Head weights folded into fixed unit directions, cached by head version (heads change only at
  // re-fits, so a step costs no pass over the directions).
  const foldCache = new Map<Head, { version: number; folded: tf.Tensor2D }>();
  const foldedFor = (frameDirections: tf.Tensor2D | null, fixed: boolean): Folded => (head) => {
    if (frameDirections === null) return head.wT;
    if (!fixed) return tf.matMul(frameDirections, head.wT) as tf.Tensor2D;
    const hit = foldCache.get(head);
    if (hit !== undefined && hit.version === head.version) return hit.folded;
    const fresh = tf.keep(tf.matMul(frameDirections, head.wT) as tf.Tensor2D);
    hit?.folded.dispose();
    foldCache.set(head, { version: head.version, folded: fresh });
    return fresh;
  };
  const view = (temperature: number): StepView => ({
    gates: new Map(spaces.map((s, i) => [s.hook, softGate(logits[i] as tf.Tensor1D, temperature)])),
    frames: new Map(spaces.map((s) => [s.hook, s.frame()])),
  });
  const logitsOf = (rep: Represented, head: Head, v: StepView, source: RowSource): tf.Tensor2D => {
    if (!rep.factored) return rep.logits(head, head.wT);
    const frame = v.frames.get(spaces[0]!.hook)!;
    return rep.logits(head, foldedFor(frame.directions, source.fixedDirections(v) !== null)(head));
  };
  const order = Int32Array.from({ length: nTask }, (_, i) => i);
  const cursors = folds.map(() => 0);
  /** The next concept batch of fold f (cycling through a reshuffled fold). */
  const nextConceptBatch = (f: number): Int32Array => {
    const fold = folds[f]!;
    const out = new Int32Array(Math.min(o.batchSize, fold.length));
    for (let i = 0; i < out.length; i++) {
      if (cursors[f] === 0) shuffleInPlace(fold, rng);
      out[i] = fold[cursors[f]!]!;
      cursors[f] = (cursors[f]! + 1) % fold.length;
    }
    return out;
  };

  /**
   * Re-fits heads (the adversaries on their folds; the adapting task head on a fresh sample of
   * training rows) with `steps` full-batch AdamW steps on the representations masked at
   * temperature T (no gradient to the mask). On factored representations a step costs one pass
   * over the unit directions for all heads together (folding [W_1 .. W_H] into V) and one for all
   * their gradients ([r_1^T (s ⊙ a_1); ...] V), memory-bound for a wide SAE; forming x' once
   * costs about rows / 8 such passes (one matrix product), so it is formed when the rows are few
   * next to the steps (the initial fit) or the directions change every step (DAS).
   */
  const refitHeads = (fits: HeadFit[], steps: number, temperature: number): void => {
    const reps: { fit: number; at: Int32Array; rep: Represented & { dispose(): void } }[] = [];
    let directions: tf.Tensor2D | null = null;
    try {
      tf.tidy(() => {
        const v = view(temperature);
        fits.forEach((fit, k) => {
          const fixed = fit.source.fixedDirections(v);
          const explicit = fixed === null || fit.positions.length < 16 * steps;
          if (!explicit) directions = fixed;
          for (const at of chunks(fit.positions.length, setup.refitChunk)) {
            const rep = fit.source.represent(Array.from(at, (i) => fit.positions[i]!), v);
            reps.push({ fit: k, at, rep: explicit ? rep.keepExplicit() : rep.keepDetached() });
          }
        });
      });
      for (let it = 0; it < steps; it++) {
        tf.tidy(() => {
          // One pass folds every head into the shared directions.
          const widths = fits.map((f) => f.head.nOut);
          const foldedAll = directions === null ? null : tf.matMul(directions, tf.concat(fits.map((f) => f.head.wT), 1));
          const units: (tf.Tensor2D | null)[] = fits.map(() => null);
          const direct: (tf.Tensor2D | null)[] = fits.map(() => null);
          const gradB: (tf.Tensor | null)[] = fits.map(() => null);
          const add = <T extends tf.Tensor>(a: T | null, b: T | null): T | null => (a === null ? b : b === null ? a : (tf.add(a, b) as T));
          let col = 0;
          fits.forEach((fit, k) => {
            const folded = foldedAll === null ? fit.head.wT : (tf.slice(foldedAll, [0, col], [-1, widths[k]!]) as tf.Tensor2D);
            col += widths[k]!;
            for (const { at, rep } of reps.filter((r) => r.fit === k)) {
              const t = rowsOf(fit.targets, at);
              const dz = taskLossGradient(rep.logits(fit.head, rep.factored ? folded : fit.head.wT), t, fit.positions.length);
              const parts = rep.gradientParts(dz);
              units[k] = add(units[k]!, parts.units);
              direct[k] = add(direct[k]!, parts.direct);
              gradB[k] = add(gradB[k]!, tf.sum(dz, 0));
            }
          });
          // One pass maps every head's unit-space gradient back through the directions.
          const withUnits = fits.map((_, k) => k).filter((k) => units[k] !== null);
          const mapped = new Map<number, tf.Tensor2D>();
          if (withUnits.length > 0) {
            const all = tf.matMul(tf.concat(withUnits.map((k) => units[k]!), 0), directions!);
            let row = 0;
            for (const k of withUnits) {
              mapped.set(k, tf.slice(all, [row, 0], [widths[k]!, -1]) as tf.Tensor2D);
              row += widths[k]!;
            }
          }
          fits.forEach((fit, k) => {
            const g = add(mapped.get(k) ?? null, direct[k]!)!;
            fit.head.step(tf.transpose(g), gradB[k]!);
          });
        });
      }
    } finally {
      for (const { rep } of reps) rep.dispose();
    }
  };

  /** The heads re-fitted together: the adversaries, and the task head when it adapts. */
  const headFits = (): HeadFit[] => {
    const fits: HeadFit[] = folds.map((fold, f) => ({
      head: adversaries[f]!,
      source: setup.conceptSource!,
      positions: fold,
      targets: rowsOf(conceptTargets!, fold),
    }));
    if (adaptTaskHead) {
      const sample = shuffleInPlace(Int32Array.from(order), rng).slice(0, Math.min(nTask, TASK_HEAD_ROWS));
      fits.push({ head: taskHead, source: setup.taskSource, positions: sample, targets: rowsOf(taskTargets, sample) });
    }
    return fits;
  };
  const refit = (steps: number, temperature: number): void => {
    const fits = headFits();
    try {
      refitHeads(fits, steps, temperature);
    } finally {
      tf.dispose(fits.map((f) => f.targets));
    }
  };

  const bar = progress(setup.label, totalSteps, 'step');
  try {
    if (concept) refit(o.adversaryInitSteps, o.tempStart);
    let step = 0;
    for (let epoch = 0; epoch < o.epochs; epoch++) {
      shuffleInPlace(order, rng);
      for (let start = 0; start < nTask; start += o.batchSize) {
        const temperature = temperatureAt(step, totalSteps, o.tempStart, o.tempEnd);
        if (concept && step > 0 && step % o.adversaryEvery === 0) refit(o.adversarySteps, temperature);
        const pos = order.slice(start, Math.min(nTask, start + o.batchSize));
        // Concept batch from fold f, scored by the adversary fitted on the other fold.
        const fold = step % Math.max(1, folds.length);
        const conceptPos = folds.length === 0 ? undefined : nextConceptBatch(fold);
        const adversary = adversaries.length === 0 ? undefined : adversaries[(fold + 1) % adversaries.length]!;
        const partTensors: tf.Scalar[] = [];
        const { value, grads } = tf.variableGrads(() => {
          const v = view(temperature);
          const rep = setup.taskSource.represent(pos, v);
          const yb = tf.gather(taskTargets, tf.tensor1d(pos, 'int32')) as tf.Tensor2D;
          const lTask = taskLoss(logitsOf(rep, taskHead, v, setup.taskSource), yb);
          partTensors.push(tf.keep(tf.clone(lTask)));
          let loss: tf.Scalar = lTask;
          if (adversary !== undefined && conceptPos !== undefined && o.conceptWeight > 0) {
            const zb = tf.gather(conceptTargets!, tf.tensor1d(conceptPos, 'int32')) as tf.Tensor2D;
            const cRep = setup.conceptSource!.represent(conceptPos, v);
            const lAdv = adversaryLoss(logitsOf(cRep, adversary, v, setup.conceptSource!), zb);
            partTensors.push(tf.keep(tf.clone(lAdv)));
            loss = tf.add(loss, tf.mul(lAdv, o.conceptWeight));
          }
          if (o.l1 > 0) {
            for (const g of v.gates.values()) loss = tf.add(loss, tf.mul(tf.sum(tf.sub(1, g)), o.l1));
          }
          return loss as tf.Scalar;
        }, trainable);
        try {
          optimizer.step(trainable.map((t) => grads[t.name]!));
          const loss = value.dataSync()[0]!;
          if (!Number.isFinite(loss)) throw new Error(`${setup.label}: the loss became ${loss} at step ${step} (temperature ${temperature})`);
          bar.tick(1, `loss ${loss.toFixed(4)}`);
          step++;
          setup.onStep?.({
            step,
            totalSteps,
            epoch,
            temperature,
            loss,
            taskLoss: partTensors[0]!.dataSync()[0]!,
            adversaryLoss: partTensors[1]?.dataSync()[0] ?? 0,
          });
        } finally {
          tf.dispose([value, ...Object.values(grads), ...partTensors]);
        }
      }
    }
  } finally {
    bar.done();
    optimizer.dispose();
    taskHead.dispose();
    for (const a of adversaries) a.dispose();
    tf.dispose([taskTargets, ...(conceptTargets === undefined ? [] : [conceptTargets])]);
    for (const { folded: f } of foldCache.values()) f.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// The eraser

/** What `loadMaskEraser` checks a checkpoint against and needs to apply it. */
export interface MaskLoadTarget {
  /** SAEs by hook (sae_mask): each checkpoint hook needs one of the checkpoint's width. */
  saes?: FitContext['saes'];
  /** The hooks the caller expects the eraser to edit (checked when given). */
  hooks?: readonly HookName[];
  /** The probe hook the caller evaluates at (checked when given). */
  probeHook?: HookName;
}

/** One hook's entry in the checkpoint JSON. */
export interface CheckpointHook {
  hook: HookName;
  units: number;
  dIn: number;
  [extra: string]: unknown;
}

interface CheckpointJson {
  format: typeof CHECKPOINT_FORMAT;
  version: 1;
  method: MaskMethod;
  probeHook: HookName;
  hooks: CheckpointHook[];
  options: Partial<MaskOptions>;
  /** Temperature of the soft gate at evaluation (when hardMask is false). */
  evalTemperature: number;
  retrainedProbe: string | null;
}

/** Tensors of the checkpoint file, read by name with clear errors. */
export interface CheckpointTensors {
  readonly path: string;
  float32(name: string, shape: readonly number[]): Float32Array;
}

const CHECKPOINT_FORMAT = 'sae-eraser/mask';
const RETRAINED_PROBE_FILE = 'retrained-probe.safetensors';

interface FittedHook {
  space: UnitSpace;
  logits: Float32Array;
  /** The gate applied at evaluation `[units]`. */
  gate: tf.Tensor1D;
  frame: UnitFrame;
}

/** A learned-mask eraser; the method files construct it with their `MaskKind`. */
export class MaskEraser implements Eraser {
  private fitted: FittedHook[] = [];
  private probeHook: HookName | undefined;
  private options: MaskOptions | undefined;
  private retrained: Probe | undefined;

  constructor(
    private readonly kind: MaskKind,
    private readonly defaults: Readonly<Record<string, unknown>> = {},
    private readonly hooks: MaskEraserHooks = {},
  ) {}

  get method(): MaskMethod {
    return this.kind.method;
  }

  /** Resolved options of the last fit or load. */
  get resolvedOptions(): MaskOptions | undefined {
    return this.options;
  }

  async fit(ctx: FitContext): Promise<void> {
    const method = this.kind.method;
    const o = resolveMaskOptions(method, { ...this.defaults, ...ctx.options }, ctx.seed);
    const hooks = o.hooks ?? [ctx.probeHook];
    checkHookPlacement(method, hooks, ctx);
    const probeHead = affineOfProbe(ctx.probe, ctx.probe.dIn, o.seed);
    const taskSplit = pickTaskSplit(method, o, ctx);
    const taskLabels = checkLabels(taskSplit.y, taskSplit.rows.length, ctx.probe.nClasses, `${method} task labels`);
    let conceptLabels: Int32Array | undefined;
    if (o.objective === 'concept') {
      const c = ctx.concept;
      if (c.rows.length === 0) throw new Error(`${method}: the concept objective needs a concept-labelled set (FitContext.concept is empty)`);
      conceptLabels = checkLabels(c.z, c.rows.length, 2, `${method} concept labels`);
      const least = Math.min(...[0, 1].map((c) => conceptLabels!.filter((v) => v === c).length));
      const need = o.adversaryCrossFit ? 2 : 1;
      if (least < need) throw new Error(`${method}: the concept set needs at least ${need} example(s) of each concept class (the smaller class has ${least})${need === 2 ? ', one per cross-fitting half' : ''}`);
    }
    this.release();
    const spaces: UnitSpace[] = [];
    const logitVars: tf.Variable[] = [];
    try {
      const m0 = initialLogit(o.initKeep, o.tempStart);
      const rng = mulberry32(o.seed + 1);
      for (const hook of hooks) {
        const space = this.kind.create(hook, ctx, o);
        spaces.push(space);
        const init = Float32Array.from({ length: space.nUnits }, () => m0 * (1 + o.initNoise * randomNormal(rng)));
        logitVars.push(variableFrom(tf.tensor1d(init), `mask_${hook}`));
      }
      const pooled = hooks.length === 1 && hooks[0] === ctx.probeHook;
      const source = (split: LabelledSplit): RowSource =>
        pooled ? new PooledSource(ctx.cache, spaces[0]!, split.rows) : new ModelSource(ctx, split.texts, spaces);
      if (!pooled) for (const split of [taskSplit, ctx.concept]) checkTexts(method, split);
      trainMasks({
        spaces,
        logits: logitVars,
        taskSource: source(taskSplit),
        taskLabels,
        conceptSource: o.objective === 'concept' ? source(ctx.concept) : undefined,
        conceptLabels,
        probeHead,
        options: o,
        label: `${method} (${o.objective} objective${pooled ? ', pooled cache' : ', model in the loop'})`,
        refitChunk: pooled ? 256 : 32,
        onStep: this.hooks.onStep,
      });
      this.options = o;
      this.probeHook = ctx.probeHook;
      this.fitted = spaces.map((space, i) => this.makeFitted(space, Float32Array.from(logitVars[i]!.dataSync()), o));
      spaces.length = 0;
    } finally {
      for (const s of spaces) s.dispose();
      tf.dispose(logitVars);
    }
    if (o.retrainHead) this.retrained = this.retrainHead(ctx);
  }

  private makeFitted(space: UnitSpace, logits: Float32Array, o: MaskOptions): FittedHook {
    space.freeze();
    const gate = tf.tidy(() => {
      const m = tf.tensor1d(logits);
      return o.hardMask ? hardGate(m) : softGate(m, o.tempEnd);
    });
    return { space, logits, gate, frame: space.frame() };
  }

  /** Trains a new probe on the erased training representations, with the biased probe's options. */
  private retrainHead(ctx: FitContext): Probe {
    const X = this.erasedSplit(ctx, ctx.train);
    try {
      const options = ctx.probe instanceof LinearProbe ? ctx.probe.options : {};
      const probe = new LinearProbe(X.shape[1], ctx.probe.nClasses, { ...options, progressLabel: undefined });
      probe.fit(X, ctx.train.y);
      return probe;
    } finally {
      X.dispose();
    }
  }

  /** Erased pooled representations of a split: from the cache, or by running the model with the edits. */
  private erasedSplit(ctx: FitContext, split: LabelledSplit): tf.Tensor2D {
    const pooled = this.erasePooled(ctx.cache, split.rows);
    if (pooled !== undefined) return pooled;
    const edits = this.edits();
    const parts: tf.Tensor2D[] = [];
    try {
      for (const pos of chunks(split.texts.length, 32)) {
        parts.push(
          tf.tidy(() => {
            const batch = ctx.tokenize(Array.from(pos, (p) => split.texts[p]!));
            const { captures } = ctx.model.run(batch, { capture: [ctx.probeHook], edits, stopAfter: ctx.probeHook });
            return meanPool(captures[ctx.probeHook]!, batch.attentionMask);
          }),
        );
      }
      return tf.concat(parts, 0);
    } finally {
      tf.dispose(parts);
    }
  }

  private requireFitted(what: string): void {
    if (this.fitted.length === 0) throw new Error(`${this.kind.method}: ${what} before fit() or load`);
  }

  edits(): Record<HookName, Edit> {
    this.requireFitted('edits()');
    const out: Record<HookName, Edit> = {};
    for (const f of this.fitted) {
      out[f.space.hook] = (x) => {
        checkWidth(this.kind.method, f.space.hook, f.space.dIn, x.shape[2]);
        return tf.tidy(() => f.frame.edit(x, f.gate));
      };
    }
    return out;
  }

  erasePooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D | undefined {
    this.requireFitted('erasePooled()');
    if (this.fitted.length !== 1 || this.fitted[0]!.space.hook !== this.probeHook) return undefined;
    const f = this.fitted[0]!;
    checkWidth(this.kind.method, f.space.hook, f.space.dIn, cache.dim(f.space.hook));
    const all = Array.from(rows);
    if (all.length === 0) return tf.zeros([0, f.space.dIn]) as tf.Tensor2D;
    const parts: tf.Tensor2D[] = [];
    try {
      // Chunks bound the dense [rows, units] codes an SAE decode needs.
      for (let s = 0; s < all.length; s += 256) parts.push(tf.tidy(() => f.frame.erasePooled(cache, all.slice(s, s + 256), f.gate)));
      return parts.length === 1 ? parts.pop()! : tf.concat(parts, 0);
    } finally {
      tf.dispose(parts);
    }
  }

  retrainedProbe(): Probe | undefined {
    return this.retrained;
  }

  /** Mask logits of a hook (a copy). */
  maskLogits(hook: HookName): Float32Array {
    const f = this.fitted.find((x) => x.space.hook === hook);
    if (f === undefined) throw new Error(`${this.kind.method}: no mask at hook "${hook}" (masked: ${this.fitted.map((x) => x.space.hook).join(', ')})`);
    return f.logits.slice();
  }

  /** A named unit tensor of a hook as saved (e.g. the DAS `rotation`), row-major. */
  unitTensor(hook: HookName, name: string): Float32Array {
    const f = this.fitted.find((x) => x.space.hook === hook);
    if (f === undefined) throw new Error(`${this.kind.method}: no mask at hook "${hook}"`);
    const all = f.space.savedTensors();
    try {
      const t = all[name];
      if (t === undefined) throw new Error(`${this.kind.method}: no unit tensor "${name}" at hook "${hook}"`);
      return Float32Array.from(t instanceof tf.Tensor ? t.dataSync() : (t.data as Float32Array));
    } finally {
      tf.dispose(Object.values(all).filter((t): t is tf.Tensor => t instanceof tf.Tensor));
    }
  }

  /** Indices of removed units (hard gate 0) per hook. */
  removedUnits(): Record<HookName, number[]> {
    const out: Record<HookName, number[]> = {};
    for (const f of this.fitted) {
      const idx: number[] = [];
      f.logits.forEach((m, j) => {
        if (!(m > 0)) idx.push(j);
      });
      out[f.space.hook] = idx;
    }
    return out;
  }

  describe(): EraserDescription {
    this.requireFitted('describe()');
    const removed = this.removedUnits();
    const kindWord: Record<UnitKind, string> = { sae_features: 'SAE features', neurons: 'neurons', directions: 'rotated directions' };
    const details: EraserDescription['removed'] = {};
    const phrases: string[] = [];
    let total = 0;
    for (const f of this.fitted) {
      const idx = removed[f.space.hook]!;
      total += idx.length;
      details[f.space.hook] = f.space.unitKind === 'directions' ? { kind: 'directions', indices: idx, rank: idx.length } : { kind: f.space.unitKind, indices: idx };
      const shown = idx.length <= 10 ? idx.join(', ') : `${idx.slice(0, 10).join(', ')}, ...`;
      phrases.push(`${idx.length} of ${f.space.nUnits} ${kindWord[f.space.unitKind]} at ${f.space.hook}${idx.length > 0 ? ` (${shown})` : ''}`);
    }
    return {
      method: this.kind.method,
      hooks: this.fitted.map((f) => f.space.hook),
      unitsRemoved: total,
      summary: `${this.kind.method} (${this.options!.objective} objective${this.options!.hardMask ? '' : ', soft mask'}) removes ${phrases.join('; ')}`,
      removed: details,
    };
  }

  save(dir: string): void {
    this.requireFitted('save()');
    const tensors: Record<string, tf.Tensor | RawTensor> = {};
    for (const f of this.fitted) {
      tensors[`${f.space.hook}.mask_logits`] = { dtype: 'F32', shape: [f.logits.length], data: f.logits };
      for (const [name, t] of Object.entries(f.space.savedTensors())) tensors[`${f.space.hook}.${name}`] = t;
    }
    try {
      writeSafetensors(join(dir, 'eraser.safetensors'), tensors, { format: CHECKPOINT_FORMAT, method: this.kind.method });
    } finally {
      tf.dispose(Object.values(tensors).filter((t): t is tf.Tensor => t instanceof tf.Tensor));
    }
    if (this.retrained !== undefined) this.retrained.save(join(dir, RETRAINED_PROBE_FILE));
    const json: CheckpointJson = {
      format: CHECKPOINT_FORMAT,
      version: 1,
      method: this.kind.method,
      probeHook: this.probeHook!,
      hooks: this.fitted.map((f) => ({ hook: f.space.hook, units: f.space.nUnits, dIn: f.space.dIn, ...f.space.checkpointInfo() })),
      options: savedOptions(this.kind.method, this.options!),
      evalTemperature: this.options!.tempEnd,
      retrainedProbe: this.retrained === undefined ? null : RETRAINED_PROBE_FILE,
    };
    writeJsonAtomic(join(dir, 'eraser.json'), json);
  }

  /** Restores a checkpoint written by `save` into this (unfitted) eraser; see `loadMaskEraser`. */
  loadFrom(dir: string, target: MaskLoadTarget): this {
    const method = this.kind.method;
    const jsonPath = join(dir, 'eraser.json');
    if (!existsSync(jsonPath)) throw new Error(`${dir}: not a mask eraser checkpoint (no eraser.json)`);
    let json: CheckpointJson;
    try {
      json = JSON.parse(readFileSync(jsonPath, 'utf8')) as CheckpointJson;
    } catch (err) {
      throw new Error(`${jsonPath}: invalid JSON: ${(err as Error).message}`, { cause: err });
    }
    if (json.format !== CHECKPOINT_FORMAT) throw new Error(`${jsonPath}: field "format" is ${JSON.stringify(json.format)}, expected "${CHECKPOINT_FORMAT}"`);
    if (json.method !== method) throw new Error(`${jsonPath}: the checkpoint is a ${json.method} eraser, not ${method}`);
    if (!Array.isArray(json.hooks) || json.hooks.length === 0) throw new Error(`${jsonPath}: field "hooks" must be a non-empty list`);
    const saved = json.hooks.map((h) => h.hook);
    if (target.hooks !== undefined && (target.hooks.length !== saved.length || target.hooks.some((h, i) => h !== saved[i]))) {
      throw new Error(`${jsonPath}: the mask was made for hook(s) ${saved.join(', ')}, but hook(s) ${target.hooks.join(', ')} were asked for`);
    }
    if (target.probeHook !== undefined && target.probeHook !== json.probeHook) {
      throw new Error(`${jsonPath}: the mask was made for a probe reading hook ${json.probeHook}, but the probe here reads ${target.probeHook}`);
    }
    if (typeof json.options !== 'object' || json.options === null) throw new Error(`${jsonPath}: field "options" must be an object`);
    const options = resolveMaskOptions(method, json.options as Record<string, unknown>, 42);
    const safetensorsPath = join(dir, 'eraser.safetensors');
    const file = readSafetensors(safetensorsPath);
    const tensors: CheckpointTensors = {
      path: safetensorsPath,
      float32(name, shape) {
        if (!file.names().includes(name)) throw new Error(`${safetensorsPath}: missing tensor "${name}"`);
        const got = file.info(name).shape;
        if (got.length !== shape.length || got.some((v, i) => v !== shape[i])) {
          throw new Error(`${safetensorsPath}: tensor "${name}" has shape [${got.join(', ')}], expected [${shape.join(', ')}]`);
        }
        return file.float32(name);
      },
    };
    this.release();
    const fitted: FittedHook[] = [];
    try {
      for (const entry of json.hooks) {
        const space = this.kind.restore(entry, tensors, target, options);
        if (space.nUnits !== entry.units) {
          space.dispose();
          throw new Error(`${jsonPath}: hook ${entry.hook} has ${entry.units} units in the checkpoint, the restored units have ${space.nUnits}`);
        }
        fitted.push(this.makeFitted(space, tensors.float32(`${entry.hook}.mask_logits`, [entry.units]), options));
      }
    } catch (err) {
      for (const f of fitted) disposeFitted(f);
      throw err;
    }
    this.fitted = fitted;
    this.options = options;
    this.probeHook = json.probeHook;
    if (json.retrainedProbe !== null) this.retrained = loadProbe(join(dir, json.retrainedProbe));
    return this;
  }

  private release(): void {
    for (const f of this.fitted) disposeFitted(f);
    this.fitted = [];
    this.retrained?.dispose();
    this.retrained = undefined;
  }

  dispose(): void {
    this.release();
  }
}

/** Options as saved in a checkpoint: those that apply to the method (read back by `resolveMaskOptions`). */
function savedOptions(method: MaskMethod, o: MaskOptions): Partial<MaskOptions> {
  const out: Partial<MaskOptions> = { ...o };
  if (method !== 'sae_mask') delete out.keepError;
  if (out.hooks === undefined) delete out.hooks;
  return out;
}

function disposeFitted(f: FittedHook): void {
  f.gate.dispose();
  f.space.dispose();
}

/** Every masked hook must exist and sit at or before the probe hook. */
function checkHookPlacement(method: MaskMethod, hooks: readonly HookName[], ctx: FitContext): void {
  const names = ctx.model.hookNames;
  const probeAt = names.indexOf(ctx.probeHook);
  if (probeAt < 0) throw new Error(`${method}: the probe hook "${ctx.probeHook}" is not a hook of the model (hooks: ${names.join(', ')})`);
  for (const h of hooks) {
    const at = names.indexOf(h);
    if (at < 0) throw new Error(`${method}: option hooks names "${h}", which is not a hook of the model (hooks: ${names.join(', ')})`);
    if (at > probeAt) {
      throw new Error(`${method}: hook "${h}" comes after the probe hook "${ctx.probeHook}", so a mask there could not change what the probe reads; mask at or before the probe hook`);
    }
  }
}

function pickTaskSplit(method: MaskMethod, o: MaskOptions, ctx: FitContext): LabelledSplit {
  if (o.objective === 'task' && o.taskSplit === 'balanced') {
    if (ctx.balanced === undefined) throw new Error(`${method}: taskSplit "balanced" needs balanced training data (FitContext.balanced is not given)`);
    return ctx.balanced;
  }
  if (ctx.train.rows.length === 0) throw new Error(`${method}: the training split is empty`);
  return ctx.train;
}

function checkTexts(method: MaskMethod, split: LabelledSplit): void {
  if (split.texts.length !== split.rows.length) {
    throw new Error(`${method}: a mask upstream of the probe hook reruns the model, which needs the split's texts (${split.texts.length} texts for ${split.rows.length} rows)`);
  }
}
