/**
 * Orthonormal bases from unconstrained parameters, for the DAS mask (mask/das-mask.ts).
 *
 * ## Householder parametrisation (what DAS trains)
 * Free vectors v_1 .. v_k in R^d (rows of a parameter V `[k, d]`) give the reflections
 *   H_i = I - tau_i v_i v_i^T,   tau_i = 2 / (v_i^T v_i),
 * each orthogonal and symmetric (H_i^T H_i = I - 2 tau_i v v^T + tau_i^2 v (v^T v) v^T = I), and the
 * basis
 *   U = H_1 H_2 ... H_k E_k   `[d, k]`,
 * E_k the first k columns of the identity. U has orthonormal columns for every V (a product of
 * orthogonal matrices applied to orthonormal columns), and every orthonormal k-frame is reached up
 * to the signs of its columns (Householder QR writes any Q with orthonormal columns as
 * H_1 .. H_k [D; 0], D diagonal of signs), which a projection onto span(U) does not see. This is
 * the map of torch.nn.utils.parametrizations.orthogonal's "householder" option, with free vectors
 * rather than the LAPACK convention (v_i zero above entry i, 1 at it).
 *
 * Forward, in float64 on the CPU: Y = E_k, then Y <- Y - tau_i v_i (v_i^T Y) for i = k .. 1,
 * 2 d k flops per reflection, O(d k^2) in all, and no inverse. Orthonormality is then exact up to
 * float64 rounding, and float32 storage keeps |U^T U - I| ~ 1e-7.
 *
 * ## Gradient
 * For one reflection Y_out = Y_in - tau v w^T with w = Y_in^T v, and G = dL/dY_out:
 *   dL/dY_in = H G = G - tau v (v^T G)
 *   dL/dv    = tau^2 (v^T G w) v - tau G w - tau Y_in (G^T v)
 * (differentiate: dtau = -tau^2 v^T dv, dw = Y_in^T dv). The backward pass walks i = 1 .. k from
 * U = Y_0, recovering Y_i = H_i Y_{i-1} (each H_i is its own inverse) instead of storing every
 * intermediate, so memory stays O(d k). Each v_i's gradient is orthogonal to v_i (U does not
 * depend on the length of v_i).
 *
 * ## Cayley map (checkpoints written before the Householder parametrisation)
 * das_mask used to learn a full rotation R = (I - A)^{-1} (I + A) of a skew-symmetric A = P - P^T,
 * which costs a d x d inverse per step. Those checkpoints store A and R; restoring one rebuilds R
 * once (`cayley64`) and uses U = R (k = d).
 */
import { inverse, Matrix } from 'ml-matrix';
import { tf } from '../engine/engine.js';
import { fromMlMatrix, matMul64 } from './linear-algebra.js';

/** Squared length of row i of `v [k, d]`; throws for a zero row (its reflection is undefined). */
function rowNormSq(v: ArrayLike<number>, i: number, d: number): number {
  let s = 0;
  for (let r = 0; r < d; r++) s += v[i * d + r]! * v[i * d + r]!;
  if (!(s > 0)) throw new Error(`householder basis: reflection vector ${i} is ${s === 0 ? 'zero' : 'not finite'}`);
  return s;
}

/** Y <- H_i Y = Y - tau v_i (v_i^T Y) in place, for `y [d, k]` row-major. */
function reflect(y: Float64Array, v: ArrayLike<number>, i: number, tau: number, d: number, k: number): void {
  const w = new Float64Array(k);
  for (let r = 0; r < d; r++) {
    const vr = v[i * d + r]!;
    if (vr === 0) continue;
    for (let c = 0; c < k; c++) w[c]! += vr * y[r * k + c]!;
  }
  for (let r = 0; r < d; r++) {
    const f = tau * v[i * d + r]!;
    if (f === 0) continue;
    for (let c = 0; c < k; c++) y[r * k + c]! -= f * w[c]!;
  }
}

function checkShape(v: ArrayLike<number>, k: number, d: number): void {
  if (!Number.isInteger(k) || !Number.isInteger(d) || k < 1 || k > d) throw new Error(`householder basis: needs 1 <= k <= d, got k ${k}, d ${d}`);
  if (v.length !== k * d) throw new Error(`householder basis: the reflection vectors hold ${v.length} values, expected ${k} x ${d}`);
}

/** U = H_1 .. H_k E_k `[d, k]` row-major in float64, for reflection vectors `v [k, d]` row-major. */
export function householderBasis64(v: ArrayLike<number>, k: number, d: number): Float64Array {
  checkShape(v, k, d);
  const y = new Float64Array(d * k);
  for (let c = 0; c < k; c++) y[c * k + c] = 1;
  for (let i = k - 1; i >= 0; i--) reflect(y, v, i, 2 / rowNormSq(v, i, d), d, k);
  return y;
}

/**
 * dL/dV `[k, d]` for reflection vectors `v [k, d]`, the basis `u = householderBasis64(v)` `[d, k]`
 * and `g = dL/dU [d, k]` (module docstring), in float64.
 */
export function householderBasisGrad64(v: ArrayLike<number>, u: ArrayLike<number>, g: ArrayLike<number>, k: number, d: number): Float64Array {
  checkShape(v, k, d);
  if (u.length !== d * k || g.length !== d * k) throw new Error(`householder basis gradient: U and dL/dU must hold ${d} x ${k} values`);
  const y = Float64Array.from(u);
  const gr = Float64Array.from(g);
  const out = new Float64Array(k * d);
  const w = new Float64Array(k);
  const gw = new Float64Array(d);
  const gtv = new Float64Array(k);
  for (let i = 0; i < k; i++) {
    const tau = 2 / rowNormSq(v, i, d);
    // Y_in = H_i Y_out: reflecting the output back gives the input of this reflection.
    reflect(y, v, i, tau, d, k);
    w.fill(0);
    gtv.fill(0);
    for (let r = 0; r < d; r++) {
      const vr = v[i * d + r]!;
      for (let c = 0; c < k; c++) {
        w[c]! += vr * y[r * k + c]!;
        gtv[c]! += vr * gr[r * k + c]!;
      }
    }
    let vGw = 0;
    for (let r = 0; r < d; r++) {
      let s = 0;
      for (let c = 0; c < k; c++) s += gr[r * k + c]! * w[c]!;
      gw[r] = s;
      vGw += v[i * d + r]! * s;
    }
    for (let r = 0; r < d; r++) {
      let yg = 0;
      for (let c = 0; c < k; c++) yg += y[r * k + c]! * gtv[c]!;
      out[i * d + r] = tau * tau * vGw * v[i * d + r]! - tau * gw[r]! - tau * yg;
    }
    // dL/dY_in = H_i dL/dY_out.
    reflect(gr, v, i, tau, d, k);
  }
  return out;
}

/**
 * The basis U = H_1 .. H_k E_k `[d, k]` of reflection vectors `v [k, d]`, differentiable in v with
 * the gradient of the module docstring (computed in float64 on the CPU).
 */
export function householderBasis(v: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = args[0] as tf.Tensor;
    if (x.rank !== 2) throw new Error(`householder basis: expects reflection vectors [k, d], got [${x.shape.join(', ')}]`);
    const [k, d] = x.shape as [number, number];
    const vData = Float64Array.from(x.dataSync());
    const u = householderBasis64(vData, k, d);
    // Kept as plain data for the backward pass: tensors saved through customGrad's `save` are
    // cloned, which the engine's leak check (on under IS_TEST) reports as a leak.
    return {
      value: tf.tensor2d(Float32Array.from(u), [d, k]),
      gradFunc: (dy: tf.Tensor): tf.Tensor[] => [tf.tensor2d(Float32Array.from(householderBasisGrad64(vData, u, dy.dataSync(), k, d)), [k, d])],
    };
  });
  return op(v) as tf.Tensor2D;
}

/** R = (I - A)^{-1} (I + A) in float64 for a skew-symmetric `a [d, d]` row-major (old das_mask checkpoints). */
export function cayley64(a: ArrayLike<number>, d: number): Float64Array {
  if (a.length !== d * d) throw new Error(`cayley: the skew matrix has ${a.length} entries, expected ${d} x ${d}`);
  const m = new Float64Array(d * d);
  const n = new Float64Array(d * d);
  for (let i = 0; i < d * d; i++) {
    m[i] = -a[i]!;
    n[i] = a[i]!;
  }
  for (let i = 0; i < d; i++) {
    m[i * d + i]! += 1;
    n[i * d + i]! += 1;
  }
  const rows: number[][] = [];
  for (let i = 0; i < d; i++) rows.push(Array.from(m.subarray(i * d, i * d + d)));
  return matMul64(fromMlMatrix(inverse(new Matrix(rows))), n, d, d, d);
}

/** max_ij |(U^T U - I)_ij| in float64 for `u [d, k]` row-major (k = d for a square matrix). */
export function orthogonalityError(u: ArrayLike<number>, d: number, k = d): number {
  if (u.length !== d * k) throw new Error(`orthogonalityError: ${u.length} entries, expected ${d} x ${k}`);
  let worst = 0;
  for (let i = 0; i < k; i++) {
    for (let j = i; j < k; j++) {
      let s = 0;
      for (let r = 0; r < d; r++) s += u[r * k + i]! * u[r * k + j]!;
      worst = Math.max(worst, Math.abs(s - (i === j ? 1 : 0)));
    }
  }
  return worst;
}
