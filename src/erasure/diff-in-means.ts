/**
 * Difference-in-means erasure: the orthogonal projection that removes the directions separating
 * the class means of x.
 *
 * ## Math
 * With class means μ_0 ... μ_{C-1} and overall mean μ, let D = span{μ_c - μ_0 : c >= 1} (rank <= C-1;
 * for a binary concept the single direction μ_1 - μ_0) and V [k, d] an orthonormal basis of D. Then
 *   r(x) = x - V^T V (x - μ)
 * makes every class mean equal: r(μ_c) - r(μ_0) = (I - V^T V)(μ_c - μ_0) = 0, and keeps E[x].
 * As an `AffineErasure`: L = V^T, R = V, b = μ. For one-hot z this is the same subspace as
 * LEACE's 'orth' method (Σ_xz's columns are p_c (μ_c - μ), which span D).
 *
 * V comes from the SVD of [μ_1 - μ_0, ..., μ_{C-1} - μ_0] [d, C-1]; singular values at or below
 * `relTol` times the largest are dropped (directions that are numerically dependent).
 *
 * Statistics stream: per-class sums and counts in float64.
 */
import { tf } from '../engine/engine.js';
import { type AffineErasure, type FloatArray, applyErasure, columnSpaceBasis } from './linear-algebra.js';

export interface DiffInMeansOptions {
  /** Drop directions whose singular value is <= relTol * the largest; default 1e-8. */
  relTol?: number;
  /** Project about the overall mean (keeps E[x]); default true. Else about 0. */
  affine?: boolean;
}

/** Streaming difference-in-means fitter over integer class labels in [0, numClasses). */
export class DiffInMeansFitter {
  readonly dX: number;
  readonly numClasses: number;
  readonly relTol: number;
  readonly affine: boolean;
  /** Per-class sums of x [numClasses, dX], float64. */
  private readonly sums: Float64Array;
  /** Per-class counts. */
  readonly counts: Float64Array;
  private cached: AffineErasure | undefined;

  constructor(dX: number, numClasses = 2, options: DiffInMeansOptions = {}) {
    if (!Number.isInteger(dX) || dX < 1) throw new Error(`DiffInMeansFitter: dX must be a positive integer, got ${dX}`);
    if (!Number.isInteger(numClasses) || numClasses < 2) {
      throw new Error(`DiffInMeansFitter: numClasses must be an integer >= 2, got ${numClasses}`);
    }
    this.dX = dX;
    this.numClasses = numClasses;
    this.relTol = options.relTol ?? 1e-8;
    this.affine = options.affine ?? true;
    this.sums = new Float64Array(numClasses * dX);
    this.counts = new Float64Array(numClasses);
  }

  static fit(x: tf.Tensor | FloatArray, labels: tf.Tensor | ArrayLike<number>, dX: number, numClasses = 2, options?: DiffInMeansOptions): DiffInMeansFitter {
    return new DiffInMeansFitter(dX, numClasses, options).update(x, labels);
  }

  /** Adds rows `x [n, dX]` with class labels `[n]`. */
  update(x: tf.Tensor | FloatArray, labels: tf.Tensor | ArrayLike<number>): this {
    const d = this.dX;
    let xs: FloatArray;
    if (x instanceof Float32Array || x instanceof Float64Array) {
      xs = x;
    } else {
      if (x.shape[x.rank - 1] !== d || x.dtype !== 'float32') {
        throw new Error(`DiffInMeansFitter.update x: expected float32 [..., ${d}], got ${x.dtype} [${x.shape.join(', ')}]`);
      }
      xs = x.dataSync() as Float32Array;
    }
    if (xs.length % d !== 0) throw new Error(`DiffInMeansFitter.update x: ${xs.length} values are not rows of width ${d}`);
    const n = xs.length / d;
    const ys = labels instanceof tf.Tensor ? labels.dataSync() : labels;
    if (ys.length !== n) throw new Error(`DiffInMeansFitter.update labels: expected ${n} labels, got ${ys.length}`);
    for (let r = 0; r < n; r++) {
      const c = ys[r]!;
      if (!Number.isInteger(c) || c < 0 || c >= this.numClasses) {
        throw new Error(`DiffInMeansFitter.update labels: label ${r} is ${c}, expected an integer in [0, ${this.numClasses})`);
      }
      this.counts[c]! += 1;
      const o = c * d;
      for (let j = 0; j < d; j++) this.sums[o + j]! += xs[r * d + j]!;
    }
    this.cached = undefined;
    return this;
  }

  /** Class means [numClasses, dX]. */
  classMeans(): Float64Array {
    const d = this.dX;
    const out = new Float64Array(this.numClasses * d);
    for (let c = 0; c < this.numClasses; c++) {
      if (this.counts[c] === 0) throw new Error(`DiffInMeansFitter: class ${c} has no samples`);
      for (let j = 0; j < d; j++) out[c * d + j] = this.sums[c * d + j]! / this.counts[c]!;
    }
    return out;
  }

  /** The eraser (cached until the next `update`). */
  eraser(): AffineErasure {
    this.cached ??= this.computeEraser();
    return this.cached;
  }

  private computeEraser(): AffineErasure {
    const d = this.dX;
    const k = this.numClasses - 1;
    const means = this.classMeans();
    // Differences as columns: diffs [d, C-1].
    const diffs = new Float64Array(d * k);
    for (let c = 1; c <= k; c++) for (let j = 0; j < d; j++) diffs[j * k + c - 1] = means[c * d + j]! - means[j]!;
    const { basis, rank } = columnSpaceBasis(diffs, d, k, this.relTol, true);
    let bias: Float64Array | null = null;
    if (this.affine) {
      bias = new Float64Array(d);
      let total = 0;
      for (let c = 0; c < this.numClasses; c++) {
        total += this.counts[c]!;
        for (let j = 0; j < d; j++) bias[j]! += this.sums[c * d + j]!;
      }
      for (let j = 0; j < d; j++) bias[j]! /= total;
    }
    // basis is V^T [d, rank]; R = V.
    const right = new Float64Array(rank * d);
    for (let j = 0; j < d; j++) for (let c = 0; c < rank; c++) right[c * d + j] = basis[j * rank + c]!;
    return { dim: d, rank, left: basis, right, bias };
  }
}

/** Applies a difference-in-means (or any affine) erasure to `x [..., d]` (float32). */
export function applyDiffInMeans(eraser: AffineErasure, x: tf.Tensor): tf.Tensor {
  return applyErasure(eraser, x);
}
