/**
 * The losses of mask training, for head logits z = h(x') of the masked representations x'.
 *
 * Task loss: mean cross-entropy of the task head's logits against the task labels y (BCE with
 * logits for one output).
 *
 * Adversary loss (the `concept` objective): on a concept batch with concept labels z (0/1) and
 * adversary logits l,
 *
 *   L_adv = Δ = mean_{z=1} l_i - mean_{z=0} l_i   (0 for a batch holding a single class),
 *
 * the difference of the class means of the adversary's logits. The adversary g is fitted so that
 * Δ > 0 while it finds z; the mask lowers Δ by removing the units that carry z, and once none is
 * left the re-fitted g has Δ ~ 0. Δ is linear in the batch estimate, so batch noise has zero mean
 * and gives no consistent push. Any convex function of the batch estimate (Δ^2, log cosh Δ, or
 * BCE(g, 1/2), the spread of g's logits) adds the batch variance of Δ to the objective, which is
 * lowered by removing every unit g weights, noise included; and Adam moves each logit by ~lr
 * whatever the size of a consistent gradient, so such units do leave. Δ needs no target for g
 * (unlike "maximise g's loss", which rewards flipping g's predictions, still informative, and is
 * unbounded), and it ignores g's bias (the class prior of the concept set), which the mask
 * cannot and should not change. (das_mask's mean-difference term, trainer.ts, is convex, but in
 * the whole concept set's class-mean difference, not in a batch estimate, so it has no batch
 * variance to lower.)
 */
import { tf } from '../../engine/engine.js';

/** Mean cross-entropy of logits `z [B, out]` against class targets: BCE with logits when out = 1. */
export function taskLoss(z: tf.Tensor2D, targets: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    if (z.shape[1] === 1) return tf.mean(tf.add(tf.sub(tf.relu(z), tf.mul(z, targets)), tf.log1p(tf.exp(tf.neg(tf.abs(z)))))) as tf.Scalar;
    return tf.mean(tf.sub(tf.logSumExp(z, 1), tf.sum(tf.mul(z, targets), 1))) as tf.Scalar;
  });
}

/**
 * d(mean CE)/dz for logits `z [B, out]` over a fit of total weight `total` (its row count when
 * unweighted): (sigmoid(z) - y) w / total, or (softmax(z) - onehot) w / total, with per-row
 * weights `weights [B, 1]` (1 when absent).
 */
export function taskLossGradient(z: tf.Tensor2D, targets: tf.Tensor2D, total: number, weights?: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const r = tf.sub(z.shape[1] === 1 ? tf.sigmoid(z) : tf.softmax(z), targets);
    return tf.div(weights === undefined ? r : tf.mul(r, weights), total) as tf.Tensor2D;
  });
}

/**
 * L_adv = Δ = mean_{z=1} l - mean_{z=0} l, for adversary logits `l [B, 1]` and concept labels
 * z `[B, 1]` (0/1); 0 when the batch holds a single class. With row weights `w [B, 1]` (positive)
 * the class means are weighted: sum w l / sum w over each class.
 */
export function adversaryLoss(l: tf.Tensor2D, z: tf.Tensor2D, w?: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const z1 = w === undefined ? z : tf.mul(z, w);
    const z0 = w === undefined ? tf.sub(1, z) : tf.mul(tf.sub(1, z), w);
    const n1 = tf.sum(z1);
    const n0 = tf.sum(z0);
    const both = tf.cast(tf.logicalAnd(tf.greater(n1, 0), tf.greater(n0, 0)), 'float32');
    const mean1 = tf.div(tf.sum(tf.mul(l, z1)), tf.maximum(n1, 1e-12));
    const mean0 = tf.div(tf.sum(tf.mul(l, z0)), tf.maximum(n0, 1e-12));
    return tf.mul(tf.sub(mean1, mean0), both) as tf.Scalar;
  });
}

/**
 * Row weights `[n]` from the (y, z) cell counts n_c: w_i = n_c(i)^-power, scaled so that the weights
 * average 1. With power 1 (the default) each (y, z) cell present gets the same total weight, which
 * makes the concept independent of the task label: on a concept set where z predicts y (natural
 * data), the weighted class means of z then differ only along what separates z within each task
 * class. Power 0 is the natural (unweighted) set; power 1/2 (square-root balancing) lies between,
 * with rare cells weighted up by sqrt of their shortfall only, which bounds the variance they add
 * (see `meanDifferenceContrast` and trainer.ts).
 */
export function balancingWeights(y: Int32Array, z: Int32Array, power = 1): Float32Array {
  if (y.length !== z.length) throw new Error(`balancingWeights: ${y.length} task labels for ${z.length} concept labels`);
  const counts = new Map<string, number>();
  for (let i = 0; i < y.length; i++) counts.set(`${y[i]},${z[i]}`, (counts.get(`${y[i]},${z[i]}`) ?? 0) + 1);
  // Sum over rows of n_c^-power, i.e. sum over cells of n_c^(1 - power).
  let total = 0;
  for (const n of counts.values()) total += n ** (1 - power);
  return Float32Array.from(y, (yi, i) => (y.length * counts.get(`${yi},${z[i]}`)! ** -power) / total);
}

/**
 * The contrast `[n]` whose dot product with rows x_i is the weighted class-mean difference of the
 * concept z:  sum_i c_i x_i = sum_{z=1} w x / sum_{z=1} w - sum_{z=0} w x / sum_{z=0} w, i.e.
 * c_i = w_i / W_1 for z_i = 1 and -w_i / W_0 for z_i = 0 (weights 1 when absent). Throws when a
 * class is missing (there is no difference to take).
 */
export function meanDifferenceContrast(z: Int32Array, weights?: Float32Array): Float32Array {
  if (weights !== undefined && weights.length !== z.length) throw new Error(`meanDifferenceContrast: ${weights.length} weights for ${z.length} labels`);
  const w = (i: number): number => weights?.[i] ?? 1;
  let w1 = 0;
  let w0 = 0;
  for (let i = 0; i < z.length; i++) {
    if (z[i] === 1) w1 += w(i);
    else if (z[i] === 0) w0 += w(i);
    else throw new Error(`meanDifferenceContrast: label ${i} is ${z[i]}, expected 0 or 1`);
  }
  if (!(w1 > 0 && w0 > 0)) throw new Error('meanDifferenceContrast: both concept classes need positive weight');
  return Float32Array.from(z, (zi, i) => (zi === 1 ? w(i) / w1 : -w(i) / w0));
}

/** Targets `[n, out]`: the labels as a column for out = 1, one-hot rows otherwise. */
export function targetsOf(labels: Int32Array, nOut: number): tf.Tensor2D {
  return tf.tidy(() =>
    nOut === 1
      ? tf.tensor2d(Float32Array.from(labels), [labels.length, 1])
      : (tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), nOut), 'float32') as tf.Tensor2D),
  );
}
