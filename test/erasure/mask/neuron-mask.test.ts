import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../../src/engine/engine.js';
import { ActivationCache } from '../../../src/cache/cache.js';
import type { Eraser } from '../../../src/erasure/eraser.js';
import { saveEraser } from '../../../src/erasure/checkpoint.js';
import { loadEraser } from '../../../src/erasure/load.js';
import { createNeuronMaskFitter } from '../../../src/erasure/mask/neuron-mask.js';
import { asMaskEraser } from '../../../src/erasure/mask/eraser.js';
import type { LinearProbe } from '../../../src/probe/linear.js';
import { setQuiet } from '../../../src/util/progress.js';
import { biasedProbe, groupAccuracy, HOOK, plantedPooled, pooledContext, type PlantedPooled } from './mask-fixtures.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

describe('neuron_mask on a planted neuron', () => {
  let p: PlantedPooled;
  let probe: LinearProbe;
  let eraser: Eraser;

  beforeAll(async () => {
    p = plantedPooled({ kind: 'neuron' });
    probe = biasedProbe(p.cache, p.train);
    eraser = await createNeuronMaskFitter({ lr: 0.01 }).fit(pooledContext(p, probe));
  });

  afterAll(() => {
    eraser.dispose();
    probe.dispose();
  });

  it('removes the gender neuron only and keeps the task neuron', () => {
    expect(asMaskEraser(eraser).removedUnits()[HOOK]).toEqual([0]);
    const d = eraser.describe();
    expect(d.removed[HOOK]).toEqual({ kind: 'neurons', indices: [0] });
    expect(d.summary).toContain(`1 of 8 neurons at ${HOOK} (0)`);
  });

  it('the retrained head beats the biased probe on the worst group by a wide margin', () => {
    const original = tf.tidy(() => groupAccuracy(probe, p.cache.pooled(HOOK, p.test.rows), p.test));
    const retrained = tf.tidy(() => groupAccuracy(eraser.head!, eraser.erasePooled(p.cache, p.test.rows)!, p.test));
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
      for (let a = 0; a < 2; a++)
        for (let t = 0; t < 3; t++) for (let j = 0; j < 8; j++) expect(edited[a]![t]![j]).toBeCloseTo(j === 0 ? 0 : xs[a]![t]![j]!, 6);
      expect(() => eraser.edits()[HOOK]!(tf.zeros([1, 2, 5]) as tf.Tensor3D)).toThrow(/expects width 8, the activation has width 5/);
    });
  });

  it('save/load round trip; another hook or width is a clear error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'neuron-mask-'));
    saveEraser(eraser, dir);
    const loaded = loadEraser(dir);
    try {
      expect(asMaskEraser(loaded).hooks).toEqual([HOOK]);
      expect(Array.from(asMaskEraser(loaded).maskLogits(HOOK))).toEqual(Array.from(asMaskEraser(eraser).maskLogits(HOOK)));
      const [a, b] = [eraser, loaded].map((e) => tf.tidy(() => Array.from(e.erasePooled(p.cache, p.test.rows)!.dataSync())));
      expect(b).toEqual(a);
      const narrow = ActivationCache.fromArrays(2, { [HOOK]: new Float32Array(2 * 5) });
      expect(() => loaded.erasePooled(narrow, [0, 1])).toThrow(/expects width 8, the activation has width 5/);
    } finally {
      loaded.dispose();
    }
    expect(() => loadEraser(dir, { probeHook: 'layers.0.mlp_out' })).toThrow(
      /made for a probe reading hook layers\.0\.resid_out, but the probe here reads layers\.0\.mlp_out/,
    );
  });
});

describe('balanceConcept on a concept set where the concept predicts the task', () => {
  it('keeps the task neuron balanced, and removes it too without balancing', async () => {
    const p = plantedPooled({ kind: 'neuron', nConcept: 400 });
    // Keep the concept rows where z = y and one in six of the others: z agrees with y in ~85% of rows.
    const keep = Array.from(p.concept.rows.keys()).filter((i) => p.concept.y[i] === p.concept.z[i] || i % 6 === 0);
    const pick = <T>(a: ArrayLike<T>): T[] => keep.map((i) => a[i]!);
    const concept = {
      rows: Int32Array.from(pick(p.concept.rows)),
      y: Int32Array.from(pick(p.concept.y)),
      z: Int32Array.from(pick(p.concept.z)),
      texts: pick(p.concept.texts),
    };
    expect(keep.filter((i) => p.concept.y[i] === p.concept.z[i]).length / keep.length).toBeGreaterThan(0.8);
    const probe = biasedProbe(p.cache, p.train);
    try {
      const removed = async (balanceConcept: boolean): Promise<number[]> => {
        const eraser = await createNeuronMaskFitter({ lr: 0.01, balanceConcept, retrainHead: false }).fit({ ...pooledContext(p, probe), concept });
        try {
          return asMaskEraser(eraser).removedUnits()[HOOK]!;
        } finally {
          eraser.dispose();
        }
      };
      expect(await removed(true)).toEqual([0]);
      expect(await removed(false)).toContain(1);
    } finally {
      probe.dispose();
    }
  });
});
