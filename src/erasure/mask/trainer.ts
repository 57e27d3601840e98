/**
 * `MaskTrainer`: trains the mask logits (and the units' own parameters, the DAS directions) of every
 * masked hook, one optimiser step per `step()`. It owns the logit variables and their Adam
 * optimiser, the task head and the adversaries (with theirs), and re-fits the heads at their
 * schedule. Its `config` (the resolved options) is what checkpoints save as `options`.
 *
 * Objectives (option `objective`), with x' the masked representation (units.ts) and s the gate:
 *
 *  - `task` (the original method): with the frozen biased probe p on the task split,
 *      L = CE(p(x'), y) + l1 * sum_j (1 - s_j).
 *  - `concept` (no balanced task labels needed): on the ambiguous training split keep the task,
 *    while a small concept-labelled set drives an adversary g to chance:
 *      L = CE(h(x'_train), y) + conceptWeight * L_adv(g(x'_concept)) + l1 * sum_j (1 - s_j),
 *    with L_adv the difference of the class means of g's logits (losses.ts). g is a logistic
 *    probe on the current (soft-)masked concept representations, fitted for `adversaryInitSteps`
 *    full-batch AdamW steps before the first mask step and re-fitted (warm-started,
 *    `adversarySteps` steps) every `adversaryEvery` mask steps, two of them when cross-fitting
 *    (folds.ts). Because g is re-fitted on the masked representations, scaling a concept unit
 *    down does not help (g's weight grows to compensate): only removing it does.
 *    The task head h starts as the biased probe; with `taskHead: 'adapt'` it is re-fitted with the
 *    adversaries (same steps, on a fresh random sample of 128 training rows), so removing concept
 *    units stops costing task loss once h relies on the task units instead; with `frozen` the
 *    biased head keeps pulling the concept units back. Heads change only at re-fits, so between
 *    re-fits their weights stay folded into fixed unit directions (representation.ts).
 *
 *    With `meanDifferenceWeight` w_m > 0 (das_mask) the class-mean difference of the whole concept
 *    set, LEACE's statistic (a concept set is linearly guarded iff it is 0), is driven to 0 too:
 *      L += w_m |δ'|^2 / |δ|^2,
 *    δ' the weighted class-mean difference of the masked concept representations (weights of
 *    square-root balancing, losses.ts `balancingWeights` with power 1/2, under `balanceConcept`;
 *    none otherwise) and δ the same unmasked: the squared fraction of the difference the mask keeps.
 *    It is computed on the whole set at every step, so it has no batch noise (the argument of
 *    losses.ts against convex adversary losses is about batch estimates); the logistic adversaries,
 *    fitted on half the set each, stop finding the difference before it is gone. The difference is
 *    one vector, so one learned direction can take it all. Mean pooling commutes with linear units
 *    (directions, neurons) at the probe hook, so there δ' = edit(δ) costs one row; otherwise (an SAE
 *    mask, or a hook upstream) every step represents the whole concept set.
 *
 * The l1 term prices a removed unit at l1 loss units: for the concept objective, a unit that
 * lowers the adversary's class separation by less than l1 / conceptWeight logits is not worth
 * removing.
 */
import { tf, variableFrom } from '../../engine/engine.js';
import { mulberry32, randomNormal, shuffleInPlace, type Rng } from '../../data/prng.js';
import { AdamW } from '../../probe/adamw.js';
import { initialLogit, softGate, temperatureAt } from './gate.js';
import { TrainableHead, type AffineHead } from './affine-heads.js';
import { adversaryLoss, balancingWeights, meanDifferenceContrast, targetsOf, taskLoss } from './losses.js';
import { conceptFolds, FoldBatches } from './folds.js';
import { refitHeads, rowsOf, type HeadFit } from './refit.js';
import type { Represented } from './representation.js';
import { PooledSource, type RowSource, type StepView } from './sources.js';
import type { UnitSpace } from './units.js';
import type { MaskConfig } from './options.js';

/** The loss of one step and its parts (the l1 cost is the rest). */
export interface MaskLossParts {
  loss: number;
  taskLoss: number;
  /** The adversary loss before weighting (0 for the task objective). */
  adversaryLoss: number;
  /** The mean-difference term before weighting: |δ'|^2 / |δ|^2, the squared fraction of the concept set's class-mean difference the mask keeps (0 when off). */
  meanDifference: number;
}

/** What `step()` reports (also passed to `onStep`). */
export interface MaskStepInfo extends MaskLossParts {
  /** Steps taken so far, this one included. */
  step: number;
  totalSteps: number;
  epoch: number;
  temperature: number;
}

/** Callbacks during training (diagnostics, tests). */
export interface MaskTrainingCallbacks {
  /** Called after every optimiser step. */
  onStep?: (info: MaskStepInfo) => void;
}

/** What a trainer trains on. */
export interface MaskTrainerSetup {
  /** The units of each masked hook; the trainer trains their variables but does not own them. */
  spaces: readonly UnitSpace[];
  /** Rows of the task split and their task labels. */
  task: { source: RowSource; labels: Int32Array };
  /**
   * Rows of the concept-labelled set, their concept labels and (needed for `balanceConcept`) their
   * task labels: given exactly for the `concept` objective.
   */
  concept: { source: RowSource; labels: Int32Array; taskLabels?: Int32Array } | undefined;
  /** The biased probe's affine map: the task head's start. */
  probeHead: AffineHead;
  config: MaskConfig;
  /** Names the training in messages. */
  label: string;
  /** Rows per chunk when re-fitting heads (bounds memory on the model path). */
  refitChunk: number;
  callbacks?: MaskTrainingCallbacks;
}

/** Training rows of the adapting task head at each re-fit (a fresh random sample). */
const TASK_HEAD_ROWS = 128;

/** Power of the cell weights of the mean-difference term under `balanceConcept` (square-root balancing, docs/masks.md). */
const MEAN_DIFFERENCE_BALANCE = 0.5;

/** The mean-difference term (module docstring). */
interface MeanDifferenceTerm {
  /** `[n, 1]`: contrast^T x' is the weighted class-mean difference δ' of the concept rows (losses.ts `meanDifferenceContrast`). */
  contrast: tf.Tensor2D;
  /** Whether δ' = edit(δ) (linear units at the probe hook, on cached pooled values); else the whole concept set is represented. */
  viaEdit: boolean;
  /** The unmasked difference δ `[1, d]` and |δ|^2, set at the first step. */
  unmasked?: { delta: tf.Tensor2D; normSq: number };
}

export class MaskTrainer {
  readonly totalSteps: number;
  private readonly stepsPerEpoch: number;
  /** Mask logits, one variable `[units]` per space. */
  private readonly logits: tf.Variable<tf.Rank.R1>[];
  private readonly trainable: tf.Variable[];
  private readonly optimizer: AdamW;
  private readonly adaptTaskHead: boolean;
  private readonly taskHead: TrainableHead;
  /** Adversary f is fitted on concept fold f and scores batches of the other fold. */
  private readonly adversaries: TrainableHead[];
  /** Batch order, concept folds and head samples. */
  private readonly rng: Rng;
  private readonly conceptBatches: FoldBatches;
  private readonly order: Int32Array;
  private readonly taskTargets: tf.Tensor2D;
  private readonly conceptTargets: tf.Tensor2D | undefined;
  /** Concept row weights `[n, 1]` that balance the concept against the task (`balanceConcept`), or undefined. */
  private readonly conceptWeights: tf.Tensor2D | undefined;
  /** The mean-difference term (`meanDifferenceWeight` > 0), or undefined. */
  private readonly meanTerm: MeanDifferenceTerm | undefined;
  /** Head weights folded into fixed unit directions, by head version (heads change only at re-fits). */
  private readonly foldCache = new Map<TrainableHead, { version: number; folded: tf.Tensor2D }>();
  private steps = 0;
  private started = false;
  private last: MaskStepInfo | undefined;

  constructor(private readonly setup: MaskTrainerSetup) {
    const o = setup.config;
    if ((o.objective === 'concept') !== (setup.concept !== undefined))
      throw new Error(`${setup.label}: concept rows are given exactly for the concept objective`);
    // What is made so far, freed if a later part throws.
    const made: { dispose(): void }[] = [];
    const own = <T extends { dispose(): void }>(x: T): T => {
      made.push(x);
      return x;
    };
    try {
      const m0 = initialLogit(o.initKeep, o.tempStart);
      const init = mulberry32(o.seed + 1);
      this.logits = setup.spaces.map((space) =>
        own(variableFrom(tf.tensor1d(Float32Array.from({ length: space.nUnits }, () => m0 * (1 + o.initNoise * randomNormal(init)))), `mask_${space.hook}`)),
      );
      const nTask = setup.task.source.n;
      this.stepsPerEpoch = Math.ceil(nTask / o.batchSize);
      this.totalSteps = this.stepsPerEpoch * o.epochs;
      this.trainable = [...this.logits, ...setup.spaces.flatMap((s) => Object.values(s.variables))];
      this.optimizer = own(new AdamW(this.trainable, { lr: o.lr, weightDecay: 0 }));
      this.adaptTaskHead = setup.concept !== undefined && o.taskHead === 'adapt';
      this.taskHead = own(new TrainableHead(setup.probeHead, this.adaptTaskHead, o.headLr, 'task_head'));
      const zeroHead: AffineHead = { d: setup.probeHead.d, nOut: 1, wT: new Float32Array(setup.probeHead.d), b: new Float32Array(1) };
      this.rng = mulberry32(o.seed);
      const folds = setup.concept === undefined ? [] : conceptFolds(setup.concept.labels, o.adversaryCrossFit ? 2 : 1, this.rng);
      this.conceptBatches = new FoldBatches(folds, o.batchSize, this.rng);
      this.adversaries = folds.map(() => own(new TrainableHead(zeroHead, true, o.headLr, 'adversary')));
      this.taskTargets = own(targetsOf(setup.task.labels, this.taskHead.nOut));
      this.conceptTargets = setup.concept === undefined ? undefined : own(targetsOf(setup.concept.labels, 1));
      this.conceptWeights = undefined;
      if (setup.concept !== undefined && o.balanceConcept) {
        const { taskLabels, labels } = setup.concept;
        if (taskLabels === undefined) throw new Error(`${setup.label}: balanceConcept needs the task labels of the concept set`);
        const w = balancingWeights(taskLabels, labels);
        this.conceptWeights = own(tf.tensor2d(w, [w.length, 1]));
      }
      this.meanTerm = undefined;
      if (setup.concept !== undefined && (o.meanDifferenceWeight ?? 0) > 0) {
        const { taskLabels, labels, source } = setup.concept;
        // balanceConcept checked the task labels above.
        const c = meanDifferenceContrast(labels, o.balanceConcept ? balancingWeights(taskLabels!, labels, MEAN_DIFFERENCE_BALANCE) : undefined);
        const linear = setup.spaces.length === 1 && setup.spaces[0]!.unitKind !== 'sae_features';
        this.meanTerm = { contrast: own(tf.tensor2d(c, [c.length, 1])), viaEdit: linear && source instanceof PooledSource };
      }
      this.order = Int32Array.from({ length: nTask }, (_, i) => i);
    } catch (err) {
      for (const x of made.reverse()) x.dispose();
      throw err;
    }
  }

  /** The resolved options the trainer runs with. */
  get config(): Readonly<MaskConfig> {
    return this.setup.config;
  }

  /** Steps taken so far. */
  get stepsTaken(): number {
    return this.steps;
  }

  /** Whether all `totalSteps` steps have been taken. */
  get done(): boolean {
    return this.steps >= this.totalSteps;
  }

  /** The loss parts of the last step, or undefined before the first. */
  loss(): MaskLossParts | undefined {
    if (this.last === undefined) return undefined;
    const { loss, taskLoss, adversaryLoss, meanDifference } = this.last;
    return { loss, taskLoss, adversaryLoss, meanDifference };
  }

  /** The current mask logits of each space (copies). */
  maskLogits(): Float32Array[] {
    return this.logits.map((m) => Float32Array.from(m.dataSync()));
  }

  /**
   * One optimiser step of the mask (and unit parameters) on the next task batch (and concept
   * batch), after the heads' initial fit (first step) or re-fit (every `adversaryEvery` steps).
   */
  step(): MaskStepInfo {
    const o = this.setup.config;
    const { task, concept } = this.setup;
    if (this.done) throw new Error(`${this.setup.label}: all ${this.totalSteps} steps are taken`);
    if (!this.started) {
      this.started = true;
      if (concept !== undefined) this.refit(o.adversaryInitSteps, o.tempStart);
      if (this.meanTerm !== undefined) this.meanTerm.unmasked = this.unmaskedMeanDifference(this.meanTerm);
    }
    const step = this.steps;
    const epoch = Math.floor(step / this.stepsPerEpoch);
    const start = (step % this.stepsPerEpoch) * o.batchSize;
    if (start === 0) shuffleInPlace(this.order, this.rng);
    const temperature = temperatureAt(step, this.totalSteps, o.tempStart, o.tempEnd);
    if (concept !== undefined && step > 0 && step % o.adversaryEvery === 0) this.refit(o.adversarySteps, temperature);
    const pos = this.order.slice(start, Math.min(task.source.n, start + o.batchSize));
    // Concept batch from fold f, scored by the adversary fitted on the other fold.
    const nFolds = this.conceptBatches.folds.length;
    const fold = step % Math.max(1, nFolds);
    const conceptPos = nFolds === 0 ? undefined : this.conceptBatches.next(fold);
    const adversary = this.adversaries.length === 0 ? undefined : this.adversaries[(fold + 1) % this.adversaries.length]!;
    // The loss parts, kept past the tape for reporting.
    const parts: { task?: tf.Scalar; adversary?: tf.Scalar; mean?: tf.Scalar } = {};
    const { value, grads } = tf.variableGrads(() => {
      const v = this.view(temperature);
      const rep = task.source.represent(pos, v);
      const yb = tf.gather(this.taskTargets, tf.tensor1d(pos, 'int32')) as tf.Tensor2D;
      const lTask = taskLoss(this.logitsOf(rep, this.taskHead, v, task.source), yb);
      parts.task = tf.keep(tf.clone(lTask));
      let loss: tf.Scalar = lTask;
      if (adversary !== undefined && conceptPos !== undefined && o.conceptWeight > 0) {
        const zb = tf.gather(this.conceptTargets!, tf.tensor1d(conceptPos, 'int32')) as tf.Tensor2D;
        const cRep = concept!.source.represent(conceptPos, v);
        const wb = this.conceptWeights === undefined ? undefined : (tf.gather(this.conceptWeights, tf.tensor1d(conceptPos, 'int32')) as tf.Tensor2D);
        const lAdv = adversaryLoss(this.logitsOf(cRep, adversary, v, concept!.source), zb, wb);
        parts.adversary = tf.keep(tf.clone(lAdv));
        loss = tf.add(loss, tf.mul(lAdv, o.conceptWeight));
      }
      if (this.meanTerm !== undefined) {
        const lMean = this.meanDifferenceLoss(this.meanTerm, v);
        parts.mean = tf.keep(tf.clone(lMean));
        loss = tf.add(loss, tf.mul(lMean, o.meanDifferenceWeight!));
      }
      if (o.l1 > 0) {
        for (const g of v.gates.values()) loss = tf.add(loss, tf.mul(tf.sum(tf.sub(1, g)), o.l1));
      }
      return loss as tf.Scalar;
    }, this.trainable);
    let info: MaskStepInfo;
    try {
      this.optimizer.step(this.trainable.map((t) => grads[t.name]!));
      const loss = value.dataSync()[0]!;
      if (!Number.isFinite(loss)) throw new Error(`${this.setup.label}: the loss became ${loss} at step ${step} (temperature ${temperature})`);
      this.steps++;
      info = {
        step: this.steps,
        totalSteps: this.totalSteps,
        epoch,
        temperature,
        loss,
        taskLoss: parts.task!.dataSync()[0]!,
        adversaryLoss: parts.adversary?.dataSync()[0] ?? 0,
        meanDifference: parts.mean?.dataSync()[0] ?? 0,
      };
    } finally {
      tf.dispose([value, ...Object.values(grads), ...Object.values(parts)]);
    }
    this.last = info;
    this.setup.callbacks?.onStep?.(info);
    return info;
  }

  /** Gates at temperature T and frames of every masked hook (tensors belong to the caller's scope). */
  private view(temperature: number): StepView {
    const { spaces } = this.setup;
    return {
      gates: new Map(spaces.map((s, i) => [s.hook, softGate(this.logits[i]!, temperature)])),
      frames: new Map(spaces.map((s) => [s.hook, s.frame()])),
    };
  }

  /** V W for `head`: cached while the directions are fixed and the head unchanged. */
  private folded(head: TrainableHead, directions: tf.Tensor2D | null, fixed: boolean): tf.Tensor2D {
    if (directions === null) return head.wT;
    if (!fixed) return tf.matMul(directions, head.wT) as tf.Tensor2D;
    const hit = this.foldCache.get(head);
    if (hit !== undefined && hit.version === head.version) return hit.folded;
    const fresh = tf.keep(tf.matMul(directions, head.wT) as tf.Tensor2D);
    hit?.folded.dispose();
    this.foldCache.set(head, { version: head.version, folded: fresh });
    return fresh;
  }

  private logitsOf(rep: Represented, head: TrainableHead, v: StepView, source: RowSource): tf.Tensor2D {
    if (!rep.factored) return rep.logits(head, head.wT);
    const frame = v.frames.get(this.setup.spaces[0]!.hook)!;
    return rep.logits(head, this.folded(head, frame.directions, source.fixedDirections(v) !== null));
  }

  /** Re-fits the adversaries on their folds and, when it adapts, the task head on a fresh sample of task rows. */
  private refit(steps: number, temperature: number): void {
    const { task, concept } = this.setup;
    const fits: HeadFit[] = this.conceptBatches.folds.map((fold, f) => ({
      head: this.adversaries[f]!,
      source: concept!.source,
      positions: fold,
      targets: rowsOf(this.conceptTargets!, fold),
      weights: this.conceptWeights === undefined ? undefined : rowsOf(this.conceptWeights, fold),
    }));
    if (this.adaptTaskHead) {
      const sample = shuffleInPlace(Int32Array.from(this.order), this.rng).slice(0, Math.min(task.source.n, TASK_HEAD_ROWS));
      fits.push({ head: this.taskHead, source: task.source, positions: sample, targets: rowsOf(this.taskTargets, sample) });
    }
    try {
      refitHeads(fits, steps, () => this.view(temperature), this.setup.refitChunk);
    } finally {
      tf.dispose(fits.flatMap((f) => (f.weights === undefined ? [f.targets] : [f.targets, f.weights])));
    }
  }

  /** contrast^T x' `[1, d]` of the whole concept set under view `v` (in the caller's scope), chunk by chunk. */
  private conceptMeanDifference(contrast: tf.Tensor2D, v: StepView): tf.Tensor2D {
    const source = this.setup.concept!.source;
    const chunk = this.setup.refitChunk;
    let sum: tf.Tensor2D | null = null;
    for (let start = 0; start < source.n; start += chunk) {
      const at = Int32Array.from({ length: Math.min(chunk, source.n - start) }, (_, i) => start + i);
      // contrast^T x' in two parts (representation.ts): units V + direct.
      const parts = source.represent(at, v).gradientParts(tf.gather(contrast, tf.tensor1d(at, 'int32')) as tf.Tensor2D);
      let part = parts.direct;
      if (parts.units !== null) {
        const through = tf.matMul(parts.units, v.frames.get(this.setup.spaces[0]!.hook)!.directions!) as tf.Tensor2D;
        part = part === null ? through : (tf.add(part, through) as tf.Tensor2D);
      }
      sum = sum === null ? part : (tf.add(sum, part!) as tf.Tensor2D);
    }
    return sum!;
  }

  /** δ and |δ|^2: the concept set's weighted class-mean difference with every gate open (x' = x). */
  private unmaskedMeanDifference(term: MeanDifferenceTerm): { delta: tf.Tensor2D; normSq: number } {
    const delta = tf.tidy(() => {
      const v = this.view(this.setup.config.tempStart);
      for (const [hook, gate] of v.gates) v.gates.set(hook, tf.onesLike(gate));
      return this.conceptMeanDifference(term.contrast, v);
    });
    const normSq = tf.tidy(() => tf.sum(tf.square(delta)).dataSync()[0]!);
    if (!(normSq > 0)) {
      delta.dispose();
      throw new Error(
        `${this.setup.label}: the concept classes have the same mean representation, so there is no mean difference to remove (set meanDifferenceWeight to 0)`,
      );
    }
    return { delta, normSq };
  }

  /** |δ'|^2 / |δ|^2 under view `v` (differentiable; module docstring). */
  private meanDifferenceLoss(term: MeanDifferenceTerm, v: StepView): tf.Scalar {
    const { delta, normSq } = term.unmasked!;
    let masked: tf.Tensor2D;
    if (term.viaEdit) {
      const hook = this.setup.spaces[0]!.hook;
      const d = delta.shape[1];
      masked = tf.reshape(v.frames.get(hook)!.edit(tf.reshape(delta, [1, 1, d]) as tf.Tensor3D, v.gates.get(hook)!), [1, d]) as tf.Tensor2D;
    } else {
      masked = this.conceptMeanDifference(term.contrast, v);
    }
    return tf.div(tf.sum(tf.square(masked)), normSq) as tf.Scalar;
  }

  dispose(): void {
    this.optimizer.dispose();
    this.taskHead.dispose();
    for (const a of this.adversaries) a.dispose();
    tf.dispose([this.taskTargets, ...this.logits]);
    for (const t of [this.conceptTargets, this.conceptWeights]) t?.dispose();
    if (this.meanTerm !== undefined) tf.dispose([this.meanTerm.contrast, ...(this.meanTerm.unmasked === undefined ? [] : [this.meanTerm.unmasked.delta])]);
    for (const { folded } of this.foldCache.values()) folded.dispose();
    this.foldCache.clear();
  }
}
