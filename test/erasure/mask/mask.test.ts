import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../../src/engine/engine.js';
import { initialLogit, temperatureAt } from '../../../src/erasure/mask/gate.js';
import { affineOfProbe } from '../../../src/erasure/mask/affine-heads.js';
import { adversaryLoss, balancingWeights, meanDifferenceContrast } from '../../../src/erasure/mask/losses.js';
import { conceptFolds } from '../../../src/erasure/mask/folds.js';
import { resolveMaskConfig, type MaskOptions } from '../../../src/erasure/mask/options.js';
import { parseStrict } from '../../../src/util/schema.js';
import { MaskEraser } from '../../../src/erasure/mask/eraser.js';
import type { MaskStepInfo } from '../../../src/erasure/mask/trainer.js';
import { createSaeMaskFitter, saeMaskOptionsSchema } from '../../../src/erasure/mask/sae-mask.js';
import { createNeuronMaskFitter, neuronMaskOptionsSchema } from '../../../src/erasure/mask/neuron-mask.js';
import { createDasMaskFitter, dasMaskOptionsSchema } from '../../../src/erasure/mask/das-mask.js';
import { asMaskEraser } from '../../../src/erasure/mask/eraser.js';
import { mulberry32 } from '../../../src/data/prng.js';
import { LinearProbe } from '../../../src/probe/linear.js';
import type { Probe } from '../../../src/probe/probe.js';
import { setQuiet } from '../../../src/util/progress.js';
import { biasedProbe, HOOK, plantedPooled, pooledContext } from './mask-fixtures.js';
import { auditedContext, expectStatedReads } from '../label-audit.js';
import { saveEraser } from '../../../src/erasure/checkpoint.js';
import { loadEraser } from '../../../src/erasure/load.js';
import { ToyModel, axisSae, plantedSplits, toyTokenize } from '../sae-toy.js';
import { buildActivationCache } from '../../../src/cache/cache.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';

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
  const sae = (raw: unknown): MaskOptions => parseStrict(saeMaskOptionsSchema, raw, 'sae_mask options');

  it('has the documented defaults', () => {
    const parsed = sae({});
    const o = resolveMaskConfig(parsed, { probeHook: HOOK, seed: 7 });
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
      taskSplit: 'train',
      conceptWeight: 1,
      taskHead: 'adapt',
      headLr: 1e-2,
      adversaryEvery: 20,
      adversarySteps: 5,
      adversaryInitSteps: 200,
      seed: 7,
    });
    expect(parsed.hooks).toBeUndefined();
    expect(o.hooks).toEqual([HOOK]);
    expect(resolveMaskConfig(sae({ objective: 'task' }), { probeHook: HOOK, seed: 1 }).retrainHead).toBe(false);
    expect(parseStrict(dasMaskOptionsSchema, {}, 'das_mask options').initNoise).toBeGreaterThan(0);
    expect(parseStrict(neuronMaskOptionsSchema, {}, 'neuron_mask options').initNoise).toBe(0);
  });

  it('rejects unknown, mistyped and misplaced options with the option named', () => {
    expect(() => sae({ epoch: 3 })).toThrow(/unknown field "epoch"/);
    expect(() => sae({ epochs: 2.5 })).toThrow(/field "epochs": .*expected int/);
    expect(() => sae({ lr: -1 })).toThrow(/field "lr": Too small/);
    expect(() => sae({ initKeep: 1 })).toThrow(/field "initKeep": Too big: expected number to be <1/);
    expect(() => sae({ objective: 'gender' })).toThrow(/field "objective": .*expected one of "concept"\|"task"/);
    expect(() => sae({ hardMask: 'yes' })).toThrow(/field "hardMask": .*expected boolean/);
    expect(() => sae({ hooks: ['a', 'a'] })).toThrow(/lists a hook twice/);
    expect(() => parseStrict(neuronMaskOptionsSchema, { keepError: false }, 'neuron_mask options')).toThrow(/keepError applies only to sae_mask/);
    // The factories validate too.
    expect(() => createNeuronMaskFitter({ keepError: false } as never)).toThrow(/keepError applies only to sae_mask/);
    expect(() => createSaeMaskFitter({ hooks: [] })).toThrow(/field "hooks": Too small/);
  });

  const CONCEPT_ONLY = {
    conceptWeight: 2,
    taskHead: 'frozen',
    headLr: 0.05,
    adversaryEvery: 7,
    adversarySteps: 3,
    adversaryInitSteps: 50,
    adversaryCrossFit: false,
  } as const;

  it('refuses a field of the concept objective given with objective "task", in every mask method', () => {
    for (const [field, value] of Object.entries(CONCEPT_ONLY)) {
      const message = new RegExp(`field "${field}": applies only to objective "concept" \\(the objective here is "task"\\)`);
      expect(() => sae({ objective: 'task', [field]: value })).toThrow(message);
      expect(() => parseStrict(neuronMaskOptionsSchema, { objective: 'task', [field]: value }, 'neuron_mask options')).toThrow(message);
      expect(() => parseStrict(dasMaskOptionsSchema, { objective: 'task', [field]: value }, 'das_mask options')).toThrow(message);
    }
    // Every misplaced field is named at once, and the factories refuse them too.
    expect(() => sae({ objective: 'task', headLr: 0.1, adversarySteps: 2 })).toThrow(/field "headLr": .*; field "adversarySteps": /);
    expect(() => createDasMaskFitter({ objective: 'task', adversaryEvery: 5 })).toThrow(/field "adversaryEvery": applies only to objective "concept"/);
  });

  it('das_mask: meanDifferenceWeight belongs to the concept objective', () => {
    expect(() => parseStrict(dasMaskOptionsSchema, { objective: 'task', meanDifferenceWeight: 1 }, 'das_mask options')).toThrow(
      /field "meanDifferenceWeight": applies only to objective "concept" \(the objective here is "task"\)/,
    );
    expect(() => parseStrict(dasMaskOptionsSchema, { meanDifferenceWeight: -1 }, 'das_mask options')).toThrow(/meanDifferenceWeight/);
    // Left unset by parsing (the fitter fills in the default, see das-mask.test.ts).
    expect(parseStrict(dasMaskOptionsSchema, {}, 'das_mask options').meanDifferenceWeight).toBeUndefined();
    expect(() => parseStrict(neuronMaskOptionsSchema, { meanDifferenceWeight: 1 }, 'neuron_mask options')).toThrow(/meanDifferenceWeight/);
  });

  it('refuses taskSplit with the concept objective, whether given or the default', () => {
    const message = /field "taskSplit": applies only to objective "task" \(the objective here is "concept"\)/;
    expect(() => sae({ objective: 'concept', taskSplit: 'train' })).toThrow(message);
    expect(() => sae({ taskSplit: 'balanced' })).toThrow(message);
    expect(() => createNeuronMaskFitter({ taskSplit: 'balanced' })).toThrow(message);
    expect(sae({ objective: 'task', taskSplit: 'balanced' }).taskSplit).toBe('balanced');
  });

  it('the default objective accepts the concept fields, and the config keeps what was given', () => {
    const parsed = sae(CONCEPT_ONLY);
    expect(parsed.objective).toBe('concept');
    expect(resolveMaskConfig(parsed, { probeHook: HOOK, seed: 1 })).toMatchObject({ ...CONCEPT_ONLY, taskSplit: 'train' });
    expect(resolveMaskConfig(sae({ objective: 'concept', ...CONCEPT_ONLY }), { probeHook: HOOK, seed: 1 })).toMatchObject(CONCEPT_ONLY);
    // Parsing leaves the objective-only fields out; the config resolves them whatever the objective.
    expect(Object.keys(sae({})).filter((k) => k in CONCEPT_ONLY || k === 'taskSplit')).toEqual([]);
    expect(resolveMaskConfig(sae({ objective: 'task' }), { probeHook: HOOK, seed: 1 })).toMatchObject({
      taskSplit: 'train',
      conceptWeight: 1,
      taskHead: 'adapt',
      headLr: 1e-2,
      adversaryEvery: 20,
      adversarySteps: 5,
      adversaryInitSteps: 200,
      adversaryCrossFit: true,
    });
  });

  it('schemas convert to JSON Schema, with every field described', () => {
    for (const schema of [saeMaskOptionsSchema, neuronMaskOptionsSchema, dasMaskOptionsSchema]) {
      const json = z.toJSONSchema(schema, { io: 'input' }) as { properties: Record<string, { description?: string }> };
      for (const [name, field] of Object.entries(json.properties)) expect(field.description, name).toBeTruthy();
      // The objective-only fields have no schema default: their descriptions give it.
      for (const name of [...Object.keys(CONCEPT_ONLY), 'taskSplit']) expect(json.properties[name]!.description, name).toMatch(/Default /);
    }
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
      // Weighted class means: sum w l / sum w per class.
      const w = tf.tensor2d([[2], [1], [1], [3], [1]]);
      expect(adversaryLoss(l, z, w).dataSync()[0]).toBeCloseTo((2 * 1 + 3 + 5) / 4 - (-2 + 0) / 4, 6);
    });
  });

  it('balancing weights give every (task, concept) cell the same total weight, averaging 1', () => {
    // Concept agrees with the task in 6 of 8 rows; one cell is empty.
    const y = Int32Array.from([0, 0, 0, 0, 1, 1, 1, 1]);
    const z = Int32Array.from([0, 0, 0, 1, 1, 1, 1, 1]);
    const w = balancingWeights(y, z);
    const cell = (a: number, b: number): number => Array.from(w).reduce((s, wi, i) => s + (y[i] === a && z[i] === b ? wi : 0), 0);
    for (const [a, b] of [
      [0, 0],
      [0, 1],
      [1, 1],
    ] as const)
      expect(cell(a, b)).toBeCloseTo(8 / 3, 6);
    expect(cell(1, 0)).toBe(0);
    expect(Array.from(w).reduce((a, b) => a + b, 0)).toBeCloseTo(8, 5);
    expect(() => balancingWeights(y, z.subarray(1))).toThrow(/8 task labels for 7 concept labels/);
  });

  it('balancing weights with a power: n_c^-power per row, averaging 1 (0 unweighted, 1/2 square-root balancing)', () => {
    const y = Int32Array.from([0, 0, 0, 0, 1, 1, 1, 1, 1]);
    const z = Int32Array.from([0, 0, 0, 1, 1, 1, 1, 1, 0]);
    expect(Array.from(balancingWeights(y, z, 0))).toEqual(Array.from({ length: 9 }, () => 1));
    expect(Array.from(balancingWeights(y, z, 1))).toEqual(Array.from(balancingWeights(y, z)));
    const w = balancingWeights(y, z, 0.5);
    expect(Array.from(w).reduce((a, b) => a + b, 0)).toBeCloseTo(9, 5);
    // Cells of 3, 1, 4 and 1 rows: a row of a cell of n weighs in proportion to 1 / sqrt(n).
    expect(w[0]! / w[3]!).toBeCloseTo(1 / Math.sqrt(3), 6);
    expect(w[4]! / w[8]!).toBeCloseTo(1 / 2, 6);
  });

  it('the mean-difference contrast gives the weighted class-mean difference, and needs both classes', () => {
    const z = Int32Array.from([1, 0, 1, 0, 0]);
    const x = [2, 4, 6, 1, -3];
    const dot = (c: Float32Array): number => x.reduce((s, xi, i) => s + xi * c[i]!, 0);
    expect(dot(meanDifferenceContrast(z))).toBeCloseTo((2 + 6) / 2 - (4 + 1 - 3) / 3, 6);
    const w = Float32Array.from([3, 1, 1, 2, 1]);
    expect(dot(meanDifferenceContrast(z, w))).toBeCloseTo((3 * 2 + 6) / 4 - (4 + 2 * 1 - 3) / 4, 6);
    expect(() => meanDifferenceContrast(Int32Array.from([1, 1]))).toThrow(/both concept classes/);
    expect(() => meanDifferenceContrast(Int32Array.from([1, 2]))).toThrow(/label 1 is 2/);
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
    const ctx = pooledContext(p, probe);
    await expect(
      createNeuronMaskFitter().fit({ ...ctx, concept: { rows: new Int32Array(0), y: new Int32Array(0), z: new Int32Array(0), texts: [] } }),
    ).rejects.toThrow(/concept objective needs a concept-labelled set/);
    const oneClass = { ...p.concept, z: new Int32Array(p.concept.rows.length) };
    await expect(createNeuronMaskFitter().fit({ ...ctx, concept: oneClass })).rejects.toThrow(/at least 2 example\(s\) of each concept class/);
    await expect(createNeuronMaskFitter({ hooks: ['layers.9.resid_out'] }).fit(ctx)).rejects.toThrow(
      /"layers\.9\.resid_out", which is not a hook of the model/,
    );
    // An eraser exists only fitted: one without masks cannot be made.
    const config = resolveMaskConfig(parseStrict(neuronMaskOptionsSchema, {}, 'neuron_mask options'), ctx);
    expect(() => new MaskEraser('neuron_mask', HOOK, [], config)).toThrow(/at least one masked hook/);
    probe.dispose();
  });

  it('the soft mask (hardMask: false) applies sigmoid(m / tempEnd)', async () => {
    const p = plantedPooled({ kind: 'neuron' });
    const probe = biasedProbe(p.cache, p.train);
    const eraser = await createNeuronMaskFitter({ lr: 0.01, epochs: 4, hardMask: false, tempEnd: 0.2, retrainHead: false }).fit(pooledContext(p, probe));
    const m = asMaskEraser(eraser).maskLogits(HOOK);
    const rows = p.test.rows.subarray(0, 5);
    const got = tf.tidy(() => eraser.erasePooled(p.cache, rows)!.arraySync());
    Array.from(rows).forEach((r, i) => {
      for (let j = 0; j < 8; j++) expect(got[i]![j]).toBeCloseTo(p.pooled[r * 8 + j]! / (1 + Math.exp(-m[j]! / 0.2)), 5);
    });
    eraser.dispose();
    probe.dispose();
  });
});

describe('supervision', () => {
  it('states the labels each objective reads, as the fit reads them, and keeps the statement through save and load', async () => {
    const p = plantedPooled({ kind: 'neuron' });
    const probe = biasedProbe(p.cache, p.train);
    const short = { lr: 0.01, epochs: 1, adversaryInitSteps: 5 };
    const cases: [string, Record<string, unknown>, string[]][] = [
      ['concept (default)', short, ['ambiguous_task', 'concept_gender', 'concept_task']],
      ['concept, unbalanced', { ...short, balanceConcept: false, retrainHead: false }, ['ambiguous_task', 'concept_gender']],
      ['task on the ambiguous split', { lr: 0.01, epochs: 1, objective: 'task' }, ['ambiguous_task']],
      ['task on the balanced split', { lr: 0.01, epochs: 1, objective: 'task', taskSplit: 'balanced' }, ['ambiguous_task', 'balanced_task']],
    ];
    for (const [name, options, labels] of cases) {
      const { ctx, reads } = auditedContext(pooledContext(p, probe));
      const eraser = await createNeuronMaskFitter(parseStrict(neuronMaskOptionsSchema, options, 'neuron_mask')).fit(ctx);
      expect(eraser.describe().supervision, name).toEqual({ labels, handPicked: false });
      expectStatedReads(eraser, reads);
      const dir = mkdtempSync(join(tmpdir(), 'mask-supervision-'));
      saveEraser(eraser, dir);
      const loaded = loadEraser(dir);
      expect(loaded.describe().supervision, name).toEqual({ labels, handPicked: false });
      loaded.dispose();
      eraser.dispose();
    }
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
      const options = { epochs: 4, adversaryEvery: 3 };
      const fitter =
        kind === 'sae' ? createSaeMaskFitter(options, r) : kind === 'neuron' ? createNeuronMaskFitter(options, r) : createDasMaskFitter(options, r);
      const eraser = await fitter.fit(pooledContext(p, probe));
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
    const eraser = await createSaeMaskFitter({ epochs: 4, hooks: ['embed'], adversaryEvery: 3 }, r).fit({
      model,
      tokenize: toyTokenize,
      cache,
      recache: () => Promise.reject(new Error('not used')),
      batchSize: 32,
      saes: { embed: sae },
      probeHook: 'layers.0.resid_out',
      probe,
      train: splits.train,
      concept: splits.concept,
      seed: 42,
    });
    expectFlat(r.counts);
    eraser.dispose();
    expect(tf.memory().numTensors).toBe(before);
    probe.dispose();
    sae.dispose();
    model.dispose();
  });
});
