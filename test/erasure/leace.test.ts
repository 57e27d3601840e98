import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors } from '../../src/io/safetensors.js';
import { runPythonReference } from '../reference/python.js';
import { initEngine, tf } from '../../src/engine/engine.js';
import { LeaceFitter, applyLeace, oneHot } from '../../src/erasure/leace.js';
import {
  type AffineErasure,
  eraseRows,
  matMul64,
  optimalLinearShrinkage,
  projectionMatrix,
  symmetricEigen,
  trace64,
  transpose64,
  whiteningPair,
} from '../../src/erasure/linear-algebra.js';
import { accuracy, predictClasses, trainLogisticRegression } from '../../src/erasure/inlp.js';
import { classMeans, columnMeans, crossCovariance, maxAbs, maxAbsDiff, planted, takeRows } from './synthetic.js';

beforeAll(async () => {
  await initEngine();
});

/** Two-pass sample covariance [d, d] divided by n - 1 (independent of the streaming code). */
function covariance(x: Float64Array, n: number, d: number): Float64Array {
  return crossCovariance(x, x, n, d, d);
}

/** Mean over rows of (r(x) - x)^T M (r(x) - x). */
function meanSquaredChange(erased: Float64Array, x: Float64Array, n: number, d: number, m: Float64Array): number {
  let total = 0;
  const diff = new Float64Array(d);
  for (let r = 0; r < n; r++) {
    for (let j = 0; j < d; j++) diff[j] = erased[r * d + j]! - x[r * d + j]!;
    const md = matMul64(m, diff, d, d, 1);
    for (let j = 0; j < d; j++) total += diff[j]! * md[j]!;
  }
  return total / n;
}

function maxClassMeanGap(x: Float64Array, z: Int32Array, d: number, numClasses: number): number {
  const means = classMeans(x, z, d, numClasses);
  let gap = 0;
  for (let c = 1; c < numClasses; c++) gap = Math.max(gap, maxAbsDiff(means[c]!, means[0]!));
  return gap;
}

const d = 12;
const n = 3000;

describe('LeaceFitter statistics', () => {
  const data = planted({ n: 1000, d, seed: 7 });
  const z1h = oneHot(data.z, 2);

  it('matches two-pass float64 means, covariance and cross-covariance', () => {
    const fitter = LeaceFitter.fit(data.x, z1h, d, 2, { shrinkage: false });
    expect(maxAbsDiff(fitter.meanX, columnMeans(data.x, 1000, d))).toBeLessThan(1e-12);
    expect(maxAbsDiff(fitter.sigmaXX(), covariance(data.x, 1000, d))).toBeLessThan(1e-11);
    expect(maxAbsDiff(fitter.sigmaXZ(), crossCovariance(data.x, z1h, 1000, d, 2))).toBeLessThan(1e-12);
  });

  it('gives the same statistics and eraser from uneven chunks as from one batch', () => {
    const whole = LeaceFitter.fit(data.x, z1h, d, 2);
    const chunked = new LeaceFitter(d, 2);
    const cuts = [0, 1, 2, 50, 333, 334, 700, 1000];
    for (let i = 0; i + 1 < cuts.length; i++) {
      chunked.update(data.x.subarray(cuts[i]! * d, cuts[i + 1]! * d), z1h.subarray(cuts[i]! * 2, cuts[i + 1]! * 2));
    }
    expect(chunked.n).toBe(1000);
    expect(maxAbsDiff(chunked.meanX, whole.meanX)).toBeLessThan(1e-12);
    expect(maxAbsDiff(chunked.meanZ, whole.meanZ)).toBeLessThan(1e-12);
    expect(maxAbsDiff(chunked.sigmaXX(), whole.sigmaXX())).toBeLessThan(1e-11);
    expect(maxAbsDiff(chunked.sigmaXZ(), whole.sigmaXZ())).toBeLessThan(1e-12);
    expect(maxAbsDiff(projectionMatrix(chunked.eraser()), projectionMatrix(whole.eraser()))).toBeLessThan(1e-9);
  });

  it('invalidates the cached eraser on update', () => {
    const fitter = LeaceFitter.fit(data.x.subarray(0, 500 * d), z1h.subarray(0, 1000), d, 2);
    const first = fitter.eraser();
    expect(fitter.eraser()).toBe(first);
    fitter.update(data.x.subarray(500 * d), z1h.subarray(1000));
    expect(maxAbsDiff(projectionMatrix(fitter.eraser()), projectionMatrix(first))).toBeGreaterThan(1e-6);
  });

  it('accepts float32 tensors and scalar labels', () => {
    const xs = tf.tensor2d(Float32Array.from(data.x), [1000, d]);
    const fromTensor = LeaceFitter.fit(xs, tf.tensor1d(Float32Array.from(data.z)), d, 1);
    const fromArrays = LeaceFitter.fit(Float32Array.from(data.x), data.z, d, 1);
    xs.dispose();
    expect(maxAbsDiff(fromTensor.sigmaXZ(), fromArrays.sigmaXZ())).toBe(0);
    expect(maxAbsDiff(fromTensor.sigmaXX(), fromArrays.sigmaXX())).toBe(0);
  });

  it('rejects mismatched shapes with a clear error', () => {
    const fitter = new LeaceFitter(d, 2);
    expect(() => fitter.update(new Float64Array(d * 3 + 1), new Float64Array(6))).toThrow(/rows of width 12/);
    expect(() => fitter.update(new Float64Array(d * 3), new Float64Array(3))).toThrow(/expected 3 x 2 concept values/);
    expect(() => fitter.eraser()).toThrow(/at least 2 samples/);
    expect(() => new LeaceFitter(d, 1, { method: 'orth' }).update(data.x, data.z).sigmaXX()).toThrow(/not tracked/);
  });
});

describe('optimal linear shrinkage', () => {
  const data = planted({ n: 60, d, seed: 3, anisotropy: 4 });
  const raw = covariance(data.x, 60, d).map((v) => (v * 59) / 60);
  const shrunk = optimalLinearShrinkage(raw, d, 60);

  it('keeps the trace and eigenvectors and pulls every eigenvalue toward the mean by one factor in [0, 1]', () => {
    expect(trace64(shrunk, d)).toBeCloseTo(trace64(raw, d), 10);
    const { values, vectors } = symmetricEigen(raw, d);
    const meanEig = trace64(raw, d) / d;
    // V^T S' V must be diagonal with entries alpha * lambda + (1 - alpha) * mean.
    const vt = transpose64(vectors, d, d);
    const rotated = matMul64(matMul64(vt, shrunk, d, d, d), vectors, d, d, d);
    const alphas: number[] = [];
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < d; j++) if (i !== j) expect(Math.abs(rotated[i * d + j]!)).toBeLessThan(1e-10);
      if (Math.abs(values[i]! - meanEig) > 1e-3) alphas.push((rotated[i * d + i]! - meanEig) / (values[i]! - meanEig));
    }
    expect(alphas.length).toBeGreaterThan(d / 2);
    const alpha = alphas[0]!;
    for (const a of alphas) expect(a).toBeCloseTo(alpha, 8);
    expect(alpha).toBeGreaterThan(0);
    expect(alpha).toBeLessThan(1);
  });

  it('shrinks less with more samples', () => {
    const strength = (samples: number): number => {
      const s = optimalLinearShrinkage(raw, d, samples);
      return Math.abs(s[1]! / raw[1]!); // an off-diagonal entry scales by alpha
    };
    expect(strength(60)).toBeLessThan(strength(600));
    expect(strength(1e9)).toBeCloseTo(1, 6);
  });
});

describe.each([
  { numClasses: 2, oneHotZ: false, shrinkage: true },
  { numClasses: 2, oneHotZ: true, shrinkage: false },
  { numClasses: 3, oneHotZ: true, shrinkage: true },
])('LEACE erasure (%o)', ({ numClasses, oneHotZ, shrinkage }) => {
  const data = planted({ n, d, seed: 11, numClasses, signal: 2 });
  const dZ = oneHotZ ? numClasses : 1;
  const zRows = oneHotZ ? oneHot(data.z, numClasses) : Float64Array.from(data.z);
  let eraser: AffineErasure;
  let erased: Float64Array;
  beforeAll(() => {
    eraser = LeaceFitter.fit(data.x, zRows, d, dZ, { shrinkage }).eraser();
    erased = eraseRows(eraser, data.x, n);
  });

  it('(a) makes the class-conditional means equal', () => {
    const before = maxClassMeanGap(data.x, data.z, d, numClasses);
    expect(before).toBeGreaterThan(0.5);
    expect(maxClassMeanGap(erased, data.z, d, numClasses) / before).toBeLessThan(1e-10);
  });

  it('(b) leaves no cross-covariance with z', () => {
    const z1h = oneHot(data.z, numClasses);
    const before = maxAbs(crossCovariance(data.x, z1h, n, d, numClasses));
    expect(maxAbs(crossCovariance(erased, z1h, n, d, numClasses)) / before).toBeLessThan(1e-10);
  });

  it('keeps the unconditional mean, has rank <= number of classes - 1, and is idempotent', () => {
    expect(maxAbsDiff(columnMeans(erased, n, d), columnMeans(data.x, n, d))).toBeLessThan(1e-10);
    expect(eraser.rank).toBe(numClasses - 1);
    expect(maxAbsDiff(eraseRows(eraser, erased, n), erased)).toBeLessThan(1e-10);
  });

  it('never raises the variance in any direction (P Σ P^T <= Σ)', () => {
    const sigma = covariance(data.x, n, d);
    const after = covariance(erased, n, d);
    const gap = sigma.map((v, i) => v - after[i]!);
    // Exact for the Σ that W comes from; with shrinkage W comes from the shrunk Σ, so allow a little.
    const slack = shrinkage ? 1e-3 : 1e-10;
    expect(Math.min(...symmetricEigen(gap, d).values)).toBeGreaterThan(-slack * trace64(sigma, d));
  });

  it('float32 tensor application matches float64 and makes class means equal to 1e-4', () => {
    const before = tf.memory().numTensors;
    const x3 = tf.tensor3d(Float32Array.from(data.x), [n / 3, 3, d]);
    const out = applyLeace(eraser, x3);
    expect(out.shape).toEqual([n / 3, 3, d]);
    const got = out.dataSync();
    x3.dispose();
    out.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(maxAbsDiff(got, erased)).toBeLessThan(1e-4 * maxAbs(data.x));
    const gap = maxClassMeanGap(Float64Array.from(got), data.z, d, numClasses);
    expect(gap / maxClassMeanGap(data.x, data.z, d, numClasses)).toBeLessThan(1e-4);
  });
});

describe('LEACE against a fresh logistic regression', () => {
  // Fit on one half, test on the other.
  const data = planted({ n: 4000, d, seed: 21, signal: 1, taskSignal: 1 });
  const trainIdx = Array.from({ length: 2000 }, (_, i) => i);
  const testIdx = Array.from({ length: 2000 }, (_, i) => i + 2000);
  const xTrain = takeRows(data.x, d, trainIdx);
  const xTest = takeRows(data.x, d, testIdx);
  const pick = (labels: Int32Array, idx: number[]): Int32Array => Int32Array.from(idx, (i) => labels[i]!);
  const zTrain = pick(data.z, trainIdx);
  const zTest = pick(data.z, testIdx);
  const yTrain = pick(data.y, trainIdx);
  const yTest = pick(data.y, testIdx);

  const heldOutAccuracy = (train: Float64Array, labelsTrain: Int32Array, test: Float64Array, labelsTest: Int32Array): number => {
    const a = tf.tensor2d(Float32Array.from(train), [train.length / d, d]);
    const b = tf.tensor2d(Float32Array.from(test), [test.length / d, d]);
    const clf = trainLogisticRegression(a, labelsTrain, 2);
    const acc = accuracy(predictClasses(clf, b), labelsTest);
    a.dispose();
    b.dispose();
    return acc;
  };

  it('(c) z drops to chance while the independent task y is kept', () => {
    const eraser = LeaceFitter.fit(xTrain, zTrain, d, 1).eraser();
    const erasedTrain = eraseRows(eraser, xTrain, 2000);
    const erasedTest = eraseRows(eraser, xTest, 2000);
    const zBefore = heldOutAccuracy(xTrain, zTrain, xTest, zTest);
    const zAfter = heldOutAccuracy(erasedTrain, zTrain, erasedTest, zTest);
    const yBefore = heldOutAccuracy(xTrain, yTrain, xTest, yTest);
    const yAfter = heldOutAccuracy(erasedTrain, yTrain, erasedTest, yTest);
    console.log(`LEACE held-out accuracy: z ${zBefore.toFixed(3)} -> ${zAfter.toFixed(3)}, y ${yBefore.toFixed(3)} -> ${yAfter.toFixed(3)}`);
    expect(zBefore).toBeGreaterThan(0.85);
    expect(Math.abs(zAfter - 0.5)).toBeLessThan(0.04);
    expect(yBefore).toBeGreaterThan(0.85);
    expect(yAfter).toBeGreaterThan(yBefore - 0.03);
  });
});

describe('orthogonal vs oblique (LEACE) projection', () => {
  const data = planted({ n, d, seed: 5, anisotropy: 5, signal: 1 });
  const leace = LeaceFitter.fit(data.x, data.z, d, 1, { shrinkage: false }).eraser();
  const orth = LeaceFitter.fit(data.x, data.z, d, 1, { method: 'orth' }).eraser();

  it("(d) 'orth' is an orthogonal projection: P^2 = P = P^T", () => {
    const p = projectionMatrix(orth);
    expect(maxAbsDiff(matMul64(p, p, d, d, d), p)).toBeLessThan(1e-12);
    expect(maxAbsDiff(transpose64(p, d, d), p)).toBeLessThan(1e-12);
    expect(trace64(p, d)).toBeCloseTo(d - 1, 10);
  });

  it("'leace' is an oblique projection: P^2 = P, P != P^T on anisotropic data", () => {
    const p = projectionMatrix(leace);
    expect(maxAbsDiff(matMul64(p, p, d, d, d), p)).toBeLessThan(1e-10);
    expect(maxAbsDiff(transpose64(p, d, d), p)).toBeGreaterThan(1e-2);
  });

  it('(e) LEACE moves x less than the orthogonal projection under I, Σ and Σ^-1', () => {
    const sigma = covariance(data.x, n, d);
    const { values, vectors } = symmetricEigen(sigma, d);
    const inv = matMul64(
      vectors.map((v, i) => v / values[i % d]!),
      transpose64(vectors, d, d),
      d,
      d,
      d,
    );
    const eye = new Float64Array(d * d).map((_, i) => (i % (d + 1) === 0 ? 1 : 0));
    const erasedLeace = eraseRows(leace, data.x, n);
    const erasedOrth = eraseRows(orth, data.x, n);
    for (const [name, m] of [
      ['I', eye],
      ['Σ', sigma],
      ['Σ^-1', inv],
    ] as const) {
      const a = meanSquaredChange(erasedLeace, data.x, n, d, m);
      const b = meanSquaredChange(erasedOrth, data.x, n, d, m);
      console.log(`mean squared change under ${name}: leace ${a.toFixed(4)}, orth ${b.toFixed(4)}`);
      expect(a).toBeLessThan(b * 0.95);
    }
    // Both erase: equal class means.
    expect(maxClassMeanGap(erasedOrth, data.z, d, 2)).toBeLessThan(1e-10);
  });
});

describe('svdTol', () => {
  it('drops the concept exactly when the singular value of W Σ_xz is below the tolerance', () => {
    const data = planted({ n: 2000, d, seed: 9, signal: 0.05 });
    const fitter = LeaceFitter.fit(data.x, data.z, d, 1, { shrinkage: false });
    const { whiten } = whiteningPair(fitter.sigmaXX(), d);
    const singular = Math.sqrt(matMul64(whiten, fitter.sigmaXZ(), d, d, 1).reduce((s, v) => s + v * v, 0));
    const withTol = (svdTol: number): number => LeaceFitter.fit(data.x, data.z, d, 1, { shrinkage: false, svdTol }).eraser().rank;
    expect(withTol(singular * 1.01)).toBe(0);
    expect(withTol(singular * 0.99)).toBe(1);
  });
});

describe('parity with a PyTorch float64 reference (test/reference/leace_reference.py)', () => {
  let ref: string;
  let cases: Record<string, { n: number; d: number; classes: number; method: 'leace' | 'orth'; shrinkage: boolean; svd_tol: number }>;
  beforeAll(async () => {
    ref = await runPythonReference('leace_reference.py');
    cases = JSON.parse(readFileSync(join(ref, 'cases.json'), 'utf8')) as typeof cases;
  });

  function float64(file: ReturnType<typeof readSafetensors>, name: string): Float64Array {
    expect(file.info(name).dtype).toBe('F64');
    const bytes = file.bytes(name);
    return new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  }

  it.each(['binary_leace_shrink', 'binary_leace_plain', 'onehot3_leace_shrink', 'binary_orth', 'onehot4_orth'])('%s: same projection', (name) => {
    const c = cases[name]!;
    const file = readSafetensors(join(ref, `${name}.safetensors`));
    const x = float64(file, 'x');
    const z = float64(file, 'z');
    const expected = float64(file, 'P');
    const fitter = LeaceFitter.fit(x, z, c.d, c.classes, { method: c.method, shrinkage: c.shrinkage, svdTol: c.svd_tol });
    const got = projectionMatrix(fitter.eraser());
    expect(maxAbs(expected)).toBeGreaterThan(0.5);
    const diff = maxAbsDiff(got, expected);
    console.log(`${name}: rank ${fitter.eraser().rank}, max |P_ts - P_torch| = ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-9);
  });
});
