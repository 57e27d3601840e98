import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { ActivationCache, buildActivationCache } from '../../src/cache/cache.js';
import { csrColumns, pooledWithEdits, zeroAblate, zeroAblatePooled } from '../../src/erasure/ablate.js';
import type { EraserSae, FitContext, LabelledSplit } from '../../src/erasure/eraser.js';
import { RandomAblationEraser } from '../../src/erasure/random-ablation.js';
import { ShiftEraser } from '../../src/erasure/shift.js';
import type { SelectionRecord } from '../../src/erasure/feature-selection.js';
import type { HookName } from '../../src/models/model.js';
import { LinearProbe } from '../../src/probe/linear.js';
import type { Probe } from '../../src/probe/probe.js';
import { D, ToyModel, axisSae, plantedSplits, randomSae, toyTokenize, type PlantedSplits, type ToySae } from './sae-toy.js';

const PROBE_HOOK = 'layers.0.resid_out';

let model: ToyModel;
let saes: Record<HookName, ToySae>;
let splits: PlantedSplits;
let cache: ActivationCache;
let probe: LinearProbe;

beforeAll(async () => {
  await initEngine();
  model = new ToyModel({ nLayers: 1, seed: 42 });
  saes = { embed: axisSae(2, 5), [PROBE_HOOK]: axisSae(2, 6) };
  splits = plantedSplits({ seed: 42 });
  const root = mkdtempSync(join(tmpdir(), 'shift-cache-'));
  cache = await buildActivationCache(
    { modelId: 'toy', hooks: ['embed', PROBE_HOOK], tokenizerId: 'toy', texts: splits.texts, saes: { embed: { sae: saes.embed!, id: 'embed' }, [PROBE_HOOK]: { sae: saes[PROBE_HOOK]!, id: 'resid' } } },
    { model, tokenize: toyTokenize, root, batchSize: 64 },
  );
  probe = new LinearProbe(D, 2, { epochs: 40, batchSize: 32 });
  const X = cache.pooled(PROBE_HOOK, splits.train.rows);
  probe.fit(X, splits.train.y);
  X.dispose();
});

afterAll(() => {
  probe.dispose();
  Object.values(saes).forEach((s) => s.dispose());
  model.dispose();
});

function context(options: Record<string, unknown> = {}, extra: Partial<FitContext> = {}): FitContext {
  return {
    model,
    tokenize: toyTokenize,
    cache,
    saes,
    probeHook: PROBE_HOOK,
    probe,
    train: splits.train,
    concept: splits.concept,
    seed: 42,
    options,
    ...extra,
  };
}

/** Pooled probe-hook representations of a split, through the eraser's cheapest path. */
function erasedPooled(eraser: ShiftEraser | RandomAblationEraser, split: LabelledSplit): tf.Tensor2D {
  return eraser.erasePooled(cache, split.rows) ?? pooledWithEdits(model, toyTokenize, split.texts, PROBE_HOOK, eraser.edits(), { batchSize: 64 });
}

/** Accuracy on y of each of the four (y, z) groups of a split. */
function groupAccuracies(p: Probe, X: tf.Tensor2D, split: LabelledSplit): number[] {
  const pred = p.predict(X);
  const right = [0, 0, 0, 0];
  const count = [0, 0, 0, 0];
  for (let i = 0; i < pred.length; i++) {
    const g = 2 * split.y[i]! + split.z[i]!;
    count[g]!++;
    if (pred[i] === split.y[i]) right[g]!++;
  }
  return right.map((r, g) => r / count[g]!);
}

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

describe('zero ablation', () => {
  it('equals x - sum_{i in S} f_i(x) v_i and decode(f with f_S = 0) + error', () => {
    const sae = randomSae(9, 3);
    const S = Int32Array.from([1, 4, 7]);
    const x = tf.randomNormal([2, 5, D], 0, 1, 'float32', 11) as tf.Tensor3D;
    const dirs = tf.gather(sae.wDec, tf.tensor1d(S, 'int32')) as tf.Tensor2D;
    const got = zeroAblate(sae, S, dirs, x);
    // Plain-array reference.
    const xs = x.dataSync();
    const wEnc = sae.wEnc.dataSync();
    const bEnc = sae.bEnc.dataSync();
    const wDec = sae.wDec.dataSync();
    const bDec = sae.bDec.dataSync();
    const m = sae.dSae;
    const want = new Float32Array(xs.length);
    for (let t = 0; t < 10; t++) {
      for (let j = 0; j < D; j++) want[t * D + j] = xs[t * D + j]!;
      for (const i of S) {
        let pre = bEnc[i]!;
        for (let j = 0; j < D; j++) pre += (xs[t * D + j]! - bDec[j]!) * wEnc[j * m + i]!;
        const f = Math.max(0, pre);
        for (let j = 0; j < D; j++) want[t * D + j]! -= f * wDec[i * D + j]!;
      }
    }
    const gotData = got.dataSync();
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(gotData[i]! - want[i]!));
    expect(worst).toBeLessThan(1e-5);
    // Same thing as SFC writes it: decode(f with f_S = 0) + (x - decode(f)).
    const sfc = tf.tidy(() => {
      const f = sae.encode(x);
      const keep = tf.tensor1d(Float32Array.from({ length: m }, (_, i) => (S.includes(i) ? 0 : 1)));
      return tf.add(sae.decode(tf.mul(f, keep)), tf.sub(x, sae.decode(f)));
    });
    expect(maxAbsDiff(got, sfc)).toBeLessThan(1e-5);
    // Some feature of S is active, so the ablation changed something.
    expect(maxAbsDiff(got, x)).toBeGreaterThan(1e-2);
    tf.dispose([x, dirs, got, sfc]);
    sae.dispose();
  });

  it('pooled path x̄ - F̄_S V_S agrees with the token-level edit at the probe hook', () => {
    const S = Int32Array.from([0, 3, 8]);
    const sae = saes[PROBE_HOOK]!;
    const dirs = tf.gather(sae.wDec, tf.tensor1d(S, 'int32')) as tf.Tensor2D;
    const rows = splits.balanced.rows;
    const pooled = cache.pooled(PROBE_HOOK, rows);
    const fast = zeroAblatePooled(pooled, csrColumns(cache.saePooledCsr(PROBE_HOOK), rows, S), dirs);
    const slow = pooledWithEdits(model, toyTokenize, splits.balanced.texts, PROBE_HOOK, { [PROBE_HOOK]: (a) => zeroAblate(sae, S, dirs, a) as tf.Tensor3D });
    expect(maxAbsDiff(fast, slow)).toBeLessThan(1e-5);
    expect(maxAbsDiff(fast, pooled)).toBeGreaterThan(0.05);
    tf.dispose([dirs, pooled, fast, slow]);
  });
});

describe('shift', () => {
  let shift: ShiftEraser;
  beforeAll(async () => {
    shift = new ShiftEraser('shift');
    await shift.fit(context());
  });
  afterAll(() => shift.dispose());

  it('finds the planted gender features automatically, and no profession feature', () => {
    const f = shift.ablatedFeatures();
    const at = (h: HookName): number[] => Array.from(f[h] ?? []);
    // Axis features: 0 male words, 1 female words, 2 surgeon words, 3 nurse words.
    expect(at('embed')).toEqual(expect.arrayContaining([0, 1]));
    expect(at(PROBE_HOOK)).toEqual(expect.arrayContaining([0, 1]));
    for (const h of ['embed', PROBE_HOOK]) for (const task of [2, 3]) expect(at(h)).not.toContain(task);
    // The profession features were candidates with large attribution: the concept test rejected them.
    const records = shift.selectionRecords() as SelectionRecord[];
    const task = records.filter((r) => r.feature === 2 || r.feature === 3);
    expect(task.length).toBeGreaterThan(0);
    for (const r of task) {
      expect(r.selected).toBe(false);
      expect(r.taskScore).toBeGreaterThan(r.conceptScore);
    }
    expect(records.every((r) => r.rule === 'stratified')).toBe(true);
  });

  it('acts upstream of the probe hook, so it has no pooled fast path; the edits remove the bias', () => {
    expect(shift.erasePooled(cache, splits.balanced.rows)).toBeUndefined();
    const before = cache.pooled(PROBE_HOOK, splits.balanced.rows);
    const after = erasedPooled(shift, splits.balanced);
    const accBefore = groupAccuracies(probe, before, splits.balanced);
    const accAfter = groupAccuracies(probe, after, splits.balanced);
    // The biased probe fails a counter-stereotypical group; after SHIFT its worst group is much better.
    expect(Math.min(...accBefore)).toBeLessThan(0.8);
    expect(Math.min(...accAfter)).toBeGreaterThan(Math.min(...accBefore) + 0.15);
    tf.dispose([before, after]);
  });

  it('describes what it removes', () => {
    const d = shift.describe();
    expect(d.method).toBe('shift');
    expect(d.unitsRemoved).toBe(Object.values(shift.ablatedFeatures()).reduce((a, f) => a + f.length, 0));
    expect(d.removed.embed).toEqual({ kind: 'sae_features', indices: Array.from(shift.ablatedFeatures().embed!) });
    expect(d.summary).toMatch(/zero-ablates \d+ SAE features/);
    expect(d.summary).toMatch(/chosen automatically/);
  });

  it('saves and loads: same features and edits; another SAE width or another SAE is refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shift-save-'));
    shift.save(dir);
    const loaded = ShiftEraser.load(dir, saes);
    expect(loaded.describe().removed).toEqual(shift.describe().removed);
    expect(Array.from(loaded.attributionsByHook().embed!.features)).toEqual(Array.from(shift.attributionsByHook().embed!.features));
    const a = pooledWithEdits(model, toyTokenize, splits.balanced.texts.slice(0, 20), PROBE_HOOK, shift.edits());
    const b = pooledWithEdits(model, toyTokenize, splits.balanced.texts.slice(0, 20), PROBE_HOOK, loaded.edits());
    expect(maxAbsDiff(a, b)).toBe(0);
    tf.dispose([a, b]);
    loaded.dispose();
    const wider = { ...saes, embed: axisSae(4, 5) };
    expect(() => ShiftEraser.load(dir, wider)).toThrow(/fitted with an SAE of width 10 \(dSae\), but the SAE given for "embed" has width 12/);
    const other = { ...saes, embed: randomSae(10, 99) };
    expect(() => ShiftEraser.load(dir, other)).toThrow(/not the SAE the eraser was fitted with/);
    const json = JSON.parse(readFileSync(join(dir, 'eraser.json'), 'utf8')) as { method: string };
    json.method = 'leace';
    writeFileSync(join(dir, 'eraser.json'), JSON.stringify(json));
    expect(() => ShiftEraser.load(dir, saes)).toThrow(/field "method" is "leace"/);
    wider.embed.dispose();
    other.embed.dispose();
  });
});

describe('shift at the probe hook only', () => {
  it('has a pooled fast path equal to running the model with its edits', async () => {
    const eraser = new ShiftEraser('shift');
    await eraser.fit(context({ hooks: [PROBE_HOOK], selection: 'top', candidates: 4, steps: 5 }));
    expect(eraser.hooks()).toEqual([PROBE_HOOK]);
    expect(eraser.unitsRemoved()).toBe(4);
    const fast = eraser.erasePooled(cache, splits.balanced.rows)!;
    const slow = pooledWithEdits(model, toyTokenize, splits.balanced.texts, PROBE_HOOK, eraser.edits());
    expect(maxAbsDiff(fast, slow)).toBeLessThan(1e-5);
    tf.dispose([fast, slow]);
    eraser.dispose();
  });

  it('with attribution patching (atp), still finds the planted gender features at the embedding', async () => {
    const eraser = new ShiftEraser('shift');
    await eraser.fit(context({ attribution: 'atp' }));
    const embed = Array.from(eraser.ablatedFeatures().embed ?? []);
    expect(embed).toEqual(expect.arrayContaining([0, 1]));
    expect(embed).not.toContain(2);
    expect(embed).not.toContain(3);
    expect(eraser.describe().summary).toMatch(/attribution patching/);
    eraser.dispose();
  });

  it('manual selection ablates exactly the listed features, without attribution', async () => {
    const eraser = new ShiftEraser('shift');
    await eraser.fit(context({ selection: 'manual', features: { embed: [1, 0], [PROBE_HOOK]: [5] } }));
    expect(Array.from(eraser.ablatedFeatures().embed!)).toEqual([0, 1]);
    expect(Array.from(eraser.ablatedFeatures()[PROBE_HOOK]!)).toEqual([5]);
    expect(Object.keys(eraser.attributionsByHook())).toEqual([]);
    eraser.dispose();
  });

  it('rejects unknown or malformed options with a clear message', async () => {
    await expect(new ShiftEraser().fit(context({ stpes: 3 }))).rejects.toThrow(/shift option "stpes" is unknown/);
    await expect(new ShiftEraser().fit(context({ selection: 'manual' }))).rejects.toThrow(/needs "features"/);
    await expect(new ShiftEraser().fit(context({ candidates: 0 }))).rejects.toThrow(/"candidates" must be a positive integer/);
    await expect(new ShiftEraser().fit(context({ attribution: 'exact' }))).rejects.toThrow(/"attribution" must be "ig" or "atp"/);
    await expect(new ShiftEraser().fit(context({ selection: 'manual', features: { embed: [10] } }))).rejects.toThrow(/feature index 10 is outside \[0, 10\)/);
  });
});

describe('shift_retrain', () => {
  it('retrains the head on the ablated ambiguous train set; the head survives save/load', async () => {
    const eraser = new ShiftEraser('shift_retrain');
    await eraser.fit(context({ retrain: { epochs: 40, batchSize: 32 } }));
    const head = eraser.retrainedProbe()!;
    expect(head).toBeDefined();
    expect(head).not.toBe(probe);
    const X = erasedPooled(eraser, splits.balanced);
    const acc = groupAccuracies(head, X, splits.balanced);
    expect(Math.min(...acc)).toBeGreaterThan(0.8);
    const dir = mkdtempSync(join(tmpdir(), 'shift-retrain-'));
    eraser.save(dir);
    const loaded = ShiftEraser.load(dir, saes);
    const z1 = head.logits(X);
    const z2 = loaded.retrainedProbe()!.logits(X);
    expect(maxAbsDiff(z1, z2)).toBe(0);
    tf.dispose([X, z1, z2]);
    loaded.dispose();
    eraser.dispose();
    expect(new ShiftEraser('shift').retrainedProbe()).toBeUndefined();
  });
});

describe('random', () => {
  it('draws k features from all eligible hooks, reproducibly from the seed', async () => {
    const fit = async (seed: number): Promise<RandomAblationEraser> => {
      const e = new RandomAblationEraser();
      await e.fit(context({ k: 5, seed }));
      return e;
    };
    const [a, b, c] = [await fit(1), await fit(1), await fit(2)];
    expect(a.unitsRemoved()).toBe(5);
    expect(a.describe().removed).toEqual(b.describe().removed);
    expect(a.describe().removed).not.toEqual(c.describe().removed);
    for (const h of a.hooks()) expect(['embed', PROBE_HOOK]).toContain(h);
    [a, b, c].forEach((e) => e.dispose());
  });

  it('matches per-hook counts and uses the same edit as SHIFT (pooled path = token path)', async () => {
    const e = new RandomAblationEraser();
    await e.fit(context({ perHook: { [PROBE_HOOK]: 3 } }));
    expect(e.hooks()).toEqual([PROBE_HOOK]);
    expect(e.ablatedFeatures()[PROBE_HOOK]!.length).toBe(3);
    const fast = e.erasePooled(cache, splits.balanced.rows)!;
    const slow = pooledWithEdits(model, toyTokenize, splits.balanced.texts, PROBE_HOOK, e.edits());
    expect(maxAbsDiff(fast, slow)).toBeLessThan(1e-5);
    const dir = mkdtempSync(join(tmpdir(), 'random-save-'));
    e.save(dir);
    const loaded = RandomAblationEraser.load(dir, saes);
    expect(loaded.describe()).toEqual({ ...e.describe() });
    expect(() => ShiftEraser.load(dir, saes)).toThrow(/field "method" is "random"/);
    tf.dispose([fast, slow]);
    loaded.dispose();
    e.dispose();
  });

  it('without k or perHook, removes as many features per hook as SHIFT does', async () => {
    const shift = new ShiftEraser('shift');
    await shift.fit(context({ steps: 5 }));
    const e = new RandomAblationEraser();
    await e.fit(context({ steps: 5 }));
    const counts = (x: ShiftEraser | RandomAblationEraser): Record<string, number> => Object.fromEntries(Object.entries(x.ablatedFeatures()).map(([h, f]) => [h, f.length]));
    expect(counts(e)).toEqual(counts(shift));
    expect(e.describe().summary).toMatch(/matching the per-hook counts SHIFT selects/);
    shift.dispose();
    e.dispose();
  });
});

describe('SAE interface use', () => {
  it('accepts any EraserSae (decoderDirections is disposed after use)', () => {
    const sae: EraserSae = saes.embed!;
    const before = tf.memory().numTensors;
    const out = tf.tidy(() => zeroAblate(sae, Int32Array.from([0]), tf.gather(sae.decoderDirections(), [0]) as tf.Tensor2D, tf.ones([1, 2, D])));
    out.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('leaves no tensors behind when its edits run in a forward pass', async () => {
    const e = new RandomAblationEraser();
    await e.fit(context({ perHook: { embed: 2, [PROBE_HOOK]: 2 } }));
    const edits = e.edits();
    const run = (): void => pooledWithEdits(model, toyTokenize, splits.balanced.texts.slice(0, 9), PROBE_HOOK, edits, { batchSize: 4 }).dispose();
    run();
    const before = tf.memory().numTensors;
    run();
    expect(tf.memory().numTensors).toBe(before);
    e.dispose();
  });
});
