/**
 * Orthogonal matrices from unconstrained parameters, for the DAS mask (mask/das-mask.ts).
 *
 * ## Parametrisation
 * A free square parameter P `[d, d]` gives the skew-symmetric A = P - P^T (A^T = -A), and the
 * Cayley map gives the rotation
 *   R = (I - A)^{-1} (I + A).
 * R is orthogonal for every skew A: with M = I - A and N = I + A, M and N commute and
 * M^T = N, so R^T R = N^T M^{-T} M^{-1} N = M (N M)^{-1} N = M (M N)^{-1} N = I (I - A is always
 * invertible: the eigenvalues of a real skew matrix are imaginary, so those of I - A are 1 + i t).
 * The map covers every rotation without eigenvalue -1, and A = 0 gives R = I.
 *
 * ## Computation and gradient
 * tfjs has no differentiable matrix inverse, so the forward pass runs in float64 on the CPU
 * (`ml-matrix` LU inverse, then R = M^{-1} N), which also keeps R orthogonal to float32 rounding
 * (||R^T R - I|| ~ 1e-7 sqrt(d)) instead of accumulating float32 error in the inverse.
 * The gradient is written out: from dR = M^{-1} dA (I + R) (differentiate M R = N),
 *   dL/dA = M^{-T} G (I + R)^T,   G = dL/dR,
 * and since N = 2I - M gives R = 2 M^{-1} - I, i.e. M^{-1} = (I + R) / 2,
 *   dL/dA = (I + R)^T G (I + R)^T / 2,
 * which needs only R (no second inverse). Through A = P - P^T, dL/dP = dL/dA - (dL/dA)^T.
 * Cost per call: one d x d inverse and product in float64 (about 2 d^3 flops; d = 512 takes a few
 * hundred milliseconds in JavaScript) plus two float32 matmuls for the gradient.
 */
import { inverse, Matrix } from 'ml-matrix';
import { matMulT, tf } from '../engine/engine.js';
import { fromMlMatrix, identity, matMul64 } from './linear-algebra.js';

/** The skew-symmetric A = P - P^T of a square parameter P. Differentiable. */
export function skewOf(p: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.sub(p, tf.transpose(p)) as tf.Tensor2D);
}

/** R = (I - A)^{-1} (I + A) and M^{-1} = (I - A)^{-1} in float64, for skew A `[d, d]` row-major. */
export function cayley64(a: ArrayLike<number>, d: number): { rotation: Float64Array; inverse: Float64Array } {
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
  const inv = fromMlMatrix(inverse(new Matrix(rows)));
  return { rotation: matMul64(inv, n, d, d, d), inverse: inv };
}

/**
 * The Cayley map R = (I - A)^{-1} (I + A) of a skew-symmetric `a [d, d]`, differentiable with the
 * gradient of the module docstring. `a` must be skew-symmetric (use `skewOf`).
 */
export function cayley(a: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = args[0] as tf.Tensor;
    const [d, d2] = x.shape;
    if (x.rank !== 2 || d !== d2) throw new Error(`cayley: expects a square matrix, got [${x.shape.join(', ')}]`);
    const rotation = Float32Array.from(cayley64(x.dataSync(), d!).rotation);
    // R is kept as plain data for the backward pass: tensors saved through customGrad's `save`
    // are cloned, which the engine's leak check (on under IS_TEST) reports as a leak.
    return {
      value: tf.tensor2d(rotation, [d!, d!]),
      gradFunc: (dy: tf.Tensor): tf.Tensor[] => {
        // (I + R)^T G (I + R)^T / 2
        const iPlusR = tf.add(tf.eye(d!), tf.tensor2d(rotation, [d!, d!]));
        return [tf.mul(matMulT(matMulT(iPlusR, dy, true, false), iPlusR, false, true), 0.5)];
      },
    };
  });
  return op(a) as tf.Tensor2D;
}

/** The rotation of a free parameter P: cayley(P - P^T). Differentiable in P. */
export function rotationOf(p: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => cayley(skewOf(p)));
}

/** max_ij |(R^T R - I)_ij| in float64 for `r [d, d]` row-major. */
export function orthogonalityError(r: ArrayLike<number>, d: number): number {
  if (r.length !== d * d) throw new Error(`orthogonalityError: ${r.length} entries, expected ${d} x ${d}`);
  const eye = identity(d);
  let worst = 0;
  for (let i = 0; i < d; i++) {
    for (let j = i; j < d; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += r[k * d + i]! * r[k * d + j]!;
      worst = Math.max(worst, Math.abs(s - eye[i * d + j]!));
    }
  }
  return worst;
}
