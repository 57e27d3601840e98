import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { AdamW } from '../../src/probe/adamw.js';
import { LinearProbe, loadProbe } from '../../src/probe/linear.js';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { mulberry32, randomNormal } from '../../src/data/prng.js';
import { runPythonReference } from '../reference/python.js';

let dir: string;
beforeAll(async () => {
  await initEngine();
  dir = mkdtempSync(join(tmpdir(), 'sae-eraser-probe-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Gaussian blobs: class c centred at +-margin along a random direction, plus noise. */
function blobs(n: number, d: number, seed: number, margin = 3, classes = 2): { X: tf.Tensor2D; y: Int32Array } {
  const rng = mulberry32(seed);
  const centres = Array.from({ length: classes }, () => Array.from({ length: d }, () => margin * randomNormal(rng)));
  const data = new Float32Array(n * d);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = i % classes;
    for (let j = 0; j < d; j++) data[i * d + j] = centres[y[i]!]![j]! + randomNormal(rng);
  }
  return { X: tf.tensor2d(data, [n, d]), y };
}

function acc(pred: Int32Array, y: Int32Array): number {
  let c = 0;
  for (let i = 0; i < y.length; i++) if (pred[i] === y[i]) c++;
  return c / y.length;
}

describe('AdamW', () => {
  it('matches a hand computation over two steps', () => {
    // p0 = 1, lr 0.1, wd 0.01, betas (0.9, 0.999), eps 1e-8; gradients 0.5 then -1.
    // Step 1: p = 1 * (1 - 0.001) = 0.999; m = 0.05, v = 0.00025; m^ = 0.5, v^ = 0.25;
    //         p = 0.999 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.899000002.
    // Step 2: p = 0.899000002 * 0.999 = 0.898101002; m = 0.045 - 0.1 = -0.055;
    //         v = 0.00024975 + 0.001 = 0.00124975; m^ = -0.055 / 0.19 = -0.289473684;
    //         v^ = 0.00124975 / 0.001999 = 0.625187594, sqrt = 0.790688052;
    //         p = 0.898101002 + 0.1 * 0.289473684 / 0.790688052 = 0.934711354.
    const p = tf.variable(tf.tensor1d([1, -2]));
    const opt = new AdamW([p], { lr: 0.1, weightDecay: 0.01 });
    opt.step([tf.tensor1d([0.5, 0])]);
    // Second coordinate: zero gradient, so only the decay acts: -2 * 0.999.
    expect(p.dataSync()[0]).toBeCloseTo(0.899000002, 6);
    expect(p.dataSync()[1]).toBeCloseTo(-1.998, 6);
    opt.step([tf.tensor1d([-1, 0])]);
    expect(p.dataSync()[0]).toBeCloseTo(0.934711354, 6);
    expect(p.dataSync()[1]).toBeCloseTo(-2 * 0.999 * 0.999, 6);
    expect(opt.steps).toBe(2);
    opt.dispose();
    p.dispose();
  });

  it('rejects bad hyperparameters and mismatched gradients', () => {
    const p = tf.variable(tf.zeros([2]));
    expect(() => new AdamW([p], { beta1: 1 })).toThrow(/beta1 must be in \[0, 1\)/);
    expect(() => new AdamW([p], { lr: -1 })).toThrow(/lr must be/);
    const opt = new AdamW([p]);
    expect(() => opt.step([tf.zeros([3])])).toThrow(/gradient 0 has shape \[3\], parameter has \[2\]/);
    opt.dispose();
    p.dispose();
  });
});

describe('linear probe', () => {
  it("reaches > 99% on separable data with the paper's recipe (one epoch)", () => {
    const train = blobs(4000, 32, 1);
    const test = blobs(1000, 32, 1);
    const probe = new LinearProbe(32, 2, { epochs: 1 });
    const report = probe.fit(train.X, train.y);
    expect(report.steps).toBe(Math.ceil(4000 / 128));
    expect(report.losses[report.steps - 1]!).toBeLessThan(report.losses[0]!);
    expect(acc(probe.predict(test.X), test.y)).toBeGreaterThan(0.99);
    const z = probe.logits(test.X);
    expect(z.shape).toEqual([1000]);
    z.dispose();
    probe.dispose();
    tf.dispose([train.X, test.X]);
  });

  it('is deterministic from its seed', () => {
    const { X, y } = blobs(500, 8, 2, 0.5);
    const fit = (seed: number, shuffle = false): Float32Array => {
      const p = new LinearProbe(8, 2, { seed, shuffle, epochs: 2 });
      p.fit(X, y);
      const w = p.parameters().weight;
      p.dispose();
      return w;
    };
    expect(fit(42)).toEqual(fit(42));
    expect(fit(42)).not.toEqual(fit(43));
    expect(fit(42, true)).toEqual(fit(42, true));
    expect(fit(42, true)).not.toEqual(fit(42, false));
    X.dispose();
  });

  it('trains to convergence by default: stops when the epoch loss stalls, reports epochs and steps, and beats one epoch on a small split', () => {
    // 48 rows, low margin: one epoch is a single step of a batch of 128, far from the optimum.
    const { X, y } = blobs(48, 16, 11, 0.4);
    const one = new LinearProbe(16, 2, { epochs: 1 });
    const paper = one.fit(X, y);
    const conv = new LinearProbe(16, 2);
    const report = conv.fit(X, y);
    expect(paper).toMatchObject({ epochs: 1, steps: 1 });
    expect(report.epochs).toBeGreaterThan(5);
    expect(report.epochs).toBeLessThan(1000);
    expect(report.steps).toBe(report.epochs);
    expect(report.losses).toHaveLength(report.steps);
    // The last `patience` epochs did not improve on the best by the tolerance; the final loss is far below one epoch's.
    const last = report.losses[report.losses.length - 1]!;
    expect(last).toBeLessThan(paper.losses[0]! * 0.5);
    const acc = (p: LinearProbe): number => p.predict(X).reduce((a, v, i) => a + (v === y[i] ? 1 : 0), 0) / y.length;
    expect(acc(conv)).toBeGreaterThan(acc(one));
    // A tighter cap ends the fit at the cap.
    const capped = new LinearProbe(16, 2, { maxEpochs: 3 });
    expect(capped.fit(X, y).epochs).toBe(3);
    for (const p of [one, conv, capped]) p.dispose();
    X.dispose();
    expect(() => new LinearProbe(4, 2, { patience: 0 })).toThrow(/patience must be a positive integer/);
    expect(() => new LinearProbe(4, 2, { epochs: 0 })).toThrow(/epochs must be a positive integer or "converge"/);
  });

  it('does not leak tensors across fit, predict and logits calls', () => {
    const { X, y } = blobs(600, 16, 3);
    const probe = new LinearProbe(16, 2, { shuffle: true, epochs: 2 });
    probe.fit(X, y);
    probe.predict(X);
    const before = tf.memory().numTensors;
    for (let k = 0; k < 3; k++) {
      probe.fit(X, y);
      probe.predict(X);
      probe.logits(X).dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
    probe.dispose();
    X.dispose();
    // A probe's whole life (construct, fit, predict, save, load, dispose) leaves nothing behind.
    const start = tf.memory().numTensors;
    const { X: X2, y: y2 } = blobs(100, 4, 6);
    const p = new LinearProbe(4, 2);
    p.fit(X2, y2);
    p.save(join(dir, 'life.safetensors'));
    const q = LinearProbe.load(join(dir, 'life.safetensors'));
    q.predict(X2);
    X2.dispose();
    p.dispose();
    q.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });

  it('multiclass (softmax cross-entropy) separates 4 blobs', () => {
    const train = blobs(2000, 10, 4, 3, 4);
    const test = blobs(400, 10, 4, 3, 4);
    const probe = new LinearProbe(10, 4, { epochs: 3 });
    probe.fit(train.X, train.y);
    const z = probe.logits(test.X);
    expect(z.shape).toEqual([400, 4]);
    z.dispose();
    expect(acc(probe.predict(test.X), test.y)).toBeGreaterThan(0.97);
    probe.dispose();
    tf.dispose([train.X, test.X]);
  });

  it('save/load round trip predicts identically and keeps torch layout', () => {
    for (const classes of [2, 3]) {
      const { X, y } = blobs(300, 6, 5, 1, classes);
      const probe = new LinearProbe(6, classes, { lr: 0.05, epochs: 2 });
      probe.fit(X, y);
      const path = join(dir, `probe${classes}.safetensors`);
      probe.save(path);
      const file = readSafetensors(path);
      expect(file.info('weight').shape).toEqual([classes === 2 ? 1 : classes, 6]);
      expect(file.metadata.probe_kind).toBe('linear');
      const loaded = loadProbe(path) as LinearProbe;
      expect([loaded.dIn, loaded.nClasses]).toEqual([6, classes]);
      expect(loaded.predict(X)).toEqual(probe.predict(X));
      const [a, b] = [probe.logits(X), loaded.logits(X)];
      expect(b.dataSync()).toEqual(a.dataSync());
      expect(loaded.options.lr).toBe(0.05);
      tf.dispose([a, b, X]);
      probe.dispose();
      loaded.dispose();
    }
  });

  it('rejects bad inputs and foreign files with clear errors', () => {
    const probe = new LinearProbe(4);
    const X = tf.zeros([3, 4]) as tf.Tensor2D;
    expect(() => probe.fit(tf.zeros([3, 5]) as tf.Tensor2D, [0, 1, 0])).toThrow(/X must be \[n, 4\], got \[3, 5\]/);
    expect(() => probe.fit(X, [0, 1])).toThrow(/2 labels for 3 rows/);
    expect(() => probe.fit(X, [0, 2, 1])).toThrow(/label 1 is 2, expected an integer in 0\.\.1/);
    const other = join(dir, 'other.safetensors');
    writeSafetensors(other, { weight: { dtype: 'F32', shape: [1, 4], data: new Float32Array(4) } }, { probe_kind: 'mlp' });
    expect(() => loadProbe(other)).toThrow(/other\.safetensors: unknown probe_kind "mlp"/);
    const badShape = join(dir, 'bad.safetensors');
    writeSafetensors(
      badShape,
      { weight: { dtype: 'F32', shape: [1, 3], data: new Float32Array(3) }, bias: { dtype: 'F32', shape: [1], data: new Float32Array(1) } },
      { probe_kind: 'linear', d_in: '4', n_classes: '2' },
    );
    expect(() => LinearProbe.load(badShape)).toThrow(/bad\.safetensors: tensor "weight" has shape \[1, 3\], expected \[1, 4\]/);
    probe.dispose();
    expect(() => probe.predict(X)).toThrow(/after dispose/);
    X.dispose();
  });
});

describe('linear probe against PyTorch (SHIFT training loop)', () => {
  let ref: string;
  beforeAll(async () => {
    ref = await runPythonReference('probe_reference.py');
  });

  it.each(['binary_paper', 'binary_decay', 'multiclass'])('%s: same losses and final parameters as torch AdamW', (name) => {
    const cases = JSON.parse(readFileSync(join(ref, 'cases.json'), 'utf8')) as Record<
      string,
      { classes: number; lr: number; weight_decay: number | null; batch: number; epochs: number }
    >;
    const c = cases[name]!;
    const file = readSafetensors(join(ref, `${name}.safetensors`));
    const [n, d] = file.info('X').shape as [number, number];
    const X = tf.tensor2d(file.float32('X'), [n, d]);
    const probe = new LinearProbe(d, c.classes, {
      lr: c.lr,
      batchSize: c.batch,
      epochs: c.epochs,
      warmStart: true,
      ...(c.weight_decay === null ? {} : { weightDecay: c.weight_decay }),
    });
    probe.setParameters(file.float32('w0'), file.float32('b0'));
    const report = probe.fit(X, file.int32('y'));
    const losses = file.float32('losses');
    expect(report.steps).toBe(losses.length);
    for (let k = 0; k < losses.length; k++) expect(report.losses[k]).toBeCloseTo(losses[k]!, 5);
    const { weight, bias } = probe.parameters();
    const w1 = file.float32('w1');
    const b1 = file.float32('b1');
    for (let k = 0; k < w1.length; k++) expect(weight[k]).toBeCloseTo(w1[k]!, 5);
    for (let k = 0; k < b1.length; k++) expect(bias[k]).toBeCloseTo(b1[k]!, 5);
    probe.dispose();
    X.dispose();
  });
});
