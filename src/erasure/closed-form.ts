/**
 * Closed-form concept erasers (LEACE, its orthogonal variants, INLP) as erasers.
 *
 * Each fits an affine erasure r(x) = x - L R (x - b) of the concept z (gender) on mean-pooled
 * activations at the probe hook, using the concept-labelled set only (no balanced task labels),
 * and applies it per token. Because r is affine, mean pooling commutes with it:
 * mean_t r(x_t) = r(mean_t x_t), so the pooled fast path is exact. By default the fitter then
 * retrains the probe head on the erased ambiguous training set (head.ts), since a head trained
 * before the erasure reads directions that no longer carry what it learned. Fitted at the probe
 * hook, it acts there (the pooled path); `edits()` and `graphEdits()` apply it at token level for
 * forward passes that need it.
 *
 * Variants (option `variant` of `leace`): `leace` (oblique, whitened, covariance shrinkage;
 * default), `orth` (orthogonal projection onto the complement of the cross-covariance),
 * `diff_in_means` (orthogonal removal of the class-mean difference).
 *
 * Checkpoint (layout in checkpoint.ts), format `sae-eraser/affine`:
 *   eraser.json         { ..., hook, dim, rank, options (the method's, defaults included) }
 *   eraser.safetensors  `left` [dim, rank], `right` [rank, dim] and, when affine, `bias` [dim] (float64).
 */
import { z } from 'zod';
import { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import type { Edit, GraphEdit, HookName } from '../models/model.js';
import { int } from '../onnx/graph.js';
import { flattenTokens, unflattenTokens } from '../onnx/ops.js';
import { checkpointFields, checkRetrainedHead, type LoadTarget, type StoredCheckpoint } from './checkpoint.js';
import { DiffInMeansFitter } from './diff-in-means.js';
import {
  checkWidth,
  supervision,
  type CheckpointContent,
  type Eraser,
  type EraserDescription,
  type EraserFitter,
  type FitContext,
  type Supervision,
} from './eraser.js';
import { retrainHead, retrainHeadOption, withHead } from './head.js';
import { fitInlp } from './inlp.js';
import { LeaceFitter, oneHot } from './leace.js';
import { ErasureTensors, type AffineErasure } from './linear-algebra.js';
import { parseStrict, positiveInt } from '../util/schema.js';

export const AFFINE_FORMAT = 'sae-eraser/affine';

/** Defaults of the LEACE options that only some variants read (as LeaceFitter's). */
export const LEACE_DEFAULTS = { shrinkage: true, svdTol: 0.01 } as const;

export const leaceOptionsSchema = z
  .strictObject({
    variant: z
      .enum(['leace', 'orth', 'diff_in_means'])
      .default('leace')
      .describe(
        'leace (oblique, whitened: least-squares optimal), orth (orthogonal projection removing the cross-covariance with the concept) or diff_in_means (orthogonal removal of the class-mean difference). Default leace.',
      ),
    shrinkage: z
      .boolean()
      .optional()
      .describe(
        `Variant leace only: replace the covariance of x by its optimal linear shrinkage toward a multiple of the identity, which keeps the whitening well-conditioned when examples are few. Default ${LEACE_DEFAULTS.shrinkage}.`,
      ),
    svdTol: z
      .number()
      .positive()
      .optional()
      .describe(
        `Variants leace and orth: directions whose (whitened, for leace) cross-covariance singular value is at or below this stay unerased. Default ${LEACE_DEFAULTS.svdTol}.`,
      ),
    retrainHead: retrainHeadOption,
  })
  .superRefine((o, ctx) => {
    // diff_in_means has neither (DiffInMeansFitter); orth does not whiten, so it has no covariance to shrink.
    if (o.shrinkage !== undefined && o.variant !== 'leace') {
      ctx.addIssue({ code: 'custom', path: ['shrinkage'], message: `applies only to variant "leace" (variant is "${o.variant}")` });
    }
    if (o.svdTol !== undefined && o.variant === 'diff_in_means') {
      ctx.addIssue({ code: 'custom', path: ['svdTol'], message: 'applies only to variants "leace" and "orth" (variant is "diff_in_means")' });
    }
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

/** The eraser.json of this format, with the method's options. */
function affineCheckpointSchema<O extends z.ZodType>(options: O) {
  return z.strictObject({
    ...checkpointFields,
    hook: z.string().describe('The hook the erasure edits (the probe hook it was fitted at).'),
    dim: positiveInt().describe('Width of the hook.'),
    rank: z.number().int().min(0).describe('Rank of the erased subspace.'),
    options: options.describe("The method's options, defaults included."),
  });
}

const leaceCheckpointSchema = affineCheckpointSchema(leaceOptionsSchema);
const inlpCheckpointSchema = affineCheckpointSchema(inlpOptionsSchema);

/** LEACE options with the defaults of the fields the variant reads filled in (the others stay absent). */
export function resolveLeaceOptions(o: LeaceOptions): LeaceOptions {
  switch (o.variant) {
    case 'leace':
      return { ...o, shrinkage: o.shrinkage ?? LEACE_DEFAULTS.shrinkage, svdTol: o.svdTol ?? LEACE_DEFAULTS.svdTol };
    case 'orth':
      return { ...o, svdTol: o.svdTol ?? LEACE_DEFAULTS.svdTol };
    case 'diff_in_means':
      return o;
  }
}

/** One affine erasure at the probe hook, immutable; owns its tensors. */
export class AffineEraser implements Eraser {
  readonly head = undefined;
  private readonly tensors: ErasureTensors;

  constructor(
    readonly method: 'leace' | 'inlp',
    /** The hook it edits (the probe hook it was fitted at). */
    readonly hook: HookName,
    readonly erasure: AffineErasure,
    /** The method's options (defaults included), for the description and the checkpoint. */
    readonly options: Readonly<LeaceOptions> | Readonly<InlpOptions>,
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

  /**
   * `edits()` as ONNX nodes, from the same float32 roundings of L, R and b as `ErasureTensors`:
   * x' = x - ((x - b) R^T) L^T per token (two Gemms with transposed weights on `[n * seq, d]`).
   */
  graphEdits(): Record<HookName, GraphEdit> {
    const e = this.erasure;
    return {
      [this.hook]: (g, x, d) => {
        checkWidth(this.method, this.hook, e.dim, d);
        if (e.rank === 0) return x;
        const flat = flattenTokens(g, x, d);
        const centred = e.bias === null ? flat : g.op('Sub', [flat, g.constant('erasure_bias', Float32Array.from(e.bias), [d])]);
        const gemmT = (a: string, name: string, w: Float64Array, rows: number, cols: number): string =>
          g.op('Gemm', [a, g.constant(name, Float32Array.from(w), [rows, cols])], { transB: int(1) });
        const coeff = gemmT(centred, 'erasure_right', e.right, e.rank, d);
        return unflattenTokens(g, g.op('Sub', [flat, gemmT(coeff, 'erasure_left', e.left, d, e.rank)]), x, d);
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
      summary: `${'variant' in this.options ? `LEACE (${this.options.variant})` : 'INLP'}: removes a rank-${rank} subspace at ${this.hook}`,
      removed: { [this.hook]: { kind: 'directions', rank } },
      supervision: affineSupervision(),
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
  const { jsonPath, tensors, method } = stored;
  if (method !== 'leace' && method !== 'inlp') throw new Error(`${jsonPath}: field "method" is "${method}"; the ${AFFINE_FORMAT} format holds leace and inlp`);
  const { hook, dim, rank, options } = parseStrict(method === 'leace' ? leaceCheckpointSchema : inlpCheckpointSchema, stored.json, jsonPath);
  if (rank > dim) throw new Error(`${jsonPath}: field "rank" must be an integer in [0, ${dim}]`);
  checkRetrainedHead(stored, options.retrainHead);
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
  return new AffineEraser(method, hook, erasure, options);
}

/**
 * The labels a closed-form fit reads, whatever its options: the concept set's gender labels (the
 * erasure: `AffineFitter.fit` reads `ctx.concept.z`, never `ctx.concept.y`), and the ambiguous
 * split's task labels, through the biased probe it keeps or the head it retrains on them.
 */
export function affineSupervision(): Supervision {
  return supervision(['ambiguous_task', 'concept_gender']);
}

/** Fits an affine erasure on the pooled concept-labelled split at the probe hook, then (optionally) a head. */
class AffineFitter implements EraserFitter {
  constructor(
    readonly method: 'leace' | 'inlp',
    /** Options with the defaults of every field the method reads. */
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
  const o = resolveLeaceOptions(options);
  return new AffineFitter('leace', o, (X, z) => {
    const d = X.shape[1];
    if (o.variant === 'diff_in_means') return new DiffInMeansFitter(d, 2).update(X, z).eraser();
    return new LeaceFitter(d, 2, { method: o.variant, shrinkage: o.shrinkage, svdTol: o.svdTol }).update(X, oneHot(z, 2)).eraser();
  });
}

/** The fitter of `inlp`, with options parsed by `inlpOptionsSchema`. */
export function createInlpFitter(options: InlpOptions): EraserFitter {
  return new AffineFitter('inlp', options, (X, z, seed) => fitInlp(X, z, { iterations: options.iterations, seed }).erasure);
}
