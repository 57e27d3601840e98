import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../../src/engine/engine.js';
import { saveEraser } from '../../../src/erasure/checkpoint.js';
import type { EraserFitter } from '../../../src/erasure/eraser.js';
import { loadEraser } from '../../../src/erasure/load.js';
import { createDasMaskFitter } from '../../../src/erasure/mask/das-mask.js';
import { asMaskEraser } from '../../../src/erasure/mask/eraser.js';
import { createNeuronMaskFitter } from '../../../src/erasure/mask/neuron-mask.js';
import { createSaeMaskFitter } from '../../../src/erasure/mask/sae-mask.js';
import { setQuiet } from '../../../src/util/progress.js';
import { biasedProbe, HOOK, plantedPooled, pooledContext } from './mask-fixtures.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

const FITTERS: Record<'sae' | 'neuron' | 'das', (o: { epochs: number; lr: number; hardMask?: boolean }) => EraserFitter> = {
  sae: createSaeMaskFitter,
  neuron: createNeuronMaskFitter,
  das: createDasMaskFitter,
};

describe('mask checkpoints through saveEraser / loadEraser', () => {
  for (const kind of ['sae', 'neuron', 'das'] as const) {
    for (const hardMask of [true, false]) {
      it(`${kind}_mask (${hardMask ? 'hard' : 'soft'} mask): the loaded eraser erases exactly as the fitted one, with its head and config`, async () => {
        const p = plantedPooled({ kind, nTrain: 64, nConcept: 64 });
        const probe = biasedProbe(p.cache, p.train);
        const fitted = await FITTERS[kind]({ epochs: 3, lr: 0.01, hardMask }).fit(pooledContext(p, probe));
        const dir = mkdtempSync(join(tmpdir(), `mask-ckpt-${kind}-`));
        saveEraser(fitted, dir);
        const loaded = loadEraser(dir, { saes: p.sae === undefined ? undefined : { [HOOK]: p.sae }, probeHook: HOOK });
        try {
          expect(loaded.method).toBe(fitted.method);
          expect(asMaskEraser(loaded).config).toEqual(asMaskEraser(fitted).config);
          const json = JSON.parse(readFileSync(join(dir, 'eraser.json'), 'utf8')) as { options: unknown };
          expect(json.options).toEqual(asMaskEraser(fitted).config);
          const [a, b] = [fitted, loaded].map((e) => tf.tidy(() => Array.from(e.erasePooled(p.cache, p.test.rows)!.dataSync())));
          expect(b).toEqual(a);
          const X = p.cache.pooled(HOOK, p.test.rows);
          expect(tf.tidy(() => Array.from(loaded.head!.logits(X).dataSync()))).toEqual(tf.tidy(() => Array.from(fitted.head!.logits(X).dataSync())));
          X.dispose();
          expect(loaded.describe()).toEqual(fitted.describe());
        } finally {
          loaded.dispose();
          fitted.dispose();
          probe.dispose();
          p.sae?.dispose();
        }
      });
    }
  }

  it('refuses options that are not a complete trainer config, or that do not match the masked hooks', async () => {
    const p = plantedPooled({ kind: 'neuron', nTrain: 32, nConcept: 32 });
    const probe = biasedProbe(p.cache, p.train);
    const fitted = await createNeuronMaskFitter({ epochs: 1, retrainHead: false }).fit(pooledContext(p, probe));
    const dir = mkdtempSync(join(tmpdir(), 'mask-ckpt-bad-'));
    saveEraser(fitted, dir);
    fitted.dispose();
    probe.dispose();
    const path = join(dir, 'eraser.json');
    const good = readFileSync(path, 'utf8');
    type Json = Record<string, unknown> & { options: Record<string, unknown>; hooks: Record<string, unknown>[] };
    const edit = (f: (json: Json) => void): void => {
      const json = JSON.parse(good) as Json;
      f(json);
      writeFileSync(path, JSON.stringify(json));
    };
    edit((j) => delete j.options.seed);
    expect(() => loadEraser(dir)).toThrow(/field "options" must hold the resolved training options/);
    edit((j) => (j.options.hooks = ['embed']));
    expect(() => loadEraser(dir)).toThrow(/options\.hooks \(embed\) differ from the masked hooks \(layers\.0\.resid_out\)/);
    edit((j) => (j.options.keepError = true));
    expect(() => loadEraser(dir)).toThrow(/keepError applies only to sae_mask/);
    edit((j) => (j.options.epochs = 0));
    expect(() => loadEraser(dir)).toThrow(/field "options": field "epochs"/);
    edit((j) => (j.options.notAnOption = 1));
    expect(() => loadEraser(dir)).toThrow(/field "options": unknown field "notAnOption"/);
  });

  it('parses eraser.json strictly: malformed, unknown or disagreeing fields are refused, naming the file and field', async () => {
    const p = plantedPooled({ kind: 'neuron', nTrain: 32, nConcept: 32 });
    const probe = biasedProbe(p.cache, p.train);
    const fitted = await createNeuronMaskFitter({ epochs: 1, retrainHead: false, hardMask: false, tempEnd: 0.2 }).fit(pooledContext(p, probe));
    const dir = mkdtempSync(join(tmpdir(), 'mask-ckpt-json-'));
    saveEraser(fitted, dir);
    fitted.dispose();
    probe.dispose();
    const path = join(dir, 'eraser.json');
    const good = readFileSync(path, 'utf8');
    type Json = Record<string, unknown> & { hooks: Record<string, unknown>[] };
    const edited = (f: (json: Json) => void): string => {
      const json = JSON.parse(good) as Json;
      f(json);
      writeFileSync(path, JSON.stringify(json));
      return path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    };
    const at = edited((j) => (j.comment = 'x'));
    expect(() => loadEraser(dir)).toThrow(new RegExp(`^${at}: unknown field "comment"`));
    edited((j) => (j.hooks[0]!.units = 'eight'));
    expect(() => loadEraser(dir)).toThrow(new RegExp(`^${at}: field "hooks\\[0\\]\\.units": `));
    edited((j) => (j.hooks[0]!.dSae = 8));
    expect(() => loadEraser(dir)).toThrow(new RegExp(`^${at}: unknown field "hooks\\[0\\]\\.dSae"`));
    edited((j) => (j.hooks = []));
    expect(() => loadEraser(dir)).toThrow(new RegExp(`^${at}: field "hooks": Too small`));
    edited((j) => delete j.probeHook);
    expect(() => loadEraser(dir)).toThrow(new RegExp(`^${at}: field "probeHook": `));
    // The soft gate's temperature is written twice; the two must agree.
    edited((j) => (j.evalTemperature = 0.5));
    expect(() => loadEraser(dir)).toThrow(/field "evalTemperature" is 0\.5, but options\.tempEnd is 0\.2/);
    edited(() => undefined);
    const loaded = loadEraser(dir);
    expect(asMaskEraser(loaded).config.tempEnd).toBe(0.2);
    loaded.dispose();
  });

  it('a task-objective checkpoint stores every resolved option (those of the concept objective too) and loads', async () => {
    const p = plantedPooled({ kind: 'neuron', nTrain: 32, nConcept: 32 });
    const probe = biasedProbe(p.cache, p.train);
    const fitted = await createNeuronMaskFitter({ objective: 'task', epochs: 1 }).fit(pooledContext(p, probe));
    const dir = mkdtempSync(join(tmpdir(), 'mask-ckpt-task-'));
    saveEraser(fitted, dir);
    const loaded = loadEraser(dir);
    try {
      const json = JSON.parse(readFileSync(join(dir, 'eraser.json'), 'utf8')) as { options: Record<string, unknown> };
      expect(json.options).toMatchObject({ objective: 'task', taskSplit: 'train', conceptWeight: 1, adversarySteps: 5, retrainHead: false });
      expect(asMaskEraser(loaded).config).toEqual(asMaskEraser(fitted).config);
    } finally {
      loaded.dispose();
      fitted.dispose();
      probe.dispose();
    }
  });
});
