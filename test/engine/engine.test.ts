import { describe, expect, it, beforeAll } from 'vitest';
import { initEngine, matMulT, tf, uniqueVariableName, variableFrom } from '../../src/engine/engine.js';

beforeAll(async () => {
  await initEngine();
});

/** Finite-difference check of d(sum(f(x) * w))/dx at a few coordinates. */
function numericGrad(f: (x: tf.Tensor) => tf.Tensor, x: tf.Tensor, w: tf.Tensor, i: number, eps = 1e-2): number {
  const flat = x.dataSync().slice();
  const at = (delta: number): number => {
    const y = flat.slice();
    y[i]! += delta;
    return tf.tidy(() => tf.sum(tf.mul(f(tf.tensor(y, x.shape)), w)).dataSync()[0]!);
  };
  return (at(eps) - at(-eps)) / (2 * eps);
}

describe('engine', () => {
  it('uses the wasm backend by default', () => {
    expect(['wasm', 'tensorflow']).toContain(tf.getBackend());
  });

  it('registers gradients (fix 1)', () => {
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.square(x)));
    expect(Array.from(g(tf.tensor([1, 2, 3])).dataSync())).toEqual([2, 4, 6]);
  });

  it.each([
    [false, false],
    [false, true],
    [true, false],
    [true, true],
  ])('matMul gradient with transposeA=%s transposeB=%s matches finite differences (fix 2)', (ta, tb) => {
    const a = tf.randomNormal(ta ? [2, 4, 3] : [2, 3, 4], 0, 1, 'float32', 1);
    const b = tf.randomNormal(tb ? [5, 4] : [4, 5], 0, 1, 'float32', 2);
    const w = tf.randomNormal([2, 3, 5], 0, 1, 'float32', 3);
    const loss = (x: tf.Tensor, y: tf.Tensor): tf.Scalar => tf.sum(tf.mul(tf.matMul(x, y, ta, tb), w));
    const [ga, gb] = tf.grads(loss)([a, b]) as [tf.Tensor, tf.Tensor];
    expect(ga.shape).toEqual(a.shape);
    expect(gb.shape).toEqual(b.shape);
    for (const i of [0, 5, 11]) {
      expect(ga.dataSync()[i]).toBeCloseTo(
        numericGrad((x) => tf.matMul(x, b, ta, tb), a, w, i),
        2,
      );
      expect(gb.dataSync()[i]).toBeCloseTo(
        numericGrad((y) => tf.matMul(a, y, ta, tb), b, w, i),
        2,
      );
    }
  });

  it('matMulT equals matMul with flags', () => {
    const a = tf.randomNormal([3, 6, 4], 0, 1, 'float32', 4);
    const b = tf.randomNormal([3, 5, 4], 0, 1, 'float32', 5);
    const diff = tf.max(tf.abs(tf.sub(matMulT(a, b, false, true), tf.matMul(a, b, false, true)))).dataSync()[0]!;
    expect(diff).toBeLessThan(1e-5);
  });

  it('gather gradient sums duplicate indices (fix 3)', () => {
    const table = tf.tensor2d([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    const idx = tf.tensor1d([2, 0, 2], 'int32');
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, idx)))(table);
    expect(Array.from(g.dataSync())).toEqual([1, 1, 0, 0, 2, 2]);
    const g1 = tf.grad((t: tf.Tensor) =>
      tf.sum(
        tf.mul(
          tf.gather(t, tf.tensor1d([1, 1], 'int32'), 1),
          tf.tensor2d([
            [1, 2],
            [3, 4],
            [5, 6],
          ]),
        ),
      ),
    )(table);
    expect(Array.from(g1.dataSync())).toEqual([0, 3, 0, 7, 0, 11]);
  });
});

describe('variableFrom', () => {
  it('makes a trainable variable with a unique name and frees the initial tensor', () => {
    const before = tf.memory().numTensors;
    const init = tf.tensor1d([1, 2, 3]);
    const a = variableFrom(init, 'w');
    const b = variableFrom(tf.tensor1d([4]), 'w');
    expect(init.isDisposed).toBe(true);
    expect(a.trainable).toBe(true);
    expect(Array.from(a.dataSync())).toEqual([1, 2, 3]);
    expect(a.name).not.toBe(b.name);
    expect(a.name.startsWith('w_')).toBe(true);
    expect(uniqueVariableName('w')).not.toBe(uniqueVariableName('w'));
    tf.dispose([a, b]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
