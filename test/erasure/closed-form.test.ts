import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { ActivationCache } from '../../src/cache/cache.js';
import { inlpEraser, leaceEraser } from '../../src/erasure/closed-form.js';
import type { FitContext, LabelledSplit } from '../../src/erasure/eraser.js';
import { mulberry32, randomNormal } from '../../src/data/prng.js';
import { LinearProbe } from '../../src/probe/linear.js';

const HOOK = 'layers.0.resid_out';
const D = 8;
const N = 600;

/** Pooled activations with a planted gender direction (axis 0 + axis 1) and a task direction (axis 2). */
function plantedData(): { cache: ActivationCache; split: LabelledSplit } {
  const rng = mulberry32(5);
  const x = new Float32Array(N * D);
  const y = new Int32Array(N);
  const z = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    y[i] = rng() < 0.5 ? 1 : 0;
    z[i] = rng() < 0.75 ? y[i]! : 1 - y[i]!;
    for (let j = 0; j < D; j++) x[i * D + j] = randomNormal(rng) * (j + 1) * 0.3;
    x[i * D + 0] += 2 * z[i]!;
    x[i * D + 1] -= 2 * z[i]!;
    x[i * D + 2] += 1.5 * y[i]!;
  }
  const rows = Int32Array.from({ length: N }, (_, i) => i);
  return { cache: ActivationCache.fromArrays(N, { [HOOK]: x }), split: { rows, y, z, texts: [] } };
}

function context(cache: ActivationCache, split: LabelledSplit): FitContext {
  return { cache, concept: split, train: split, probeHook: HOOK, seed: 42, options: {}, saes: {} } as unknown as FitContext;
}

function classMeanGap(X: tf.Tensor2D, z: Int32Array): number {
  const data = X.arraySync();
  const sums = [new Float64Array(D), new Float64Array(D)];
  const counts = [0, 0];
  data.forEach((row, i) => {
    counts[z[i]!]!++;
    row.forEach((v, j) => (sums[z[i]!]![j]! += v));
  });
  let gap = 0;
  for (let j = 0; j < D; j++) gap = Math.max(gap, Math.abs(sums[0]![j]! / counts[0]! - sums[1]![j]! / counts[1]!));
  return gap;
}

function genderProbeAccuracy(X: tf.Tensor2D, z: Int32Array): number {
  const probe = new LinearProbe(D, 2, { epochs: 30, seed: 1 });
  probe.fit(X, z);
  const pred = probe.predict(X);
  probe.dispose();
  return pred.reduce((a, p, i) => a + (p === z[i] ? 1 : 0), 0) / z.length;
}

beforeAll(async () => {
  await initEngine();
});

describe('closed-form erasers', () => {
  it.each(['leace', 'orth', 'diff_in_means'])('LEACE (%s) equalises the gender class means on the pooled fast path', async (variant) => {
    const { cache, split } = plantedData();
    const before = cache.pooled(HOOK);
    expect(classMeanGap(before, split.z)).toBeGreaterThan(1.5);
    const eraser = leaceEraser({ variant });
    await eraser.fit(context(cache, split));
    const after = eraser.erasePooled(cache, split.rows);
    expect(classMeanGap(after, split.z)).toBeLessThan(1e-3);
    expect(eraser.describe().unitsRemoved).toBe(1);
    expect(genderProbeAccuracy(before, split.z)).toBeGreaterThan(0.95);
    // Only gender's linear information goes; the task direction is still there.
    const taskGap = Math.abs(after.arraySync().reduce((a, r, i) => a + (split.y[i] ? r[2]! : -r[2]!), 0) / N);
    expect(taskGap).toBeGreaterThan(0.3);
    tf.dispose([before, after]);
    eraser.dispose();
  });

  it('INLP drives a linear gender probe towards chance', async () => {
    const { cache, split } = plantedData();
    const eraser = inlpEraser({ iterations: 8 });
    await eraser.fit(context(cache, split));
    const after = eraser.erasePooled(cache, split.rows);
    expect(eraser.describe().unitsRemoved).toBeGreaterThanOrEqual(1);
    // Gender and task are correlated (75%), so a probe may still reach the task-driven rate, not 95%+.
    expect(genderProbeAccuracy(after, split.z)).toBeLessThan(0.8);
    after.dispose();
    eraser.dispose();
  });

  it('token-level edits agree with the pooled path, and checkpoints round-trip', async () => {
    const { cache, split } = plantedData();
    const eraser = leaceEraser();
    await eraser.fit(context(cache, split));
    // Treat 6 pooled rows as the tokens of one sequence: mean of edited tokens = erased mean.
    const rows = [0, 1, 2, 3, 4, 5];
    const tokens = tf.expandDims(cache.pooled(HOOK, rows), 0) as tf.Tensor3D;
    const edited = eraser.edits()[HOOK]!(tokens);
    const pooledOfEdited = tf.mean(edited, 1);
    const erasedMean = tf.mean(eraser.erasePooled(cache, rows), 0, true);
    expect(tf.max(tf.abs(tf.sub(pooledOfEdited, erasedMean))).dataSync()[0]).toBeLessThan(1e-5);

    const dir = mkdtempSync(join(tmpdir(), 'leace-'));
    eraser.save(dir);
    const loaded = leaceEraser();
    loaded.load(dir, D);
    const a = eraser.erasePooled(cache, rows).dataSync();
    const b = loaded.erasePooled(cache, rows).dataSync();
    for (let i = 0; i < a.length; i++) expect(b[i]).toBe(a[i]);
    expect(() => leaceEraser().load(dir, D + 1)).toThrow(/erasure has width 8, but the hook has width 9/);
    expect(() => inlpEraser().load(dir)).toThrow(/checkpoint is for method "leace", not "inlp"/);
    expect(() => eraser.edits()[HOOK]!(tf.zeros([1, 2, D + 1]) as tf.Tensor3D)).toThrow(/expects width 8/);
  });
});
