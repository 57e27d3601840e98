/**
 * Mean pooling over real tokens: pooled[b] = sum_t mask[b,t] x[b,t] / sum_t mask[b,t].
 * The original SHIFT-style code summed over padded positions too; we never do.
 */
import { tf } from '../engine/engine.js';

/** `acts [n, seq, d]`, `mask [n, seq]` (0/1, any numeric dtype) -> `[n, d]`. */
export function meanPool(acts: tf.Tensor3D, mask: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const m = tf.cast(mask, 'float32');
    const summed = tf.sum(tf.mul(acts, tf.expandDims(m, 2)), 1);
    const counts = tf.maximum(tf.sum(m, 1, true), 1);
    return tf.div(summed, counts) as tf.Tensor2D;
  });
}
