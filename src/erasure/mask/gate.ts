/**
 * The gate. Each unit j of a masked hook has a logit m_j and the gate
 *
 *   s_j = sigmoid(m_j / T),
 *
 * with the temperature T annealed linearly per optimiser step from `tempStart` to `tempEnd`
 * (computed in float32), so s goes from soft to nearly binary. A unit is removed when its hard gate
 * is 0: s_j <= 0.5, i.e. m_j <= 0, at every temperature. Logits start at m0 = T0 logit(initKeep),
 * so every unit starts with s = initKeep.
 */
import { tf } from '../../engine/engine.js';

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
