/**
 * Closed-form concept erasers (LEACE, its orthogonal variants, INLP) as erasers.
 *
 * Each fits an affine erasure r(x) = x - L R (x - b) of the concept z (gender) on mean-pooled
 * activations at the probe hook, using the concept-labelled set only (no balanced task labels),
 * and applies it per token. Because r is affine, mean pooling commutes with it:
 * mean_t r(x_t) = r(mean_t x_t), so the pooled fast path is exact. By default the fitter then
 * retrains the probe head on the erased ambiguous training set (head.ts), since a head trained
 * before the erasure reads directions that no longer carry what it learned.
 *
 * Variants (option `variant` of `leace`): `leace` (oblique, whitened, covariance shrinkage;
 * default), `orth` (orthogonal projection onto the complement of the cross-covariance),
 * `diff_in_means` (orthogonal removal of the class-mean difference).
 *
 * Checkpoint (layout in checkpoint.ts), format `sae-eraser/affine`:
 *   eraser.json         { ..., hook, dim, rank, options }
 *   eraser.safetensors  `left` [dim, rank], `right` [rank, dim] and, when affine, `bias` [dim] (float64).
 */
import { z } from 'zod';
import { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import type { Edit, HookName } from '../models/model.js';
import type { LoadTarget, StoredCheckpoint } from './checkpoint.js';
import { DiffInMeansFitter } from './diff-in-means.js';
import { checkWidth, type CheckpointContent, type Eraser, type EraserDescription, type EraserFitter, type FitContext } from './eraser.js';
import { retrainHead, withHead } from './head.js';
import { fitInlp } from './inlp.js';
import { LeaceFitter, oneHot } from './leace.js';
import { ErasureTensors, type AffineErasure } from './linear-algebra.js';

export const AFFINE_FORMAT = 'sae-eraser/affine';

const retrainHeadOption = z
  .boolean()
  .default(true)
  .describe("Retrain the probe head on the erased ambiguous training set (the biased probe's training options); false keeps the biased probe.");

export const leaceOptionsSchema = z
  .strictObject({
    variant: z
      .enum(['leace', 'orth', 'diff_in_means'])
      .default('leace')
      .describe(
        'leace (oblique, whitened: least-squares optimal), orth (orthogonal projection removing the cross-covariance with the concept) or diff_in_means (orthogonal removal of the class-mean difference).',
      ),
    shrinkage: z
      .boolean()
      .default(true)
      .describe(
        'Variant leace only: replace the covariance of x by its optimal linear shrinkage toward a multiple of the identity, which keeps the whitening well-conditioned when examples are few.',
      ),
    svdTol: z
      .number()
      .positive()
      .default(0.01)
      .describe('Variants leace and orth: directions whose (whitened, for leace) cross-covariance singular value is at or below this stay unerased.'),
    retrainHead: retrainHeadOption,
  })
  .describe('LEACE (Belrose et al. 2023) and its orthogonal variants at the probe hook, fitted on the concept-labelled split.');

export const inlpOptionsSchema = z
  .strictObject({
    iterations: z
      .number()
      .int()
      .min(1)
      .default(10)
      .describe('Maximum INLP iterations (linear concept classifiers trained and projected out); it stops earlier at chance.'),
    retrainHead: retrainHeadOption,
  })
  .describe('INLP (Ravfogel et al. 2020) at the probe hook, fitted on the concept-labelled split.');

export type LeaceOptions = z.output<typeof leaceOptionsSchema>;
export type InlpOptions = z.output<typeof inlpOptionsSchema>;

/** One affine erasure at the probe hook, immutable; owns its tensors. */
export class AffineEraser implements Eraser {
  readonly head = undefined;
  private readonly tensors: ErasureTensors;

  constructor(
    readonly method: 'leace' | 'inlp',
    /** The hook it edits (the probe hook it was fitted at). */
    readonly hook: HookName,
    readonly erasure: AffineErasure,
    /** The method's options, for the description and the checkpoint. */
    readonly options: Readonly<Record<string, unknown>>,
  ) {
    this.tensors = new ErasureTensors(erasure);
  }

  edits(): Record<HookName, Edit> {
    return {
      [this.hook]: (x) => {
        checkWidth(this.method, this.hook, this.erasure.dim, x.shape[2]);
        return this.tensors.apply(x) as tf.Tensor3D;
      },
    };
  }

  erasePooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D {
    checkWidth(this.method, this.hook, this.erasure.dim, cache.dim(this.hook));
    return tf.tidy(() => this.tensors.apply(cache.pooled(this.hook, rows)) as tf.Tensor2D);
  }

  describe(): EraserDescription {
    const { rank } = this.erasure;
    return {
      method: this.method,
      hooks: [this.hook],
      unitsRemoved: rank,
      summary: `${this.method === 'inlp' ? 'INLP' : `LEACE (${String(this.options.variant ?? 'leace')})`}: removes a rank-${rank} subspace at ${this.hook}`,
      removed: { [this.hook]: { kind: 'directions', rank } },
    };
  }

  checkpoint(): CheckpointContent {
    const e = this.erasure;
    return {
      format: AFFINE_FORMAT,
      fields: { hook: this.hook, dim: e.dim, rank: e.rank, options: this.options },
      tensors: {
        left: { dtype: 'F64', shape: [e.dim, e.rank], data: e.left },
        right: { dtype: 'F64', shape: [e.rank, e.dim], data: e.right },
        ...(e.bias === null ? {} : { bias: { dtype: 'F64' as const, shape: [e.dim], data: e.bias } }),
      },
    };
  }

  dispose(): void {
    this.tensors.dispose();
  }
}

/**
 * `loadEraser`'s restorer for the affine format. With `target.probeHook`, a checkpoint fitted at
 * another hook is refused; with an SAE at the eraser's hook in `target.saes`, its input width must
 * match the erasure's.
 */
export function restoreAffineEraser(stored: StoredCheckpoint, target: LoadTarget): Eraser {
  const { json, jsonPath, tensors, method } = stored;
  if (method !== 'leace' && method !== 'inlp') throw new Error(`${jsonPath}: field "method" is "${method}"; the ${AFFINE_FORMAT} format holds leace and inlp`);
  const { hook, dim, rank, options } = json;
  if (typeof hook !== 'string') throw new Error(`${jsonPath}: field "hook" must be a hook name`);
  if (typeof dim !== 'number' || !Number.isInteger(dim) || dim < 1) throw new Error(`${jsonPath}: field "dim" must be a positive integer`);
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 0 || rank > dim)
    throw new Error(`${jsonPath}: field "rank" must be an integer in [0, ${dim}]`);
  if (target.probeHook !== undefined && target.probeHook !== hook)
    throw new Error(`${jsonPath}: the erasure was fitted at "${hook}", but the probe reads "${target.probeHook}"`);
  const expectedDim = target.saes?.[hook]?.dIn;
  if (expectedDim !== undefined && dim !== expectedDim) throw new Error(`${jsonPath}: erasure has width ${dim}, but the hook has width ${expectedDim}`);
  const erasure: AffineErasure = {
    dim,
    rank,
    left: tensors.float64('left'),
    right: tensors.float64('right'),
    bias: tensors.has('bias') ? tensors.float64('bias') : null,
  };
  if (erasure.left.length !== dim * rank || erasure.right.length !== rank * dim || (erasure.bias !== null && erasure.bias.length !== dim)) {
    throw new Error(`${stored.dir}: the erasure's tensors do not have the shapes of width ${dim} and rank ${rank}`);
  }
  const opts = typeof options === 'object' && options !== null && !Array.isArray(options) ? (options as Record<string, unknown>) : {};
  return new AffineEraser(method, hook, erasure, opts);
}

/** Fits an affine erasure on the pooled concept-labelled split at the probe hook, then (optionally) a head. */
class AffineFitter implements EraserFitter {
  constructor(
    readonly method: 'leace' | 'inlp',
    private readonly options: LeaceOptions | InlpOptions,
    private readonly fitErasure: (X: tf.Tensor2D, z: Int32Array, seed: number) => AffineErasure,
  ) {}

  async fit(ctx: FitContext): Promise<Eraser> {
    const X = ctx.cache.pooled(ctx.probeHook, ctx.concept.rows);
    let erasure: AffineErasure;
    try {
      erasure = this.fitErasure(X, ctx.concept.z, ctx.seed);
    } finally {
      X.dispose();
    }
    const eraser = new AffineEraser(this.method, ctx.probeHook, erasure, this.options);
    try {
      return withHead(eraser, this.options.retrainHead ? await retrainHead(eraser, ctx) : undefined);
    } catch (err) {
      eraser.dispose();
      throw err;
    }
  }
}

/** The fitter of `leace`, with options parsed by `leaceOptionsSchema`. */
export function createLeaceFitter(options: LeaceOptions): EraserFitter {
  return new AffineFitter('leace', options, (X, z) => {
    const d = X.shape[1];
    if (options.variant === 'diff_in_means') return new DiffInMeansFitter(d, 2).update(X, z).eraser();
    return new LeaceFitter(d, 2, { method: options.variant, shrinkage: options.shrinkage, svdTol: options.svdTol }).update(X, oneHot(z, 2)).eraser();
  });
}

/** The fitter of `inlp`, with options parsed by `inlpOptionsSchema`. */
export function createInlpFitter(options: InlpOptions): EraserFitter {
  return new AffineFitter('inlp', options, (X, z, seed) => fitInlp(X, z, { iterations: options.iterations, seed }).erasure);
}
