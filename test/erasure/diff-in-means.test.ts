import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { DiffInMeansFitter, applyDiffInMeans } from '../../src/erasure/diff-in-means.js';
import { LeaceFitter, oneHot } from '../../src/erasure/leace.js';
import { eraseRows, matMul64, projectionMatrix, transpose64 } from '../../src/erasure/linear-algebra.js';
import { classMeans, columnMeans, maxAbs, maxAbsDiff, planted } from './synthetic.js';

beforeAll(async () => {
  await initEngine();
});

const d = 10;
const n = 2000;

function maxClassMeanGap(x: Float64Array, z: Int32Array, numClasses: number): number {
  const means = classMeans(x, z, d, numClasses);
  let gap = 0;
  for (let c = 1; c < numClasses; c++) gap = Math.max(gap, maxAbsDiff(means[c]!, means[0]!));
  return gap;
}

describe('difference-in-means erasure, binary', () => {
  const data = planted({ n, d, seed: 13, signal: 2, anisotropy: 1.5 });
  const fitter = DiffInMeansFitter.fit(data.x, data.z, d);
  const eraser = fitter.eraser();
  const erased = eraseRows(eraser, data.x, n);

  it('removes the planted mean difference and keeps the overall mean', () => {
    expect(maxClassMeanGap(data.x, data.z, 2)).toBeGreaterThan(1);
    expect(maxClassMeanGap(erased, data.z, 2) / maxClassMeanGap(data.x, data.z, 2)).toBeLessThan(1e-12);
    expect(maxAbsDiff(columnMeans(erased, n, d), columnMeans(data.x, n, d))).toBeLessThan(1e-12);
  });

  it('removes one direction, close to the planted one', () => {
    expect(eraser.rank).toBe(1);
    const v = eraser.right;
    const cos = Math.abs(v.reduce((s, a, j) => s + a * data.conceptDirs[0]![j]!, 0));
    // Class means differ by 2 * signal along the planted direction plus O(1/sqrt(n)) noise.
    expect(cos).toBeGreaterThan(0.99);
  });

  it('is an orthogonal projection: P^2 = P = P^T', () => {
    const p = projectionMatrix(eraser);
    expect(maxAbsDiff(matMul64(p, p, d, d, d), p)).toBeLessThan(1e-12);
    expect(maxAbsDiff(transpose64(p, d, d), p)).toBeLessThan(1e-12);
  });

  it("equals LEACE's 'orth' projection for a binary concept", () => {
    const orth = LeaceFitter.fit(data.x, oneHot(data.z, 2), d, 2, { method: 'orth', svdTol: 1e-9 }).eraser();
    expect(maxAbsDiff(projectionMatrix(orth), projectionMatrix(eraser))).toBeLessThan(1e-10);
  });

  it('streams: chunks give the same eraser as one batch', () => {
    const chunked = new DiffInMeansFitter(d, 2);
    for (let start = 0; start < n; start += 317) {
      const end = Math.min(n, start + 317);
      chunked.update(data.x.subarray(start * d, end * d), data.z.subarray(start, end));
    }
    expect(maxAbsDiff(projectionMatrix(chunked.eraser()), projectionMatrix(eraser))).toBeLessThan(1e-12);
    expect(maxAbsDiff(chunked.eraser().bias!, eraser.bias!)).toBeLessThan(1e-12);
  });

  it('applies to float32 tensors like the float64 path, without leaking tensors', () => {
    const before = tf.memory().numTensors;
    const x = tf.tensor2d(Float32Array.from(data.x), [n, d]);
    const out = applyDiffInMeans(eraser, x);
    const got = out.dataSync();
    x.dispose();
    out.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(maxAbsDiff(got, erased)).toBeLessThan(1e-5 * maxAbs(data.x));
  });

  it('rejects bad labels and empty classes', () => {
    expect(() => new DiffInMeansFitter(d, 2).update(data.x.subarray(0, 2 * d), [0, 2])).toThrow(/label 1 is 2/);
    expect(() => new DiffInMeansFitter(d, 2).update(data.x.subarray(0, 2 * d), [0, 0]).eraser()).toThrow(/class 1 has no samples/);
  });
});

describe('difference-in-means erasure, 4 classes', () => {
  const data = planted({ n, d, seed: 17, numClasses: 4, signal: 2 });
  const eraser = DiffInMeansFitter.fit(data.x, data.z, d, 4).eraser();
  const erased = eraseRows(eraser, data.x, n);

  it('removes all class-mean differences with rank C - 1', () => {
    expect(eraser.rank).toBe(3);
    expect(maxClassMeanGap(erased, data.z, 4) / maxClassMeanGap(data.x, data.z, 4)).toBeLessThan(1e-12);
  });

  it("spans the same subspace as LEACE 'orth' on one-hot labels", () => {
    const orth = LeaceFitter.fit(data.x, oneHot(data.z, 4), d, 4, { method: 'orth', svdTol: 1e-9 }).eraser();
    expect(orth.rank).toBe(3);
    expect(maxAbsDiff(projectionMatrix(orth), projectionMatrix(eraser))).toBeLessThan(1e-10);
  });
});
