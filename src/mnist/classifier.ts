/**
 * Training and running the MNIST CNN (src/models/mnist-cnn.ts) of the digit erasure experiment.
 *
 * Training: softmax cross-entropy, Adam (our AdamW with weight decay 0) at `lr`, minibatches of
 * `batchSize` in a seeded order reshuffled every epoch. With only 8000 training images the network
 * overfits without augmentation, so each training image is read shifted by a random whole number of
 * pixels in [-maxShift, maxShift] along each axis (drawn per image and epoch from the seeded PRNG),
 * the classic MNIST augmentation; evaluation never shifts.
 */
import { tf } from '../engine/engine.js';
import { mulberry32, randomInt, shuffleInPlace } from '../data/prng.js';
import { MNIST_COLS, MNIST_ROWS } from '../data/mnist.js';
import { AdamW } from '../probe/adamw.js';
import { CONV_GRID, CONV_KERNEL, convPatches, MNIST_CLASSES, type MnistCnn } from '../models/mnist-cnn.js';
import { progress } from '../util/progress.js';

const PIXELS = MNIST_ROWS * MNIST_COLS;
const CELLS = CONV_GRID * CONV_GRID;
const PATCH = CONV_KERNEL * CONV_KERNEL;

/** Images as network inputs: normalised pixels `[n * 784]` and digits `[n]`. */
export interface MnistInputs {
  x: Float32Array;
  labels: Uint8Array;
  n: number;
}

export interface CnnTrainingOptions {
  /** Passes over the training images. */
  epochs: number;
  /** Images per optimiser step. */
  batchSize: number;
  /** Adam learning rate. */
  lr: number;
  /** Largest random shift in pixels along each axis (0: no augmentation). */
  maxShift: number;
  /** Seed of the batch order and the shifts. */
  seed: number;
  /** Progress label. */
  label?: string;
}

/** Mean training loss of each epoch. */
export interface CnnTrainingReport {
  epochLosses: number[];
  steps: number;
}

/** The images of `x` at positions `rows` (a new array). */
function gatherImages(x: Float32Array, rows: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rows.length * PIXELS);
  for (let k = 0; k < rows.length; k++) out.set(x.subarray(rows[k]! * PIXELS, (rows[k]! + 1) * PIXELS), k * PIXELS);
  return out;
}

/** Trains `model` in place on `data`. */
export function trainMnistCnn(model: MnistCnn, data: MnistInputs, options: CnnTrainingOptions): CnnTrainingReport {
  const { epochs, batchSize, lr, maxShift, seed } = options;
  if (!Number.isInteger(epochs) || epochs < 1) throw new Error(`MNIST CNN training: epochs must be a positive integer, got ${epochs}`);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`MNIST CNN training: batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isInteger(maxShift) || maxShift < 0 || maxShift > 4) throw new Error(`MNIST CNN training: maxShift must be an integer in 0..4, got ${maxShift}`);
  if (data.n === 0) throw new Error('MNIST CNN training: no training images');
  const rng = mulberry32(seed);
  const order = Int32Array.from({ length: data.n }, (_, i) => i);
  const optimizer = new AdamW(model.variables, { lr, weightDecay: 0 });
  const stepsPerEpoch = Math.ceil(data.n / batchSize);
  const bar = progress(options.label ?? 'mnist cnn', epochs * stepsPerEpoch, 'steps');
  const epochLosses: number[] = [];
  try {
    for (let epoch = 0; epoch < epochs; epoch++) {
      shuffleInPlace(order, rng);
      let sum = 0;
      for (let start = 0; start < data.n; start += batchSize) {
        const rows = order.subarray(start, Math.min(data.n, start + batchSize));
        const m = rows.length;
        let shifts: Int8Array | undefined;
        if (maxShift > 0) {
          shifts = new Int8Array(2 * m);
          for (let i = 0; i < 2 * m; i++) shifts[i] = randomInt(rng, 2 * maxShift + 1) - maxShift;
        }
        const { patches, transposed } = convPatches(gatherImages(data.x, rows), m, shifts);
        const loss = tf.tidy(() => {
          const p = tf.tensor2d(patches, [m * CELLS, PATCH]);
          const pT = tf.tensor2d(transposed, [PATCH, m * CELLS]);
          const targets = tf.oneHot(
            tf.tensor1d(
              Int32Array.from(rows, (r) => data.labels[r]!),
              'int32',
            ),
            MNIST_CLASSES,
          );
          const { value, grads } = tf.variableGrads(() => {
            const z = model.head(model.hiddenFromPatches(p, pT));
            return tf.mean(tf.sub(tf.logSumExp(z, 1), tf.sum(tf.mul(z, targets), 1))) as tf.Scalar;
          }, model.variables);
          optimizer.step(model.variables.map((v) => grads[v.name]!));
          return value;
        });
        const l = loss.dataSync()[0]!;
        loss.dispose();
        if (!Number.isFinite(l)) throw new Error(`MNIST CNN training: the loss became ${l} in epoch ${epoch + 1}`);
        sum += l * m;
        bar.tick(1, `epoch ${epoch + 1}/${epochs} loss ${l.toFixed(4)}`);
      }
      epochLosses.push(sum / data.n);
    }
  } finally {
    optimizer.dispose();
  }
  bar.done();
  return { epochLosses, steps: epochs * stepsPerEpoch };
}

/** Hidden activations `[n * H]` (row-major) of all images, `chunk` at a time. */
export function hiddenActivations(model: MnistCnn, x: Float32Array, n: number, chunk = 500): Float32Array {
  const h = model.config.hidden;
  const out = new Float32Array(n * h);
  for (let start = 0; start < n; start += chunk) {
    const m = Math.min(chunk, n - start);
    const t = model.hidden(x.subarray(start * PIXELS, (start + m) * PIXELS), m);
    out.set(t.dataSync(), start * h);
    t.dispose();
  }
  return out;
}

/** Predicted digits `[n]` of the head on hidden activations `hidden [n * H]`. */
export function predictFromHidden(model: MnistCnn, hidden: Float32Array, n: number): Int32Array {
  const pred = tf.tidy(() => tf.argMax(model.head(tf.tensor2d(hidden, [n, model.config.hidden])), 1));
  const out = Int32Array.from(pred.dataSync());
  pred.dispose();
  return out;
}
