/**
 * The objective of the MNIST erasure masks, for the frozen classifier head's logits z `[B, 10]` of
 * masked hidden activations and gate s:
 *
 *   L = CE(z_kept, y_kept) + eraseWeight * (U(z_erased) - log 10) + l1 * sum_j (1 - s_j)
 *
 * with each term a mean over its own rows of the batch (0 when the batch has none), and
 *
 *   U(z) = mean_i CE(uniform, softmax(z_i)) = mean_i [ logsumexp(z_i) - (1/10) sum_c z_ic ],
 *
 * the cross-entropy of the predictions against the uniform distribution over the 10 digits. Since
 * CE(u, p) = H(u) + KL(u || p) and H(u) = log 10, U >= log 10, with equality exactly when every
 * row's logits are equal (uniform predictions). The erasure term is therefore bounded below by 0
 * and is minimised by "the classifier cannot tell", not by "the classifier is confidently wrong".
 * The original experiment instead maximised the likelihood loss on erased digits (gradient ascent
 * on CE(z, y)), which is unbounded: it rewards pushing erased digits to confident wrong answers,
 * which still encodes the digit (a flipped answer is as informative as a right one), and the loss
 * diverges rather than converges.
 */
import { tf } from '../engine/engine.js';

/** log 10: the minimum of `uniformCrossEntropy` over 10 classes. */
export const LOG_CLASSES = Math.log(10);

/** Per-row CE(uniform, softmax(z)) = logsumexp(z) - mean(z) for logits `z [B, C]`: `[B]`, each >= log C. */
export function uniformCrossEntropyRows(z: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => tf.sub(tf.logSumExp(z, 1), tf.mean(z, 1)) as tf.Tensor1D);
}

/** Mean over rows of CE(uniform, softmax(z)) for logits `z [B, C]`; >= log C, = log C iff every row is constant. */
export function uniformCrossEntropy(z: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => tf.mean(uniformCrossEntropyRows(z)) as tf.Scalar);
}

/** Per-row CE(onehot(y), softmax(z)) for logits `z [B, C]` and one-hot targets `[B, C]`: `[B]`. */
export function crossEntropyRows(z: tf.Tensor2D, targets: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => tf.sub(tf.logSumExp(z, 1), tf.sum(tf.mul(z, targets), 1)) as tf.Tensor1D);
}

/** The parts of the objective on one batch (scalars the caller disposes). */
export interface ErasureLossParts {
  loss: tf.Scalar;
  /** CE on the kept digits of the batch. */
  kept: tf.Scalar;
  /** U - log 10 on the erased digits of the batch (>= 0). */
  erased: tf.Scalar;
}

/**
 * The objective of the module docstring on a batch: logits `z [B, 10]`, one-hot targets `[B, 10]`,
 * `erasedRows [B]` (1 for an erased digit, 0 for a kept one) and the soft gate `[units]`.
 */
export function erasureLoss(
  z: tf.Tensor2D,
  targets: tf.Tensor2D,
  erasedRows: tf.Tensor1D,
  gate: tf.Tensor1D,
  weights: { eraseWeight: number; l1: number },
): ErasureLossParts {
  const parts = tf.tidy(() => {
    const keptRows = tf.sub(1, erasedRows);
    const nErased = tf.sum(erasedRows);
    const nKept = tf.sum(keptRows);
    const kept = tf.div(tf.sum(tf.mul(crossEntropyRows(z, targets), keptRows)), tf.maximum(nKept, 1)) as tf.Scalar;
    const erased = tf.div(tf.sum(tf.mul(tf.sub(uniformCrossEntropyRows(z), LOG_CLASSES), erasedRows)), tf.maximum(nErased, 1)) as tf.Scalar;
    let loss = tf.add(kept, tf.mul(erased, weights.eraseWeight));
    if (weights.l1 > 0) loss = tf.add(loss, tf.mul(tf.sum(tf.sub(1, gate)), weights.l1));
    return { loss: loss as tf.Scalar, kept, erased };
  });
  return parts;
}
