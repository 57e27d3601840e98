/**
 * MNIST from its IDX files (LeCun, Cortes & Burges), gzip-compressed or not.
 *
 * IDX layout (big-endian): bytes 0-1 are zero; byte 2 the element type (0x08 uint8, 0x09 int8,
 * 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64); byte 3 the rank r; then r uint32 dimension
 * sizes; then prod(dims) elements. MNIST images are uint8 [n, 28, 28] (magic 0x00000803), labels
 * uint8 [n] (magic 0x00000801).
 *
 * Only the 10k test set's images are available here (the shared folder has no training images), so
 * experiments split those 10k images deterministically: a seeded permutation (project PRNG, seed 42),
 * the first 8000 for training and the other 2000 for testing.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { permutation } from './prng.js';

/** The usual MNIST normalisation constants (mean and std of the training pixels in [0, 1]). */
export const MNIST_MEAN = 0.1307;
export const MNIST_STD = 0.3081;

export const MNIST_ROWS = 28;
export const MNIST_COLS = 28;

export type IdxData = Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;

export interface IdxArray {
  /** The IDX element type code (0x08 ... 0x0E). */
  typeCode: number;
  shape: number[];
  data: IdxData;
}

const IDX_TYPES: Record<number, { name: string; bytes: number }> = {
  0x08: { name: 'uint8', bytes: 1 },
  0x09: { name: 'int8', bytes: 1 },
  0x0b: { name: 'int16', bytes: 2 },
  0x0c: { name: 'int32', bytes: 4 },
  0x0d: { name: 'float32', bytes: 4 },
  0x0e: { name: 'float64', bytes: 8 },
};

/** Parses IDX bytes (already decompressed). `source` names the file in errors. */
export function parseIdx(bytes: Uint8Array, source = '<idx>'): IdxArray {
  if (bytes.length < 4) throw new Error(`${source}: truncated IDX file: ${bytes.length} bytes, no room for the 4-byte magic`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new Error(`${source}: not an IDX file: magic starts with 0x${hex2(bytes[0]!)}${hex2(bytes[1]!)}, expected 0x0000`);
  }
  const typeCode = bytes[2]!;
  const type = IDX_TYPES[typeCode];
  if (type === undefined) throw new Error(`${source}: unknown IDX element type 0x${hex2(typeCode)}`);
  const rank = bytes[3]!;
  if (rank === 0) throw new Error(`${source}: IDX rank is 0`);
  const headerBytes = 4 + 4 * rank;
  if (bytes.length < headerBytes) throw new Error(`${source}: truncated IDX header: ${bytes.length} bytes, rank ${rank} needs ${headerBytes}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shape: number[] = [];
  for (let k = 0; k < rank; k++) shape.push(view.getUint32(4 + 4 * k, false));
  const count = shape.reduce((a, b) => a * b, 1);
  const expected = headerBytes + count * type.bytes;
  if (bytes.length < expected) {
    throw new Error(`${source}: truncated IDX data: shape [${shape.join(', ')}] of ${type.name} needs ${expected} bytes, file has ${bytes.length}`);
  }
  if (bytes.length > expected) {
    throw new Error(`${source}: ${bytes.length - expected} unexpected trailing bytes after the IDX data (shape [${shape.join(', ')}])`);
  }
  return { typeCode, shape, data: readElements(view, headerBytes, count, typeCode) };
}

function hex2(b: number): string {
  return b.toString(16).padStart(2, '0');
}

function readElements(view: DataView, offset: number, count: number, typeCode: number): IdxData {
  switch (typeCode) {
    case 0x08:
      return new Uint8Array(view.buffer.slice(view.byteOffset + offset, view.byteOffset + offset + count));
    case 0x09:
      return new Int8Array(view.buffer.slice(view.byteOffset + offset, view.byteOffset + offset + count));
    case 0x0b:
      return Int16Array.from({ length: count }, (_, i) => view.getInt16(offset + 2 * i, false));
    case 0x0c:
      return Int32Array.from({ length: count }, (_, i) => view.getInt32(offset + 4 * i, false));
    case 0x0d:
      return Float32Array.from({ length: count }, (_, i) => view.getFloat32(offset + 4 * i, false));
    default:
      return Float64Array.from({ length: count }, (_, i) => view.getFloat64(offset + 8 * i, false));
  }
}

/** Reads an IDX file, gunzipping it when it starts with the gzip magic (1f 8b). */
export function readIdxFile(path: string): IdxArray {
  let raw: Uint8Array;
  try {
    raw = readFileSync(path);
  } catch (err) {
    throw new Error(`${path}: cannot read: ${(err as Error).message}`, { cause: err });
  }
  let bytes = raw;
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      bytes = gunzipSync(raw);
    } catch (err) {
      throw new Error(`${path}: corrupt or truncated gzip stream: ${(err as Error).message}`, { cause: err });
    }
  }
  return parseIdx(bytes, path);
}

function expectIdx(arr: IdxArray, path: string, typeCode: number, shapeTail: readonly number[], what: string): void {
  const tail = arr.shape.slice(1);
  if (arr.typeCode !== typeCode || arr.shape.length !== shapeTail.length + 1 || tail.some((d, k) => d !== shapeTail[k])) {
    throw new Error(
      `${path}: expected ${what} (${IDX_TYPES[typeCode]!.name} [n${shapeTail.map((d) => `, ${d}`).join('')}]), ` +
        `got ${IDX_TYPES[arr.typeCode]!.name} [${arr.shape.join(', ')}]`,
    );
  }
}

/** Reads MNIST images: uint8 [n, 28, 28], returned flat ([n * 784], row-major). */
export function readMnistImages(path: string): { images: Uint8Array; n: number } {
  const arr = readIdxFile(path);
  expectIdx(arr, path, 0x08, [MNIST_ROWS, MNIST_COLS], 'MNIST images');
  return { images: arr.data as Uint8Array, n: arr.shape[0]! };
}

/** Reads MNIST labels: uint8 [n], each in 0..9. */
export function readMnistLabels(path: string): Uint8Array {
  const arr = readIdxFile(path);
  expectIdx(arr, path, 0x08, [], 'MNIST labels');
  const labels = arr.data as Uint8Array;
  const bad = labels.findIndex((v) => v > 9);
  if (bad >= 0) throw new Error(`${path}: label ${bad} is ${labels[bad]}, outside 0..9`);
  return labels;
}

export interface MnistSet {
  /** [n * 784] uint8 pixels, row-major 28 x 28 per image. */
  images: Uint8Array;
  /** [n] digits 0..9. */
  labels: Uint8Array;
  n: number;
  /** Index of each image in the source file. */
  indices: Int32Array;
}

/** The files of the 10k MNIST test set, images then labels, as `loadMnistTestSet` reads them. */
export const MNIST_TEST_FILES = ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'] as const;

/** Reads the 10k MNIST test set (`MNIST_TEST_FILES`) from `dir`. */
export function loadMnistTestSet(dir: string): MnistSet {
  const imagesPath = join(dir, MNIST_TEST_FILES[0]);
  const labelsPath = join(dir, MNIST_TEST_FILES[1]);
  const { images, n } = readMnistImages(imagesPath);
  const labels = readMnistLabels(labelsPath);
  if (labels.length !== n) throw new Error(`${labelsPath}: ${labels.length} labels for ${n} images in ${imagesPath}`);
  return { images, labels, n, indices: Int32Array.from({ length: n }, (_, i) => i) };
}

/** The examples of `set` at positions `take` (a new set). */
export function subset(set: MnistSet, take: ArrayLike<number>): MnistSet {
  const pixels = MNIST_ROWS * MNIST_COLS;
  const images = new Uint8Array(take.length * pixels);
  const labels = new Uint8Array(take.length);
  const indices = new Int32Array(take.length);
  for (let k = 0; k < take.length; k++) {
    const i = take[k]!;
    if (!Number.isInteger(i) || i < 0 || i >= set.n) throw new Error(`MNIST subset: index ${i} outside 0..${set.n - 1}`);
    images.set(set.images.subarray(i * pixels, (i + 1) * pixels), k * pixels);
    labels[k] = set.labels[i]!;
    indices[k] = set.indices[i]!;
  }
  return { images, labels, n: take.length, indices };
}

export interface MnistSplitOptions {
  /** Training examples; default 8000 (the rest are the test part). */
  trainSize?: number;
  seed?: number;
}

/** A deterministic train/test split: a seeded permutation, the first `trainSize` train, the rest test. */
export function splitMnist(set: MnistSet, options: MnistSplitOptions = {}): { train: MnistSet; test: MnistSet } {
  const trainSize = options.trainSize ?? 8000;
  if (!Number.isInteger(trainSize) || trainSize < 0 || trainSize > set.n) {
    throw new Error(`MNIST split: trainSize ${trainSize} must be an integer in 0..${set.n}`);
  }
  const order = permutation(set.n, options.seed ?? 42);
  return { train: subset(set, order.subarray(0, trainSize)), test: subset(set, order.subarray(trainSize)) };
}

/** Pixels to network inputs: (x / 255 - 0.1307) / 0.3081, as float32. */
export function normaliseMnist(images: Uint8Array): Float32Array {
  const out = new Float32Array(images.length);
  for (let i = 0; i < images.length; i++) out[i] = (images[i]! / 255 - MNIST_MEAN) / MNIST_STD;
  return out;
}

/** Counts of each digit 0..9. */
export function labelHistogram(labels: ArrayLike<number>): Int32Array {
  const counts = new Int32Array(10);
  for (let i = 0; i < labels.length; i++) counts[labels[i]!]!++;
  return counts;
}
