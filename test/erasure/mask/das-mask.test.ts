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
import { createDasMaskFitter, DAS_MASK, dasMaskOptionsSchema, DEFAULT_MEAN_DIFFERENCE_WEIGHT } from '../../../src/erasure/mask/das-mask.js';
import { affineOfProbe } from '../../../src/erasure/mask/affine-heads.js';
import { balancingWeights, meanDifferenceContrast } from '../../../src/erasure/mask/losses.js';
import { resolveMaskConfig } from '../../../src/erasure/mask/options.js';
import { PooledSource, type RowSource } from '../../../src/erasure/mask/sources.js';
import { MaskTrainer } from '../../../src/erasure/mask/trainer.js';
import { parseStrict } from '../../../src/util/schema.js';
import { asMaskEraser, type MaskEraser } from '../../../src/erasure/mask/eraser.js';
import { cayley64, householderBasis, householderBasis64, householderBasisGrad64, orthogonalityError } from '../../../src/erasure/orthogonal.js';
import { identity, matMul64 } from '../../../src/erasure/linear-algebra.js';
import type { LinearProbe } from '../../../src/probe/linear.js';
import { setQuiet } from '../../../src/util/progress.js';
import { biasedProbe, groupAccuracy, HOOK, plantedPooled, pooledContext, type PlantedPooled } from './mask-fixtures.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

function randomMatrix(rows: number, cols: number, seed: number, std: number): Float64Array {
  const rng = mulberry32(seed);
  return Float64Array.from({ length: rows * cols }, () => randomNormal(rng, 0, std));
}

/** H_1 .. H_k E_k by explicit d x d reflection matrices (an independent construction), `[d, k]`. */
function explicitBasis(v: Float64Array, k: number, d: number): Float64Array {
  let q = identity(d);
  for (let i = 0; i < k; i++) {
    const vi = v.subarray(i * d, i * d + d);
    const tau = 2 / vi.reduce((a, x) => a + x * x, 0);
    const h = identity(d);
    for (let r = 0; r < d; r++) for (let c = 0; c < d; c++) h[r * d + c]! -= tau * vi[r]! * vi[c]!;
    q = matMul64(q, h, d, d, d);
  }
  return Float64Array.from({ length: d * k }, (_, idx) => q[Math.floor(idx / k) * d + (idx % k)]!);
}

describe('Householder basis', () => {
  it('is the product of the reflections, with orthonormal columns, for any vectors', () => {
    for (const [k, d] of [
      [3, 7],
      [7, 7],
      [16, 40],
    ] as const) {
      const v = randomMatrix(k, d, k + d, 1);
      const u = householderBasis64(v, k, d);
      const want = explicitBasis(v, k, d);
      for (let i = 0; i < u.length; i++) expect(u[i]).toBeCloseTo(want[i]!, 12);
      expect(orthogonalityError(u, d, k)).toBeLessThan(1e-12);
      const u32 = tf.tidy(() => householderBasis(tf.tensor2d(Float32Array.from(v), [k, d])).dataSync());
      expect(orthogonalityError(u32, d, k)).toBeLessThan(1e-5);
    }
    // v_i = e_i flips the sign of coordinate i: U = -E_k.
    const e = new Float64Array(2 * 4);
    e[0] = 1;
    e[5] = 1;
    expect(Array.from(householderBasis64(e, 2, 4))).toEqual([-1, 0, 0, -1, 0, 0, 0, 0]);
    expect(() => householderBasis64(new Float64Array(8), 2, 4)).toThrow(/reflection vector 1 is zero/);
    expect(() => householderBasis64(new Float64Array(8), 3, 4)).toThrow(/3 x 4/);
  });

  it('has the gradient of finite differences (float64), orthogonal to each vector, and the tfjs op passes it on', () => {
    const [k, d] = [4, 9];
    const v = randomMatrix(k, d, 5, 1);
    const w = randomMatrix(d, k, 6, 1);
    const loss = (x: Float64Array): number => householderBasis64(x, k, d).reduce((a, u, i) => a + u * w[i]!, 0);
    const g = householderBasisGrad64(v, householderBasis64(v, k, d), w, k, d);
    const h = 1e-6;
    for (let i = 0; i < k * d; i++) {
      const at = (delta: number): number => {
        const q = v.slice();
        q[i]! += delta;
        return loss(q);
      };
      expect(g[i]).toBeCloseTo((at(h) - at(-h)) / (2 * h), 7);
    }
    for (let i = 0; i < k; i++) {
      const dot = Array.from({ length: d }, (_, r) => g[i * d + r]! * v[i * d + r]!).reduce((a, b) => a + b, 0);
      expect(Math.abs(dot)).toBeLessThan(1e-10);
    }
    const p = tf.variable(tf.tensor2d(Float32Array.from(v), [k, d]));
    const wt = tf.tensor2d(Float32Array.from(w), [d, k]);
    const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(householderBasis(p as tf.Variable<tf.Rank.R2>), wt)) as tf.Scalar, [p]);
    const g32 = grads[p.name]!.dataSync();
    for (let i = 0; i < k * d; i++) expect(g32[i]).toBeCloseTo(g[i]!, 4);
    tf.dispose([p, wt, value, ...Object.values(grads)]);
  });

  it('the Cayley map of old checkpoints is orthogonal', () => {
    const d = 12;
    const p = randomMatrix(d, d, 3, 0.5);
    const a = Float64Array.from({ length: d * d }, (_, i) => p[i]! - p[(i % d) * d + Math.floor(i / d)]!);
    expect(orthogonalityError(cayley64(a, d), d)).toBeLessThan(1e-12);
  });
});

describe.each([
  { rank: undefined, k: 8, what: 'the default rank, clamped to the width (a full rotation)' },
  { rank: 2, k: 2, what: 'rank 2' },
])('das_mask on a planted rotated direction, $what', ({ rank, k }) => {
  let p: PlantedPooled;
  let probe: LinearProbe;
  let eraser: Eraser;
  let mask: MaskEraser;

  beforeAll(async () => {
    p = plantedPooled({ kind: 'das' });
    probe = biasedProbe(p.cache, p.train);
    eraser = await createDasMaskFitter({ lr: 0.01, ...(rank === undefined ? {} : { rank }) }).fit(pooledContext(p, probe));
    mask = asMaskEraser(eraser);
  });

  afterAll(() => {
    eraser.dispose();
    probe.dispose();
  });

  /** Length of the projection of row `row` of the planted rotation Q onto the span of columns `cols` of U `[8, k]`. */
  function inSpan(u: Float32Array, cols: number[], row: number): number {
    const q = p.rotation!;
    return Math.hypot(...cols.map((c) => Array.from({ length: 8 }, (_, j) => u[j * k + c]! * q[row * 8 + j]!).reduce((a, b) => a + b, 0)));
  }

  /** x - U diag(1 - h) U^T x for the hard gate h. */
  function apply(x: ArrayLike<number>): number[] {
    const u = mask.basis(HOOK);
    const h = Array.from(mask.maskLogits(HOOK), (m) => (m > 0 ? 1 : 0));
    const coords = Array.from({ length: k }, (_, c) => (1 - h[c]!) * Array.from({ length: 8 }, (_, j) => x[j]! * u[j * k + c]!).reduce((a, b) => a + b, 0));
    return Array.from({ length: 8 }, (_, j) => x[j]! - coords.reduce((a, v, c) => a + v * u[j * k + c]!, 0));
  }

  it('the planted direction is not axis-aligned', () => {
    const q = p.rotation!;
    expect(Math.max(...Array.from({ length: 8 }, (_, j) => Math.abs(q[j]!)))).toBeLessThan(0.9);
  });

  it('removes a subspace that holds the gender direction and not the task direction; U stays orthonormal', () => {
    const u = mask.basis(HOOK);
    expect(u).toHaveLength(8 * k);
    expect(orthogonalityError(u, 8, k)).toBeLessThan(1e-5);
    const removed = mask.removedUnits()[HOOK]!;
    // One direction when there is room to isolate it; with rank 2 the gender direction may be
    // shared by both learned directions, and then both go.
    expect(removed.length).toBeGreaterThanOrEqual(1);
    expect(removed.length).toBeLessThanOrEqual(k === 8 ? 1 : 2);
    expect(inSpan(u, removed, 0)).toBeGreaterThan(0.95);
    expect(inSpan(u, removed, 1)).toBeLessThan(0.2);
    expect(eraser.describe().removed[HOOK]).toEqual({ kind: 'directions', indices: removed, rank: removed.length });
    expect(eraser.describe().summary).toContain(`${removed.length} of ${k} learned directions`);
  });

  it('the retrained head beats the biased probe on the worst group by a wide margin', () => {
    const original = tf.tidy(() => groupAccuracy(probe, p.cache.pooled(HOOK, p.test.rows), p.test));
    const retrained = tf.tidy(() => groupAccuracy(eraser.head!, eraser.erasePooled(p.cache, p.test.rows)!, p.test));
    expect(original.worst).toBeLessThan(0.2);
    expect(retrained.worst).toBeGreaterThan(original.worst + 0.6);
  });

  it('erasePooled and the token edit are x - U diag(1 - h) U^T x', () => {
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

  it('save/load round trip keeps the directions and the erasure', () => {
    const dir = mkdtempSync(join(tmpdir(), 'das-mask-'));
    saveEraser(eraser, dir);
    const json = JSON.parse(readFileSync(join(dir, 'eraser.json'), 'utf8')) as { hooks: { parametrisation: string; units: number }[] };
    expect(json.hooks[0]).toMatchObject({ parametrisation: 'householder', units: k });
    const loaded = loadEraser(dir, { probeHook: HOOK });
    try {
      const [ua, ub] = [mask.basis(HOOK), asMaskEraser(loaded).basis(HOOK)];
      for (let i = 0; i < ua.length; i++) expect(ub[i]).toBeCloseTo(ua[i]!, 6);
      const [a, b] = [eraser, loaded].map((e) => tf.tidy(() => Array.from(e.erasePooled(p.cache, p.test.rows)!.dataSync())));
      for (let i = 0; i < a!.length; i++) expect(b![i]).toBeCloseTo(a![i]!, 5);
    } finally {
      loaded.dispose();
    }
  });
});

describe('das_mask checkpoints', () => {
  let p: PlantedPooled;
  let probe: LinearProbe;
  let eraser: Eraser;

  beforeAll(async () => {
    p = plantedPooled({ kind: 'das', nTrain: 64, nConcept: 64 });
    probe = biasedProbe(p.cache, p.train);
    eraser = await createDasMaskFitter({ epochs: 2, rank: 3, retrainHead: false }).fit(pooledContext(p, probe));
  });

  afterAll(() => {
    eraser.dispose();
    probe.dispose();
  });

  function saved(): { dir: string; tensors: Record<string, RawTensor>; metadata: Record<string, string> | undefined } {
    const dir = mkdtempSync(join(tmpdir(), 'das-mask-ckpt-'));
    saveEraser(eraser, dir);
    const file = readSafetensors(join(dir, 'eraser.safetensors'));
    const tensors: Record<string, RawTensor> = {};
    for (const name of file.names()) tensors[name] = { dtype: 'F32', shape: file.info(name).shape, data: file.float32(name) };
    return { dir, tensors, metadata: file.metadata };
  }

  it('refuses a saved basis that is not the one its Householder vectors give, and an unknown parametrisation', () => {
    const { dir, tensors, metadata } = saved();
    const basis = tensors[`${HOOK}.basis`]!.data as Float32Array;
    basis[3]! += 1e-3;
    writeSafetensors(join(dir, 'eraser.safetensors'), tensors, metadata);
    const before = tf.memory().numTensors;
    expect(() => loadEraser(dir)).toThrow(
      /tensor "layers\.0\.resid_out\.basis" differs from the one rebuilt from "layers\.0\.resid_out\.householder" by up to 0\.00(09|10)/,
    );
    // Within the tolerance (float32 recomputation), it loads, and leaves nothing behind once disposed.
    basis[3]! -= 1e-3 - 2e-6;
    writeSafetensors(join(dir, 'eraser.safetensors'), tensors, metadata);
    expect(tf.memory().numTensors).toBe(before);
    loadEraser(dir).dispose();
    expect(tf.memory().numTensors).toBe(before);
    const jsonPath = join(dir, 'eraser.json');
    const json = JSON.parse(readFileSync(jsonPath, 'utf8')) as { hooks: { parametrisation: string }[]; options: { rank: number } };
    json.options.rank = 2;
    writeFileSync(jsonPath, JSON.stringify(json));
    expect(() => loadEraser(dir)).toThrow(/hook layers\.0\.resid_out has 3 units, but options\.rank 2 gives 2 at width 8/);
    json.options.rank = 3;
    json.hooks[0]!.parametrisation = 'exponential';
    writeFileSync(jsonPath, JSON.stringify(json));
    expect(() => loadEraser(dir)).toThrow(/eraser\.json: field "hooks\[0\]\.parametrisation": /);
  });

  it('loads a checkpoint of the earlier full Cayley rotation (no rank option) as the basis U = R', () => {
    const { dir, tensors, metadata } = saved();
    const d = 8;
    const q = randomMatrix(d, d, 11, 0.3);
    const skew = Float32Array.from({ length: d * d }, (_, i) => q[i]! - q[(i % d) * d + Math.floor(i / d)]!);
    const r = Float32Array.from(cayley64(skew, d));
    const logits = Float32Array.from({ length: d }, (_, j) => (j === 2 || j === 5 ? -0.3 : 0.4));
    const old: Record<string, RawTensor> = {
      [`${HOOK}.mask_logits`]: { dtype: 'F32', shape: [d], data: logits },
      [`${HOOK}.skew`]: { dtype: 'F32', shape: [d, d], data: skew },
      [`${HOOK}.rotation`]: { dtype: 'F32', shape: [d, d], data: r },
    };
    expect(Object.keys(tensors).sort()).toEqual([`${HOOK}.basis`, `${HOOK}.householder`, `${HOOK}.mask_logits`]);
    writeSafetensors(join(dir, 'eraser.safetensors'), old, metadata);
    const jsonPath = join(dir, 'eraser.json');
    const json = JSON.parse(readFileSync(jsonPath, 'utf8')) as { hooks: { parametrisation: string; units: number }[]; options: Record<string, unknown> };
    json.hooks[0] = { ...json.hooks[0]!, parametrisation: 'cayley', units: d };
    delete json.options.rank;
    writeFileSync(jsonPath, JSON.stringify(json));
    const loaded = asMaskEraser(loadEraser(dir));
    try {
      expect(Array.from(loaded.basis(HOOK))).toEqual(Array.from(r));
      expect(loaded.removedUnits()[HOOK]).toEqual([2, 5]);
      // R diag(h) R^T x.
      const rows = p.test.rows.subarray(0, 4);
      const got = tf.tidy(() => loaded.erasePooled(p.cache, rows)!.arraySync());
      Array.from(rows).forEach((row, i) => {
        const x = p.pooled.subarray(row * d, row * d + d);
        const coords = Array.from({ length: d }, (_, c) => (c === 2 || c === 5 ? 0 : 1) * x.reduce((a, xj, j) => a + xj * r[j * d + c]!, 0));
        for (let j = 0; j < d; j++)
          expect(got[i]![j]).toBeCloseTo(
            coords.reduce((a, v, c) => a + v * r[j * d + c]!, 0),
            5,
          );
      });
      // Saving it again keeps its format.
      const again = mkdtempSync(join(tmpdir(), 'das-mask-cayley-'));
      saveEraser(loaded, again);
      expect(readSafetensors(join(again, 'eraser.safetensors')).names().sort()).toEqual([`${HOOK}.mask_logits`, `${HOOK}.rotation`, `${HOOK}.skew`]);
      loadEraser(again).dispose();
    } finally {
      loaded.dispose();
    }
    // A rotation that is not cayley(skew) is refused.
    r[9]! += 1e-3;
    writeSafetensors(join(dir, 'eraser.safetensors'), old, metadata);
    expect(() => loadEraser(dir)).toThrow(/tensor "layers\.0\.resid_out\.rotation" differs from the one rebuilt from "layers\.0\.resid_out\.skew"/);
  });
});

describe('das_mask mean-difference term', () => {
  let p: PlantedPooled;
  let probe: LinearProbe;

  beforeAll(() => {
    p = plantedPooled({ kind: 'das' });
    probe = biasedProbe(p.cache, p.train);
  });

  afterAll(() => probe.dispose());

  /** |δ'| / |δ|: the concept set's class-mean difference (the term's square-root balanced weights) after `eraser`, against before. */
  function keptFraction(eraser: Eraser): number {
    const c = meanDifferenceContrast(p.concept.z, balancingWeights(p.concept.y, p.concept.z, 0.5));
    const norm = (x: tf.Tensor2D): number => tf.tidy(() => tf.norm(tf.matMul(tf.tensor2d(c, [1, c.length]), x)).dataSync()[0]!);
    return tf.tidy(() => norm(eraser.erasePooled(p.cache, p.concept.rows)!) / norm(p.cache.pooled(HOOK, p.concept.rows)));
  }

  it("with the adversaries off, removes the direction of the concept set's mean difference, and nothing without the term", async () => {
    const ctx = pooledContext(p, probe);
    const base = { lr: 0.01, conceptWeight: 0, retrainHead: false } as const;
    const on = asMaskEraser(await createDasMaskFitter(base).fit(ctx));
    const off = asMaskEraser(await createDasMaskFitter({ ...base, meanDifferenceWeight: 0 }).fit(ctx));
    try {
      expect(on.config.meanDifferenceWeight).toBe(DEFAULT_MEAN_DIFFERENCE_WEIGHT);
      expect(off.removedUnits()[HOOK]).toEqual([]);
      expect(keptFraction(off)).toBeGreaterThan(0.95);
      const removed = on.removedUnits()[HOOK]!;
      expect(removed).toHaveLength(1);
      expect(keptFraction(on)).toBeLessThan(0.1);
      // The removed subspace holds the planted concept direction (row 0 of the rotation) and not the task's (row 1).
      const u = on.basis(HOOK);
      const q = p.rotation!;
      const inRemoved = (row: number): number =>
        Math.hypot(...removed.map((c) => Array.from({ length: 8 }, (_, j) => u[j * 8 + c]! * q[row * 8 + j]!).reduce((a, b) => a + b, 0)));
      expect(inRemoved(0)).toBeGreaterThan(0.95);
      expect(inRemoved(1)).toBeLessThan(0.2);
    } finally {
      on.dispose();
      off.dispose();
    }
  });

  it('is the same whether computed as the edit of the unmasked difference or from every concept row', () => {
    const ctx = pooledContext(p, probe);
    const config = resolveMaskConfig(parseStrict(dasMaskOptionsSchema, { epochs: 1, lr: 0.01, rank: 3, meanDifferenceWeight: 5 }, 'das_mask options'), ctx);
    const run = (wrap: (s: PooledSource) => RowSource): { mean: number[]; logits: number[] } => {
      const space = DAS_MASK.create(HOOK, ctx, config);
      const pooled = new PooledSource(p.cache, space, p.concept.rows);
      const trainer = new MaskTrainer({
        spaces: [space],
        task: { source: new PooledSource(p.cache, space, p.train.rows), labels: p.train.y },
        concept: { source: wrap(pooled), labels: p.concept.z, taskLabels: p.concept.y },
        probeHead: affineOfProbe(probe, probe.dIn, config.seed),
        config,
        label: 'das_mask test',
        refitChunk: 64,
      });
      try {
        const mean: number[] = [];
        while (!trainer.done) mean.push(trainer.step().meanDifference);
        return { mean, logits: Array.from(trainer.maskLogits()[0]!) };
      } finally {
        trainer.dispose();
        space.dispose();
      }
    };
    const before = tf.memory().numTensors;
    const viaEdit = run((s) => s);
    // Not a PooledSource: the trainer represents every concept row (in chunks of 64) each step.
    const viaRows = run((s) => ({ n: s.n, fixedDirections: (v) => s.fixedDirections(v), represent: (at, v) => s.represent(at, v) }));
    expect(tf.memory().numTensors).toBe(before);
    expect(viaEdit.mean[0]).toBeGreaterThan(0.5);
    viaEdit.mean.forEach((m, i) => expect(viaRows.mean[i]).toBeCloseTo(m, 4));
    viaEdit.logits.forEach((m, i) => expect(viaRows.logits[i]).toBeCloseTo(m, 3));
  });
});
