import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../../src/engine/engine.js';
import { mulberry32, randomNormal } from '../../../src/data/prng.js';
import type { Eraser } from '../../../src/erasure/eraser.js';
import { saveEraser } from '../../../src/erasure/checkpoint.js';
import { readSafetensors, writeSafetensors, type RawTensor } from '../../../src/io/safetensors.js';
import { loadEraser } from '../../../src/erasure/load.js';
import { createDasMaskFitter } from '../../../src/erasure/mask/das-mask.js';
import { asMaskEraser, type MaskEraser } from '../../../src/erasure/mask/eraser.js';
import { cayley64, orthogonalityError, rotationOf } from '../../../src/erasure/orthogonal.js';
import type { LinearProbe } from '../../../src/probe/linear.js';
import { setQuiet } from '../../../src/util/progress.js';
import { biasedProbe, groupAccuracy, HOOK, plantedPooled, pooledContext, type PlantedPooled } from './mask-fixtures.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

function randomMatrix(d: number, seed: number, std: number): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: d * d }, () => randomNormal(rng, 0, std));
}

describe('Cayley rotation', () => {
  it('is orthogonal for any parameter and the identity at 0', () => {
    for (const [d, std] of [
      [6, 0.3],
      [32, 2],
    ] as const) {
      const p = randomMatrix(d, d, std);
      const a = new Float64Array(d * d);
      for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) a[i * d + j] = p[i * d + j]! - p[j * d + i]!;
      expect(orthogonalityError(cayley64(a, d).rotation, d)).toBeLessThan(1e-12);
      const r32 = tf.tidy(() => rotationOf(tf.tensor2d(p, [d, d])).dataSync());
      expect(orthogonalityError(r32, d)).toBeLessThan(1e-5);
    }
    const eye = tf.tidy(() => Array.from(rotationOf(tf.zeros([4, 4]) as tf.Tensor2D).dataSync()));
    expect(eye).toEqual([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
  });

  it('has the gradient of finite differences', () => {
    const d = 5;
    const p = tf.variable(tf.tensor2d(randomMatrix(d, 1, 0.4), [d, d]));
    const w = tf.tensor2d(randomMatrix(d, 2, 1), [d, d]);
    const f = (): tf.Scalar => tf.tidy(() => tf.sum(tf.mul(rotationOf(p as tf.Variable<tf.Rank.R2>), w)) as tf.Scalar);
    const { value, grads } = tf.variableGrads(f, [p]);
    const g = grads[p.name]!.dataSync();
    const base = Float32Array.from(p.dataSync());
    const h = 1e-2;
    for (const i of [1, 7, 13, 19]) {
      const at = (delta: number): number => {
        const q = base.slice();
        q[i]! += delta;
        p.assign(tf.tensor2d(q, [d, d]));
        return f().dataSync()[0]!;
      };
      expect(g[i]).toBeCloseTo((at(h) - at(-h)) / (2 * h), 3);
    }
    tf.dispose([p, w, value, ...Object.values(grads)]);
  });
});

describe('das_mask on a planted rotated direction', () => {
  let p: PlantedPooled;
  let probe: LinearProbe;
  let eraser: Eraser;
  let mask: MaskEraser;

  beforeAll(async () => {
    p = plantedPooled({ kind: 'das' });
    probe = biasedProbe(p.cache, p.train);
    eraser = await createDasMaskFitter({ lr: 0.01 }).fit(pooledContext(p, probe));
    mask = asMaskEraser(eraser);
  });

  afterAll(() => {
    eraser.dispose();
    probe.dispose();
  });

  /** |cos| between column k of R and row `row` of the planted rotation Q. */
  function alignment(r: Float32Array, k: number, row: number): number {
    const q = p.rotation!;
    let dot = 0;
    for (let j = 0; j < 8; j++) dot += r[j * 8 + k]! * q[row * 8 + j]!;
    return Math.abs(dot);
  }

  it('the planted direction is not axis-aligned', () => {
    const q = p.rotation!;
    expect(Math.max(...Array.from({ length: 8 }, (_, j) => Math.abs(q[j]!)))).toBeLessThan(0.9);
  });

  it('removes one direction, aligned with the gender direction; R stays orthogonal', () => {
    const r = mask.rotation(HOOK);
    expect(orthogonalityError(r, 8)).toBeLessThan(1e-4);
    const removed = mask.removedUnits()[HOOK]!;
    expect(removed).toHaveLength(1);
    expect(alignment(r, removed[0]!, 0)).toBeGreaterThan(0.95);
    // The task direction survives: it is nearly orthogonal to the removed direction.
    expect(alignment(r, removed[0]!, 1)).toBeLessThan(0.2);
    expect(eraser.describe().removed[HOOK]).toEqual({ kind: 'directions', indices: removed, rank: 1 });
  });

  it('the retrained head beats the biased probe on the worst group by a wide margin', () => {
    const original = tf.tidy(() => groupAccuracy(probe, p.cache.pooled(HOOK, p.test.rows), p.test));
    const retrained = tf.tidy(() => groupAccuracy(eraser.head!, eraser.erasePooled(p.cache, p.test.rows)!, p.test));
    expect(original.worst).toBeLessThan(0.2);
    expect(retrained.worst).toBeGreaterThan(original.worst + 0.6);
  });

  it('erasePooled and the token edit are R diag(h) R^T x', () => {
    const r = mask.rotation(HOOK);
    const h = Array.from(mask.maskLogits(HOOK), (m) => (m > 0 ? 1 : 0));
    const apply = (x: ArrayLike<number>): number[] => {
      const coords = Array.from({ length: 8 }, (_, k) => h[k]! * Array.from({ length: 8 }, (_, j) => x[j]! * r[j * 8 + k]!).reduce((a, b) => a + b, 0));
      return Array.from({ length: 8 }, (_, j) => coords.reduce((a, c, k) => a + c * r[j * 8 + k]!, 0));
    };
    const rows = p.test.rows.subarray(0, 6);
    const got = tf.tidy(() => eraser.erasePooled(p.cache, rows)!.arraySync());
    Array.from(rows).forEach((row, i) => {
      const want = apply(p.pooled.subarray(row * 8, row * 8 + 8));
      for (let j = 0; j < 8; j++) expect(got[i]![j]).toBeCloseTo(want[j]!, 5);
    });
    tf.tidy(() => {
      const x = tf.randomNormal([2, 3, 8], 0, 1, 'float32', 9) as tf.Tensor3D;
      const edited = eraser.edits()[HOOK]!(x).arraySync();
      const xs = x.arraySync();
      for (let a = 0; a < 2; a++) {
        for (let t = 0; t < 3; t++) {
          const want = apply(xs[a]![t]!);
          for (let j = 0; j < 8; j++) expect(edited[a]![t]![j]).toBeCloseTo(want[j]!, 5);
        }
      }
    });
  });

  it('save/load round trip keeps the rotation and the erasure', () => {
    const dir = mkdtempSync(join(tmpdir(), 'das-mask-'));
    saveEraser(eraser, dir);
    const loaded = loadEraser(dir, { probeHook: HOOK });
    try {
      const [ra, rb] = [mask.rotation(HOOK), asMaskEraser(loaded).rotation(HOOK)];
      for (let i = 0; i < ra.length; i++) expect(rb[i]).toBeCloseTo(ra[i]!, 6);
      const [a, b] = [eraser, loaded].map((e) => tf.tidy(() => Array.from(e.erasePooled(p.cache, p.test.rows)!.dataSync())));
      for (let i = 0; i < a!.length; i++) expect(b![i]).toBeCloseTo(a![i]!, 5);
    } finally {
      loaded.dispose();
    }
  });

  it('refuses a checkpoint whose saved rotation is not the one its skew parameter gives, or another parametrisation', () => {
    const dir = mkdtempSync(join(tmpdir(), 'das-mask-bad-'));
    saveEraser(eraser, dir);
    const tensorPath = join(dir, 'eraser.safetensors');
    const file = readSafetensors(tensorPath);
    const tensors: Record<string, RawTensor> = {};
    for (const name of file.names()) tensors[name] = { dtype: 'F32', shape: file.info(name).shape, data: file.float32(name) };
    const rotation = tensors[`${HOOK}.rotation`]!.data as Float32Array;
    rotation[3]! += 1e-3;
    writeSafetensors(tensorPath, tensors, file.metadata);
    const before = tf.memory().numTensors;
    expect(() => loadEraser(dir)).toThrow(
      /tensor "layers\.0\.resid_out\.rotation" differs from the rotation rebuilt from "layers\.0\.resid_out\.skew" by up to 0\.00(09|10)/,
    );
    // Within the tolerance (float32 recomputation), it loads.
    rotation[3]! -= 1e-3 - 2e-6;
    writeSafetensors(tensorPath, tensors, file.metadata);
    expect(tf.memory().numTensors).toBe(before);
    loadEraser(dir).dispose();
    // Restoring leaves nothing behind once the eraser is disposed.
    expect(tf.memory().numTensors).toBe(before);
    const jsonPath = join(dir, 'eraser.json');
    const json = JSON.parse(readFileSync(jsonPath, 'utf8')) as { hooks: { parametrisation: string }[] };
    expect(json.hooks[0]!.parametrisation).toBe('cayley');
    json.hooks[0]!.parametrisation = 'exponential';
    writeFileSync(jsonPath, JSON.stringify(json));
    expect(() => loadEraser(dir)).toThrow(/eraser\.json: field "hooks\[0\]\.parametrisation": /);
  });
});
