/**
 * Re-fitting heads on the current masked representations (no gradient to the mask): the
 * adversaries on their concept folds, and the adapting task head on a sample of training rows,
 * each with full-batch AdamW steps on the mean cross-entropy (weighted, for adversaries on a
 * balanced concept set).
 *
 * On factored representations (representation.ts) a step costs one pass over the unit directions
 * V for all heads together (folding [W_1 .. W_H] into V) and one for all their gradients
 * ([r_1^T (s ⊙ a_1); ...] V). Forming x' once costs about rows / 8 such passes (one matrix
 * product), so it is formed instead when the rows are few next to the steps (the initial fit) or
 * when the directions change every step (DAS).
 */
import { tf } from '../../engine/engine.js';
import type { TrainableHead } from './affine-heads.js';
import { taskLossGradient } from './losses.js';
import type { Represented } from './representation.js';
import type { RowSource, StepView } from './sources.js';

/** A head to re-fit: its rows (positions in `source`), their targets `[rows, out]` and optional row weights `[rows, 1]` (weighted mean cross-entropy). */
export interface HeadFit {
  head: TrainableHead;
  source: RowSource;
  positions: Int32Array;
  targets: tf.Tensor2D;
  weights?: tf.Tensor2D;
}

/** Positions 0..n-1 in chunks of `size`. */
function chunks(n: number, size: number): Int32Array[] {
  const out: Int32Array[] = [];
  for (let s = 0; s < n; s += size) out.push(Int32Array.from({ length: Math.min(size, n - s) }, (_, i) => s + i));
  return out;
}

/** Rows `positions` of `t` (a new tensor). */
export function rowsOf(t: tf.Tensor2D, positions: ArrayLike<number>): tf.Tensor2D {
  return tf.tidy(() => tf.gather(t, tf.tensor1d(Int32Array.from(positions), 'int32')) as tf.Tensor2D);
}

/**
 * Takes `steps` AdamW steps on every head of `fits` together, on representations made once with
 * the gates and frames of `view()` (called inside a tidy scope), `chunkRows` rows at a time.
 */
export function refitHeads(fits: readonly HeadFit[], steps: number, view: () => StepView, chunkRows: number): void {
  const reps: { fit: number; at: Int32Array; rep: Represented & { dispose(): void } }[] = [];
  // The weighted mean's denominator: each fit's total row weight.
  const totals = fits.map((f) => (f.weights === undefined ? f.positions.length : tf.tidy(() => tf.sum(f.weights!).dataSync()[0]!)));
  let directions: tf.Tensor2D | null = null;
  try {
    tf.tidy(() => {
      const v = view();
      fits.forEach((fit, k) => {
        const fixed = fit.source.fixedDirections(v);
        const explicit = fixed === null || fit.positions.length < 16 * steps;
        if (!explicit) directions = fixed;
        for (const at of chunks(fit.positions.length, chunkRows)) {
          const rep = fit.source.represent(
            Array.from(at, (i) => fit.positions[i]!),
            v,
          );
          reps.push({ fit: k, at, rep: explicit ? rep.keepExplicit() : rep.keepDetached() });
        }
      });
    });
    for (let it = 0; it < steps; it++) {
      tf.tidy(() => {
        // One pass folds every head into the shared directions.
        const widths = fits.map((f) => f.head.nOut);
        const foldedAll =
          directions === null
            ? null
            : tf.matMul(
                directions,
                tf.concat(
                  fits.map((f) => f.head.wT),
                  1,
                ),
              );
        const units: (tf.Tensor2D | null)[] = fits.map(() => null);
        const direct: (tf.Tensor2D | null)[] = fits.map(() => null);
        const gradB: (tf.Tensor | null)[] = fits.map(() => null);
        const add = <T extends tf.Tensor>(a: T | null, b: T | null): T | null => (a === null ? b : b === null ? a : (tf.add(a, b) as T));
        let col = 0;
        fits.forEach((fit, k) => {
          const folded = foldedAll === null ? fit.head.wT : (tf.slice(foldedAll, [0, col], [-1, widths[k]!]) as tf.Tensor2D);
          col += widths[k]!;
          for (const { at, rep } of reps.filter((r) => r.fit === k)) {
            const t = rowsOf(fit.targets, at);
            const w = fit.weights === undefined ? undefined : rowsOf(fit.weights, at);
            const dz = taskLossGradient(rep.logits(fit.head, rep.factored ? folded : fit.head.wT), t, totals[k]!, w);
            const parts = rep.gradientParts(dz);
            units[k] = add(units[k]!, parts.units);
            direct[k] = add(direct[k]!, parts.direct);
            gradB[k] = add(gradB[k]!, tf.sum(dz, 0));
          }
        });
        // One pass maps every head's unit-space gradient back through the directions.
        const withUnits = fits.map((_, k) => k).filter((k) => units[k] !== null);
        const mapped = new Map<number, tf.Tensor2D>();
        if (withUnits.length > 0) {
          const all = tf.matMul(
            tf.concat(
              withUnits.map((k) => units[k]!),
              0,
            ),
            directions!,
          );
          let row = 0;
          for (const k of withUnits) {
            mapped.set(k, tf.slice(all, [row, 0], [widths[k]!, -1]) as tf.Tensor2D);
            row += widths[k]!;
          }
        }
        fits.forEach((fit, k) => {
          const g = add(mapped.get(k) ?? null, direct[k]!)!;
          fit.head.step(tf.transpose(g), gradB[k]!);
        });
      });
    }
  } finally {
    for (const { rep } of reps) rep.dispose();
  }
}
