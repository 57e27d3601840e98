/**
 * Closed-form concept erasers (LEACE, its orthogonal variants, INLP) as `Eraser`s.
 *
 * Each fits an affine erasure r(x) = x - L R (x - b) of the concept z (gender) on mean-pooled
 * activations at the probe hook, using the concept-labelled set only (no balanced task labels),
 * and applies it per token. Because r is affine, mean pooling commutes with it:
 * mean_t r(x_t) = r(mean_t x_t), so the pooled fast path is exact.
 *
 * Variants (option `variant` of `leace`): `leace` (oblique, whitened, covariance shrinkage;
 * default), `orth` (orthogonal projection onto the complement of the cross-covariance),
 * `diff_in_means` (orthogonal removal of the class-mean difference).
 */
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { tf } from '../engine/engine.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { ActivationCache } from '../cache/cache.js';
import type { Edit, HookName } from '../models/model.js';
import { DiffInMeansFitter } from './diff-in-means.js';
import { fitInlp } from './inlp.js';
import { LeaceFitter, oneHot } from './leace.js';
import { ErasureTensors, type AffineErasure } from './linear-algebra.js';
import { checkWidth, type Eraser, type EraserDescription, type FitContext } from './eraser.js';

type Variant = 'leace' | 'orth' | 'diff_in_means';

function fitAffine(method: 'leace' | 'inlp', X: tf.Tensor2D, z: Int32Array, options: Readonly<Record<string, unknown>>, seed: number): AffineErasure {
  const d = X.shape[1];
  if (method === 'inlp') {
    const iterations = typeof options.iterations === 'number' ? options.iterations : 10;
    return fitInlp(X, z, { iterations, seed }).erasure;
  }
  const variant = (options.variant ?? 'leace') as Variant;
  if (variant === 'diff_in_means') return new DiffInMeansFitter(d, 2).update(X, z).eraser();
  if (variant !== 'leace' && variant !== 'orth') throw new Error(`leace: unknown variant "${String(variant)}" (leace, orth, diff_in_means)`);
  return new LeaceFitter(d, 2, { method: variant }).update(X, oneHot(z, 2)).eraser();
}

/** An eraser applying one affine erasure at the probe hook. */
class AffineEraser implements Eraser {
  private erasure: AffineErasure | undefined;
  private tensors: ErasureTensors | undefined;
  private hook: HookName | undefined;

  constructor(readonly method: 'leace' | 'inlp', private readonly options: Readonly<Record<string, unknown>>) {}

  async fit(ctx: FitContext): Promise<void> {
    const X = ctx.cache.pooled(ctx.probeHook, ctx.concept.rows);
    try {
      this.set(ctx.probeHook, fitAffine(this.method, X, ctx.concept.z, { ...this.options, ...ctx.options }, ctx.seed));
    } finally {
      X.dispose();
    }
  }

  private set(hook: HookName, erasure: AffineErasure): void {
    this.tensors?.dispose();
    this.hook = hook;
    this.erasure = erasure;
    this.tensors = new ErasureTensors(erasure);
  }

  private fitted(): { hook: HookName; erasure: AffineErasure; tensors: ErasureTensors } {
    if (this.erasure === undefined || this.tensors === undefined || this.hook === undefined) throw new Error(`${this.method} eraser: call fit() or load() first`);
    return { hook: this.hook, erasure: this.erasure, tensors: this.tensors };
  }

  edits(): Record<HookName, Edit> {
    const { hook, erasure, tensors } = this.fitted();
    return {
      [hook]: (x) => {
        checkWidth(this.method, hook, erasure.dim, x.shape[2]);
        return tensors.apply(x) as tf.Tensor3D;
      },
    };
  }

  erasePooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D {
    const { hook, tensors } = this.fitted();
    return tf.tidy(() => tensors.apply(cache.pooled(hook, rows)) as tf.Tensor2D);
  }

  describe(): EraserDescription {
    const { hook, erasure } = this.fitted();
    return {
      method: this.method,
      hooks: [hook],
      unitsRemoved: erasure.rank,
      summary: `${this.method === 'inlp' ? 'INLP' : `LEACE (${String(this.options.variant ?? 'leace')})`}: removes a rank-${erasure.rank} subspace at ${hook}`,
      removed: { [hook]: { kind: 'directions', rank: erasure.rank } },
    };
  }

  save(dir: string): void {
    const { hook, erasure } = this.fitted();
    const tensors = {
      left: { dtype: 'F64' as const, shape: [erasure.dim, erasure.rank], data: erasure.left },
      right: { dtype: 'F64' as const, shape: [erasure.rank, erasure.dim], data: erasure.right },
      ...(erasure.bias === null ? {} : { bias: { dtype: 'F64' as const, shape: [erasure.dim], data: erasure.bias } }),
    };
    writeSafetensors(join(dir, 'eraser.safetensors'), tensors);
    writeJsonAtomic(join(dir, 'eraser.json'), { method: this.method, hook, dim: erasure.dim, rank: erasure.rank, options: this.options });
  }

  /** Loads a saved erasure; `expectedDim`, when given, must match (the hook's width). */
  load(dir: string, expectedDim?: number): void {
    const meta = JSON.parse(readFileSync(join(dir, 'eraser.json'), 'utf8')) as { method: string; hook: HookName; dim: number; rank: number };
    if (meta.method !== this.method) throw new Error(`${dir}: checkpoint is for method "${meta.method}", not "${this.method}"`);
    if (expectedDim !== undefined && meta.dim !== expectedDim) throw new Error(`${dir}: erasure has width ${meta.dim}, but the hook has width ${expectedDim}`);
    const f = readSafetensors(join(dir, 'eraser.safetensors'));
    this.set(meta.hook, { dim: meta.dim, rank: meta.rank, left: f.float64('left'), right: f.float64('right'), bias: f.has('bias') ? f.float64('bias') : null });
  }

  dispose(): void {
    this.tensors?.dispose();
    this.tensors = undefined;
  }
}

export function leaceEraser(options: Readonly<Record<string, unknown>> = {}): AffineEraser {
  return new AffineEraser('leace', options);
}

export function inlpEraser(options: Readonly<Record<string, unknown>> = {}): AffineEraser {
  return new AffineEraser('inlp', options);
}
