import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import {
  MNIST_MEAN,
  MNIST_STD,
  labelHistogram,
  loadMnistTestSet,
  normaliseMnist,
  parseIdx,
  readIdxFile,
  readMnistImages,
  readMnistLabels,
  splitMnist,
  subset,
} from '../../src/data/mnist.js';
import { sharedPath } from '../../src/io/shared.js';
import { skipWithout } from '../require.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sae-eraser-mnist-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** IDX bytes written by hand: magic 00 00 type rank, big-endian dims, then the payload. */
function idx(typeCode: number, shape: number[], payload: number[]): Uint8Array {
  const header = [0, 0, typeCode, shape.length];
  for (const d of shape) header.push((d >>> 24) & 0xff, (d >>> 16) & 0xff, (d >>> 8) & 0xff, d & 0xff);
  return Uint8Array.from([...header, ...payload]);
}

describe('IDX parser', () => {
  it('reads uint8 and big-endian int16 / float32 payloads', () => {
    const u8 = parseIdx(idx(0x08, [2, 3], [1, 2, 3, 4, 5, 255]));
    expect(u8.shape).toEqual([2, 3]);
    expect(Array.from(u8.data)).toEqual([1, 2, 3, 4, 5, 255]);
    // int16 -2 = 0xFFFE, 258 = 0x0102.
    expect(Array.from(parseIdx(idx(0x0b, [2], [0xff, 0xfe, 0x01, 0x02])).data)).toEqual([-2, 258]);
    // float32 1.5 = 0x3FC00000.
    expect(Array.from(parseIdx(idx(0x0d, [1], [0x3f, 0xc0, 0, 0])).data)).toEqual([1.5]);
  });

  it('rejects bad magic, unknown types and truncated or padded data, naming the source', () => {
    expect(() => parseIdx(Uint8Array.from([1, 0, 8, 1]), 'x.idx')).toThrow(/x\.idx: not an IDX file/);
    expect(() => parseIdx(idx(0x07, [1], [0]), 'x.idx')).toThrow(/x\.idx: unknown IDX element type 0x07/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 8, 2, 0, 0]), 'x.idx')).toThrow(/x\.idx: truncated IDX header/);
    expect(() => parseIdx(idx(0x08, [2, 2], [1, 2, 3]), 'x.idx')).toThrow(/x\.idx: truncated IDX data: shape \[2, 2\] of uint8 needs 16 bytes, file has 15/);
    expect(() => parseIdx(idx(0x08, [1], [1, 2]), 'x.idx')).toThrow(/x\.idx: 1 unexpected trailing bytes/);
  });

  it('reads gzip files and names the file when the gzip stream or the payload is cut', () => {
    const good = join(dir, 'labels.gz');
    writeFileSync(good, gzipSync(idx(0x08, [4], [3, 1, 4, 1])));
    expect(Array.from(readMnistLabels(good))).toEqual([3, 1, 4, 1]);
    const bytes = readFileSync(good);
    const cutGzip = join(dir, 'cut.gz');
    writeFileSync(cutGzip, bytes.subarray(0, bytes.length - 10));
    expect(() => readIdxFile(cutGzip)).toThrow(/cut\.gz: corrupt or truncated gzip stream/);
    const shortPayload = join(dir, 'short.gz');
    writeFileSync(shortPayload, gzipSync(idx(0x08, [5], [1, 2])));
    expect(() => readIdxFile(shortPayload)).toThrow(/short\.gz: truncated IDX data/);
    const badLabel = join(dir, 'bad-label.gz');
    writeFileSync(badLabel, gzipSync(idx(0x08, [2], [3, 10])));
    expect(() => readMnistLabels(badLabel)).toThrow(/bad-label\.gz: label 1 is 10, outside 0\.\.9/);
    const wrongShape = join(dir, 'wrong.gz');
    writeFileSync(wrongShape, gzipSync(idx(0x08, [1, 27, 28], new Array<number>(27 * 28).fill(0))));
    expect(() => readMnistImages(wrongShape)).toThrow(/wrong\.gz: expected MNIST images \(uint8 \[n, 28, 28\]\), got uint8 \[1, 27, 28\]/);
  });
});

describe('normalisation and splits', () => {
  it('normalises (x / 255 - 0.1307) / 0.3081', () => {
    const out = normaliseMnist(Uint8Array.from([0, 255, 51]));
    expect(out[0]).toBeCloseTo(-0.1307 / 0.3081, 6);
    expect(out[1]).toBeCloseTo((1 - 0.1307) / 0.3081, 6);
    expect(out[2]).toBeCloseTo((0.2 - 0.1307) / 0.3081, 6);
    expect([MNIST_MEAN, MNIST_STD]).toEqual([0.1307, 0.3081]);
  });

  it('splits deterministically into disjoint parts that cover the set', () => {
    const n = 50;
    const images = new Uint8Array(n * 784);
    for (let i = 0; i < n; i++) images.fill(i, i * 784, (i + 1) * 784);
    const set = { images, labels: Uint8Array.from({ length: n }, (_, i) => i % 10), n, indices: Int32Array.from({ length: n }, (_, i) => i) };
    const a = splitMnist(set, { trainSize: 40, seed: 42 });
    expect(splitMnist(set, { trainSize: 40, seed: 42 }).train.indices).toEqual(a.train.indices);
    expect(splitMnist(set, { trainSize: 40, seed: 43 }).train.indices).not.toEqual(a.train.indices);
    expect([a.train.n, a.test.n]).toEqual([40, 10]);
    const all = [...a.train.indices, ...a.test.indices].sort((x, y) => x - y);
    expect(all).toEqual(Array.from({ length: n }, (_, i) => i));
    // Each example keeps its own pixels and label.
    a.train.indices.forEach((src, k) => {
      expect(a.train.images[k * 784 + 100]).toBe(src);
      expect(a.train.labels[k]).toBe(src % 10);
    });
    expect(() => splitMnist(set, { trainSize: 51 })).toThrow(/trainSize 51/);
    expect(() => subset(set, [50])).toThrow(/index 50 outside 0\.\.49/);
  });
});

const mnistDir = sharedPath('data', 'mnist');

describe.skipIf(skipWithout(mnistDir === undefined, 'the shared MNIST tests need ../shared/data/mnist (set SAE_ERASER_SHARED)'))('shared MNIST files', () => {
  it('loads the 10k test set with the published per-digit counts and a 8000/2000 split', () => {
    const set = loadMnistTestSet(mnistDir!);
    expect(set.n).toBe(10000);
    expect(set.images.length).toBe(10000 * 28 * 28);
    const hist = labelHistogram(set.labels);
    expect(hist.reduce((s, v) => s + v, 0)).toBe(10000);
    // Published MNIST test-set digit counts (LeCun et al.).
    expect(Array.from(hist)).toEqual([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    // Pixels span the full byte range and the mean is near the usual 0.1307 * 255 = 33.3.
    let min = 255;
    let max = 0;
    let sum = 0;
    for (const v of set.images) {
      if (v < min) min = v;
      if (v > max) max = v;
      sum += v;
    }
    expect([min, max]).toEqual([0, 255]);
    expect(sum / set.images.length / 255).toBeGreaterThan(0.12);
    expect(sum / set.images.length / 255).toBeLessThan(0.14);
    const { train, test } = splitMnist(set);
    expect([train.n, test.n]).toEqual([8000, 2000]);
    expect(labelHistogram(train.labels).reduce((s, v) => s + v, 0) + labelHistogram(test.labels).reduce((s, v) => s + v, 0)).toBe(10000);
    // Every digit appears in both parts of a random 80/20 split.
    for (const c of labelHistogram(test.labels)) expect(c).toBeGreaterThan(100);
  });

  it('reads the 60k training labels with the published counts', () => {
    const labels = readMnistLabels(join(mnistDir!, 'train-labels-idx1-ubyte.gz'));
    expect(Array.from(labelHistogram(labels))).toEqual([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
  });
});
