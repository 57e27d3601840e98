/**
 * The Probe interface: a classifier on pooled activations `X [n, dIn]`.
 *
 * Labels are class indices 0..nClasses-1. For a binary probe (`nClasses` = 2) `logits` returns one
 * logit per row, [n], positive meaning class 1 (as `nn.Linear(d, 1)` in the SHIFT code); for a
 * multiclass probe it returns [n, nClasses]. Probes save to and load from safetensors; the file's
 * metadata `probe_kind` says which implementation reads it back.
 */
import type { tf } from '../engine/engine.js';

/** Class labels, one per row of X. */
export type Labels = Int32Array | Uint8Array | readonly number[];

export interface FitReport {
  /** Training loss of each optimiser step, in order. */
  losses: Float32Array;
  steps: number;
  epochs: number;
}

export interface Probe {
  /** Implementation name, stored in the checkpoint (for example "linear"). */
  readonly kind: string;
  readonly dIn: number;
  readonly nClasses: number;
  /** Trains the probe on `X [n, dIn]` and labels `y [n]`. */
  fit(X: tf.Tensor2D, y: Labels): FitReport;
  /** Logits: [n] when binary, [n, nClasses] otherwise. The caller disposes the tensor. */
  logits(X: tf.Tensor2D): tf.Tensor;
  /** Predicted classes [n]. */
  predict(X: tf.Tensor2D): Int32Array;
  /** Writes the probe to a safetensors file (atomically). */
  save(path: string): void;
  /** Frees the probe's tensors. */
  dispose(): void;
}

/** Checks labels against a row count and class count; returns them as Int32Array. */
export function checkLabels(y: Labels, n: number, nClasses: number, what = 'labels'): Int32Array {
  if (y.length !== n) throw new Error(`${what}: ${y.length} labels for ${n} rows`);
  const out = Int32Array.from(y);
  for (let i = 0; i < out.length; i++) {
    const v = out[i]!;
    if (v < 0 || v >= nClasses || v !== y[i]) throw new Error(`${what}: label ${i} is ${y[i]}, expected an integer in 0..${nClasses - 1}`);
  }
  return out;
}
