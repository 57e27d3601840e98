/**
 * Masked representations of a batch of rows, as far as affine heads need them.
 *
 * On the pooled path x' = (s ⊙ a) V + rest is kept factored (`FactoredRep`): a head z = x' W + b
 * acts as
 *
 *   z = (s ⊙ a) (V W) + rest W + b,
 *
 * with V W `[units, out]` the head folded into the unit directions (computed once per head update
 * when V is fixed), so a mask step costs O(batch x units) and no pass over V. A head's weight
 * gradient for logit residuals r `[B, out]` is
 *
 *   x'^T r = ((r^T (s ⊙ a)) V + r^T rest)^T,
 *
 * which never forms x' either. On the model path, and for head fits with many steps on few rows,
 * x' is formed explicitly `[B, d]` (`ExplicitRep`).
 */
import { matMulT, tf } from '../../engine/engine.js';
import type { TrainableHead } from './affine-heads.js';

/** Masked representations of a batch of rows. */
export interface Represented {
  readonly rows: number;
  /** Whether x' is held as (s ⊙ a, V, rest) rather than formed. */
  readonly factored: boolean;
  /** Head logits `[B, out]`, given the head's folded weights; differentiable through the mask. */
  logits(head: TrainableHead, folded: tf.Tensor2D): tf.Tensor2D;
  /**
   * r^T x' `[out, d]` for `r [B, out]` (the head's weight gradient, transposed), in two parts:
   * `units` `[out, units]` still to be multiplied by V (null when there is none to apply) and
   * `direct` `[out, d]`; r^T x' = units V + direct. Intermediates belong to the caller's scope.
   */
  gradientParts(r: tf.Tensor2D): { units: tf.Tensor2D | null; direct: tf.Tensor2D | null };
  /** A copy detached from the tape whose tensors survive the current scope; `dispose` frees it. */
  keepDetached(): Represented & { dispose(): void };
  /** Like `keepDetached`, with x' formed explicitly `[B, d]` (cheaper when a head takes many steps on it). */
  keepExplicit(): Represented & { dispose(): void };
}

/** x' = (s ⊙ a) V + rest, never formed: heads act through V W. */
export class FactoredRep implements Represented {
  readonly factored = true;

  constructor(
    private readonly sa: tf.Tensor2D,
    private readonly rest: tf.Tensor2D | null,
    /** V `[units, d]`, or null for the standard basis. */
    readonly directions: tf.Tensor2D | null,
    /** Whether `directions` belongs to the unit space (fixed, shared, not copied) rather than to this step. */
    private readonly fixedDirections: boolean,
  ) {}

  get rows(): number {
    return this.sa.shape[0];
  }

  logits(head: TrainableHead, folded: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      let z = tf.matMul(this.sa, folded);
      if (this.rest !== null) z = tf.add(z, tf.matMul(this.rest, head.wT));
      return tf.add(z, head.b) as tf.Tensor2D;
    });
  }

  /** (Intermediates belong to the caller's tidy scope.) */
  gradientParts(r: tf.Tensor2D): { units: tf.Tensor2D | null; direct: tf.Tensor2D | null } {
    const rT = tf.transpose(r);
    const through = tf.matMul(rT, this.sa) as tf.Tensor2D;
    const restPart = this.rest === null ? null : (tf.matMul(rT, this.rest) as tf.Tensor2D);
    if (this.directions !== null) return { units: through, direct: restPart };
    // Standard basis: the unit part is already in activation space.
    return { units: null, direct: restPart === null ? through : (tf.add(through, restPart) as tf.Tensor2D) };
  }

  keepDetached(): FactoredRep & { dispose(): void } {
    // Copies (tf.clone copies on wasm): small per-batch tensors, and step-dependent directions
    // (DAS, k x d); fixed directions (an SAE decoder) are shared.
    const copy = (t: tf.Tensor2D | null): tf.Tensor2D | null => (t === null ? null : tf.keep(tf.clone(t)));
    const sa = copy(this.sa)!;
    const rest = copy(this.rest);
    const directions = this.fixedDirections ? this.directions : copy(this.directions);
    const owned = [sa, rest, this.fixedDirections ? null : directions].filter((t): t is tf.Tensor2D => t !== null);
    return Object.assign(new FactoredRep(sa, rest, directions, this.fixedDirections), { dispose: () => tf.dispose(owned) });
  }

  keepExplicit(): ExplicitRep & { dispose(): void } {
    const x = tf.keep(
      tf.tidy(() => {
        let v: tf.Tensor2D = this.directions === null ? tf.clone(this.sa) : (tf.matMul(this.sa, this.directions) as tf.Tensor2D);
        if (this.rest !== null) v = tf.add(v, this.rest) as tf.Tensor2D;
        return v;
      }),
    );
    return Object.assign(new ExplicitRep(x), { dispose: () => x.dispose() });
  }
}

/** x' formed explicitly `[B, d]` (the model path, and head fits with many steps). */
export class ExplicitRep implements Represented {
  readonly factored = false;

  constructor(private readonly x: tf.Tensor2D) {}

  get rows(): number {
    return this.x.shape[0];
  }

  logits(head: TrainableHead): tf.Tensor2D {
    return tf.tidy(() => tf.add(tf.matMul(this.x, head.wT), head.b) as tf.Tensor2D);
  }

  gradientParts(r: tf.Tensor2D): { units: null; direct: tf.Tensor2D } {
    return { units: null, direct: matMulT(r, this.x, true, false) as tf.Tensor2D };
  }

  keepDetached(): ExplicitRep & { dispose(): void } {
    const x = tf.keep(tf.clone(this.x));
    return Object.assign(new ExplicitRep(x), { dispose: () => x.dispose() });
  }

  keepExplicit(): ExplicitRep & { dispose(): void } {
    return this.keepDetached();
  }
}
