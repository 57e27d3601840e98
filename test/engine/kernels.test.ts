import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, matMulT, tf } from '../../src/engine/engine.js';
import { broadcastBatchIndices, stockWasmKernel } from '../../src/engine/kernels.js';
import { skipWithout } from '../require.js';

let backend = '';
beforeAll(async () => {
  backend = await initEngine();
});
/** Whether initEngine installed the replacement kernels (wasm backend, not turned off). */
const replacedKernels = (): boolean => backend === 'wasm' && process.env.SAE_ERASER_STOCK_KERNELS !== '1';
const KERNELS_OFF = 'the replacement kernels are not installed (a backend other than wasm, or SAE_ERASER_STOCK_KERNELS=1)';

/** Deterministic pseudo-random values in [-1, 1) (seeded, independent of tfjs). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

const size = (shape: readonly number[]): number => shape.reduce((p, d) => p * d, 1);

/** Index of out batch item i in an operand of batch shape `shape`, computed from scratch (float64 reference side). */
function operandItem(i: number, shape: readonly number[], outShape: readonly number[]): number {
  const padded = [...Array<number>(outShape.length - shape.length).fill(1), ...shape];
  let rest = i;
  const coords = outShape.map(() => 0);
  for (let d = outShape.length - 1; d >= 0; d--) {
    coords[d] = rest % outShape[d]!;
    rest = Math.floor(rest / outShape[d]!);
  }
  return coords.reduce((acc, c, d) => acc * padded[d]! + (padded[d] === 1 ? 0 : c), 0);
}

function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const r = Math.max(a.length, b.length);
  const pa = [...Array<number>(r - a.length).fill(1), ...a];
  const pb = [...Array<number>(r - b.length).fill(1), ...b];
  return pa.map((d, i) => Math.max(d, pb[i]!));
}

interface Operand {
  data: Float32Array;
  shape: number[];
}

/** Float64 reference of a batched product with broadcast batch axes, and of its gradients for upstream g. */
function reference(a: Operand, b: Operand, g?: Float64Array): { out: Float64Array; da: Float64Array; db: Float64Array } {
  const [m, k] = a.shape.slice(-2) as [number, number];
  const n = b.shape.at(-1)!;
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  const outBatch = broadcastShape(aBatch, bBatch);
  const items = size(outBatch);
  const out = new Float64Array(items * m * n);
  const da = new Float64Array(a.data.length);
  const db = new Float64Array(b.data.length);
  for (let i = 0; i < items; i++) {
    const ia = operandItem(i, aBatch, outBatch) * m * k;
    const ib = operandItem(i, bBatch, outBatch) * k * n;
    for (let r = 0; r < m; r++) {
      for (let c = 0; c < n; c++) {
        let sum = 0;
        for (let j = 0; j < k; j++) sum += a.data[ia + r * k + j]! * b.data[ib + j * n + c]!;
        out[i * m * n + r * n + c] = sum;
        if (g !== undefined) {
          const gv = g[i * m * n + r * n + c]!;
          for (let j = 0; j < k; j++) {
            da[ia + r * k + j]! += gv * b.data[ib + j * n + c]!;
            db[ib + j * n + c]! += gv * a.data[ia + r * k + j]!;
          }
        }
      }
    }
  }
  return { out, da, db };
}

function maxAbsDiff(x: ArrayLike<number>, y: ArrayLike<number>): number {
  expect(x.length).toBe(y.length);
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(x[i]! - y[i]!));
  return d;
}

/** Shapes of a and b: equal batch shapes, broadcasting either side, a 2-D side, rank 5. */
const PRODUCT_CASES: [string, number[], number[]][] = [
  ['equal rank-3 batches', [5, 7, 9], [5, 9, 6]],
  ['attention-like rank 4', [2, 3, 16, 8], [2, 3, 8, 16]],
  ['b 2-D (one product)', [3, 4, 5, 6], [6, 7]],
  ['b with unit batch axes (one product)', [2, 3, 4, 5], [1, 1, 5, 3]],
  ['a 2-D, b batched', [4, 6], [3, 6, 5]],
  ['both sides broadcast', [2, 1, 4, 5], [3, 5, 6]],
  ['rank 5 with mixed unit axes', [2, 1, 3, 4, 5], [1, 2, 1, 5, 3]],
  ['single output row and column', [4, 1, 8], [4, 8, 1]],
];

describe('batched matMul kernel (fix 4)', () => {
  it('replaces the stock BatchMatMul on the wasm backend', (ctx) => {
    if (skipWithout(!replacedKernels(), KERNELS_OFF)) ctx.skip();
    expect(stockWasmKernel(tf.BatchMatMul)).toBeDefined();
    expect(tf.getKernel(tf.BatchMatMul, 'wasm')!.kernelFunc).not.toBe(stockWasmKernel(tf.BatchMatMul));
  });

  it('maps output batch items to operand items under broadcasting', () => {
    const out = [2, 3, 4];
    for (const shape of [[2, 3, 4], [3, 4], [1, 3, 1], [2, 1, 1], [4], [1], []]) {
      const got = Array.from(broadcastBatchIndices(shape, out));
      expect(got).toEqual(Array.from({ length: size(out) }, (_, i) => operandItem(i, shape, out)));
    }
  });

  it.each(PRODUCT_CASES)('%s: matches a float64 product', (_, aShape, bShape) => {
    const a = { data: values(size(aShape), 1), shape: aShape };
    const b = { data: values(size(bShape), 2), shape: bShape };
    const ref = reference(a, b);
    const got = tf.tidy(() => tf.matMul(tf.tensor(a.data, aShape), tf.tensor(b.data, bShape)));
    expect(got.shape).toEqual([...broadcastShape(aShape.slice(0, -2), bShape.slice(0, -2)), aShape.at(-2)!, bShape.at(-1)!]);
    expect(maxAbsDiff(got.dataSync(), ref.out)).toBeLessThan(1e-5);
    got.dispose();
  });

  it.each(PRODUCT_CASES)('%s: gradients match float64 ones', (_, aShape, bShape) => {
    const a = { data: values(size(aShape), 3), shape: aShape };
    const b = { data: values(size(bShape), 4), shape: bShape };
    const outShape = [...broadcastShape(aShape.slice(0, -2), bShape.slice(0, -2)), aShape.at(-2)!, bShape.at(-1)!];
    const g = values(size(outShape), 5);
    const ref = reference(a, b, Float64Array.from(g));
    const before = tf.memory().numTensors;
    const [da, db] = tf.tidy(() => {
      const weight = tf.tensor(g, outShape);
      const loss = (x: tf.Tensor, y: tf.Tensor): tf.Scalar => tf.sum(tf.mul(matMulT(x, y), weight));
      return tf.grads(loss)([tf.tensor(a.data, aShape), tf.tensor(b.data, bShape)]);
    }) as [tf.Tensor, tf.Tensor];
    expect(da.shape).toEqual(aShape);
    expect(db.shape).toEqual(bShape);
    expect(maxAbsDiff(da.dataSync(), ref.da)).toBeLessThan(1e-4);
    expect(maxAbsDiff(db.dataSync(), ref.db)).toBeLessThan(1e-4);
    tf.dispose([da, db]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('gives the stock kernel the same values on attention shapes, and leaks no tensors', () => {
    const q = tf.tensor(values(2 * 4 * 32 * 16, 6), [2, 4, 32, 16]);
    const k = tf.tensor(values(2 * 4 * 32 * 16, 7), [2, 4, 32, 16]);
    const before = tf.memory().numTensors;
    // With transpose flags the kernel hands the product to the stock scalar loop.
    const viaFlags = tf.matMul(q, k, false, true);
    const viaTranspose = matMulT(q, k, false, true);
    expect(maxAbsDiff(viaFlags.dataSync(), viaTranspose.dataSync())).toBeLessThan(1e-5);
    tf.dispose([viaFlags, viaTranspose]);
    expect(tf.memory().numTensors).toBe(before);
    // Many repeats: every alias is released (ids are never reused, results stay identical).
    const first = Array.from(matMulT(q, k, false, true).dataSync());
    for (let r = 0; r < 20; r++) tf.tidy(() => matMulT(q, k, false, true));
    const again = tf.tidy(() => Array.from(matMulT(q, k, false, true).dataSync()));
    expect(again).toEqual(first);
    tf.dispose([q, k]);
  });
});

/** Reference slice of a nested array. */
function sliceNested(x: unknown, begin: readonly number[], sz: readonly number[]): unknown {
  if (begin.length === 0) return x;
  return (x as unknown[]).slice(begin[0]!, begin[0]! + sz[0]!).map((row) => sliceNested(row, begin.slice(1), sz.slice(1)));
}

/** A tensor whose element i is i (mod 251 for bool), of a dtype. */
function iota(shape: number[], dtype: 'float32' | 'int32' | 'bool'): tf.Tensor {
  const n = size(shape);
  if (dtype === 'bool')
    return tf.tensor(
      Uint8Array.from({ length: n }, (_, i) => ((i * 7) % 3 === 0 ? 1 : 0)),
      shape,
      'bool',
    );
  return tf.tensor(
    Float32Array.from({ length: n }, (_, i) => i),
    shape,
    dtype,
  );
}

describe('slice kernels (fix 5)', () => {
  it('replace the stock Slice, SplitV and Unpack on the wasm backend', (ctx) => {
    if (skipWithout(!replacedKernels(), KERNELS_OFF)) ctx.skip();
    for (const name of [tf.Slice, tf.SplitV, tf.Unpack]) {
      expect(stockWasmKernel(name)).toBeDefined();
      expect(tf.getKernel(name, 'wasm')!.kernelFunc).not.toBe(stockWasmKernel(name));
    }
  });

  const SLICE_CASES: [number[], number[], number[]][] = [
    [[10], [3], [4]],
    [
      [6, 7],
      [1, 2],
      [3, 4],
    ],
    [
      [6, 7],
      [2, 0],
      [3, 7],
    ],
    [
      [6, 7],
      [0, 6],
      [6, 1],
    ],
    [
      [3, 4, 5],
      [1, 1, 1],
      [2, 2, 3],
    ],
    [
      [3, 4, 5],
      [0, 2, 0],
      [3, 2, 5],
    ],
    [
      [2, 3, 4, 5],
      [1, 0, 1, 2],
      [1, 3, 2, 3],
    ],
    [
      [2, 3, 2, 4, 3],
      [0, 1, 0, 1, 1],
      [2, 2, 2, 2, 2],
    ],
    [
      [4, 5],
      [1, 1],
      [0, 3],
    ],
  ];

  it.each(SLICE_CASES)('slices %j at %j size %j like a nested-array slice, in every dtype', (shape, begin, sz) => {
    for (const dtype of ['float32', 'int32', 'bool'] as const) {
      const x = iota(shape, dtype);
      const snapshot = Array.from(x.dataSync());
      const piece = tf.slice(x, begin, sz);
      expect(piece.shape).toEqual(sz);
      expect(piece.dtype).toBe(dtype);
      expect(piece.arraySync()).toEqual(sliceNested(x.arraySync(), begin, sz));
      expect(Array.from(x.dataSync())).toEqual(snapshot);
      tf.dispose([x, piece]);
    }
  });

  it('slices a one-element and a string tensor (stock path)', () => {
    tf.tidy(() => {
      const s = tf.tensor(['a', 'b', 'c', 'd']);
      expect(tf.slice(s, [1], [2]).arraySync()).toEqual(['b', 'c']);
      expect(tf.unstack(s).map((t) => t.arraySync())).toEqual(['a', 'b', 'c', 'd']);
      expect(tf.slice(tf.tensor1d([5]), [0], [1]).arraySync()).toEqual([5]);
    });
  });

  it('splits along every axis into the pieces a nested-array slice gives', () => {
    const shape = [4, 6, 5];
    const x = iota(shape, 'float32');
    const nested = x.arraySync();
    for (let axis = 0; axis < 3; axis++) {
      const sizes = axis === 1 ? [1, 3, 2] : [shape[axis]! - 2, 2];
      const pieces = tf.split(x, sizes, axis);
      let start = 0;
      pieces.forEach((p, i) => {
        const begin = [0, 0, 0];
        const sz = shape.slice();
        begin[axis] = start;
        sz[axis] = sizes[i]!;
        expect(p.arraySync()).toEqual(sliceNested(nested, begin, sz));
        start += sizes[i]!;
      });
      tf.dispose(pieces);
    }
    x.dispose();
  });

  it('unstacks along every axis (including negative) like nested-array indexing', () => {
    const shape = [3, 4, 2];
    const x = iota(shape, 'int32');
    const nested = x.arraySync() as number[][][];
    for (const axis of [0, 1, 2, -1]) {
      const ax = axis < 0 ? axis + 3 : axis;
      const pieces = tf.unstack(x, axis);
      expect(pieces.length).toBe(shape[ax]);
      pieces.forEach((p, i) => {
        expect(p.shape).toEqual(shape.filter((_, d) => d !== ax));
        const want = ax === 0 ? nested[i] : ax === 1 ? nested.map((r) => r[i]) : nested.map((r) => r.map((c) => c[i]));
        expect(p.arraySync()).toEqual(want);
      });
      tf.dispose(pieces);
    }
    x.dispose();
  });

  it('keeps the gradients of slice, split and unstack', () => {
    const x = tf.tensor(values(24, 8), [4, 6]);
    const w = tf.tensor(values(24, 9), [4, 6]);
    // d/dx sum(w * concat(pieces)) = w, whichever way x is cut.
    const cuts: ((t: tf.Tensor) => tf.Tensor)[] = [
      (t) => tf.concat([tf.slice(t, [0, 0], [4, 2]), tf.slice(t, [0, 2], [4, 4])], 1),
      (t) => tf.concat(tf.split(t, [1, 2, 3], 1), 1),
      (t) => tf.stack(tf.unstack(t, 0), 0),
      (t) => tf.stack(tf.unstack(t, 1), 1),
    ];
    for (const cut of cuts) {
      const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(cut(t), w)))(x);
      expect(maxAbsDiff(g.dataSync(), w.dataSync())).toBe(0);
      g.dispose();
    }
    // Only the sliced region receives gradient.
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.slice(t, [1, 2], [2, 3])))(x);
    const want = Array.from({ length: 24 }, (_, i) => (Math.floor(i / 6) >= 1 && Math.floor(i / 6) < 3 && i % 6 >= 2 && i % 6 < 5 ? 1 : 0));
    expect(Array.from(g.dataSync())).toEqual(want);
    tf.dispose([x, w, g]);
  });
});
