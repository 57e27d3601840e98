import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../../src/engine/engine.js';
import { saveEraser } from '../../../src/erasure/checkpoint.js';
import { loadEraser } from '../../../src/erasure/load.js';
import { asMaskEraser, freezeMask, MaskEraser } from '../../../src/erasure/mask/eraser.js';
import { affineOfProbe } from '../../../src/erasure/mask/affine-heads.js';
import { createNeuronMaskFitter, NEURON_MASK, neuronMaskOptionsSchema } from '../../../src/erasure/mask/neuron-mask.js';
import { resolveMaskConfig } from '../../../src/erasure/mask/options.js';
import { parseStrict } from '../../../src/util/schema.js';
import { PooledSource } from '../../../src/erasure/mask/sources.js';
import { MaskTrainer, type MaskStepInfo } from '../../../src/erasure/mask/trainer.js';
import { setQuiet } from '../../../src/util/progress.js';
import { biasedProbe, HOOK, plantedPooled, pooledContext } from './mask-fixtures.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

describe('MaskTrainer', () => {
  it('steps to the end, reports its losses, and its config round-trips through the checkpoint', async () => {
    const p = plantedPooled({ kind: 'neuron', nTrain: 64, nConcept: 64 });
    const probe = biasedProbe(p.cache, p.train);
    const ctx = pooledContext(p, probe);
    const before = tf.memory().numTensors;
    const config = resolveMaskConfig(parseStrict(neuronMaskOptionsSchema, { epochs: 2, lr: 0.01, hardMask: false, tempEnd: 0.05 }, 'neuron_mask options'), ctx);
    const space = NEURON_MASK.create(HOOK, ctx, config);
    const seen: MaskStepInfo[] = [];
    const trainer = new MaskTrainer({
      spaces: [space],
      task: { source: new PooledSource(p.cache, space, p.train.rows), labels: p.train.y },
      concept: { source: new PooledSource(p.cache, space, p.concept.rows), labels: p.concept.z, taskLabels: p.concept.y },
      probeHead: affineOfProbe(probe, probe.dIn, config.seed),
      config,
      label: 'neuron_mask test',
      refitChunk: 256,
      callbacks: { onStep: (info) => seen.push(info) },
    });
    expect(trainer.config).toEqual(config);
    expect(trainer.totalSteps).toBe(2 * Math.ceil(64 / 16));
    expect(trainer.loss()).toBeUndefined();
    while (!trainer.done) {
      const info = trainer.step();
      expect(info.step).toBe(trainer.stepsTaken);
      expect(trainer.loss()).toEqual({ loss: info.loss, taskLoss: info.taskLoss, adversaryLoss: info.adversaryLoss, meanDifference: 0 });
    }
    expect(seen.map((i) => i.step)).toEqual(Array.from({ length: trainer.totalSteps }, (_, i) => i + 1));
    expect(seen.map((i) => i.epoch)).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
    expect(() => trainer.step()).toThrow(/all 8 steps are taken/);
    const logits = trainer.maskLogits();
    const trained = trainer.config;
    trainer.dispose();

    // The fitter runs the same trainer: same logits.
    const fitted = await createNeuronMaskFitter({ epochs: 2, lr: 0.01, hardMask: false, tempEnd: 0.05, retrainHead: true }).fit(ctx);
    expect(Array.from(asMaskEraser(fitted).maskLogits(HOOK))).toEqual(Array.from(logits[0]!));
    fitted.dispose();

    // Saved without a head, so as a config that retrains none (a checkpoint claiming a head it lacks is refused).
    const headless = { ...trained, retrainHead: false };
    const eraser = new MaskEraser('neuron_mask', HOOK, [freezeMask(space, logits[0]!, headless)], headless);
    const dir = mkdtempSync(join(tmpdir(), 'mask-trainer-'));
    saveEraser(eraser, dir);
    const json = JSON.parse(readFileSync(join(dir, 'eraser.json'), 'utf8')) as { options: unknown; evalTemperature: number; probeHook: string; head: null };
    expect(json.options).toEqual(headless);
    expect(json.evalTemperature).toBe(0.05);
    expect(json.probeHook).toBe(HOOK);
    expect(json.head).toBeNull();
    const loaded = asMaskEraser(loadEraser(dir));
    expect(loaded.config).toEqual(headless);
    const [a, b] = [eraser, loaded].map((e) => tf.tidy(() => Array.from(e.erasePooled(p.cache, p.test.rows)!.dataSync())));
    expect(b).toEqual(a);
    loaded.dispose();
    eraser.dispose();
    expect(tf.memory().numTensors).toBe(before);
    probe.dispose();
  });

  it('frees what it made when its construction fails part-way', () => {
    const p = plantedPooled({ kind: 'neuron', nTrain: 32, nConcept: 32 });
    const probe = biasedProbe(p.cache, p.train);
    const ctx = pooledContext(p, probe);
    const config = resolveMaskConfig(parseStrict(neuronMaskOptionsSchema, {}, 'neuron_mask options'), ctx);
    const space = NEURON_MASK.create(HOOK, ctx, config);
    const before = tf.memory().numTensors;
    // A task head of the wrong size fails after the logits and their optimiser exist.
    const probeHead = { d: 8, nOut: 1, wT: new Float32Array(3), b: new Float32Array(1) };
    expect(
      () =>
        new MaskTrainer({
          spaces: [space],
          task: { source: new PooledSource(p.cache, space, p.train.rows), labels: p.train.y },
          concept: { source: new PooledSource(p.cache, space, p.concept.rows), labels: p.concept.z, taskLabels: p.concept.y },
          probeHead,
          config,
          label: 'neuron_mask test',
          refitChunk: 256,
        }),
    ).toThrow();
    expect(tf.memory().numTensors).toBe(before);
    space.dispose();
    probe.dispose();
  });
});
