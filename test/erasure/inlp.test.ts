import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { accuracy, fitInlp, linearProbeClassifier, predictClasses, trainLogisticRegression } from '../../src/erasure/inlp.js';
import { eraseRows, matMul64, projectionMatrix, transpose64 } from '../../src/erasure/linear-algebra.js';
import { classMeans, columnMeans, maxAbsDiff, planted, takeRows } from './synthetic.js';

beforeAll(async () => {
  await initEngine();
});

function tensor(x: Float64Array, d: number): tf.Tensor2D {
  return tf.tensor2d(Float32Array.from(x), [x.length / d, d]);
}

/** Held-out accuracy of a fresh logistic regression: train on the first half, test on the second. */
function freshAccuracy(x: Float64Array, labels: Int32Array, numClasses: number): number {
  const d = x.length / labels.length;
  const n = labels.length;
  const half = Math.floor(n / 2);
  const first = Array.from({ length: half }, (_, i) => i);
  const second = Array.from({ length: n - half }, (_, i) => half + i);
  const a = tensor(takeRows(x, d, first), d);
  const b = tensor(takeRows(x, d, second), d);
  const clf = trainLogisticRegression(a, labels.subarray(0, half), numClasses);
  const acc = accuracy(predictClasses(clf, b), labels.subarray(half));
  a.dispose();
  b.dispose();
  return acc;
}

describe('trainLogisticRegression', () => {
  const data = planted({ n: 2000, d: 10, seed: 31, signal: 1.2 });

  it('learns a planted binary concept', () => {
    expect(freshAccuracy(data.x, data.z, 2)).toBeGreaterThan(0.9);
  });

  it('learns a 3-class concept with softmax', () => {
    const multi = planted({ n: 3000, d: 10, seed: 32, numClasses: 3, signal: 2.5 });
    expect(freshAccuracy(multi.x, multi.z, 3)).toBeGreaterThan(0.8);
  });

  it('is at chance on labels independent of x', () => {
    const shuffled = Int32Array.from(data.z, (_, i) => (i * 7919) % 2);
    expect(Math.abs(freshAccuracy(data.x, shuffled, 2) - 0.5)).toBeLessThan(0.05);
  });

  it('does not grow the tensor count with the number of steps', () => {
    const x = tensor(data.x, 10);
    const before = tf.memory().numTensors;
    trainLogisticRegression(x, data.z, 2, { steps: 3 });
    const afterShort = tf.memory().numTensors;
    trainLogisticRegression(x, data.z, 2, { steps: 40 });
    const afterLong = tf.memory().numTensors;
    x.dispose();
    expect(afterShort).toBe(before);
    expect(afterLong).toBe(before);
  });

  it('rejects labels out of range', () => {
    const x = tf.zeros([2, 10]) as tf.Tensor2D;
    expect(() => trainLogisticRegression(x, [0, 2], 2)).toThrow(/label 1 is 2/);
    x.dispose();
  });
});

describe('INLP on a planted binary concept in anisotropic noise', () => {
  // Anisotropic noise makes each classifier's direction (≈ Σ^-1 Δμ) differ from the mean
  // difference Δμ, so one removal leaves signal behind and INLP needs several iterations.
  const d = 16;
  const data = planted({ n: 4000, d, seed: 41, signal: 1, anisotropy: 1.5 });
  const fitHalf = Array.from({ length: 2000 }, (_, i) => i);
  const evalHalf = Array.from({ length: 2000 }, (_, i) => 2000 + i);
  const xFit = takeRows(data.x, d, fitHalf);
  const zFit = Int32Array.from(fitHalf, (i) => data.z[i]!);
  const xEval = takeRows(data.x, d, evalHalf);
  const zEval = Int32Array.from(evalHalf, (i) => data.z[i]!);
  const yEval = Int32Array.from(evalHalf, (i) => data.y[i]!);
  let result: ReturnType<typeof fitInlp>;
  let tensorsBefore = 0;
  let tensorsAfter = 0;

  beforeAll(() => {
    const x = tensor(xFit, d);
    tensorsBefore = tf.memory().numTensors;
    result = fitInlp(x, zFit, { iterations: 10 });
    tensorsAfter = tf.memory().numTensors;
    x.dispose();
    console.log(`INLP dev accuracies ${result.accuracies.map((a) => a.toFixed(3)).join(' ')}; majority ${result.majority.toFixed(3)}; rank ${result.rank}`);
  });

  it('reaches chance within a few iterations, removing one direction per iteration', () => {
    expect(result.accuracies[0]).toBeGreaterThan(0.8);
    expect(result.reachedChance).toBe(true);
    expect(result.rank).toBe(result.accuracies.length - 1);
    expect(result.rank).toBeGreaterThanOrEqual(2);
    expect(result.rank).toBeLessThanOrEqual(6);
  });

  it('leaves a fresh classifier on new data near chance, and keeps the task', () => {
    const erased = eraseRows(result.erasure, xEval, 2000);
    const zBefore = freshAccuracy(xEval, zEval, 2);
    const zAfter = freshAccuracy(erased, zEval, 2);
    const yBefore = freshAccuracy(xEval, yEval, 2);
    const yAfter = freshAccuracy(erased, yEval, 2);
    console.log(`INLP fresh held-out accuracy: z ${zBefore.toFixed(3)} -> ${zAfter.toFixed(3)}, y ${yBefore.toFixed(3)} -> ${yAfter.toFixed(3)}`);
    expect(zBefore).toBeGreaterThan(0.8);
    expect(zAfter).toBeLessThan(0.56);
    expect(yAfter).toBeGreaterThan(yBefore - 0.03);
  });

  it('is an orthogonal projection with orthonormal directions', () => {
    const p = projectionMatrix(result.erasure);
    expect(maxAbsDiff(matMul64(p, p, d, d, d), p)).toBeLessThan(1e-12);
    expect(maxAbsDiff(transpose64(p, d, d), p)).toBeLessThan(1e-12);
    const gram = matMul64(result.directions, transpose64(result.directions, result.rank, d), result.rank, d, result.rank);
    const eye = new Float64Array(result.rank * result.rank).map((_, i) => (i % (result.rank + 1) === 0 ? 1 : 0));
    expect(maxAbsDiff(gram, eye)).toBeLessThan(1e-12);
  });

  it('keeps the mean and shrinks the class-mean gap', () => {
    const erased = eraseRows(result.erasure, xFit, 2000);
    const before = classMeans(xFit, zFit, d, 2);
    const after = classMeans(erased, zFit, d, 2);
    // INLP saw float32 inputs: its mean differs from the float64 one by float32 rounding.
    expect(maxAbsDiff(columnMeans(erased, 2000, d), columnMeans(xFit, 2000, d))).toBeLessThan(1e-6);
    expect(maxAbsDiff(after[1]!, after[0]!)).toBeLessThan(0.5 * maxAbsDiff(before[1]!, before[0]!));
  });

  it('does not leak tensors', () => {
    expect(tensorsAfter).toBe(tensorsBefore);
  });

  it('is deterministic for a seed', () => {
    const x = tensor(xFit, d);
    const again = fitInlp(x, zFit, { iterations: 2, stopAtChance: false });
    const again2 = fitInlp(x, zFit, { iterations: 2, stopAtChance: false });
    x.dispose();
    expect(again.rank).toBe(2);
    expect(maxAbsDiff(again.directions, again2.directions)).toBe(0);
  });
});

describe('INLP with the project linear probe as classifier', () => {
  it('removes the concept with probe-found directions', () => {
    const d = 16;
    const data = planted({ n: 3000, d, seed: 47, signal: 1, anisotropy: 1.5 });
    const x = tensor(data.x, d);
    const before = tf.memory().numTensors;
    const result = fitInlp(x, data.z, { iterations: 8, trainClassifier: linearProbeClassifier({ epochs: 10 }) });
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
    const erased = eraseRows(result.erasure, data.x, 3000);
    const after = freshAccuracy(erased, data.z, 2);
    console.log(
      `INLP (linear probe) dev accuracies ${result.accuracies.map((a) => a.toFixed(3)).join(' ')}; rank ${result.rank}; fresh LR after ${after.toFixed(3)}`,
    );
    expect(result.accuracies[0]).toBeGreaterThan(0.8);
    expect(result.rank).toBeGreaterThanOrEqual(1);
    expect(after).toBeLessThan(0.6);
  });
});

describe('INLP on a 3-class concept', () => {
  it('reaches chance and removes at most C - 1 directions per iteration', () => {
    const data = planted({ n: 3000, d: 10, seed: 43, numClasses: 3, signal: 2.5, anisotropy: 2 });
    const x = tensor(data.x, 10);
    const result = fitInlp(x, data.z, { numClasses: 3, iterations: 8 });
    x.dispose();
    console.log(`INLP 3-class dev accuracies ${result.accuracies.map((a) => a.toFixed(3)).join(' ')}; rank ${result.rank}`);
    expect(result.accuracies[0]).toBeGreaterThan(0.8);
    expect(result.reachedChance).toBe(true);
    expect(result.rank).toBeLessThanOrEqual(2 * (result.accuracies.length - 1));
  });
});
