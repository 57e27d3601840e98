import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { mulberry32, randomNormal } from '../../src/data/prng.js';
import { crossEntropyRows, erasureLoss, LOG_CLASSES, uniformCrossEntropy, uniformCrossEntropyRows } from '../../src/mnist/objective.js';

beforeAll(async () => {
  await initEngine();
});

function scalar(f: () => tf.Tensor): number {
  const t = f();
  const v = t.dataSync()[0]!;
  t.dispose();
  return v;
}

describe('the bounded erasure loss', () => {
  it('is log 10 at uniform predictions, whatever the common logit', () => {
    for (const c of [0, -3.5, 7, 1e3]) {
      expect(scalar(() => tf.tidy(() => uniformCrossEntropy(tf.fill([4, 10], c) as tf.Tensor2D)))).toBeCloseTo(LOG_CLASSES, 4);
    }
    expect(LOG_CLASSES).toBeCloseTo(2.302585, 6);
  });

  it('matches the hand formula log(e^a + 9) - a / 10 for one raised logit', () => {
    for (const a of [0.5, 3, 20]) {
      const row = new Float32Array(10);
      row[3] = a;
      const got = scalar(() => tf.tidy(() => uniformCrossEntropy(tf.tensor2d(row, [1, 10]))));
      expect(got).toBeCloseTo(Math.log(Math.exp(a) + 9) - a / 10, 4);
    }
  });

  it('is above log 10 for every non-uniform row (random logits) and grows with confidence', () => {
    const rng = mulberry32(7);
    const n = 200;
    const z = Float32Array.from({ length: n * 10 }, () => randomNormal(rng, 0, 3));
    const rows = tf.tidy(() => uniformCrossEntropyRows(tf.tensor2d(z, [n, 10])));
    const values = rows.dataSync();
    rows.dispose();
    for (const v of values) expect(v).toBeGreaterThan(LOG_CLASSES);
    // Scaling the same logits up moves the predictions away from uniform: the loss rises.
    const small = scalar(() => tf.tidy(() => uniformCrossEntropy(tf.tensor2d(z, [n, 10]))));
    const large = scalar(() => tf.tidy(() => uniformCrossEntropy(tf.mul(tf.tensor2d(z, [n, 10]), 3) as tf.Tensor2D)));
    expect(large).toBeGreaterThan(small);
  });

  it('has zero gradient at uniform predictions and a gradient that lowers the loss elsewhere', () => {
    const g0 = tf.tidy(() => tf.grad((z: tf.Tensor) => uniformCrossEntropy(z as tf.Tensor2D))(tf.fill([2, 10], 1.5)));
    expect(Math.max(...Array.from(g0.dataSync(), Math.abs))).toBeLessThan(1e-6);
    g0.dispose();
    // d/dz of logsumexp(z) - mean(z) = softmax(z) - 1/10: a step against it moves toward uniform.
    const z = tf.tensor2d([[2, -1, 0, 0.5, 0, 0, 0, 0, 0, 1]]);
    const g = tf.tidy(() => tf.grad((x: tf.Tensor) => uniformCrossEntropy(x as tf.Tensor2D))(z));
    const expected = tf.tidy(() => tf.sub(tf.softmax(z), 0.1));
    const gv = g.dataSync();
    expected.dataSync().forEach((v, i) => expect(gv[i]).toBeCloseTo(v, 5));
    const before = scalar(() => tf.tidy(() => uniformCrossEntropy(z)));
    const after = scalar(() => tf.tidy(() => uniformCrossEntropy(tf.sub(z, tf.mul(g, 0.5)) as tf.Tensor2D)));
    expect(after).toBeLessThan(before);
    tf.dispose([z, g, expected]);
  });

  it('combines kept CE, the erased term minus log 10 (each a mean over its own rows) and the l1 price of removed units', () => {
    // Rows 0, 1 kept (digits 0 and 1), rows 2, 3 erased.
    const zData = [
      [4, 0, 0, 0, 0, 0, 0, 0, 0, 0],
      [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
      [0, 0, 0, 0, 0, 0, 0, 2, 0, 0],
    ];
    const labels = [0, 1, 3, 7];
    const gate = [1, 0.25, 0];
    const parts = tf.tidy(() => {
      const z = tf.tensor2d(zData);
      const targets = tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), 10), 'float32') as tf.Tensor2D;
      const l = erasureLoss(z, targets, tf.tensor1d([0, 0, 1, 1]), tf.tensor1d(gate), { eraseWeight: 2, l1: 0.1 });
      return [l.loss, l.kept, l.erased, crossEntropyRows(z, targets)];
    });
    const [loss, kept, erased, ce] = parts.map((t) => Array.from(t.dataSync()));
    tf.dispose(parts);
    const ceOf = (row: number[], y: number): number => Math.log(row.reduce((s, v) => s + Math.exp(v), 0)) - row[y]!;
    expect(ce![0]).toBeCloseTo(ceOf(zData[0]!, 0), 5);
    const keptWant = (ceOf(zData[0]!, 0) + ceOf(zData[1]!, 1)) / 2;
    // Row 2 is uniform (term 0); row 3 has one raised logit.
    const erasedWant = (0 + (Math.log(Math.exp(2) + 9) - 2 / 10 - LOG_CLASSES)) / 2;
    expect(kept![0]).toBeCloseTo(keptWant, 5);
    expect(erased![0]).toBeCloseTo(erasedWant, 5);
    expect(loss![0]).toBeCloseTo(keptWant + 2 * erasedWant + 0.1 * (0 + 0.75 + 1), 5);
  });

  it('gives 0 for a term whose rows the batch lacks, never NaN', () => {
    const [kept, erased] = tf.tidy(() => {
      const z = tf.tensor2d([[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]]);
      const targets = tf.cast(tf.oneHot(tf.tensor1d([0], 'int32'), 10), 'float32') as tf.Tensor2D;
      const onlyKept = erasureLoss(z, targets, tf.tensor1d([0]), tf.tensor1d([1]), { eraseWeight: 1, l1: 0 });
      const onlyErased = erasureLoss(z, targets, tf.tensor1d([1]), tf.tensor1d([1]), { eraseWeight: 1, l1: 0 });
      return [onlyKept.erased, onlyErased.kept];
    });
    expect(kept!.dataSync()[0]).toBe(0);
    expect(erased!.dataSync()[0]).toBe(0);
    tf.dispose([kept!, erased!]);
  });
});
