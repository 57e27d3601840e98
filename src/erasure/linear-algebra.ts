/**
 * Float64 linear algebra shared by the linear concept erasers (LEACE, diff-in-means, INLP), and the
 * one representation they all return: an affine erasure of low rank.
 *
 * Matrices are plain row-major `Float64Array`s with their shape passed alongside (`[rows, cols]`);
 * decompositions go through `ml-matrix` (float64). Statistics and decompositions stay in float64
 * because erasure is a difference of nearly equal quantities: class means that agree to 1e-6 in
 * float64 agree to only ~1e-3 after a float32 covariance of unnormalised activations.
 *
 * ## The affine erasure
 * Every eraser here is `r(x) = x - L R (x - b)` for a column vector `x [d]`, with `L [d, k]`,
 * `R [k, d]`, `b [d]` (the mean of x, or 0 when `bias` is null) and `k` the number of erased
 * directions. In EleutherAI concept-erasure's convention the projection is `P = I - L R`, so
 * `r(x) = b + P (x - b)`; `R L = I_k` makes `P` idempotent (a projection, oblique for LEACE).
 */
import { EigenvalueDecomposition, Matrix, SingularValueDecomposition } from 'ml-matrix';
import { matMulT, tf } from '../engine/engine.js';
import { maxOf } from '../util/arrays.js';

/** Row-major float data, float32 or float64. */
export type FloatArray = Float32Array | Float64Array;

/** An affine, rank-k concept erasure `r(x) = x - L R (x - b)`; see the module docstring. */
export interface AffineErasure {
  /** Dimension d of the representation. */
  readonly dim: number;
  /** Number k of erased directions (the rank of `I - P`). */
  readonly rank: number;
  /** L [d, k], row-major. */
  readonly left: Float64Array;
  /** R [k, d], row-major. */
  readonly right: Float64Array;
  /** b [d]: the point the projection is taken about (the mean of x), or null for b = 0. */
  readonly bias: Float64Array | null;
}

/** Identity matrix I_d, row-major. */
export function identity(d: number): Float64Array {
  const out = new Float64Array(d * d);
  for (let i = 0; i < d; i++) out[i * d + i] = 1;
  return out;
}

/** C [m, n] = A [m, k] B [k, n], all row-major float64. */
export function matMul64(a: FloatArray, b: FloatArray, m: number, k: number, n: number): Float64Array {
  if (a.length !== m * k) throw new Error(`matMul64: A has ${a.length} entries, expected ${m}x${k}`);
  if (b.length !== k * n) throw new Error(`matMul64: B has ${b.length} entries, expected ${k}x${n}`);
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    const outRow = i * n;
    for (let p = 0; p < k; p++) {
      const aip = a[i * k + p]!;
      if (aip === 0) continue;
      const bRow = p * n;
      for (let j = 0; j < n; j++) out[outRow + j]! += aip * b[bRow + j]!;
    }
  }
  return out;
}

/** A^T [n, m] of A [m, n], row-major. */
export function transpose64(a: FloatArray, m: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) out[j * m + i] = a[i * n + j]!;
  return out;
}

/** tr(A) of a square row-major A [d, d]. */
export function trace64(a: FloatArray, d: number): number {
  let t = 0;
  for (let i = 0; i < d; i++) t += a[i * d + i]!;
  return t;
}

export function toMlMatrix(a: FloatArray, rows: number, cols: number): Matrix {
  const m = new Matrix(rows, cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) m.set(i, j, a[i * cols + j]!);
  return m;
}

export function fromMlMatrix(m: Matrix): Float64Array {
  const out = new Float64Array(m.rows * m.columns);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.columns; j++) out[i * m.columns + j] = m.get(i, j);
  return out;
}

/**
 * `(A + A^T) / 2` in place: accumulated rounding leaves streamed co-moments slightly asymmetric,
 * and the symmetric eigensolver assumes exact symmetry.
 */
export function symmetrizeInPlace(a: Float64Array, d: number): Float64Array {
  for (let i = 0; i < d; i++) {
    for (let j = i + 1; j < d; j++) {
      const v = (a[i * d + j]! + a[j * d + i]!) / 2;
      a[i * d + j] = v;
      a[j * d + i] = v;
    }
  }
  return a;
}

/**
 * Optimal linear shrinkage of a sample covariance toward the isotropic target (Ledoit-Wolf style;
 * Chen, Wiesel, Eldar & Hero; the form of Bai & Yin's "On the strong convergence of the optimal
 * linear shrinkage estimator for large dimensional covariance matrix", arXiv:1308.2608), as in
 * EleutherAI concept-erasure's `optimal_linear_shrinkage`.
 *
 * With `S` the biased (divide by n) sample covariance of `n` samples in `p` dimensions, target
 * `S0 = (tr S / p) I`:
 *   alpha = 1 - (tr(S)^2 / n) / (||S||_F^2 - tr(S)^2 / p),   result = alpha S + (1 - alpha) S0.
 * (The reference's `beta = (1 - alpha) <S, S0>_F / ||S0||_F^2` equals `(1 - alpha) tr(S)/p` times the
 * identity's coefficient, i.e. the same thing.) Unlike the reference, alpha is clamped to [0, 1]:
 * when `||S||_F^2 <= tr(S)^2/p` (S already isotropic) or n is too small, the raw formula divides by
 * ~0 or goes negative, which would not be a covariance; we return the target instead.
 */
export function optimalLinearShrinkage(s: Float64Array, p: number, n: number): Float64Array {
  if (n <= 1) throw new Error(`optimalLinearShrinkage: need n > 1 samples, got ${n}`);
  if (s.length !== p * p) throw new Error(`optimalLinearShrinkage: S has ${s.length} entries, expected ${p}x${p}`);
  const tr = trace64(s, p);
  let frobSq = 0;
  for (let i = 0; i < s.length; i++) frobSq += s[i]! * s[i]!;
  const spread = frobSq - (tr * tr) / p;
  let alpha = spread > 0 ? 1 - (tr * tr) / n / spread : 0;
  alpha = Math.min(1, Math.max(0, alpha));
  const out = new Float64Array(p * p);
  for (let i = 0; i < s.length; i++) out[i] = alpha * s[i]!;
  const target = ((1 - alpha) * tr) / p;
  for (let i = 0; i < p; i++) out[i * p + i]! += target;
  return out;
}

/** Eigendecomposition `S = V diag(values) V^T` of a symmetric matrix; `vectors` holds V row-major. */
export function symmetricEigen(s: Float64Array, d: number): { values: Float64Array; vectors: Float64Array } {
  const evd = new EigenvalueDecomposition(toMlMatrix(s, d, d), { assumeSymmetric: true });
  return { values: Float64Array.from(evd.realEigenvalues), vectors: fromMlMatrix(evd.eigenvectorMatrix) };
}

/**
 * The whitening pair of a PSD covariance: `W = (S^{1/2})^+` and its pseudo-inverse `W^+ = S^{1/2}`.
 * Eigenvalues at or below `max(eigenvalue) * d * eps64` count as zero (the threshold
 * `torch.linalg.pinv` uses; concept-erasure uses it too); small negative ones from rounding are 0.
 */
export function whiteningPair(s: Float64Array, d: number): { whiten: Float64Array; unwhiten: Float64Array } {
  const { values, vectors } = symmetricEigen(s, d);
  let maxValue = 0;
  for (const v of values) maxValue = Math.max(maxValue, v);
  const cutoff = maxValue * d * Number.EPSILON;
  const invSqrt = new Float64Array(d);
  const sqrt = new Float64Array(d);
  for (let i = 0; i < d; i++) {
    const v = values[i]!;
    if (v > cutoff) {
      sqrt[i] = Math.sqrt(v);
      invSqrt[i] = 1 / sqrt[i]!;
    }
  }
  // V diag(f) V^T, accumulated as a sum of rank-one terms per eigenpair.
  const whiten = new Float64Array(d * d);
  const unwhiten = new Float64Array(d * d);
  for (let e = 0; e < d; e++) {
    if (sqrt[e] === 0) continue;
    const a = invSqrt[e]!;
    const b = sqrt[e]!;
    for (let i = 0; i < d; i++) {
      const vi = vectors[i * d + e]!;
      if (vi === 0) continue;
      for (let j = 0; j < d; j++) {
        const vv = vi * vectors[j * d + e]!;
        whiten[i * d + j]! += a * vv;
        unwhiten[i * d + j]! += b * vv;
      }
    }
  }
  return { whiten: symmetrizeInPlace(whiten, d), unwhiten: symmetrizeInPlace(unwhiten, d) };
}

/**
 * Orthonormal basis of the column space of `A [m, n]`: the left singular vectors whose singular
 * value exceeds `tol` (an absolute threshold, as concept-erasure's `svd_tol`), or `tol` times the
 * largest singular value when `relative` is set.
 * Returns `basis [m, r]` row-major, its rank r and all singular values (descending).
 */
export function columnSpaceBasis(
  a: FloatArray,
  m: number,
  n: number,
  tol: number,
  relative = false,
): { basis: Float64Array; rank: number; singularValues: Float64Array } {
  if (m === 0 || n === 0) return { basis: new Float64Array(0), rank: 0, singularValues: new Float64Array(0) };
  const svd = new SingularValueDecomposition(toMlMatrix(a, m, n), {
    computeLeftSingularVectors: true,
    computeRightSingularVectors: false,
    autoTranspose: true,
  });
  const singularValues = Float64Array.from(svd.diagonal);
  const u = svd.leftSingularVectors;
  const threshold = relative ? tol * Math.max(0, maxOf(singularValues)) : tol;
  const keep: number[] = [];
  for (let i = 0; i < singularValues.length && i < u.columns; i++) {
    if (singularValues[i]! > threshold && singularValues[i]! > 0) keep.push(i);
  }
  const r = keep.length;
  const basis = new Float64Array(m * r);
  for (let i = 0; i < m; i++) for (let c = 0; c < r; c++) basis[i * r + c] = u.get(i, keep[c]!);
  return { basis, rank: r, singularValues };
}

/**
 * An orthogonal erasure of the span of the rows of `directions [k, d]` (orthonormal), about `bias`:
 * `L = D^T`, `R = D`, so `P = I - D^T D` is symmetric and idempotent.
 */
export function orthogonalErasure(directions: Float64Array, k: number, d: number, bias: Float64Array | null): AffineErasure {
  if (directions.length !== k * d) throw new Error(`orthogonalErasure: directions have ${directions.length} entries, expected ${k}x${d}`);
  return { dim: d, rank: k, left: transpose64(directions, k, d), right: Float64Array.from(directions), bias };
}

/** The projection `P = I - L R` [d, d] (concept-erasure's `LeaceEraser.P`), row-major float64. */
export function projectionMatrix(e: AffineErasure): Float64Array {
  const p = identity(e.dim);
  const lr = matMul64(e.left, e.right, e.dim, e.rank, e.dim);
  for (let i = 0; i < p.length; i++) p[i]! -= lr[i]!;
  return p;
}

/** Applies the erasure to the rows of `x [n, d]` in float64 (reference path; tensors use `applyErasure`). */
export function eraseRows(e: AffineErasure, x: FloatArray, n: number): Float64Array {
  const { dim: d, rank: k, left, right, bias } = e;
  if (x.length !== n * d) throw new Error(`eraseRows: x has ${x.length} entries, expected ${n}x${d}`);
  const out = Float64Array.from(x);
  const coeff = new Float64Array(k);
  for (let row = 0; row < n; row++) {
    const o = row * d;
    for (let c = 0; c < k; c++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += right[c * d + j]! * (x[o + j]! - (bias === null ? 0 : bias[j]!));
      coeff[c] = s;
    }
    for (let i = 0; i < d; i++) {
      let s = 0;
      for (let c = 0; c < k; c++) s += left[i * k + c]! * coeff[c]!;
      out[o + i]! -= s;
    }
  }
  return out;
}

/**
 * Float32 tensors of an erasure, made once for repeated application (e.g. a model edit hook).
 * Holds `R^T [d, k]`, `L^T [k, d]` and `b [d]`, pre-transposed so no transpose runs per call.
 * Call `dispose()` when done.
 */
export class ErasureTensors {
  readonly dim: number;
  readonly rank: number;
  private readonly rightT: tf.Tensor2D;
  private readonly leftT: tf.Tensor2D;
  private readonly bias: tf.Tensor1D | null;

  constructor(e: AffineErasure) {
    this.dim = e.dim;
    this.rank = e.rank;
    this.rightT = tf.tensor2d(Float32Array.from(transpose64(e.right, e.rank, e.dim)), [e.dim, e.rank]);
    this.leftT = tf.tensor2d(Float32Array.from(transpose64(e.left, e.dim, e.rank)), [e.rank, e.dim]);
    this.bias = e.bias === null ? null : tf.tensor1d(Float32Array.from(e.bias));
  }

  /**
   * `x [..., d]` -> `x - ((x - b) R^T) L^T`, same shape; the low-rank order costs O(n d k), not
   * O(n d^2). Returns a new tensor (a copy when k = 0); `x` is not disposed.
   */
  apply(x: tf.Tensor): tf.Tensor {
    const d = x.shape[x.rank - 1];
    if (x.rank < 1 || d !== this.dim) {
      throw new Error(`erasure: expected activations [..., ${this.dim}], got [${x.shape.join(', ')}]`);
    }
    return tf.tidy(() => {
      if (this.rank === 0) return tf.clone(x);
      const flat = tf.reshape(x, [-1, this.dim]);
      const centred = this.bias === null ? flat : tf.sub(flat, this.bias);
      const coeff = matMulT(centred, this.rightT);
      const erased = tf.sub(flat, matMulT(coeff, this.leftT));
      return tf.reshape(erased, x.shape);
    });
  }

  dispose(): void {
    this.rightT.dispose();
    this.leftT.dispose();
    this.bias?.dispose();
  }
}

/** One-off application of an erasure to a tensor `x [..., d]` (see `ErasureTensors.apply`). */
export function applyErasure(e: AffineErasure, x: tf.Tensor): tf.Tensor {
  const t = new ErasureTensors(e);
  try {
    return t.apply(x);
  } finally {
    t.dispose();
  }
}

/** Reads a 2-D tensor `[n, d]` into row-major float32 data with its shape. */
export function tensorRows(x: tf.Tensor, what: string): { data: Float32Array; n: number; d: number } {
  if (x.rank !== 2) throw new Error(`${what}: expected a 2-D tensor [n, d], got [${x.shape.join(', ')}]`);
  const data = x.dataSync();
  if (!(data instanceof Float32Array)) throw new Error(`${what}: expected a float32 tensor, got ${x.dtype}`);
  return { data, n: x.shape[0]!, d: x.shape[1]! };
}
