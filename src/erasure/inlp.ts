/**
 * INLP: Iterative Nullspace Projection (Ravfogel, Elazar, Gonen, Twiton & Goldberg, ACL 2020).
 *
 * ## Math
 * Start with an empty set of removed directions B (orthonormal rows, [r, d]) and repeat:
 *   1. P_B = I - B^T B; project the data: x' = μ + P_B (x - μ).
 *   2. Train a linear classifier for z on x' (train split); measure its accuracy on the dev split.
 *      If it is within `chanceMargin` of the majority-class rate, stop (the concept is no longer
 *      linearly recoverable by this classifier family).
 *   3. Add its weight direction(s) w to B: w <- P_B w (the part of w inside span B only adds a
 *      constant on projected data), Gram-Schmidt against B, normalise, append.
 * The result is the orthogonal erasure r(x) = x - B^T B (x - μ): symmetric, idempotent, rank r.
 * Binary classifiers contribute one direction per iteration; a C-class softmax classifier
 * contributes its C weight columns after centring them (softmax is invariant to adding the same
 * vector to every column), so at most C - 1 directions.
 *
 * The default classifier is a small full-batch logistic (softmax) regression trained here with
 * tfjs (`trainLogisticRegression`). The project's probe (src/probe/linear.ts) reproduces the SHIFT
 * paper's training (one epoch of minibatch AdamW), which is deliberately light; INLP needs each
 * classifier close to its optimum, or it stops at "chance" while a better classifier would still
 * find the concept. `linearProbeClassifier(options)` plugs the project probe in instead.
 */
import { permutation } from '../data/prng.js';
import { matMulT, tf } from '../engine/engine.js';
import { LinearProbe, type LinearProbeOptions } from '../probe/linear.js';
import { checkLabels } from '../probe/probe.js';
import { type AffineErasure, ErasureTensors, orthogonalErasure } from './linear-algebra.js';
import { maxOf } from '../util/arrays.js';

/** A linear classifier in the raw input space: logits = x W + b. */
export interface LinearClassifier {
  readonly dIn: number;
  readonly numClasses: number;
  /** W [dIn, out] row-major; out = 1 (binary, sigmoid) or numClasses (softmax). */
  readonly weights: Float64Array;
  /** b [out]. */
  readonly bias: Float64Array;
}

export interface LogisticRegressionOptions {
  /** Full-batch Adam steps; default 300. */
  steps?: number;
  /** Initial Adam learning rate, decayed linearly to 0; default 0.05. */
  learningRate?: number;
  /** L2 penalty (l2 / 2) ||W||^2 on standardised-feature weights; default 1e-4. */
  l2?: number;
}

/**
 * log softmax over the last axis, z - max(z) - log sum exp(z - max(z)). Written out because the
 * wasm backend's fused `logSoftmax` trips tfjs's kernel leak check in test mode.
 */
function logSoftmaxRows(logits: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const shifted = tf.sub(logits, tf.max(logits, -1, true));
    return tf.sub(shifted, tf.log(tf.sum(tf.exp(shifted), -1, true)));
  });
}

/**
 * Logistic regression (binary: sigmoid, one output; C > 2: softmax, C outputs) by full-batch Adam
 * on standardised features, weights starting at 0, learning rate decayed linearly to 0 so the
 * (convex) fit settles (the reason for a local Adam loop rather than src/probe/adamw.ts, whose
 * learning rate is fixed). Returns weights mapped back to raw-feature space:
 *   logits = ((x - m) / s) W + b = x (W / s) + (b - (m / s) W).
 * Features with (near-)zero variance keep s = 1.
 */
export function trainLogisticRegression(x: tf.Tensor2D, labels: ArrayLike<number>, numClasses = 2, options: LogisticRegressionOptions = {}): LinearClassifier {
  const [n, d] = x.shape;
  if (labels.length !== n) throw new Error(`trainLogisticRegression: ${n} rows but ${labels.length} labels`);
  if (!Number.isInteger(numClasses) || numClasses < 2) throw new Error(`trainLogisticRegression: numClasses must be >= 2, got ${numClasses}`);
  const labelArray = checkLabels(Array.from(labels), n, numClasses, 'trainLogisticRegression labels');
  const steps = options.steps ?? 300;
  const lr0 = options.learningRate ?? 0.05;
  const l2 = options.l2 ?? 1e-4;
  const out = numClasses === 2 ? 1 : numClasses;
  const beta1 = 0.9;
  const beta2 = 0.999;
  const eps = 1e-8;

  const { mean, scale } = tf.tidy(() => {
    const moments = tf.moments(x, 0);
    const variance = moments.variance;
    const floor = tf.mul(tf.max(variance), 1e-12);
    const s = tf.where(tf.greater(variance, floor), tf.sqrt(variance), tf.onesLike(variance));
    return { mean: moments.mean, scale: s };
  });
  const xs = tf.tidy(() => tf.div(tf.sub(x, mean), scale));
  const target = tf.tidy(() =>
    out === 1 ? tf.reshape(tf.tensor1d(labelArray, 'float32'), [n, 1]) : tf.oneHot(tf.tensor1d(labelArray, 'int32'), numClasses).toFloat(),
  );
  // tf.variable keeps a reference to its initial tensor's data; making it inside tidy lets the
  // initial tensor go and leaves the variable as the only owner.
  const zeros = (shape: number[]): tf.Variable => tf.tidy(() => tf.variable(tf.zeros(shape)));
  const w = zeros([d, out]);
  const b = zeros([out]);
  const moments = [w, b].map((p) => ({ p, m: zeros(p.shape), v: zeros(p.shape) }));

  const loss = (): tf.Scalar =>
    tf.tidy(() => {
      const logits = tf.add(matMulT(xs, w), b);
      const data =
        out === 1 ? tf.mean(tf.sub(tf.softplus(logits), tf.mul(target, logits))) : tf.neg(tf.mean(tf.sum(tf.mul(target, logSoftmaxRows(logits)), 1)));
      return tf.add(data, tf.mul(l2 / 2, tf.sum(tf.square(w)))) as tf.Scalar;
    });

  try {
    for (let t = 1; t <= steps; t++) {
      const lr = (lr0 * (steps - t + 1)) / steps;
      tf.tidy(() => {
        const { grads } = tf.variableGrads(loss, [w, b]);
        for (const { p, m, v } of moments) {
          const g = grads[p.name]!;
          m.assign(tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1)));
          v.assign(tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2)));
          const mHat = tf.div(m, 1 - beta1 ** t);
          const vHat = tf.div(v, 1 - beta2 ** t);
          p.assign(tf.sub(p, tf.mul(lr, tf.div(mHat, tf.add(tf.sqrt(vHat), eps)))));
        }
      });
    }
    const wStd = w.dataSync();
    const bStd = b.dataSync();
    const m = mean.dataSync();
    const s = scale.dataSync();
    const weights = new Float64Array(d * out);
    const bias = Float64Array.from(bStd);
    for (let j = 0; j < d; j++) {
      for (let c = 0; c < out; c++) {
        const raw = wStd[j * out + c]! / s[j]!;
        weights[j * out + c] = raw;
        bias[c]! -= m[j]! * raw;
      }
    }
    return { dIn: d, numClasses, weights, bias };
  } finally {
    for (const t of [mean, scale, xs, target, w, b]) t.dispose();
    for (const { m, v } of moments) {
      m.dispose();
      v.dispose();
    }
  }
}

/** Predicted classes [n] of a linear classifier on `x [n, dIn]`. */
export function predictClasses(clf: LinearClassifier, x: tf.Tensor2D): Int32Array {
  if (x.shape[1] !== clf.dIn) throw new Error(`predictClasses: expected [n, ${clf.dIn}], got [${x.shape.join(', ')}]`);
  const out = clf.weights.length / clf.dIn;
  const logits = tf.tidy(() => tf.add(matMulT(x, tf.tensor2d(Float32Array.from(clf.weights), [clf.dIn, out])), tf.tensor1d(Float32Array.from(clf.bias))));
  const values = logits.dataSync();
  logits.dispose();
  const n = x.shape[0];
  const pred = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    if (out === 1) {
      pred[i] = values[i]! > 0 ? 1 : 0;
    } else {
      let best = 0;
      for (let c = 1; c < out; c++) if (values[i * out + c]! > values[i * out + best]!) best = c;
      pred[i] = best;
    }
  }
  return pred;
}

/** Fraction of equal entries. */
export function accuracy(pred: ArrayLike<number>, labels: ArrayLike<number>): number {
  if (pred.length !== labels.length) throw new Error(`accuracy: ${pred.length} predictions but ${labels.length} labels`);
  let hits = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === labels[i]) hits++;
  return pred.length === 0 ? 0 : hits / pred.length;
}

/** Trains a linear classifier for `labels` on `x`; INLP takes its weight columns as directions. */
export type TrainClassifier = (x: tf.Tensor2D, labels: Int32Array, numClasses: number) => LinearClassifier;

/**
 * The project's linear probe (src/probe/linear.ts) as an INLP classifier. Its weight is read back
 * as W [dIn, out] in raw-feature space; the probe's tensors are freed after each fit.
 */
export function linearProbeClassifier(options: LinearProbeOptions = {}): TrainClassifier {
  return (x, labels, numClasses) => {
    const probe = new LinearProbe(x.shape[1], numClasses, options);
    try {
      probe.fit(x, labels);
      const { weight, bias } = probe.parameters();
      const out = probe.nOut;
      const d = x.shape[1];
      // torch layout [out, dIn] -> [dIn, out].
      const weights = new Float64Array(d * out);
      for (let c = 0; c < out; c++) for (let j = 0; j < d; j++) weights[j * out + c] = weight[c * d + j]!;
      return { dIn: d, numClasses, weights, bias: Float64Array.from(bias) };
    } finally {
      probe.dispose();
    }
  };
}

export interface InlpOptions {
  numClasses?: number;
  /** Maximum iterations (classifiers trained); default 10. */
  iterations?: number;
  /** Stop once dev accuracy <= majority rate + chanceMargin; default true. */
  stopAtChance?: boolean;
  /** Default 0.02 (two points). */
  chanceMargin?: number;
  /** Fraction of rows held out to measure accuracy; default 0.25. 0 = measure on the training rows. */
  devFraction?: number;
  /** Seed of the train/dev split; default 42. */
  seed?: number;
  /** Project about the mean of x (keeps E[x]); default true. */
  affine?: boolean;
  /** Options of the default classifier. */
  classifier?: LogisticRegressionOptions;
  /** Replaces the default classifier. */
  trainClassifier?: TrainClassifier;
}

export interface InlpResult {
  /** r(x) = x - B^T B (x - μ). */
  erasure: AffineErasure;
  /** B [rank, d] row-major, orthonormal rows. */
  directions: Float64Array;
  rank: number;
  /** Dev accuracy of the classifier trained at each iteration (before its directions were removed). */
  accuracies: number[];
  /** Majority-class rate on the dev rows (chance). */
  majority: number;
  /** True when the loop ended because a classifier was at chance. */
  reachedChance: boolean;
}

/** Appends the unit part of `v` orthogonal to the rows of `basis` (two Gram-Schmidt passes). */
function norm2(v: Float64Array): number {
  let s = 0;
  for (const a of v) s += a * a;
  return Math.sqrt(s);
}

function appendOrthogonal(basis: Float64Array[], v: Float64Array, relTol: number): boolean {
  const norm0 = norm2(v);
  if (norm0 === 0) return false;
  const r = Float64Array.from(v);
  for (let pass = 0; pass < 2; pass++) {
    for (const q of basis) {
      let dot = 0;
      for (let j = 0; j < r.length; j++) dot += q[j]! * r[j]!;
      for (let j = 0; j < r.length; j++) r[j]! -= dot * q[j]!;
    }
  }
  const norm = norm2(r);
  if (norm <= relTol * norm0) return false;
  for (let j = 0; j < r.length; j++) r[j]! /= norm;
  basis.push(r);
  return true;
}

function stack(rows: Float64Array[], d: number): Float64Array {
  const out = new Float64Array(rows.length * d);
  rows.forEach((r, i) => out.set(r, i * d));
  return out;
}

/** Runs INLP on `x [n, d]` (float32) with class labels `[n]`; see the module docstring. */
export function fitInlp(x: tf.Tensor2D, labels: ArrayLike<number>, options: InlpOptions = {}): InlpResult {
  const [n, d] = x.shape;
  if (labels.length !== n) throw new Error(`fitInlp: ${n} rows but ${labels.length} labels`);
  const numClasses = options.numClasses ?? 2;
  const iterations = options.iterations ?? 10;
  const stopAtChance = options.stopAtChance ?? true;
  const margin = options.chanceMargin ?? 0.02;
  const devFraction = options.devFraction ?? 0.25;
  if (!(devFraction >= 0 && devFraction < 1)) throw new Error(`fitInlp: devFraction must be in [0, 1), got ${devFraction}`);
  const train = options.trainClassifier ?? ((xt, yt, c) => trainLogisticRegression(xt, yt, c, options.classifier));
  const y = Int32Array.from(labels);

  const order = permutation(n, options.seed ?? 42);
  const devCount = Math.floor(n * devFraction);
  const devIdx = devFraction > 0 ? order.slice(0, devCount) : order;
  const trainIdx = devFraction > 0 ? order.slice(devCount) : order;
  if (trainIdx.length === 0 || devIdx.length === 0) throw new Error(`fitInlp: ${n} rows are too few for devFraction ${devFraction}`);
  const yTrain = Int32Array.from(trainIdx, (i) => y[i]!);
  const yDev = Int32Array.from(devIdx, (i) => y[i]!);
  const counts = new Array<number>(numClasses).fill(0);
  for (const c of yDev) counts[c] = (counts[c] ?? 0) + 1;
  const majority = maxOf(counts) / yDev.length;

  let mean: Float64Array | null = null;
  if (options.affine ?? true) {
    // Float64 mean: the projection is taken about it, and a float32 mean would shift E[x].
    const data = x.dataSync();
    mean = new Float64Array(d);
    for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) mean[j]! += data[r * d + j]!;
    for (let j = 0; j < d; j++) mean[j]! /= n;
  }
  const xTrain = tf.tidy(() => tf.gather(x, tf.tensor1d(trainIdx, 'int32')));
  const xDev = tf.tidy(() => tf.gather(x, tf.tensor1d(devIdx, 'int32')));
  const basis: Float64Array[] = [];
  const accuracies: number[] = [];
  let reachedChance = false;
  try {
    for (let it = 0; it < iterations; it++) {
      const erasure = orthogonalErasure(stack(basis, d), basis.length, d, mean);
      const tensors = new ErasureTensors(erasure);
      const xt = tensors.apply(xTrain) as tf.Tensor2D;
      const xd = tensors.apply(xDev) as tf.Tensor2D;
      tensors.dispose();
      let clf: LinearClassifier;
      let acc: number;
      try {
        clf = train(xt, yTrain, numClasses);
        acc = accuracy(predictClasses(clf, xd), yDev);
      } finally {
        xt.dispose();
        xd.dispose();
      }
      accuracies.push(acc);
      if (stopAtChance && acc <= majority + margin) {
        reachedChance = true;
        break;
      }
      const out = clf.weights.length / d;
      const columns: Float64Array[] = [];
      for (let c = 0; c < out; c++) columns.push(Float64Array.from({ length: d }, (_, j) => clf.weights[j * out + c]!));
      if (out > 1) {
        // Softmax weights are defined up to a common shift of the columns: centre them.
        for (let j = 0; j < d; j++) {
          let s = 0;
          for (const col of columns) s += col[j]!;
          for (const col of columns) col[j]! -= s / out;
        }
      }
      let added = 0;
      for (const col of columns) if (basis.length < d && appendOrthogonal(basis, col, 1e-6)) added++;
      if (added === 0) break;
    }
  } finally {
    xTrain.dispose();
    xDev.dispose();
  }
  const directions = stack(basis, d);
  return {
    erasure: orthogonalErasure(directions, basis.length, d, mean),
    directions,
    rank: basis.length,
    accuracies,
    majority,
    reachedChance,
  };
}
