import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import {
  adversaryLoss,
  affineOfProbe,
  conceptFolds,
  initialLogit,
  resolveMaskOptions,
  temperatureAt,
  type MaskStepInfo,
} from '../../src/erasure/mask.js';
import { saeMaskEraser } from '../../src/erasure/sae-mask.js';
import { neuronMaskEraser } from '../../src/erasure/neuron-mask.js';
import { dasMaskEraser } from '../../src/erasure/das-mask.js';
import { mulberry32 } from '../../src/data/prng.js';
import { LinearProbe } from '../../src/probe/linear.js';
import type { Probe } from '../../src/probe/probe.js';
import { setQuiet } from '../../src/util/progress.js';
import { biasedProbe, HOOK, plantedPooled, pooledContext } from './mask-fixtures.js';
import { ToyModel, axisSae, plantedSplits, toyTokenize } from './sae-toy.js';
import { buildActivationCache } from '../../src/cache/cache.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

describe('gate and schedule', () => {
  it('anneals the temperature linearly per step from 0.1 to 0.001 in float32', () => {
    const total = 101;
    expect(temperatureAt(0, total, 0.1, 0.001)).toBe(Math.fround(0.1));
    expect(temperatureAt(total - 1, total, 0.1, 0.001)).toBe(Math.fround(0.001));
    const mid = temperatureAt(50, total, 0.1, 0.001);
    expect(mid).toBeCloseTo(0.0505, 6);
    expect(mid).toBe(Math.fround(mid));
    for (let k = 1; k < total; k++) expect(temperatureAt(k, total, 0.1, 0.001)).toBeLessThan(temperatureAt(k - 1, total, 0.1, 0.001));
    // Equal steps (up to float32 rounding).
    const step = temperatureAt(1, total, 0.1, 0.001) - temperatureAt(0, total, 0.1, 0.001);
    expect(temperatureAt(80, total, 0.1, 0.001) - temperatureAt(79, total, 0.1, 0.001)).toBeCloseTo(step, 7);
  });

  it('starts every unit near keep-all: sigmoid(m0 / T0) = initKeep', () => {
    for (const keep of [0.99, 0.9, 0.5]) {
      const m0 = initialLogit(keep, 0.1);
      expect(1 / (1 + Math.exp(-m0 / 0.1))).toBeCloseTo(keep, 6);
    }
    expect(initialLogit(0.5, 0.1)).toBe(0);
  });
});

describe('options', () => {
  it('has the documented defaults', () => {
    const o = resolveMaskOptions('sae_mask', {}, 7);
    expect(o).toMatchObject({
      objective: 'concept',
      epochs: 25,
      batchSize: 16,
      lr: 1e-3,
      tempStart: 0.1,
      tempEnd: 0.001,
      initKeep: 0.99,
      l1: 0.05,
      hardMask: true,
      keepError: true,
      retrainHead: true,
      adversaryCrossFit: true,
      seed: 7,
    });
    expect(o.hooks).toBeUndefined();
    expect(resolveMaskOptions('sae_mask', { objective: 'task' }, 1).retrainHead).toBe(false);
    expect(resolveMaskOptions('das_mask', {}, 1).initNoise).toBeGreaterThan(0);
  });

  it('rejects unknown, mistyped and misplaced options with the option named', () => {
    expect(() => resolveMaskOptions('sae_mask', { epoch: 3 }, 1)).toThrow(/unknown option "epoch"/);
    expect(() => resolveMaskOptions('sae_mask', { epochs: 2.5 }, 1)).toThrow(/option epochs is 2.5, expected an integer >= 1/);
    expect(() => resolveMaskOptions('sae_mask', { lr: -1 }, 1)).toThrow(/option lr is -1/);
    expect(() => resolveMaskOptions('sae_mask', { initKeep: 1 }, 1)).toThrow(/option initKeep is 1, expected a number in \(0, 1\)/);
    expect(() => resolveMaskOptions('sae_mask', { objective: 'gender' }, 1)).toThrow(/option objective is "gender", expected one of "concept", "task"/);
    expect(() => resolveMaskOptions('sae_mask', { hardMask: 'yes' }, 1)).toThrow(/option hardMask is "yes", expected true or false/);
    expect(() => resolveMaskOptions('sae_mask', { hooks: ['a', 'a'] }, 1)).toThrow(/lists a hook twice/);
    expect(() => resolveMaskOptions('neuron_mask', { keepError: false }, 1)).toThrow(/keepError applies only to sae_mask/);
  });
});

describe('heads and losses', () => {
  it('reads the affine map of a linear probe off its logits', () => {
    const probe = new LinearProbe(5, 2, { seed: 3 });
    const head = affineOfProbe(probe, 5);
    const { weight, bias } = probe.parameters();
    expect(head.nOut).toBe(1);
    for (let j = 0; j < 5; j++) expect(head.wT[j]).toBeCloseTo(weight[j]!, 6);
    expect(head.b[0]).toBeCloseTo(bias[0]!, 6);
    probe.dispose();
  });

  it('refuses a probe that is not affine', () => {
    const squared: Probe = {
      kind: 'squared',
      dIn: 3,
      nClasses: 2,
      fit: () => ({ losses: new Float32Array(0), steps: 0, epochs: 0 }),
      logits: (X) => tf.tidy(() => tf.sum(tf.square(X), 1)),
      predict: () => new Int32Array(0),
      save: () => undefined,
      dispose: () => undefined,
    };
    expect(() => affineOfProbe(squared, 3)).toThrow(/probe \(kind "squared"\) is not affine/);
  });

  it('adversary loss: the difference of class means of the logits, 0 for one class', () => {
    tf.tidy(() => {
      const l = tf.tensor2d([[1], [3], [-2], [0], [5]]);
      const z = tf.tensor2d([[1], [1], [0], [0], [1]]);
      expect(adversaryLoss(l, z).dataSync()[0]).toBeCloseTo((1 + 3 + 5) / 3 - (-2 + 0) / 2, 6);
      expect(adversaryLoss(l, tf.ones([5, 1]) as tf.Tensor2D).dataSync()[0]).toBe(0);
    });
  });

  it('splits the concept set into disjoint folds stratified by label', () => {
    const labels = Int32Array.from({ length: 41 }, (_, i) => (i % 3 === 0 ? 1 : 0));
    const folds = conceptFolds(labels, 2, mulberry32(1));
    const all = [...folds[0]!, ...folds[1]!].sort((a, b) => a - b);
    expect(all).toEqual(Array.from({ length: 41 }, (_, i) => i));
    const ones = folds.map((f) => Array.from(f).filter((i) => labels[i] === 1).length);
    expect(Math.abs(ones[0]! - ones[1]!)).toBeLessThanOrEqual(1);
    expect(Math.abs(folds[0]!.length - folds[1]!.length)).toBeLessThanOrEqual(1);
  });
});

describe('fit checks', () => {
  it('rejects a missing or one-class concept set, and unknown hooks', async () => {
    const p = plantedPooled({ kind: 'neuron' });
    const probe = biasedProbe(p.cache, p.train);
    const ctx = pooledContext(p, probe, {});
    await expect(neuronMaskEraser().fit({ ...ctx, concept: { rows: new Int32Array(0), y: new Int32Array(0), z: new Int32Array(0), texts: [] } })).rejects.toThrow(
      /concept objective needs a concept-labelled set/,
    );
    const oneClass = { ...p.concept, z: new Int32Array(p.concept.rows.length) };
    await expect(neuronMaskEraser().fit({ ...ctx, concept: oneClass })).rejects.toThrow(/at least 2 example\(s\) of each concept class/);
    await expect(neuronMaskEraser({ hooks: ['layers.9.resid_out'] }).fit(ctx)).rejects.toThrow(/"layers\.9\.resid_out", which is not a hook of the model/);
    expect(() => neuronMaskEraser().edits()).toThrow(/before fit\(\) or load/);
    probe.dispose();
  });

  it('the soft mask (hardMask: false) applies sigmoid(m / tempEnd)', async () => {
    const p = plantedPooled({ kind: 'neuron' });
    const probe = biasedProbe(p.cache, p.train);
    const eraser = neuronMaskEraser({ lr: 0.01, epochs: 4, hardMask: false, tempEnd: 0.2, retrainHead: false });
    await eraser.fit(pooledContext(p, probe, {}));
    const m = eraser.maskLogits(HOOK);
    const rows = p.test.rows.subarray(0, 5);
    const got = tf.tidy(() => eraser.erasePooled(p.cache, rows)!.arraySync());
    Array.from(rows).forEach((r, i) => {
      for (let j = 0; j < 8; j++) expect(got[i]![j]).toBeCloseTo(p.pooled[r * 8 + j]! / (1 + Math.exp(-m[j]! / 0.2)), 5);
    });
    eraser.dispose();
    probe.dispose();
  });
});

describe('memory', () => {
  /** numTensors after each optimiser step, from the step callback. */
  function recorder(): { counts: number[]; onStep: (info: MaskStepInfo) => void } {
    const counts: number[] = [];
    return { counts, onStep: () => counts.push(tf.memory().numTensors) };
  }

  function expectFlat(counts: number[]): void {
    expect(counts.length).toBeGreaterThan(10);
    // After the first steps (optimizer moments, cached folded heads), the count never changes.
    expect(new Set(counts.slice(2)).size).toBe(1);
  }

  for (const kind of ['sae', 'neuron', 'das'] as const) {
    it(`does not grow across training steps (${kind}, pooled path), nor after fit and dispose`, async () => {
      const p = plantedPooled({ kind, nTrain: 64, nConcept: 64 });
      const probe = biasedProbe(p.cache, p.train);
      const before = tf.memory().numTensors;
      const r = recorder();
      const factory = kind === 'sae' ? saeMaskEraser : kind === 'neuron' ? neuronMaskEraser : dasMaskEraser;
      const eraser = factory({ epochs: 4, adversaryEvery: 3 }, { onStep: r.onStep });
      await eraser.fit(pooledContext(p, probe, {}));
      expectFlat(r.counts);
      eraser.dispose();
      expect(tf.memory().numTensors).toBe(before);
      probe.dispose();
      p.sae?.dispose();
    });
  }

  it('does not grow across training steps (model in the loop)', async () => {
    const model = new ToyModel({ seed: 3 });
    const sae = axisSae();
    const splits = plantedSplits({ nTrain: 48, nConcept: 48, nBalanced: 8, seed: 4 });
    const cache = await buildActivationCache(
      { modelId: 'toy', hooks: ['embed', 'layers.0.resid_out'], saes: { embed: { sae, id: 'axis' } }, tokenizerId: 'toy', texts: splits.texts },
      { model, tokenize: toyTokenize, root: mkdtempSync(join(tmpdir(), 'mask-mem-')), batchSize: 32 },
    );
    const probe = biasedProbe(cache, splits.train, 'layers.0.resid_out');
    const before = tf.memory().numTensors;
    const r = recorder();
    const eraser = saeMaskEraser({ epochs: 4, hooks: ['embed'], adversaryEvery: 3 }, { onStep: r.onStep });
    await eraser.fit({
      model,
      tokenize: toyTokenize,
      cache,
      saes: { embed: sae },
      probeHook: 'layers.0.resid_out',
      probe,
      train: splits.train,
      concept: splits.concept,
      seed: 42,
      options: {},
    });
    expectFlat(r.counts);
    eraser.dispose();
    expect(tf.memory().numTensors).toBe(before);
    probe.dispose();
    sae.dispose();
    model.dispose();
  });
});
