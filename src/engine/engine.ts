/**
 * Tensor engine setup: one call, `initEngine()`, before any tensor work.
 *
 * The backend is tfjs-node when `@tensorflow/tfjs-node` is installed (it is optional: its install
 * script downloads libtensorflow), otherwise the WebAssembly backend with SIMD. Set
 * `SAE_ERASER_BACKEND=cpu|wasm|tensorflow` to force one.
 *
 * Stock tfjs-wasm autograd is unusable for transformer training in Node, and its forward pass is
 * slow on the shapes of attention; five fixes live here and in kernels.ts:
 *  1. The CommonJS build of tfjs-core registers no gradients (nor chained ops): importing the
 *     `@tensorflow/tfjs` bundle once registers them.
 *  2. `matMul` with `transposeA`/`transposeB` is 10-27x slower on wasm than an explicit
 *     `transpose` followed by a plain `matMul`, and the stock BatchMatMul gradient uses the flags.
 *     We re-register that gradient with explicit transposes.
 *  3. The wasm backend has no `UnsortedSegmentSum`, so the stock gradient of `gather` fails. We
 *     re-register it with `scatterND`, which sums duplicate indices.
 *  4. The wasm BatchMatMul runs every product with more than one batch item (attention's q k^T and
 *     p v, `[n, heads, seq, seq]`) in a scalar loop at ~1 GFLOP/s; only single 2-D products reach
 *     XNNPACK. kernels.ts replaces it with one XNNPACK product per batch item on aliases of the
 *     operands' wasm memory, so `matMulT` (and `tf.matMul` without flags) runs at XNNPACK speed at
 *     any rank, and so do their gradients, which are matMuls too.
 *  5. The wasm Slice, SplitV and Unpack kernels copy the whole input for every piece they cut;
 *     kernels.ts replaces them with copies of just the piece, read through a view of wasm memory.
 * Fixes 4 and 5 apply on the wasm backend; `SAE_ERASER_STOCK_KERNELS=1` turns them off (to compare).
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs';
import { getThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { threads as onnxThreads } from '../util/threads.js';
import { registerFastWasmKernels } from './kernels.js';

export type BackendName = 'wasm' | 'cpu' | 'tensorflow';

let initialised: Promise<BackendName> | undefined;

/** Transposes the last two axes of a tensor of rank >= 2. */
export function transposeLast2(x: tf.Tensor): tf.Tensor {
  const perm = x.shape.map((_, i) => i);
  const r = perm.length;
  [perm[r - 2], perm[r - 1]] = [perm[r - 1]!, perm[r - 2]!];
  return tf.transpose(x, perm);
}

/**
 * `matMul` that never passes transpose flags to the kernel (see fix 2 above).
 * Prefer it over `tf.matMul(a, b, ta, tb)` everywhere in this project.
 */
export function matMulT(a: tf.Tensor, b: tf.Tensor, transposeA = false, transposeB = false): tf.Tensor {
  return tf.tidy(() => tf.matMul(transposeA ? transposeLast2(a) : a, transposeB ? transposeLast2(b) : b));
}

let variableCount = 0;

/** A variable name unique in this process (tfjs refuses two variables of one name). */
export function uniqueVariableName(prefix: string): string {
  return `${prefix}_${variableCount++}`;
}

/**
 * A trainable variable holding `initial`'s values, named `prefix` plus a unique suffix. `initial`
 * is disposed: tf.variable copies it rather than taking it over.
 */
export function variableFrom<R extends tf.Rank>(initial: tf.Tensor<R>, prefix: string): tf.Variable<R> {
  const v = tf.variable(initial, true, uniqueVariableName(prefix));
  initial.dispose();
  return v;
}

/** Sums `g` down to `shape`, undoing numpy-style broadcasting of the leading (batch) axes. */
function sumToShape(g: tf.Tensor, shape: number[]): tf.Tensor {
  if (g.rank === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    const target = i < lead ? 1 : shape[i - lead]!;
    if (i < lead || (target === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  return tf.reshape(tf.sum(g, axes), shape);
}

function registerFastMatMulGradient(): void {
  tf.registerGradient({
    kernelName: tf.BatchMatMul,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy, saved, attrs) => {
      const [a, b] = saved as [tf.Tensor, tf.Tensor];
      const g = dy as tf.Tensor;
      const { transposeA, transposeB } = attrs as unknown as tf.BatchMatMulAttrs;
      // d(a@b)/da = g @ b^T, d(a@b)/db = a^T @ g, with the flags folded in.
      const da = (): tf.Tensor => {
        const r = transposeA ? (transposeB ? matMulT(b, g, true, true) : matMulT(b, g, false, true)) : transposeB ? matMulT(g, b) : matMulT(g, b, false, true);
        return sumToShape(r, a.shape);
      };
      const db = (): tf.Tensor => {
        const r = transposeB ? (transposeA ? matMulT(g, a, true, true) : matMulT(g, a, true, false)) : transposeA ? matMulT(a, g) : matMulT(a, g, true, false);
        return sumToShape(r, b.shape);
      };
      return { a: da, b: db };
    },
  });
}

function registerScatterGatherGradient(): void {
  tf.registerGradient({
    kernelName: tf.GatherV2,
    inputsToSave: ['x', 'indices'],
    gradFunc: (dy, saved, attrs) => {
      const [x, indices] = saved as [tf.Tensor, tf.Tensor];
      const { axis, batchDims } = attrs as unknown as tf.GatherV2Attrs;
      if (batchDims !== 0) throw new Error(`gather gradient: batchDims=${batchDims} is not supported`);
      const ax = axis < 0 ? axis + x.rank : axis;
      const dx = (): tf.Tensor => {
        // Move the gathered axis first, scatter-add rows, move it back.
        const g = dy as tf.Tensor;
        const outer = x.shape.slice(0, ax);
        const inner = x.shape.slice(ax + 1);
        const n = indices.size;
        const values = tf.reshape(g, [...outer, n, ...inner]);
        const perm = [outer.length, ...outer.map((_, i) => i), ...inner.map((_, i) => outer.length + 1 + i)];
        const moved = tf.transpose(values, perm);
        const idx = tf.reshape(tf.cast(indices, 'int32'), [n, 1]);
        const scattered = tf.scatterND(idx, moved, [x.shape[ax]!, ...outer, ...inner]);
        const inverse = perm.map((_, i) => perm.indexOf(i));
        return tf.transpose(scattered, inverse);
      };
      return { x: dx, indices: () => tf.zerosLike(indices) };
    },
  });
}

function chooseBackend(): BackendName {
  const forced = process.env.SAE_ERASER_BACKEND;
  if (forced !== undefined && forced !== '') {
    if (forced !== 'wasm' && forced !== 'cpu' && forced !== 'tensorflow') {
      throw new Error(`SAE_ERASER_BACKEND must be wasm, cpu or tensorflow, got "${forced}"`);
    }
    return forced;
  }
  try {
    createRequire(import.meta.url).resolve('@tensorflow/tfjs-node');
    return 'tensorflow';
  } catch {
    return 'wasm';
  }
}

async function setUp(): Promise<BackendName> {
  const backend = chooseBackend();
  if (backend === 'tensorflow') {
    // Optional dependency, resolved at run time only; a string variable keeps tsc from requiring it.
    const name = '@tensorflow/tfjs-node';
    await import(name);
  }
  // tfjs prints a console banner suggesting tfjs-node; it is noise for a library.
  tf.env().set('IS_TEST', true);
  const ok = await tf.setBackend(backend);
  if (!ok) throw new Error(`could not initialise the tfjs "${backend}" backend`);
  await tf.ready();
  registerFastMatMulGradient();
  registerScatterGatherGradient();
  if (backend === 'wasm' && process.env.SAE_ERASER_STOCK_KERNELS !== '1') registerFastWasmKernels(tf.backend());
  return backend;
}

/** Initialises the tensor backend once; later calls return the same promise. */
export function initEngine(): Promise<BackendName> {
  initialised ??= setUp();
  return initialised;
}

/**
 * The initialised backend and the threads it computes with, and the threads of ONNX Runtime
 * sessions (for provenance records).
 */
export async function engineInfo(): Promise<{ backend: BackendName; threads: number; onnxThreads: number }> {
  const backend = await initEngine();
  // tfjs-node runs TensorFlow's intra-op pool over every core; the plain JS backend is single-threaded.
  const threads = backend === 'wasm' ? getThreadsCount() : backend === 'tensorflow' ? availableParallelism() : 1;
  return { backend, threads, onnxThreads: onnxThreads() };
}

export { tf };
