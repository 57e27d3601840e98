/**
 * Replacement tfjs-wasm kernels for the operations that dominate a transformer pass (fixes 4 and 5
 * of engine.ts, registered by `initEngine` when the backend is wasm).
 *
 * 4. BatchMatMul of rank > 2. The stock kernel runs any product with more than one batch item in a
 *    scalar C++ loop (~1 GFLOP/s); only single products reach XNNPACK (~15 GFLOP/s). The
 *    replacement runs one XNNPACK product per batch item,
 *      out[i] = a[ia(i)] @ b[ib(i)],   i over the broadcast batch shape,
 *    where ia, ib undo numpy-style broadcasting of the batch axes. Each item is a temporary tensor
 *    id registered in the wasm backend at an offset into the operand's memory (an alias: no copy),
 *    passed to the module's exported BatchMatMul with shapes [1, m, k] x [1, k, n], then
 *    unregistered (which also frees the XNNPACK operator cached on the right-hand alias). When
 *    `b` has a single batch item the whole product is one XNNPACK call on `a` viewed as
 *    [batch * m, k]. Products with transpose flags, non-float32 or empty operands, and plain 2-D
 *    products go to the stock kernel (`matMulT` never passes flags).
 * 5. Slice, SplitV and Unpack. The stock kernels copy the whole input out of wasm memory
 *    (`readSync`) for every piece, so cutting a tensor into p pieces costs p full copies. The
 *    replacements read the input through a view of wasm memory and copy only the piece. String
 *    tensors go to the stock kernels.
 *
 * The gradients are untouched: they are registered per kernel name, and the forward values are
 * the same products and copies.
 */
import * as tf from '@tensorflow/tfjs-core';

/** The parts of the Emscripten module behind the wasm backend that these kernels use. */
interface WasmModule {
  HEAPU8: Uint8Array;
  cwrap(name: string, returnType: null, argTypes: string[]): (...args: (number | boolean | Uint8Array)[]) => void;
  tfjs: {
    registerTensor(id: number, size: number, memoryOffset: number): void;
    disposeData(id: number): void;
  };
}

/** The parts of tfjs-backend-wasm's BackendWasm that these kernels use. */
interface WasmBackend {
  wasm: WasmModule;
  /** The backend's id counter (private in its typings): aliases take ids from it so none collide. */
  dataIdNextNumber: number;
  dataIdMap: { get(dataId: tf.DataId): { id: number; memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

type KernelArgs = Parameters<tf.KernelFunc>[0];
type BatchMatMulFn = (
  aId: number,
  aShape: Uint8Array,
  aRank: number,
  bId: number,
  bShape: Uint8Array,
  bRank: number,
  transposeA: boolean,
  transposeB: boolean,
  outId: number,
) => void;

const BYTES_PER_FLOAT = 4;

function asWasmBackend(backend: unknown): WasmBackend {
  const b = backend as Partial<WasmBackend>;
  if (typeof b.dataIdNextNumber !== 'number' || b.wasm?.tfjs === undefined || b.dataIdMap === undefined) {
    throw new Error('fast wasm kernels: the backend is not a tfjs-backend-wasm BackendWasm of a known version');
  }
  return b as WasmBackend;
}

function wasmData(backend: WasmBackend, t: tf.TensorInfo): { id: number; memoryOffset: number } {
  const data = backend.dataIdMap.get(t.dataId);
  if (data === undefined) throw new Error('fast wasm kernels: a tensor input has no data on the wasm backend');
  return data;
}

function input(args: KernelArgs, name: string): tf.TensorInfo {
  const t = args.inputs[name];
  if (t === undefined) throw new Error(`fast wasm kernels: missing input "${name}"`);
  return t;
}

function shapeBytes(shape: number[]): Uint8Array {
  return new Uint8Array(new Int32Array(shape).buffer);
}

/**
 * Per output batch item, the batch index of an operand of batch shape `shape` (right-aligned to
 * `outShape`, broadcast where its extent is 1).
 */
export function broadcastBatchIndices(shape: readonly number[], outShape: readonly number[]): Int32Array {
  const rank = outShape.length;
  const padded = [...Array<number>(rank - shape.length).fill(1), ...shape];
  const strides = new Array<number>(rank).fill(0);
  for (let d = rank - 1, s = 1; d >= 0; d--) {
    strides[d] = padded[d] === 1 ? 0 : s;
    s *= padded[d]!;
  }
  const total = outShape.reduce((p, d) => p * d, 1);
  const indices = new Int32Array(total);
  const counter = new Array<number>(rank).fill(0);
  let index = 0;
  for (let i = 0; i < total; i++) {
    indices[i] = index;
    // Odometer step over outShape, keeping the operand index in step.
    for (let d = rank - 1; d >= 0; d--) {
      counter[d]!++;
      index += strides[d]!;
      if (counter[d]! < outShape[d]!) break;
      index -= strides[d]! * counter[d]!;
      counter[d] = 0;
    }
  }
  return indices;
}

/** The module's exported BatchMatMul, wrapped once per module (a re-initialised backend has a new one). */
const wrappedMatMul = new WeakMap<WasmModule, BatchMatMulFn>();
function exportedBatchMatMul(wasm: WasmModule): BatchMatMulFn {
  let fn = wrappedMatMul.get(wasm);
  if (fn === undefined) {
    fn = wasm.cwrap(tf.BatchMatMul, null, ['number', 'array', 'number', 'number', 'array', 'number', 'number', 'number', 'number']) as BatchMatMulFn;
    wrappedMatMul.set(wasm, fn);
  }
  return fn;
}

function makeBatchMatMul(stock: tf.KernelFunc): tf.KernelFunc {
  return (args: KernelArgs) => {
    const a = input(args, 'a');
    const b = input(args, 'b');
    const { transposeA, transposeB } = args.attrs as unknown as tf.BatchMatMulAttrs;
    const aRank = a.shape.length;
    const bRank = b.shape.length;
    if (transposeA || transposeB || a.dtype !== 'float32' || b.dtype !== 'float32' || (aRank <= 2 && bRank <= 2)) return stock(args);
    const [m, k] = a.shape.slice(-2) as [number, number];
    const [kB, n] = b.shape.slice(-2) as [number, number];
    if (k !== kB) {
      throw new Error(`Error in matMul: inner shapes (${k}) and (${kB}) of Tensors with shapes ${a.shape} and ${b.shape} must match.`);
    }
    const aBatch = a.shape.slice(0, -2);
    const bBatch = b.shape.slice(0, -2);
    const outBatch = tf.broadcast_util.assertAndGetBroadcastShape(aBatch, bBatch);
    const items = tf.util.sizeFromShape(outBatch);
    if (m === 0 || k === 0 || n === 0 || items === 0) return stock(args);

    const backend = asWasmBackend(args.backend);
    const matMul = exportedBatchMatMul(backend.wasm);
    const out = backend.makeOutput([...outBatch, m, n], 'float32');
    const aData = wasmData(backend, a);
    const bData = wasmData(backend, b);
    const outData = wasmData(backend, out);
    const bItems = tf.util.sizeFromShape(bBatch);
    if (bItems === 1) {
      // One product: a as [items * m, k] (its rows in output order) times b's single [k, n].
      const rows = tf.util.sizeFromShape(aBatch) * m;
      matMul(aData.id, shapeBytes([1, rows, k]), 3, bData.id, shapeBytes([1, k, n]), 3, false, false, outData.id);
      return out;
    }

    const aIndex = broadcastBatchIndices(aBatch, outBatch);
    const bIndex = broadcastBatchIndices(bBatch, outBatch);
    const aliases: number[] = [];
    const alias = (base: number, elements: number, item: number, cache: Map<number, number>): number => {
      const cached = cache.get(item);
      if (cached !== undefined) return cached;
      const id = backend.dataIdNextNumber++;
      backend.wasm.tfjs.registerTensor(id, elements, base + item * elements * BYTES_PER_FLOAT);
      aliases.push(id);
      cache.set(item, id);
      return id;
    };
    const aAliases = new Map<number, number>();
    const bAliases = new Map<number, number>();
    const aShape = shapeBytes([1, m, k]);
    const bShape = shapeBytes([1, k, n]);
    try {
      for (let i = 0; i < items; i++) {
        const aId = alias(aData.memoryOffset, m * k, aIndex[i]!, aAliases);
        const bId = alias(bData.memoryOffset, k * n, bIndex[i]!, bAliases);
        const outId = alias(outData.memoryOffset, m * n, i, new Map());
        matMul(aId, aShape, 3, bId, bShape, 3, false, false, outId);
      }
    } finally {
      for (const id of aliases) backend.wasm.tfjs.disposeData(id);
    }
    return out;
  };
}

/**
 * Copies the box `begin`..`begin + size` of `x` (row-major, shape `shape`) into `out`. The
 * trailing axes the box spans fully, and the innermost axis it cuts, form contiguous runs.
 */
export function copyBox(
  x: Float32Array | Int32Array | Uint8Array,
  shape: readonly number[],
  begin: readonly number[],
  size: readonly number[],
  out: Float32Array | Int32Array | Uint8Array,
): void {
  const rank = shape.length;
  if (rank === 0) {
    out[0] = x[0]!;
    return;
  }
  const strides = new Array<number>(rank);
  for (let d = rank - 1, s = 1; d >= 0; d--) {
    strides[d] = s;
    s *= shape[d]!;
  }
  let inner = rank - 1;
  while (inner > 0 && size[inner] === shape[inner]) inner--;
  // Axes inner..rank-1 form one contiguous run of `run` elements.
  const run = size.slice(inner).reduce((p, d) => p * d, 1);
  const outer = size.slice(0, inner);
  const outerCount = outer.reduce((p, d) => p * d, 1);
  let start = begin.reduce((acc, b, d) => acc + b * strides[d]!, 0);
  const counter = new Array<number>(inner).fill(0);
  for (let o = 0, at = 0; o < outerCount; o++, at += run) {
    if (run >= 16) out.set(x.subarray(start, start + run), at);
    else for (let j = 0; j < run; j++) out[at + j] = x[start + j]!;
    for (let d = inner - 1; d >= 0; d--) {
      counter[d]!++;
      start += strides[d]!;
      if (counter[d]! < outer[d]!) break;
      start -= strides[d]! * counter[d]!;
      counter[d] = 0;
    }
  }
}

/** The slice `begin`..`begin + size` of `x` as a new wasm tensor, read through a heap view. */
function sliceOnHeap(backend: WasmBackend, x: tf.TensorInfo, begin: number[], size: number[]): tf.TensorInfo {
  // makeOutput may grow the wasm memory, which detaches earlier views: take them after.
  const out = backend.makeOutput(size, x.dtype);
  if (tf.util.sizeFromShape(size) === 0) return out;
  copyBox(backend.typedArrayFromHeap(x), x.shape, begin, size, backend.typedArrayFromHeap(out));
  return out;
}

function makeSlice(stock: tf.KernelFunc): tf.KernelFunc {
  return (args: KernelArgs) => {
    const x = input(args, 'x');
    if (x.dtype === 'string') return stock(args);
    const { begin, size } = args.attrs as unknown as tf.SliceAttrs;
    const [begin_, size_] = tf.slice_util.parseSliceParams(x, begin, size) as [number[], number[]];
    return sliceOnHeap(asWasmBackend(args.backend), x, begin_, size_);
  };
}

function makeSplitV(stock: tf.KernelFunc): tf.KernelFunc {
  return (args: KernelArgs) => {
    const x = input(args, 'x');
    if (x.dtype === 'string') return stock(args);
    const { numOrSizeSplits, axis } = args.attrs as unknown as tf.SplitVAttrs;
    const ax = tf.util.parseAxisParam(axis, x.shape)[0]!;
    const sizes = tf.backend_util.prepareSplitSize(x, numOrSizeSplits, ax);
    const backend = asWasmBackend(args.backend);
    const begin = new Array<number>(x.shape.length).fill(0);
    return sizes.map((s) => {
      const size = x.shape.slice();
      size[ax] = s;
      const piece = sliceOnHeap(backend, x, begin.slice(), size);
      begin[ax]! += s;
      return piece;
    });
  };
}

function makeUnpack(stock: tf.KernelFunc): tf.KernelFunc {
  return (args: KernelArgs) => {
    const value = input(args, 'value');
    if (value.dtype === 'string') return stock(args);
    const { axis } = args.attrs as unknown as tf.UnpackAttrs;
    const ax = axis < 0 ? axis + value.shape.length : axis;
    const backend = asWasmBackend(args.backend);
    const outShape = value.shape.filter((_, d) => d !== ax);
    const size = value.shape.slice();
    size[ax] = 1;
    return Array.from({ length: value.shape[ax]! }, (_, i) => {
      const begin = new Array<number>(value.shape.length).fill(0);
      begin[ax] = i;
      const piece = sliceOnHeap(backend, value, begin, size);
      return { ...piece, shape: outShape };
    });
  };
}

const replaced = new Map<string, tf.KernelFunc>();

/**
 * Registers the replacement kernels on the wasm backend (idempotent). Call after the backend is
 * initialised; `backend` is `tf.backend()`.
 */
export function registerFastWasmKernels(backend: unknown): void {
  asWasmBackend(backend);
  const factories: [string, (stock: tf.KernelFunc) => tf.KernelFunc][] = [
    [tf.BatchMatMul, makeBatchMatMul],
    [tf.Slice, makeSlice],
    [tf.SplitV, makeSplitV],
    [tf.Unpack, makeUnpack],
  ];
  for (const [name, make] of factories) {
    if (replaced.has(name)) continue;
    const stock = tf.getKernel(name, 'wasm');
    if (stock === undefined) throw new Error(`fast wasm kernels: tfjs-wasm has no ${name} kernel to replace`);
    const fast = make(stock.kernelFunc);
    tf.unregisterKernel(name, 'wasm');
    // The stock setupFunc stays: the stock kernel still serves the cases handed back to it.
    tf.registerKernel({ ...stock, kernelFunc: fast });
    replaced.set(name, stock.kernelFunc);
  }
}

/** The stock tfjs-wasm kernel a replacement stands in for (for tests and benchmarks). */
export function stockWasmKernel(name: string): tf.KernelFunc | undefined {
  return replaced.get(name);
}
