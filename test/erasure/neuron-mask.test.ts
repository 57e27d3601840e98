import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { ActivationCache } from '../../src/cache/cache.js';
import { loadNeuronMaskEraser, neuronMaskEraser } from '../../src/erasure/neuron-mask.js';
import type { MaskEraser } from '../../src/erasure/mask.js';
import type { LinearProbe } from '../../src/probe/linear.js';
import { setQuiet } from '../../src/util/progress.js';
import { biasedProbe, groupAccuracy, HOOK, plantedPooled, pooledContext, type PlantedPooled } from './mask-fixtures.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

describe('neuron_mask on a planted neuron', () => {
  let p: PlantedPooled;
  let probe: LinearProbe;
  let eraser: MaskEraser;

  beforeAll(async () => {
    p = plantedPooled({ kind: 'neuron' });
    probe = biasedProbe(p.cache, p.train);
    eraser = neuronMaskEraser({ lr: 0.01 });
    await eraser.fit(pooledContext(p, probe, {}));
  });

  afterAll(() => {
    eraser.dispose();
    probe.dispose();
  });

  it('removes the gender neuron only and keeps the task neuron', () => {
    expect(eraser.removedUnits()[HOOK]).toEqual([0]);
    const d = eraser.describe();
    expect(d.removed[HOOK]).toEqual({ kind: 'neurons', indices: [0] });
    expect(d.summary).toContain(`1 of 8 neurons at ${HOOK} (0)`);
  });

  it('the retrained head beats the biased probe on the worst group by a wide margin', () => {
    const original = tf.tidy(() => groupAccuracy(probe, p.cache.pooled(HOOK, p.test.rows), p.test));
    const retrained = tf.tidy(() => groupAccuracy(eraser.retrainedProbe()!, eraser.erasePooled(p.cache, p.test.rows)!, p.test));
    expect(original.worst).toBeLessThan(0.2);
    expect(retrained.worst).toBeGreaterThan(original.worst + 0.6);
  });

  it('erasePooled is h ⊙ x̄ and the token edit is h ⊙ x', () => {
    const rows = p.test.rows.subarray(0, 10);
    const got = tf.tidy(() => eraser.erasePooled(p.cache, rows)!.arraySync());
    Array.from(rows).forEach((r, i) => {
      for (let j = 0; j < 8; j++) expect(got[i]![j]).toBeCloseTo(j === 0 ? 0 : p.pooled[r * 8 + j]!, 6);
    });
    tf.tidy(() => {
      const x = tf.randomNormal([2, 3, 8], 0, 1, 'float32', 5) as tf.Tensor3D;
      const edited = eraser.edits()[HOOK]!(x).arraySync();
      const xs = x.arraySync();
      for (let a = 0; a < 2; a++) for (let t = 0; t < 3; t++) for (let j = 0; j < 8; j++) expect(edited[a]![t]![j]).toBeCloseTo(j === 0 ? 0 : xs[a]![t]![j]!, 6);
      expect(() => eraser.edits()[HOOK]!(tf.zeros([1, 2, 5]) as tf.Tensor3D)).toThrow(/expects width 8, the activation has width 5/);
    });
  });

  it('save/load round trip; another hook or width is a clear error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'neuron-mask-'));
    eraser.save(dir);
    const loaded = loadNeuronMaskEraser(dir, { hooks: [HOOK] });
    try {
      expect(Array.from(loaded.maskLogits(HOOK))).toEqual(Array.from(eraser.maskLogits(HOOK)));
      const [a, b] = [eraser, loaded].map((e) => tf.tidy(() => Array.from(e.erasePooled(p.cache, p.test.rows)!.dataSync())));
      expect(b).toEqual(a);
      const narrow = ActivationCache.fromArrays(2, { [HOOK]: new Float32Array(2 * 5) });
      expect(() => loaded.erasePooled(narrow, [0, 1])).toThrow(/expects width 8, the activation has width 5/);
    } finally {
      loaded.dispose();
    }
    expect(() => loadNeuronMaskEraser(dir, { hooks: ['layers.0.mlp_out'] })).toThrow(/made for hook\(s\) layers\.0\.resid_out, but hook\(s\) layers\.0\.mlp_out were asked for/);
  });
});
