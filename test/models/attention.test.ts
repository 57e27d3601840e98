import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { attend, attentionBias, BLOCK, batchedProduct } from '../../src/models/layers.js';

beforeAll(async () => {
  await initEngine();
});

/** Deterministic pseudo-random values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

/**
 * Float64 softmax(q k^T * scale + mask) v per (sequence, head), causal, with key padding from
 * `lengths` (a query whose keys are all masked sees every key, as attentionBias arranges).
 */
function referenceAttention(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  shape: [number, number, number, number],
  scale: number,
  lengths: number[],
): Float64Array {
  const [n, h, seq, d] = shape;
  const out = new Float64Array(q.length);
  for (let b = 0; b < n; b++) {
    for (let head = 0; head < h; head++) {
      const base = (b * h + head) * seq * d;
      for (let i = 0; i < seq; i++) {
        const allowed = Array.from({ length: seq }, (_, j) => j <= i && j < lengths[b]!);
        const anyAllowed = allowed.some(Boolean);
        const scores = Array.from({ length: seq }, (_, j) => {
          let s = 0;
          for (let c = 0; c < d; c++) s += q[base + i * d + c]! * k[base + j * d + c]!;
          return s * scale;
        });
        const live = scores.map((s, j) => (allowed[j] || !anyAllowed ? s : -Infinity));
        const max = Math.max(...live);
        const w = live.map((s) => Math.exp(s - max));
        const total = w.reduce((p, x) => p + x, 0);
        for (let c = 0; c < d; c++) {
          let acc = 0;
          for (let j = 0; j < seq; j++) acc += (w[j]! / total) * v[base + j * d + c]!;
          out[base + i * d + c] = acc;
        }
      }
    }
  }
  return out;
}

describe('attention products', () => {
  it('batchedProduct cuts long inner axes into blocks and still equals the plain product', () => {
    const inner = 2 * BLOCK + 37;
    const a = tf.tensor(values(2 * 3 * 5 * inner, 1), [2, 3, 5, inner]);
    const b = tf.tensor(values(2 * 3 * inner * 4, 2), [2, 3, inner, 4]);
    const blocked = batchedProduct(a, b);
    const plain = tf.matMul(a, b);
    expect(blocked.shape).toEqual([2, 3, 5, 4]);
    const diff = tf.max(tf.abs(tf.sub(blocked, plain))).dataSync()[0]!;
    expect(diff).toBeLessThan(1e-5);
    tf.dispose([a, b, blocked, plain]);
  });

  it.each([
    ['one key block', 40, 16],
    ['keys longer than a block (blocked p v)', BLOCK + 72, 16],
    ['heads wider than a block (blocked q k^T)', 24, BLOCK + 32],
  ])('%s: causal attention with padding matches float64', (_, seq, headDim) => {
    const shape: [number, number, number, number] = [2, 2, seq, headDim];
    const size = shape.reduce((p, x) => p * x, 1);
    const qv = values(size, 3);
    const kv = values(size, 4);
    // Values far from 0 make the weighted sums long sums of large terms (the accuracy case).
    const vv = values(size, 5).map((x) => 50 + 10 * x);
    const lengths = [seq, seq - 7];
    const scale = headDim ** -0.5;
    const before = tf.memory().numTensors;
    const got = tf.tidy(() => {
      const mask = tf.tensor2d(
        lengths.flatMap((len) => Array.from({ length: seq }, (_, j) => (j < len ? 1 : 0))),
        [2, seq],
        'int32',
      );
      return attend(tf.tensor4d(qv, shape), tf.tensor4d(kv, shape), tf.tensor4d(vv, shape), attentionBias(mask, true), scale);
    });
    const want = referenceAttention(qv, kv, vv, shape, scale, lengths);
    const data = got.dataSync();
    let worst = 0;
    for (let i = 0; i < data.length; i++) worst = Math.max(worst, Math.abs(data[i]! - want[i]!));
    // |v| <= 60, float32 eps 6e-8: the result must stay within ~8 roundings of the exact value
    // (any mistake in blocking, masking or batching errs by O(1)).
    expect(worst).toBeLessThan(60 * 1e-6);
    got.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('gradients through blocked attention match finite differences', () => {
    const seq = BLOCK + 20;
    const shape: [number, number, number, number] = [1, 1, seq, 4];
    const size = seq * 4;
    const q = tf.tensor4d(values(size, 6), shape);
    const k = tf.tensor4d(values(size, 7), shape);
    const v = tf.tensor4d(values(size, 8), shape);
    const w = tf.tensor4d(values(size, 9), shape);
    const bias = tf.tidy(() => attentionBias(tf.ones([1, seq], 'int32') as tf.Tensor2D, true));
    const loss = (vIn: tf.Tensor): tf.Scalar => tf.sum(tf.mul(attend(q, k, vIn as tf.Tensor4D, bias, 0.5), w));
    const g = tf.grad(loss)(v);
    const flat = v.dataSync();
    for (const i of [0, 5, size - 3]) {
      const at = (delta: number): number => {
        const moved = flat.slice();
        moved[i]! += delta;
        return tf.tidy(() => loss(tf.tensor4d(moved, shape)).dataSync()[0]!);
      };
      // The loss is linear in v, so central differences are exact up to rounding.
      expect(g.dataSync()[i]).toBeCloseTo((at(0.5) - at(-0.5)) / 1, 3);
    }
    tf.dispose([q, k, v, w, bias, g]);
  });
});
