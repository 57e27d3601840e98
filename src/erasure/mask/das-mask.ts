/**
 * `das_mask`: a learned mask over the directions of a learned rotation (distributed alignment
 * search with a boundless mask), trained jointly with the rotation (its parametrisation in
 * src/erasure/orthogonal.ts).
 *
 * Edit with rotation R `[d, d]` (orthogonal; R = cayley(P - P^T) for a free parameter P, starting
 * at R = I) and gate s `[d]`:
 *   x' = R diag(s) R^T x     (per token; row vectors: x' = ((x R) ⊙ s) R^T)
 * i.e. the coordinates of x in the rotated basis (columns r_j of R) are masked. Linear, so at the
 * probe hook x̄' = R diag(s) R^T x̄ on cached mean-pooled activations. Removed units are the
 * directions r_j with a hard gate of 0; `describe()` gives their count as the rank.
 *
 * A uniform gate makes R diag(s) R^T = s I whatever R, so R gets no gradient at the start; the
 * initial logits get multiplicative noise (`initNoise`, default 0.05 here) to break the tie.
 */
import { z } from 'zod';
import { tf, variableFrom } from '../../engine/engine.js';
import type { ActivationCache } from '../../cache/cache.js';
import type { HookName } from '../../models/model.js';
import type { FitContext } from '../eraser.js';
import { orthogonalityError, rotationOf } from '../orthogonal.js';
import { MaskFitter } from './fitter.js';
import { checkObjectiveFields, initNoiseField, MASK_OPTION_FIELDS, maskConfigSchema, NO_KEEP_ERROR_FIELD } from './options.js';
import type { MaskTrainingCallbacks } from './trainer.js';
import { hookWidth, type CheckpointHook, type CheckpointTensors, type MaskKind, type UnitFrame, type UnitSpace } from './units.js';
import { parseStrict } from '../../util/schema.js';

const DAS_MASK_FIELDS = {
  ...MASK_OPTION_FIELDS,
  initNoise: initNoiseField(0.05),
  keepError: NO_KEEP_ERROR_FIELD,
};

/** Options of `das_mask` (fields described in options.ts; `initNoise` defaults to 0.05). */
export const dasMaskOptionsSchema = z.strictObject(DAS_MASK_FIELDS).superRefine(checkObjectiveFields);

/** Largest entry-wise difference allowed between a checkpoint's `rotation` and the one rebuilt from its `skew`. */
const ROTATION_TOLERANCE = 1e-5;

class RotatedUnits implements UnitSpace {
  readonly unitKind = 'directions' as const;
  readonly variables: Record<string, tf.Variable>;
  /** R and R^T once training is over. */
  private frozen: { r: tf.Tensor2D; rT: tf.Tensor2D } | undefined;

  constructor(
    readonly hook: HookName,
    readonly dIn: number,
    initialSkew?: Float32Array,
  ) {
    // A = P - P^T; restoring a saved A uses P = A / 2.
    const p = initialSkew === undefined ? tf.zeros([dIn, dIn]) : tf.tidy(() => tf.mul(tf.tensor2d(initialSkew, [dIn, dIn]), 0.5));
    this.variables = { rotation_param: variableFrom(p as tf.Tensor2D, `das_rotation_${hook}`) };
  }

  get nUnits(): number {
    return this.dIn;
  }

  private pooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D {
    const width = cache.dim(this.hook);
    if (width !== this.dIn) throw new Error(`das_mask at ${this.hook}: the cache holds width ${width}, the rotation is ${this.dIn} x ${this.dIn}`);
    return cache.pooled(this.hook, rows);
  }

  /** R `[d, d]`: the frozen one after `freeze`, else computed from the parameter (differentiable). */
  rotation(): tf.Tensor2D {
    return this.frozen?.r ?? rotationOf(this.variables.rotation_param as tf.Variable<tf.Rank.R2>);
  }

  pooledInputs(cache: ActivationCache, rows: ArrayLike<number>): { raw: tf.Tensor2D; rest: null } {
    return { raw: this.pooled(cache, rows), rest: null };
  }

  frame(): UnitFrame {
    const r = this.rotation();
    const rT = this.frozen?.rT ?? tf.transpose(r);
    const pooled = (cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D => this.pooled(cache, rows);
    const apply = (x2d: tf.Tensor2D, gate: tf.Tensor1D): tf.Tensor2D => tf.matMul(tf.mul(tf.matMul(x2d, r), gate), rT) as tf.Tensor2D;
    return {
      units: (raw) => tf.matMul(raw, r) as tf.Tensor2D,
      directions: rT,
      constantDirections: this.frozen !== undefined,
      edit: (x, gate) => {
        const [n, seq, d] = x.shape;
        return tf.reshape(apply(tf.reshape(x, [n * seq, d]) as tf.Tensor2D, gate), [n, seq, d]) as tf.Tensor3D;
      },
      erasePooled: (cache, rows, gate) => apply(pooled(cache, rows), gate),
    };
  }

  freeze(): void {
    if (this.frozen !== undefined) return;
    const r = tf.tidy(() => rotationOf(this.variables.rotation_param as tf.Variable<tf.Rank.R2>));
    this.frozen = { r, rT: tf.transpose(r) };
  }

  /** max |R^T R - I| of the current rotation. */
  orthogonalityError(): number {
    const r = tf.tidy(() => tf.clone(this.rotation()));
    try {
      return orthogonalityError(r.dataSync(), this.dIn);
    } finally {
      r.dispose();
    }
  }

  /**
   * Refuses a saved rotation `[d, d]` (row-major) that is not the rotation of the current parameter:
   * a checkpoint stores both, and the skew parameter is what gets restored.
   */
  checkRotation(saved: Float32Array, where: string): void {
    const rebuilt = tf.tidy(() => this.rotation().dataSync());
    let worst = 0;
    for (let i = 0; i < rebuilt.length; i++) worst = Math.max(worst, Math.abs(saved[i]! - rebuilt[i]!));
    if (!(worst <= ROTATION_TOLERANCE)) {
      throw new Error(
        `${where}: tensor "${this.hook}.rotation" differs from the rotation rebuilt from "${this.hook}.skew" by up to ${worst} (tolerance ${ROTATION_TOLERANCE}); the checkpoint is inconsistent`,
      );
    }
  }

  checkpointInfo(): Record<string, unknown> {
    return { parametrisation: 'cayley' };
  }

  savedTensors(): Record<string, tf.Tensor> {
    const p = this.variables.rotation_param!;
    return {
      skew: tf.tidy(() => tf.sub(p, tf.transpose(p))),
      rotation: tf.tidy(() => tf.clone(this.rotation())),
    };
  }

  dispose(): void {
    this.variables.rotation_param!.dispose();
    if (this.frozen !== undefined) tf.dispose([this.frozen.r, this.frozen.rT]);
    this.frozen = undefined;
  }
}

export const DAS_MASK: MaskKind = {
  method: 'das_mask',
  config: maskConfigSchema(DAS_MASK_FIELDS),
  entryFields: {
    parametrisation: z
      .literal('cayley')
      .describe('How the rotation is parametrised: R = cayley(A) for the saved skew-symmetric A (src/erasure/orthogonal.ts).'),
  },
  create: (hook: HookName, ctx: FitContext) => new RotatedUnits(hook, hookWidth(ctx, hook)),
  restore(entry: CheckpointHook, file: CheckpointTensors): UnitSpace {
    const d = entry.dIn;
    const units = new RotatedUnits(entry.hook, d, file.float32(`${entry.hook}.skew`, [d, d]));
    try {
      units.checkRotation(file.float32(`${entry.hook}.rotation`, [d, d]), `das_mask: ${file.path}`);
    } catch (err) {
      units.dispose();
      throw err;
    }
    return units;
  },
};

/** The `das_mask` fitter; `options` are validated against `dasMaskOptionsSchema` (defaults filled in). */
export function createDasMaskFitter(options: z.input<typeof dasMaskOptionsSchema> = {}, callbacks: MaskTrainingCallbacks = {}): MaskFitter {
  return new MaskFitter(DAS_MASK, parseStrict(dasMaskOptionsSchema, options, 'das_mask options'), callbacks);
}
