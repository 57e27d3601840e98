/**
 * Linear (logistic-regression) probe, trained as in Sparse Feature Circuits' SHIFT experiments:
 * `nn.Linear(dIn, 1)` on pooled activations, BCE with logits, `torch.optim.AdamW(lr=1e-2)` (so
 * betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on weight and bias), batches of 128 in the order
 * the data comes in (the SHIFT splits are already shuffled with a seed), seed 42.
 *
 * Length of training: the paper trains 1 epoch (`epochs: 1`), which on a split of a few hundred
 * rows is a handful of steps and leaves the probe far from its optimum (an "oracle" then does worse
 * than the biased probe). The default, `epochs: "converge"`, trains until the mean training loss of
 * an epoch has not improved on the best so far by more than `tolerance` nats (relative above a loss
 * of 1; on separable data the loss only creeps towards 0, which is not worth more epochs) for `patience`
 * epochs in a row, or `maxEpochs` is reached; the fit report says how many epochs and steps ran.
 *
 * Model: z = X W^T + b with W [out, dIn], b [out]; out = 1 for two classes (z > 0 means class 1),
 * out = C for C > 2 classes (softmax cross-entropy, argmax prediction).
 * Loss (mean over the batch of B rows) and its gradient with respect to the logits:
 *   binary:     l = max(z, 0) - z y + log(1 + exp(-|z|)),   dl/dz = (sigmoid(z) - y) / B
 *   multiclass: l = logsumexp(z) - z_y,                    dl/dz = (softmax(z) - onehot(y)) / B
 * and dW = (dl/dz)^T X, db = sum over rows of dl/dz; the gradients are written out rather than
 * taken by autograd (cheaper, and the formula is the documentation).
 *
 * Initialisation follows nn.Linear's distribution, U(-1/sqrt(dIn), 1/sqrt(dIn)) for W and b, drawn
 * from the project PRNG with the seed (so the values are not torch's). Optimiser: our own AdamW
 * (src/probe/adamw.ts), which matches torch's step for step.
 */
import { z } from 'zod';
import { matMulT, tf } from '../engine/engine.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { progress } from '../util/progress.js';
import { mulberry32, shuffleInPlace } from '../data/prng.js';
import { AdamW } from './adamw.js';
import { checkLabels, type FitReport, type Labels, type Probe } from './probe.js';

/**
 * The probe recipe a config may set (`probe` in an experiment config). Every field is optional and
 * falls back to the default named in its description, so parsing stores exactly what the user wrote.
 */
export const linearProbeOptionsSchema = z
  .strictObject({
    lr: z.number().min(0).optional().describe('AdamW learning rate; default 1e-2.'),
    epochs: z
      .union([z.number().int().min(1), z.literal('converge')])
      .optional()
      .describe(
        'Passes over the training rows, or "converge" (default): until the epoch loss stops improving (see patience, tolerance, maxEpochs). The paper used 1.',
      ),
    maxEpochs: z.number().int().min(1).optional().describe('Upper bound on epochs when epochs is "converge"; default 1000.'),
    patience: z.number().int().min(1).optional().describe('Epochs without improvement that end a "converge" fit; default 5.'),
    tolerance: z
      .number()
      .min(0)
      .optional()
      .describe('Improvement of the epoch loss that counts as progress, in nats (relative to the loss when above 1); default 1e-4.'),
    batchSize: z.number().int().min(1).optional().describe('Rows per optimiser step; default 128.'),
    weightDecay: z.number().min(0).optional().describe("AdamW decoupled weight decay; default 0.01 (torch's AdamW default, which the paper used)."),
    seed: z.number().int().optional().describe('Seed for the initialisation and, when `shuffle`, the batch order; default 42.'),
    shuffle: z
      .boolean()
      .optional()
      .describe('Reshuffle the rows every epoch (seeded). Default false: batches follow the data order, as in the paper, where the split itself was shuffled.'),
    warmStart: z.boolean().optional().describe('Keep the current weights instead of re-initialising at each fit. Default false.'),
  })
  .describe('Linear probe recipe (logistic regression trained with AdamW); unset fields take the defaults named here.');

export type LinearProbeOptions = z.output<typeof linearProbeOptionsSchema> & {
  /** When set, training reports through the progress helper under this label (set by code, not by configs). */
  progressLabel?: string;
};

export const LINEAR_PROBE_KIND = 'linear';

/** Options with every default filled in (what `LinearProbe.options` holds and `save` stores). */
export interface ResolvedLinearProbeOptions {
  lr: number;
  epochs: number | 'converge';
  maxEpochs: number;
  patience: number;
  tolerance: number;
  batchSize: number;
  weightDecay: number;
  seed: number;
  shuffle: boolean;
  warmStart: boolean;
  progressLabel: string | undefined;
}

function resolve(options: LinearProbeOptions): ResolvedLinearProbeOptions {
  const o: ResolvedLinearProbeOptions = {
    lr: options.lr ?? 1e-2,
    epochs: options.epochs ?? 'converge',
    maxEpochs: options.maxEpochs ?? 1000,
    patience: options.patience ?? 5,
    tolerance: options.tolerance ?? 1e-4,
    batchSize: options.batchSize ?? 128,
    weightDecay: options.weightDecay ?? 0.01,
    seed: options.seed ?? 42,
    shuffle: options.shuffle ?? false,
    warmStart: options.warmStart ?? false,
    progressLabel: options.progressLabel,
  };
  if (o.epochs !== 'converge' && (!Number.isInteger(o.epochs) || o.epochs < 1)) {
    throw new Error(`linear probe: epochs must be a positive integer or "converge", got ${o.epochs}`);
  }
  for (const key of ['maxEpochs', 'patience'] as const) {
    if (!Number.isInteger(o[key]) || o[key] < 1) throw new Error(`linear probe: ${key} must be a positive integer, got ${o[key]}`);
  }
  if (!(o.tolerance >= 0)) throw new Error(`linear probe: tolerance must be a non-negative number, got ${o.tolerance}`);
  if (!Number.isInteger(o.batchSize) || o.batchSize < 1) throw new Error(`linear probe: batchSize must be a positive integer, got ${o.batchSize}`);
  if (!Number.isInteger(o.seed)) throw new Error(`linear probe: seed must be an integer, got ${o.seed}`);
  return o;
}

export class LinearProbe implements Probe {
  readonly kind = LINEAR_PROBE_KIND;
  readonly options: Readonly<ResolvedLinearProbeOptions>;
  /** Output units: 1 for a binary probe, nClasses otherwise. */
  readonly nOut: number;
  /** W^T, [dIn, nOut] (the transpose of torch's layout, so that logits = X @ wT + b). */
  private readonly wT: tf.Variable;
  /** b, [nOut]. */
  private readonly b: tf.Variable;
  private disposed = false;

  constructor(
    readonly dIn: number,
    readonly nClasses = 2,
    options: LinearProbeOptions = {},
  ) {
    if (!Number.isInteger(dIn) || dIn < 1) throw new Error(`linear probe: dIn must be a positive integer, got ${dIn}`);
    if (!Number.isInteger(nClasses) || nClasses < 2) throw new Error(`linear probe: nClasses must be an integer >= 2, got ${nClasses}`);
    this.options = resolve(options);
    this.nOut = nClasses === 2 ? 1 : nClasses;
    const [w, b] = this.initialValues();
    const [wInit, bInit] = [tf.tensor2d(w, [dIn, this.nOut]), tf.tensor1d(b)];
    this.wT = tf.variable(wInit, true);
    this.b = tf.variable(bInit, true);
    tf.dispose([wInit, bInit]);
  }

  /** nn.Linear's init distribution, U(-1/sqrt(dIn), 1/sqrt(dIn)), drawn in torch's [out, dIn] order. */
  private initialValues(): [Float32Array, Float32Array] {
    const rng = mulberry32(this.options.seed);
    const bound = 1 / Math.sqrt(this.dIn);
    const wTorch = new Float32Array(this.nOut * this.dIn);
    for (let i = 0; i < wTorch.length; i++) wTorch[i] = (2 * rng() - 1) * bound;
    const b = new Float32Array(this.nOut);
    for (let i = 0; i < b.length; i++) b[i] = (2 * rng() - 1) * bound;
    return [transposeFlat(wTorch, this.nOut, this.dIn), b];
  }

  private checkAlive(): void {
    if (this.disposed) throw new Error('linear probe: used after dispose()');
  }

  private checkInput(X: tf.Tensor, what: string): void {
    if (X.rank !== 2 || X.shape[1] !== this.dIn) {
      throw new Error(`linear probe: ${what} must be [n, ${this.dIn}], got [${X.shape.join(', ')}]`);
    }
  }

  /** Weight in torch layout [nOut, dIn] and bias [nOut], as plain arrays. */
  parameters(): { weight: Float32Array; bias: Float32Array } {
    this.checkAlive();
    const wT = this.wT.dataSync() as Float32Array;
    return { weight: transposeFlat(wT, this.dIn, this.nOut), bias: Float32Array.from(this.b.dataSync()) };
  }

  /** Sets the weight ([nOut, dIn], torch layout) and bias ([nOut]). */
  setParameters(weight: Float32Array, bias: Float32Array): void {
    this.checkAlive();
    if (weight.length !== this.nOut * this.dIn) throw new Error(`linear probe: weight has ${weight.length} values, expected ${this.nOut} x ${this.dIn}`);
    if (bias.length !== this.nOut) throw new Error(`linear probe: bias has ${bias.length} values, expected ${this.nOut}`);
    tf.tidy(() => {
      this.wT.assign(tf.tensor2d(transposeFlat(weight, this.nOut, this.dIn), [this.dIn, this.nOut]));
      this.b.assign(tf.tensor1d(bias));
    });
  }

  fit(X: tf.Tensor2D, y: Labels): FitReport {
    this.checkAlive();
    this.checkInput(X, 'X');
    const n = X.shape[0];
    if (n === 0) throw new Error('linear probe: cannot fit on 0 rows');
    const labels = checkLabels(y, n, this.nClasses, 'linear probe labels');
    const o = this.options;
    if (!o.warmStart) {
      const [w, b] = this.initialValues();
      this.setParameters(transposeFlat(w, this.dIn, this.nOut), b);
    }
    const optimizer = new AdamW([this.wT, this.b], { lr: o.lr, weightDecay: o.weightDecay });
    // Targets: [n, 1] float for BCE, [n, C] one-hot for softmax.
    const targets = tf.tidy(() =>
      this.nOut === 1 ? tf.tensor2d(Float32Array.from(labels), [n, 1]) : tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), this.nClasses), 'float32'),
    );
    const stepsPerEpoch = Math.ceil(n / o.batchSize);
    const converge = o.epochs === 'converge';
    const maxEpochs = converge ? o.maxEpochs : (o.epochs as number);
    const losses = new Float32Array(stepsPerEpoch * maxEpochs);
    // A converging fit has no known length: the bar counts steps without a total.
    const bar = o.progressLabel !== undefined ? progress(o.progressLabel, converge ? 0 : losses.length, 'step') : undefined;
    let best = Infinity;
    let stale = 0;
    let epochs = 0;
    // Batch order stream, separate from the init stream so warm starts see the same orders.
    const orderRng = mulberry32((o.seed + 1) | 0);
    const order = Int32Array.from({ length: n }, (_, i) => i);
    try {
      let k = 0;
      for (let epoch = 0; epoch < maxEpochs; epoch++) {
        if (o.shuffle) shuffleInPlace(order, orderRng);
        const epochStart = k;
        for (let start = 0; start < n; start += o.batchSize) {
          const size = Math.min(o.batchSize, n - start);
          const loss = tf.tidy(() => {
            const [xb, tb] = o.shuffle
              ? [
                  tf.gather(X, tf.tensor1d(order.subarray(start, start + size), 'int32')),
                  tf.gather(targets, tf.tensor1d(order.subarray(start, start + size), 'int32')),
                ]
              : [tf.slice(X, [start, 0], [size, this.dIn]), tf.slice(targets, [start, 0], [size, this.nOut])];
            return this.step(xb as tf.Tensor2D, tb as tf.Tensor2D, optimizer);
          });
          losses[k++] = loss.dataSync()[0]!;
          loss.dispose();
          bar?.tick(1, `loss ${losses[k - 1]!.toFixed(4)}`);
        }
        epochs = epoch + 1;
        if (converge) {
          let sum = 0;
          for (let i = epochStart; i < k; i++) sum += losses[i]!;
          const mean = sum / (k - epochStart);
          if (best === Infinity || mean < best - o.tolerance * Math.max(1, Math.abs(best))) {
            best = mean;
            stale = 0;
          } else if (++stale >= o.patience) break;
        }
      }
    } finally {
      targets.dispose();
      optimizer.dispose();
    }
    bar?.done();
    const steps = epochs * stepsPerEpoch;
    return { losses: losses.slice(0, steps), steps, epochs };
  }

  /** One AdamW step on a batch; returns the batch's mean loss (before the step). */
  private step(xb: tf.Tensor2D, targets: tf.Tensor2D, optimizer: AdamW): tf.Scalar {
    const rows = xb.shape[0];
    const z = tf.add(matMulT(xb, this.wT), this.b) as tf.Tensor2D;
    let loss: tf.Scalar;
    let probs: tf.Tensor;
    if (this.nOut === 1) {
      // Stable BCE with logits: max(z, 0) - z y + log(1 + exp(-|z|)).
      loss = tf.mean(tf.add(tf.sub(tf.relu(z), tf.mul(z, targets)), tf.log1p(tf.exp(tf.neg(tf.abs(z)))))) as tf.Scalar;
      probs = tf.sigmoid(z);
    } else {
      const lse = tf.logSumExp(z, 1);
      loss = tf.mean(tf.sub(lse, tf.sum(tf.mul(z, targets), 1))) as tf.Scalar;
      probs = tf.softmax(z);
    }
    const dz = tf.div(tf.sub(probs, targets), rows);
    const gradW = matMulT(xb, dz, true, false);
    const gradB = tf.sum(dz, 0);
    optimizer.step([gradW, gradB]);
    return loss;
  }

  logits(X: tf.Tensor2D): tf.Tensor {
    this.checkAlive();
    this.checkInput(X, 'X');
    return tf.tidy(() => {
      const z = tf.add(matMulT(X, this.wT), this.b);
      return this.nOut === 1 ? tf.reshape(z, [X.shape[0]]) : z;
    });
  }

  predict(X: tf.Tensor2D): Int32Array {
    const z = this.logits(X);
    try {
      const pred = tf.tidy(() => (this.nOut === 1 ? tf.cast(tf.greater(z, 0), 'int32') : tf.argMax(z, 1)));
      const out = Int32Array.from(pred.dataSync());
      pred.dispose();
      return out;
    } finally {
      z.dispose();
    }
  }

  /** Safetensors with `weight` [nOut, dIn] and `bias` [nOut] (torch's nn.Linear names and layout). */
  save(path: string): void {
    const { weight, bias } = this.parameters();
    writeSafetensors(
      path,
      {
        weight: { dtype: 'F32', shape: [this.nOut, this.dIn], data: weight },
        bias: { dtype: 'F32', shape: [this.nOut], data: bias },
      },
      {
        probe_kind: LINEAR_PROBE_KIND,
        d_in: String(this.dIn),
        n_classes: String(this.nClasses),
        options: JSON.stringify(this.options),
      },
    );
  }

  /** Reads a probe written by `save`; training options come back from the file unless overridden. */
  static load(path: string, overrides: LinearProbeOptions = {}): LinearProbe {
    const file = readSafetensors(path);
    const kind = file.metadata.probe_kind;
    if (kind !== LINEAR_PROBE_KIND) throw new Error(`${path}: metadata probe_kind is ${JSON.stringify(kind)}, expected "${LINEAR_PROBE_KIND}"`);
    const dIn = Number(file.metadata.d_in);
    const nClasses = Number(file.metadata.n_classes);
    if (!Number.isInteger(dIn) || dIn < 1) throw new Error(`${path}: metadata d_in is ${JSON.stringify(file.metadata.d_in)}, expected a positive integer`);
    if (!Number.isInteger(nClasses) || nClasses < 2)
      throw new Error(`${path}: metadata n_classes is ${JSON.stringify(file.metadata.n_classes)}, expected an integer >= 2`);
    const nOut = nClasses === 2 ? 1 : nClasses;
    const ws = file.info('weight').shape;
    if (ws.length !== 2 || ws[0] !== nOut || ws[1] !== dIn)
      throw new Error(`${path}: tensor "weight" has shape [${ws.join(', ')}], expected [${nOut}, ${dIn}]`);
    const bs = file.info('bias').shape;
    if (bs.length !== 1 || bs[0] !== nOut) throw new Error(`${path}: tensor "bias" has shape [${bs.join(', ')}], expected [${nOut}]`);
    let saved: LinearProbeOptions = {};
    if (file.metadata.options !== undefined) {
      try {
        saved = JSON.parse(file.metadata.options) as LinearProbeOptions;
      } catch (err) {
        throw new Error(`${path}: metadata options is not valid JSON: ${(err as Error).message}`, { cause: err });
      }
    }
    const probe = new LinearProbe(dIn, nClasses, { ...saved, ...overrides });
    probe.setParameters(file.float32('weight'), file.float32('bias'));
    return probe;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.wT.dispose();
    this.b.dispose();
  }
}

/** Transposes a row-major [rows, cols] matrix into a new row-major [cols, rows] one. */
function transposeFlat(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

/** Loads any probe checkpoint by its `probe_kind` metadata. */
export function loadProbe(path: string): Probe {
  const kind = readSafetensors(path).metadata.probe_kind;
  if (kind === LINEAR_PROBE_KIND) return LinearProbe.load(path);
  throw new Error(`${path}: unknown probe_kind ${JSON.stringify(kind)} (known: ${LINEAR_PROBE_KIND})`);
}
