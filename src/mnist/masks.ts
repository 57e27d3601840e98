/**
 * Learned masks over the MNIST CNN's hidden layer h `[n, H]`, for the three unit kinds of the main
 * experiment (src/erasure/mask/units.ts), with the same edit x' = sum_j s_j a_j(x) v_j + rest(x):
 *
 *   sae_mask     a = f = SAE encode(h), v_j = decoder row j, rest = b_dec + SAE error
 *                (h' = h - sum_j (1 - s_j) f_j v_j, so the SAE error is kept)
 *   neuron_mask  a = h, v_j = e_j, rest = 0                                 (h' = s ⊙ h)
 *   das_mask     a = h U, v_j = column j of U, rest = h - h U U^T          (h' = h - ((h U) ⊙ (1 - s)) U^T)
 *
 * with the gate s = sigmoid(m / T) and the annealed temperature of src/erasure/mask/gate.ts, and
 * for DAS k learned orthonormal directions U = householderBasis(V) `[H, k]` of
 * src/erasure/orthogonal.ts (k = H is the original full rotation), trained jointly with the gate.
 * The main experiment's `UnitSpace`s read pooled activations from an activation cache at a model
 * hook; here the activations are plain rows and the classifier head is the CNN's own output layer,
 * so this file keeps the math and not that plumbing.
 *
 * `MnistMaskTrainer` (a class owning its parameters, optimiser and config, with `step()` and
 * `loss()`, in the style of dictionary_learning's trainers) minimises the bounded objective of
 * objective.ts with the head frozen. Once trained, `apply` edits with the hard gate [m > 0]: a unit
 * is removed or kept, never scaled.
 */
import { tf, variableFrom } from '../engine/engine.js';
import { mulberry32, randomNormal, randomNormalArray, shuffleInPlace, type Rng } from '../data/prng.js';
import { AdamW } from '../probe/adamw.js';
import type { Sae } from '../sae/sae.js';
import { hardGate, initialLogit, softGate, temperatureAt } from '../erasure/mask/gate.js';
import { householderBasis } from '../erasure/orthogonal.js';
import { MNIST_CLASSES } from '../models/mnist-cnn.js';
import { erasureLoss } from './objective.js';
import type { MnistMaskMethod, MnistMaskOptions } from './options.js';

/** The units a mask gates over hidden rows `[B, H]`. */
export interface HiddenUnits {
  readonly method: MnistMaskMethod;
  /** Width H of the hidden layer. */
  readonly dIn: number;
  readonly nUnits: number;
  /** Trainable parameters besides the gate logits (the DAS Householder vectors), trained with them. */
  readonly variables: readonly tf.Variable[];
  /** h' for hidden rows `h [B, H]` and gate `[nUnits]`; differentiable in the gate and the variables. */
  edit(h: tf.Tensor2D, gate: tf.Tensor1D): tf.Tensor2D;
  /** Fixes the trained parameters (DAS: computes U once) for application. */
  freeze(): void;
  /** Tensors to save besides the gate logits, by name (copies the caller disposes). */
  saved(): Record<string, tf.Tensor>;
  dispose(): void;
}

/** neuron_mask: h' = s ⊙ h. */
export class NeuronUnits implements HiddenUnits {
  readonly method = 'neuron_mask' as const;
  readonly variables: readonly tf.Variable[] = [];
  constructor(readonly dIn: number) {}
  get nUnits(): number {
    return this.dIn;
  }
  edit(h: tf.Tensor2D, gate: tf.Tensor1D): tf.Tensor2D {
    return tf.mul(h, gate);
  }
  freeze(): void {}
  saved(): Record<string, tf.Tensor> {
    return {};
  }
  dispose(): void {}
}

/** sae_mask: h' = h - ((1 - s) ⊙ f) W_dec with f = encode(h); the SAE (not owned) stays fixed. */
export class SaeUnits implements HiddenUnits {
  readonly method = 'sae_mask' as const;
  readonly variables: readonly tf.Variable[] = [];
  /** W_dec `[dSae, H]`. */
  private readonly decoder: tf.Tensor2D;
  constructor(private readonly sae: Sae) {
    this.decoder = sae.decoderDirections();
  }
  get dIn(): number {
    return this.sae.dIn;
  }
  get nUnits(): number {
    return this.sae.dSae;
  }
  edit(h: tf.Tensor2D, gate: tf.Tensor1D): tf.Tensor2D {
    return tf.tidy(() => {
      const f = this.sae.encode(h) as tf.Tensor2D;
      return tf.sub(h, tf.matMul(tf.mul(f, tf.sub(1, gate)), this.decoder));
    });
  }
  freeze(): void {}
  saved(): Record<string, tf.Tensor> {
    return {};
  }
  dispose(): void {
    this.decoder.dispose();
  }
}

/**
 * das_mask: h' = h - ((h U) ⊙ (1 - s)) U^T for k learned orthonormal directions U `[H, k]` =
 * householderBasis(V), V `[k, H]` trained (Gaussian at the start: a random k-frame).
 */
export class SubspaceUnits implements HiddenUnits {
  readonly method = 'das_mask' as const;
  readonly variables: readonly tf.Variable[];
  private frozen: { u: tf.Tensor2D; uT: tf.Tensor2D } | undefined;
  constructor(
    readonly dIn: number,
    readonly nUnits: number,
    seed: number,
  ) {
    if (!Number.isInteger(nUnits) || nUnits < 1 || nUnits > dIn) throw new Error(`das_mask: the rank must be an integer in 1..${dIn}, got ${nUnits}`);
    this.variables = [variableFrom(tf.tensor2d(randomNormalArray(nUnits * dIn, seed), [nUnits, dIn]), 'mnist_das_householder')];
  }
  /** U `[H, k]`: the frozen one, or computed from the parameter (differentiable). */
  basis(): tf.Tensor2D {
    return this.frozen?.u ?? householderBasis(this.variables[0] as tf.Variable<tf.Rank.R2>);
  }
  edit(h: tf.Tensor2D, gate: tf.Tensor1D): tf.Tensor2D {
    return tf.tidy(() => {
      const u = this.basis();
      const uT = this.frozen?.uT ?? tf.transpose(u);
      return tf.sub(h, tf.matMul(tf.mul(tf.matMul(h, u), tf.sub(1, gate)), uT)) as tf.Tensor2D;
    });
  }
  freeze(): void {
    if (this.frozen !== undefined) return;
    const u = tf.tidy(() => householderBasis(this.variables[0] as tf.Variable<tf.Rank.R2>));
    this.frozen = { u, uT: tf.transpose(u) };
  }
  saved(): Record<string, tf.Tensor> {
    return { basis: tf.tidy(() => tf.clone(this.basis())) };
  }
  dispose(): void {
    tf.dispose([...this.variables]);
    if (this.frozen !== undefined) tf.dispose([this.frozen.u, this.frozen.uT]);
    this.frozen = undefined;
  }
}

/** The frozen classifier head: logits = h W + b. */
export interface FrozenHead {
  /** `[H, 10]` row-major. */
  weight: Float32Array;
  /** `[10]` */
  bias: Float32Array;
}

export interface MnistMaskTrainerSetup {
  /** The units to gate; the trainer trains their variables but does not own them. */
  units: HiddenUnits;
  head: FrozenHead;
  /** Hidden activations of the training rows, `[n * H]` row-major. */
  hidden: Float32Array;
  /** Digit of each training row. */
  labels: Uint8Array;
  /** Digits to erase. */
  erase: readonly number[];
  config: MnistMaskOptions;
  /** Seed of the initial-logit noise and the batch order. */
  seed: number;
}

/** What `step()` reports. */
export interface MnistMaskStepInfo {
  /** Steps taken, this one included. */
  step: number;
  totalSteps: number;
  temperature: number;
  loss: number;
  /** CE on the batch's kept digits. */
  keptLoss: number;
  /** U - log 10 on the batch's erased digits (>= 0; 0 = uniform predictions). */
  erasedLoss: number;
}

export class MnistMaskTrainer {
  readonly totalSteps: number;
  readonly n: number;
  private readonly logits: tf.Variable<tf.Rank.R1>;
  private readonly trainable: tf.Variable[];
  private readonly optimizer: AdamW;
  private readonly hidden: tf.Tensor2D;
  private readonly targets: tf.Tensor2D;
  private readonly erasedRows: tf.Tensor1D;
  private readonly headW: tf.Tensor2D;
  private readonly headB: tf.Tensor1D;
  private readonly rng: Rng;
  private readonly order: Int32Array;
  private readonly stepsPerEpoch: number;
  private steps = 0;
  private last: MnistMaskStepInfo | undefined;

  constructor(private readonly setup: MnistMaskTrainerSetup) {
    const { units, head, hidden, labels, erase, config: o } = setup;
    const d = units.dIn;
    this.n = labels.length;
    if (this.n === 0) throw new Error(`${units.method}: no training rows`);
    if (hidden.length !== this.n * d) throw new Error(`${units.method}: ${hidden.length} hidden values are not ${this.n} rows of width ${d}`);
    if (head.weight.length !== d * MNIST_CLASSES || head.bias.length !== MNIST_CLASSES) {
      throw new Error(`${units.method}: the head must be [${d}, ${MNIST_CLASSES}] with a bias of ${MNIST_CLASSES}`);
    }
    const erased = new Set(erase);
    this.stepsPerEpoch = Math.ceil(this.n / o.batchSize);
    this.totalSteps = this.stepsPerEpoch * o.epochs;
    this.rng = mulberry32(setup.seed);
    this.order = Int32Array.from({ length: this.n }, (_, i) => i);
    const noise = units.method === 'das_mask' ? o.dasInitNoise : 0;
    const init = mulberry32(setup.seed + 1);
    const m0 = initialLogit(o.initKeep, o.tempStart);
    this.logits = variableFrom(tf.tensor1d(Float32Array.from({ length: units.nUnits }, () => m0 * (1 + noise * randomNormal(init)))), `mnist_${units.method}`);
    this.trainable = [this.logits, ...units.variables];
    this.optimizer = new AdamW(this.trainable, { lr: o.lr, weightDecay: 0 });
    this.hidden = tf.tensor2d(hidden, [this.n, d]);
    this.targets = tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(Int32Array.from(labels), 'int32'), MNIST_CLASSES), 'float32') as tf.Tensor2D);
    this.erasedRows = tf.tensor1d(Float32Array.from(labels, (y) => (erased.has(y) ? 1 : 0)));
    this.headW = tf.tensor2d(head.weight, [d, MNIST_CLASSES]);
    this.headB = tf.tensor1d(head.bias);
  }

  /** The options the trainer runs with. */
  get config(): Readonly<MnistMaskOptions> {
    return this.setup.config;
  }

  get done(): boolean {
    return this.steps >= this.totalSteps;
  }

  /** The last step's report, or undefined before the first. */
  loss(): MnistMaskStepInfo | undefined {
    return this.last;
  }

  /** One Adam step of the gate logits (and the DAS directions) on the next batch. */
  step(): MnistMaskStepInfo {
    const o = this.setup.config;
    if (this.done) throw new Error(`${this.setup.units.method}: all ${this.totalSteps} steps are taken`);
    const step = this.steps;
    const start = (step % this.stepsPerEpoch) * o.batchSize;
    if (start === 0) shuffleInPlace(this.order, this.rng);
    const rows = this.order.slice(start, Math.min(this.n, start + o.batchSize));
    const temperature = temperatureAt(step, this.totalSteps, o.tempStart, o.tempEnd);
    const parts: tf.Scalar[] = [];
    const { value, grads } = tf.variableGrads(() => {
      const idx = tf.tensor1d(rows, 'int32');
      const gate = softGate(this.logits, temperature);
      const h = this.setup.units.edit(tf.gather(this.hidden, idx) as tf.Tensor2D, gate);
      const z = tf.add(tf.matMul(h, this.headW), this.headB) as tf.Tensor2D;
      const l = erasureLoss(z, tf.gather(this.targets, idx) as tf.Tensor2D, tf.gather(this.erasedRows, idx) as tf.Tensor1D, gate, o);
      parts.push(tf.keep(l.kept), tf.keep(l.erased));
      return l.loss;
    }, this.trainable);
    try {
      this.optimizer.step(this.trainable.map((t) => grads[t.name]!));
      const loss = value.dataSync()[0]!;
      if (!Number.isFinite(loss)) throw new Error(`${this.setup.units.method}: the loss became ${loss} at step ${step} (temperature ${temperature})`);
      this.steps++;
      this.last = {
        step: this.steps,
        totalSteps: this.totalSteps,
        temperature,
        loss,
        keptLoss: parts[0]!.dataSync()[0]!,
        erasedLoss: parts[1]!.dataSync()[0]!,
      };
    } finally {
      tf.dispose([value, ...Object.values(grads), ...parts]);
    }
    return this.last;
  }

  /** The gate logits (a copy). */
  maskLogits(): Float32Array {
    return Float32Array.from(this.logits.dataSync());
  }

  /** Units whose hard gate is 0 (logit <= 0). */
  unitsRemoved(): number {
    return this.maskLogits().reduce((k, m) => k + (m > 0 ? 0 : 1), 0);
  }

  /**
   * Hidden rows `[n * H]` edited with the hard gate [m > 0] (freezes the units: call once training
   * is over), `chunk` rows at a time.
   */
  apply(hidden: Float32Array, chunk = 1000): Float32Array {
    const { units } = this.setup;
    units.freeze();
    const d = units.dIn;
    const n = hidden.length / d;
    if (!Number.isInteger(n)) throw new Error(`${units.method}: ${hidden.length} hidden values are not rows of width ${d}`);
    const out = new Float32Array(hidden.length);
    const gate = hardGate(this.logits);
    try {
      for (let s = 0; s < n; s += chunk) {
        const m = Math.min(chunk, n - s);
        const edited = tf.tidy(() => units.edit(tf.tensor2d(hidden.subarray(s * d, (s + m) * d), [m, d]), gate));
        out.set(edited.dataSync(), s * d);
        edited.dispose();
      }
    } finally {
      gate.dispose();
    }
    return out;
  }

  dispose(): void {
    this.optimizer.dispose();
    tf.dispose([this.logits, this.hidden, this.targets, this.erasedRows, this.headW, this.headB]);
  }
}
