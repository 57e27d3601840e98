/** The MNIST CNN (src/models/mnist-cnn.ts): its im2col convolution against tfjs's conv2d, its gradient, and checkpoints. */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { randomNormalArray } from '../../src/data/prng.js';
import { writeSafetensors } from '../../src/io/safetensors.js';
import { CONV_GRID, convPatches, MnistCnn, patchConv } from '../../src/models/mnist-cnn.js';

beforeAll(async () => {
  await initEngine();
});

const dir = mkdtempSync(join(tmpdir(), 'mnist-cnn-'));

describe('MNIST CNN', () => {
  const n = 3;
  const x = randomNormalArray(n * 784, 5);

  it('computes the 5x5 stride-2 zero-padded convolution that tf.conv2d computes', () => {
    expect(CONV_GRID).toBe(14);
    const w = randomNormalArray(25 * 4, 6);
    const { patches, transposed } = convPatches(x, n);
    const [ours, theirs] = tf.tidy(() => [
      patchConv(tf.tensor2d(patches, [n * 196, 25]), tf.tensor2d(transposed, [25, n * 196]), tf.tensor2d(w, [25, 4])),
      tf.reshape(
        tf.conv2d(tf.tensor4d(x, [n, 28, 28, 1]), tf.tensor4d(w, [5, 5, 1, 4]), 2, [
          [0, 0],
          [2, 2],
          [2, 2],
          [0, 0],
        ]),
        [n * 196, 4],
      ),
    ]);
    const a = ours!.dataSync();
    theirs!.dataSync().forEach((v, i) => expect(a[i]).toBeCloseTo(v, 4));
    tf.dispose([ours!, theirs!]);
  });

  it('reads shifted images: a shift by (1, 2) moves pixel (r, c) to (r + 1, c + 2)', () => {
    const img = new Float32Array(784);
    img[10 * 28 + 10] = 1;
    const shifted = convPatches(img, 1, Int8Array.from([1, 2])).patches;
    const moved = new Float32Array(784);
    moved[11 * 28 + 12] = 1;
    expect(Array.from(shifted)).toEqual(Array.from(convPatches(moved, 1).patches));
  });

  it('has the gradient P^T dY in the weight', () => {
    const { patches, transposed } = convPatches(x, n);
    const w = tf.tensor2d(randomNormalArray(25 * 2, 7), [25, 2]);
    const dy = tf.tensor2d(randomNormalArray(n * 196 * 2, 8), [n * 196, 2]);
    const [g, want] = tf.tidy(() => {
      const p = tf.tensor2d(patches, [n * 196, 25]);
      const pT = tf.tensor2d(transposed, [25, n * 196]);
      const grad = tf.grad((ww: tf.Tensor) => tf.sum(tf.mul(patchConv(p, pT, ww as tf.Tensor2D), dy)))(w);
      return [grad, tf.matMul(tf.transpose(p), dy)] as tf.Tensor[];
    });
    const gv = g!.dataSync();
    Array.from(want!.dataSync() as Float32Array).forEach((v, i) => expect(gv[i]).toBeCloseTo(v, 3));
    tf.dispose([g!, want!, w, dy]);
  });

  it('saves and loads with its config, and refuses a checkpoint of other shapes naming the tensor', () => {
    const model = MnistCnn.init({ channels: 4, hidden: 8 }, 3);
    const path = join(dir, 'cnn.safetensors');
    model.save(path);
    const back = MnistCnn.load(path);
    const [h1, h2] = [model.hidden(x, n), back.hidden(x, n)];
    expect(back.config).toEqual({ channels: 4, hidden: 8 });
    expect(Array.from(h2.dataSync())).toEqual(Array.from(h1.dataSync()));
    tf.dispose([h1, h2]);
    const bad = join(dir, 'bad.safetensors');
    const tensors = { ...model.parameters, 'out.bias': { dtype: 'F32' as const, shape: [9], data: new Float32Array(9) } };
    writeSafetensors(bad, tensors, { mnist_cnn_config: JSON.stringify({ channels: 4, hidden: 8 }) });
    expect(() => MnistCnn.load(bad)).toThrow(/bad\.safetensors: tensor "out\.bias" has shape \[9\], expected \[10\]/);
    writeSafetensors(bad, model.parameters, {});
    expect(() => MnistCnn.load(bad)).toThrow(/no "mnist_cnn_config" metadata/);
    model.dispose();
    back.dispose();
    expect(() => model.hidden(x, n)).toThrow(/used after dispose/);
  });
});
