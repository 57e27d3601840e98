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
    const edit = (f: (json: { options: Record<string, unknown> }) => void): void => {
      const json = JSON.parse(good) as { options: Record<string, unknown> };
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
  });
});
