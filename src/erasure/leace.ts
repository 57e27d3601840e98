/**
 * LEACE: LEAst-squares Concept Erasure (Belrose et al. 2023, arXiv:2306.03819), with a streaming
 * fitter in the style of EleutherAI concept-erasure's `LeaceFitter` (math re-derived, not copied).
 *
 * ## Math
 * With `Σ_xx` the covariance of x [d], `Σ_xz` the cross-covariance of x with the concept z [c]
 * (one-hot classes, or one scalar column):
 *   W   = (Σ_xx^{1/2})^+                      whitening ('orth': W = I)
 *   U   = orthonormal basis of col(W Σ_xz)    (left singular vectors with singular value > svdTol)
 *   P   = I - W^+ U U^T W                      an oblique projection ('orth': I - U U^T)
 *   r(x) = μ_x + P (x - μ_x) = x - W^+ U U^T W (x - μ_x)
 * After r, Cov(r(x), z) = P Σ_xz = 0 (Σ_xz lies in the range of Σ_xx, and U spans W Σ_xz), so no
 * linear classifier does better than a constant on z (linear guardedness), and among all affine
 * erasers with that property r minimises E||r(x) - x||_M^2 for every PSD inner product M.
 * As an `AffineErasure`: `L = W^+ U [d, k]`, `R = U^T W [k, d]`, `b = μ_x`, `k <= c`.
 *
 * The erased covariance is P Σ P^T = Σ - Σ^{1/2} U U^T Σ^{1/2} ⪯ Σ (with W the exact inverse
 * square root on the range of Σ), so the variance of x never grows in any direction (for the Σ that
 * W is computed from: with shrinkage, the shrunk estimate; the sample covariance itself can in
 * principle grow slightly). That is why
 * concept-erasure's `constrain_cov_trace` option (mixing in the orthogonal projection when the trace
 * would grow) is not implemented here: with W computed from the same Σ it can only trigger on
 * rounding error.
 *
 * `shrinkage` (default on, as in concept-erasure) replaces Σ_xx by its optimal linear shrinkage
 * toward (tr Σ / d) I, which keeps W well-conditioned when n is not much larger than d; the
 * optimality statement above then holds only approximately, guardedness still holds exactly.
 *
 * ## Streaming statistics
 * `update(x, z)` merges a chunk's mean and centred co-moments into the running ones (Chan, Golub &
 * LeVeque's pairwise update), all in float64:
 *   M_xx += C_xx^chunk + (n_a n_b / n) δ_x δ_x^T,   M_xz += C_xz^chunk + (n_a n_b / n) δ_x δ_z^T,
 * with δ the difference of the chunk mean and the running mean. Chunked fitting therefore equals
 * one-batch fitting up to float64 rounding. Σ = M / (n - 1) (Bessel), or shrinkage of M / n.
 */
import { tf } from '../engine/engine.js';
import {
  type AffineErasure,
  type FloatArray,
  applyErasure,
  columnSpaceBasis,
  matMul64,
  optimalLinearShrinkage,
  transpose64,
  whiteningPair,
} from './linear-algebra.js';

export type LeaceMethod = 'leace' | 'orth';

export interface LeaceOptions {
  /** 'leace' (oblique, whitened; default) or 'orth' (orthogonal projection, W = I). */
  method?: LeaceMethod;
  /** Optimal linear shrinkage of Σ_xx ('leace' only); default true. */
  shrinkage?: boolean;
  /**
   * Singular values of W Σ_xz at or below this are dropped (absolute; default 0.01 as in
   * concept-erasure). Directions whose whitened correlation with z is that weak stay unerased.
   * For 'orth' the threshold is in the units of x: rescale it with the data.
   */
  svdTol?: number;
  /** Project about the mean of x (keeps E[x] unchanged); default true. Else about 0. */
  affine?: boolean;
}

/** Converts integer class labels to one-hot rows [n, numClasses] (float64). */
export function oneHot(labels: ArrayLike<number>, numClasses: number): Float64Array {
  const out = new Float64Array(labels.length * numClasses);
  for (let i = 0; i < labels.length; i++) {
    const c = labels[i]!;
    if (!Number.isInteger(c) || c < 0 || c >= numClasses) {
      throw new Error(`oneHot: label ${i} is ${c}, expected an integer in [0, ${numClasses})`);
    }
    out[i * numClasses + c] = 1;
  }
  return out;
}

function rowsOf(x: tf.Tensor | FloatArray, d: number, what: string): FloatArray {
  if (x instanceof Float32Array || x instanceof Float64Array) {
    if (x.length % d !== 0) throw new Error(`${what}: ${x.length} values are not rows of width ${d}`);
    return x;
  }
  if (x.shape[x.rank - 1] !== d) throw new Error(`${what}: expected shape [..., ${d}], got [${x.shape.join(', ')}]`);
  if (x.dtype !== 'float32') throw new Error(`${what}: expected a float32 tensor, got ${x.dtype}`);
  return x.dataSync() as Float32Array;
}

function labelsOf(z: tf.Tensor | ArrayLike<number>, n: number, c: number, what: string): ArrayLike<number> {
  const data = z instanceof tf.Tensor ? z.dataSync() : z;
  if (data.length !== n * c) {
    throw new Error(`${what}: expected ${n} x ${c} concept values (one-hot rows or one scalar per row), got ${data.length}`);
  }
  return data;
}

/** Streaming LEACE fitter; see the module docstring. */
export class LeaceFitter {
  readonly dX: number;
  readonly dZ: number;
  readonly method: LeaceMethod;
  readonly shrinkage: boolean;
  readonly svdTol: number;
  readonly affine: boolean;

  /** Samples seen. */
  n = 0;
  /** Running mean of x [dX]. */
  readonly meanX: Float64Array;
  /** Running mean of z [dZ]. */
  readonly meanZ: Float64Array;
  /** Centred co-moment Σ_i (x_i - μ_x)(x_i - μ_x)^T [dX, dX]; upper triangle only ('leace'). */
  private readonly comomentXX: Float64Array | null;
  /** Centred cross co-moment Σ_i (x_i - μ_x)(z_i - μ_z)^T [dX, dZ]. */
  private readonly comomentXZ: Float64Array;
  private cached: AffineErasure | undefined;

  constructor(dX: number, dZ: number, options: LeaceOptions = {}) {
    if (!Number.isInteger(dX) || dX < 1) throw new Error(`LeaceFitter: dX must be a positive integer, got ${dX}`);
    if (!Number.isInteger(dZ) || dZ < 1) throw new Error(`LeaceFitter: dZ must be a positive integer, got ${dZ}`);
    this.dX = dX;
    this.dZ = dZ;
    this.method = options.method ?? 'leace';
    if (this.method !== 'leace' && this.method !== 'orth') throw new Error(`LeaceFitter: unknown method "${String(this.method)}"`);
    this.shrinkage = options.shrinkage ?? true;
    this.svdTol = options.svdTol ?? 0.01;
    if (!(this.svdTol > 0)) throw new Error(`LeaceFitter: svdTol must be positive, got ${this.svdTol}`);
    this.affine = options.affine ?? true;
    this.meanX = new Float64Array(dX);
    this.meanZ = new Float64Array(dZ);
    this.comomentXX = this.method === 'leace' ? new Float64Array(dX * dX) : null;
    this.comomentXZ = new Float64Array(dX * dZ);
  }

  /** Fits on one batch: `x [n, dX]`, `z [n, dZ]`. */
  static fit(x: tf.Tensor | FloatArray, z: tf.Tensor | ArrayLike<number>, dX: number, dZ: number, options?: LeaceOptions): LeaceFitter {
    return new LeaceFitter(dX, dZ, options).update(x, z);
  }

  /**
   * Adds a chunk: `x [n, dX]` (tensor of any rank with last axis dX, or row-major data) and
   * `z [n, dZ]` (one-hot rows, or one scalar per row when dZ = 1). Invalidates the cached eraser.
   */
  update(x: tf.Tensor | FloatArray, z: tf.Tensor | ArrayLike<number>): this {
    const d = this.dX;
    const c = this.dZ;
    const xs = rowsOf(x, d, 'LeaceFitter.update x');
    const nb = xs.length / d;
    if (nb === 0) return this;
    const zs = labelsOf(z, nb, c, 'LeaceFitter.update z');

    // Chunk means.
    const mx = new Float64Array(d);
    const mz = new Float64Array(c);
    for (let r = 0; r < nb; r++) {
      for (let j = 0; j < d; j++) mx[j]! += xs[r * d + j]!;
      for (let j = 0; j < c; j++) mz[j]! += zs[r * c + j]!;
    }
    for (let j = 0; j < d; j++) mx[j]! /= nb;
    for (let j = 0; j < c; j++) mz[j]! /= nb;

    // Chunk co-moments, accumulated straight into the running ones.
    const xx = this.comomentXX;
    const xz = this.comomentXZ;
    const dx = new Float64Array(d);
    const dz = new Float64Array(c);
    for (let r = 0; r < nb; r++) {
      for (let j = 0; j < d; j++) dx[j] = xs[r * d + j]! - mx[j]!;
      for (let j = 0; j < c; j++) dz[j] = zs[r * c + j]! - mz[j]!;
      for (let i = 0; i < d; i++) {
        const xi = dx[i]!;
        if (xi === 0) continue;
        const row = i * d;
        if (xx !== null) for (let j = i; j < d; j++) xx[row + j]! += xi * dx[j]!;
        for (let j = 0; j < c; j++) xz[i * c + j]! += xi * dz[j]!;
      }
    }

    // Merge the chunk with the running statistics.
    const na = this.n;
    const n = na + nb;
    const f = (na * nb) / n;
    for (let j = 0; j < d; j++) dx[j] = mx[j]! - this.meanX[j]!;
    for (let j = 0; j < c; j++) dz[j] = mz[j]! - this.meanZ[j]!;
    if (f > 0) {
      for (let i = 0; i < d; i++) {
        const fi = f * dx[i]!;
        if (xx !== null) for (let j = i; j < d; j++) xx[i * d + j]! += fi * dx[j]!;
        for (let j = 0; j < c; j++) xz[i * c + j]! += fi * dz[j]!;
      }
    }
    for (let j = 0; j < d; j++) this.meanX[j]! += (dx[j]! * nb) / n;
    for (let j = 0; j < c; j++) this.meanZ[j]! += (dz[j]! * nb) / n;
    this.n = n;
    this.cached = undefined;
    return this;
  }

  /** Covariance of x [dX, dX]: shrunk (`shrinkage`) or Bessel-corrected. 'leace' only. */
  sigmaXX(): Float64Array {
    if (this.comomentXX === null) throw new Error('LeaceFitter: covariance of x is not tracked for method "orth"');
    if (this.n < 2) throw new Error(`LeaceFitter: need at least 2 samples, have ${this.n}`);
    const d = this.dX;
    const s = new Float64Array(d * d);
    for (let i = 0; i < d; i++) {
      for (let j = i; j < d; j++) {
        s[i * d + j] = this.comomentXX[i * d + j]!;
        s[j * d + i] = this.comomentXX[i * d + j]!;
      }
    }
    if (this.shrinkage) {
      for (let i = 0; i < s.length; i++) s[i]! /= this.n;
      return optimalLinearShrinkage(s, d, this.n);
    }
    for (let i = 0; i < s.length; i++) s[i]! /= this.n - 1;
    return s;
  }

  /** Cross-covariance of x and z [dX, dZ] (Bessel-corrected). */
  sigmaXZ(): Float64Array {
    if (this.n < 2) throw new Error(`LeaceFitter: need at least 2 samples, have ${this.n}`);
    return this.comomentXZ.map((v) => v / (this.n - 1));
  }

  /** The eraser for the statistics so far (cached until the next `update`). */
  eraser(): AffineErasure {
    this.cached ??= this.computeEraser();
    return this.cached;
  }

  private computeEraser(): AffineErasure {
    const d = this.dX;
    const c = this.dZ;
    const bias = this.affine ? Float64Array.from(this.meanX) : null;
    const sigmaXZ = this.sigmaXZ();
    if (this.method === 'orth') {
      const { basis, rank } = columnSpaceBasis(sigmaXZ, d, c, this.svdTol);
      return { dim: d, rank, left: basis, right: transpose64(basis, d, rank), bias };
    }
    const sigma = this.sigmaXX();
    const { whiten, unwhiten } = whiteningPair(sigma, d);
    const { basis: u, rank } = columnSpaceBasis(matMul64(whiten, sigmaXZ, d, d, c), d, c, this.svdTol);
    const uT = transpose64(u, d, rank);
    const left = matMul64(unwhiten, u, d, d, rank);
    const right = matMul64(uT, whiten, rank, d, d);
    return { dim: d, rank, left, right, bias };
  }
}

/** Applies a LEACE (or any affine) erasure to activations `x [n, d]` or `[b, s, d]` (float32). */
export function applyLeace(eraser: AffineErasure, x: tf.Tensor): tf.Tensor {
  return applyErasure(eraser, x);
}
