import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../../src/engine/engine.js';
import { buildActivationCache, csrToDense, type ActivationCache } from '../../../src/cache/cache.js';
import type { Eraser, EraserSae, FitContext } from '../../../src/erasure/eraser.js';
import { readCheckpoint, saveEraser } from '../../../src/erasure/checkpoint.js';
import { restoreMaskEraser } from '../../../src/erasure/mask/checkpoint.js';
import { loadEraser } from '../../../src/erasure/load.js';
import { createSaeMaskFitter, SAE_MASK, saeMaskOptionsSchema } from '../../../src/erasure/mask/sae-mask.js';
import { resolveMaskConfig } from '../../../src/erasure/mask/options.js';
import { parseStrict } from '../../../src/util/schema.js';
import { asMaskEraser, type MaskEraser } from '../../../src/erasure/mask/eraser.js';
import { meanPool } from '../../../src/models/pool.js';
import { LinearProbe } from '../../../src/probe/linear.js';
import { setQuiet } from '../../../src/util/progress.js';
import { ToyModel, axisSae, plantedSplits, randomSae, toyTokenize, type ToySae } from '../sae-toy.js';
import { biasedProbe, groupAccuracy, HOOK, plantedPooled, pooledContext, PROBE_OPTIONS, type PlantedPooled } from './mask-fixtures.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

/** Tests train for 250 steps; the default lr (1e-3) needs ~500 to move a logit from keep to remove. */
const FAST = { lr: 0.01 };

/** Accuracy of a fresh gender probe trained on erased balanced data, scored on erased test data. */
function genderProbeAccuracy(trainX: tf.Tensor2D, trainZ: Int32Array, testX: tf.Tensor2D, testZ: Int32Array): number {
  const g = new LinearProbe(trainX.shape[1], 2, PROBE_OPTIONS);
  g.fit(trainX, trainZ);
  const pred = g.predict(testX);
  g.dispose();
  return pred.reduce((a, p, i) => a + (p === testZ[i] ? 1 : 0), 0) / pred.length;
}

describe('sae_mask on a planted pooled problem', () => {
  let p: PlantedPooled;
  let probe: LinearProbe;
  let eraser: Eraser;
  let mask: MaskEraser;

  beforeAll(async () => {
    p = plantedPooled({ kind: 'sae' });
    probe = biasedProbe(p.cache, p.train);
    eraser = await createSaeMaskFitter(FAST).fit(pooledContext(p, probe));
    mask = asMaskEraser(eraser);
  });

  afterAll(() => {
    eraser.dispose();
    probe.dispose();
    p.sae!.dispose();
  });

  it('concept objective: removes the gender feature, keeps the task feature', () => {
    const removed = mask.removedUnits()[HOOK]!;
    expect(removed).toContain(0);
    expect(removed).not.toContain(1);
    // Noise features carry no concept: at most one may be dropped by chance.
    expect(removed.length).toBeLessThanOrEqual(2);
    const d = eraser.describe();
    expect(d.method).toBe('sae_mask');
    expect(d.hooks).toEqual([HOOK]);
    expect(d.unitsRemoved).toBe(removed.length);
    expect(d.removed[HOOK]).toEqual({ kind: 'sae_features', indices: removed });
    expect(d.summary).toContain(`${removed.length} of 10 SAE features at ${HOOK}`);
  });

  it('the retrained head beats the biased probe on the worst group by a wide margin', () => {
    const original = tf.tidy(() => groupAccuracy(probe, p.cache.pooled(HOOK, p.test.rows), p.test));
    const Xe = eraser.erasePooled(p.cache, p.test.rows)!;
    const retrained = groupAccuracy(eraser.head!, Xe, p.test);
    Xe.dispose();
    expect(original.worst).toBeLessThan(0.3);
    expect(retrained.worst).toBeGreaterThan(original.worst + 0.5);
  });

  it('leaves no linearly decodable gender (a fresh gender probe is near chance)', () => {
    const before = tf.tidy(() => genderProbeAccuracy(p.cache.pooled(HOOK, p.balanced.rows), p.balanced.z, p.cache.pooled(HOOK, p.test.rows), p.test.z));
    const after = tf.tidy(() =>
      genderProbeAccuracy(eraser.erasePooled(p.cache, p.balanced.rows)!, p.balanced.z, eraser.erasePooled(p.cache, p.test.rows)!, p.test.z),
    );
    expect(before).toBeGreaterThan(0.95);
    expect(after).toBeLessThan(0.65);
  });

  it('erasePooled is decode(h ⊙ f̄) + ē, computed here from the cache arrays', () => {
    const rows = p.test.rows.subarray(0, 20);
    const got = tf.tidy(() => eraser.erasePooled(p.cache, rows)!.arraySync());
    const sae = p.sae!;
    const dec = sae.wDec.arraySync();
    const bDec = sae.bDec.arraySync();
    const codes = csrToDense(p.cache.saePooledCsr(HOOK), rows);
    const errors = tf.tidy(() => p.cache.saeErrorPooled(HOOK, rows).arraySync());
    const removed = new Set(mask.removedUnits()[HOOK]);
    const m = sae.dSae;
    rows.forEach((_, i) => {
      for (let j = 0; j < sae.dIn; j++) {
        let want = bDec[j]! + errors[i]![j]!;
        for (let k = 0; k < m; k++) if (!removed.has(k)) want += codes[i * m + k]! * dec[k]![j]!;
        expect(got[i]![j]).toBeCloseTo(want, 5);
      }
    });
  });

  it('save/load: same erasure and retrained probe; wrong SAE width, hook or method is a clear error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sae-mask-'));
    saveEraser(eraser, dir);
    const json = JSON.parse(readFileSync(join(dir, 'eraser.json'), 'utf8')) as {
      method: string;
      format: string;
      head: string | null;
      hooks: { hook: string; dSae: number }[];
    };
    expect(json.method).toBe('sae_mask');
    expect(json.format).toBe('sae-eraser/mask');
    expect(json.head).toBe('head.safetensors');
    expect(json.hooks).toEqual([expect.objectContaining({ hook: HOOK, dSae: 10, units: 10, keepError: true })]);
    const loaded = loadEraser(dir, { saes: { [HOOK]: p.sae! }, probeHook: HOOK });
    try {
      // The checkpoint names its hooks and method; a caller expecting others sees them here.
      expect(asMaskEraser(loaded).hooks).toEqual([HOOK]);
      expect(loaded.method).toBe('sae_mask');
      expect(Array.from(asMaskEraser(loaded).maskLogits(HOOK))).toEqual(Array.from(mask.maskLogits(HOOK)));
      const [a, b] = [eraser, loaded].map((e) => tf.tidy(() => Array.from(e.erasePooled(p.cache, p.test.rows)!.dataSync())));
      expect(b).toEqual(a);
      const X = p.cache.pooled(HOOK, p.test.rows);
      expect(Array.from(loaded.head!.predict(X))).toEqual(Array.from(eraser.head!.predict(X)));
      X.dispose();
      expect(loaded.describe().removed).toEqual(eraser.describe().removed);
    } finally {
      loaded.dispose();
    }
    const wide = randomSae(16, 3);
    try {
      expect(() => loadEraser(dir, { saes: { [HOOK]: wide } })).toThrow(
        /made for an SAE of width 10 at hook layers\.0\.resid_out; the SAE given there has width 16/,
      );
      expect(() => loadEraser(dir, { saes: { 'layers.0.mlp_out': p.sae! } })).toThrow(
        /was made for hook "layers\.0\.resid_out", but no SAE is given for it \(SAEs at: layers\.0\.mlp_out\)/,
      );
    } finally {
      wide.dispose();
    }
    expect(() => loadEraser(dir, { saes: { [HOOK]: p.sae! }, probeHook: 'layers.1.resid_out' })).toThrow(/probe reading hook layers\.0\.resid_out/);
    // A checkpoint whose method is not a mask method is refused by the mask restorer (loadEraser
    // already refuses a JSON whose method differs from the tensor file's).
    expect(() => restoreMaskEraser({ ...readCheckpoint(dir), method: 'leace' }, { saes: { [HOOK]: p.sae! } })).toThrow(
      /method leace, which is not a mask method/,
    );
    // The per-hook keepError repeats options.keepError; the two must agree.
    const path = join(dir, 'eraser.json');
    const disagreeing = JSON.parse(readFileSync(path, 'utf8')) as { hooks: { keepError: boolean }[] };
    disagreeing.hooks[0]!.keepError = false;
    writeFileSync(path, JSON.stringify(disagreeing));
    expect(() => loadEraser(dir, { saes: { [HOOK]: p.sae! } })).toThrow(
      /eraser\.json: the hooks entry of layers\.0\.resid_out says keepError false, but options\.keepError is true/,
    );
    // A corrupted mask tensor is named in the error.
    const bad = JSON.parse(readFileSync(path, 'utf8')) as { hooks: { units: number; keepError: boolean }[] };
    bad.hooks[0]!.keepError = true;
    bad.hooks[0]!.units = 11;
    writeFileSync(path, JSON.stringify(bad));
    expect(() => loadEraser(dir, { saes: { [HOOK]: p.sae! } })).toThrow(/11 units in the checkpoint, the restored units have 10/);
  });
});

describe('sae_mask units', () => {
  it('free the decoder directions when the SAE cannot decode', () => {
    const p = plantedPooled({ kind: 'sae', nTrain: 16, nConcept: 16 });
    const sae = p.sae!;
    const broken: EraserSae = {
      dIn: sae.dIn,
      dSae: sae.dSae,
      encode: (x) => sae.encode(x),
      decode: () => {
        throw new Error('decode failed');
      },
      decoderDirections: () => sae.decoderDirections(),
    };
    const probe = biasedProbe(p.cache, p.train);
    const ctx = { ...pooledContext(p, probe), saes: { [HOOK]: broken } };
    const config = resolveMaskConfig(parseStrict(saeMaskOptionsSchema, {}, 'sae_mask options'), ctx);
    const before = tf.memory().numTensors;
    expect(() => SAE_MASK.create(HOOK, ctx, config)).toThrow(/decode failed/);
    expect(tf.memory().numTensors).toBe(before);
    probe.dispose();
    sae.dispose();
  });
});

describe('sae_mask, the original task objective', () => {
  it('on balanced data with the frozen probe: removes the gender feature; the probe stops using gender', async () => {
    const p = plantedPooled({ kind: 'sae', seed: 5 });
    const probe = biasedProbe(p.cache, p.train);
    const eraser = await createSaeMaskFitter({ ...FAST, objective: 'task', taskSplit: 'balanced' }).fit(pooledContext(p, probe));
    try {
      const removed = asMaskEraser(eraser).removedUnits()[HOOK]!;
      expect(removed).toContain(0);
      expect(removed).not.toContain(1);
      expect(eraser.head).toBeUndefined();
      // The biased probe's predictions stop depending on gender (positive rates by z on test).
      const gap = (X: tf.Tensor2D): number => {
        const pred = probe.predict(X);
        const rate = [0, 1].map((c) => {
          const idx = Array.from(p.test.z.keys()).filter((i) => p.test.z[i] === c);
          return idx.reduce((a, i) => a + pred[i]!, 0) / idx.length;
        });
        return Math.abs(rate[1]! - rate[0]!);
      };
      const before = tf.tidy(() => gap(p.cache.pooled(HOOK, p.test.rows)));
      const after = tf.tidy(() => gap(eraser.erasePooled(p.cache, p.test.rows)!));
      expect(before).toBeGreaterThan(0.7);
      expect(after).toBeLessThan(0.2);
    } finally {
      eraser.dispose();
      probe.dispose();
      p.sae!.dispose();
    }
  });

  it('taskSplit "balanced" without balanced data is an error', async () => {
    const p = plantedPooled({ kind: 'sae' });
    const probe = biasedProbe(p.cache, p.train);
    const ctx = pooledContext(p, probe);
    delete ctx.balanced;
    await expect(createSaeMaskFitter({ objective: 'task', taskSplit: 'balanced' }).fit(ctx)).rejects.toThrow(
      /taskSplit "balanced" needs balanced training data/,
    );
    probe.dispose();
    p.sae!.dispose();
  });
});

/** The toy model with SAEs at two hooks and a cache over the planted texts. */
interface ToySetup {
  model: ToyModel;
  saes: Record<string, ToySae>;
  cache: ActivationCache;
  splits: ReturnType<typeof plantedSplits>;
}

async function toySetup(saes: Record<string, ToySae>, hooks: string[]): Promise<ToySetup> {
  const model = new ToyModel({ seed: 3 });
  const splits = plantedSplits({ nTrain: 96, nConcept: 128, nBalanced: 80, seed: 4 });
  const cache = await buildActivationCache(
    {
      modelId: 'toy',
      hooks,
      saes: Object.fromEntries(Object.entries(saes).map(([h, sae]) => [h, { sae, id: `toy-${h}` }])),
      tokenizerId: 'toy',
      texts: splits.texts,
    },
    { model, tokenize: toyTokenize, root: mkdtempSync(join(tmpdir(), 'mask-cache-')), batchSize: 32 },
  );
  return { model, saes, cache, splits };
}

function toyContext(s: ToySetup, probeHook: string, probe: LinearProbe): FitContext {
  return {
    model: s.model,
    tokenize: toyTokenize,
    cache: s.cache,
    recache: () => Promise.reject(new Error('the masks never re-cache')),
    batchSize: 32,
    saes: s.saes,
    probeHook,
    probe,
    train: s.splits.train,
    concept: s.splits.concept,
    seed: 42,
  };
}

describe('sae_mask on a small model', () => {
  let s: ToySetup;

  beforeAll(async () => {
    s = await toySetup({ 'layers.0.resid_out': randomSae(12, 21), embed: axisSae() }, ['embed', 'layers.0.resid_out']);
  });

  afterAll(() => {
    s.model.dispose();
    for (const sae of Object.values(s.saes)) sae.dispose();
  });

  /** max |pool(run with edits)| - erasePooled| over the balanced rows, and max |erased - original|. */
  function compare(eraser: Eraser, hook: string): { worst: number; change: number } {
    const rows = s.splits.balanced.rows;
    const pooled = eraser.erasePooled(s.cache, rows)!;
    const texts = Array.from(rows, (r) => s.splits.texts[r]!);
    const viaModel = tf.tidy(() => {
      const batch = toyTokenize(texts);
      const { captures } = s.model.run(batch, { capture: [hook], edits: eraser.edits() });
      return meanPool(captures[hook]!, batch.attentionMask);
    });
    const original = s.cache.pooled(hook, rows);
    const worst = tf.tidy(() => tf.max(tf.abs(tf.sub(pooled, viaModel))).dataSync()[0]!);
    const change = tf.tidy(() => tf.max(tf.abs(tf.sub(original, pooled))).dataSync()[0]!);
    tf.dispose([pooled, viaModel, original]);
    return { worst, change };
  }

  it('pool(edit(x)) equals erasePooled at the probe hook, with and without the SAE error', async () => {
    const hook = 'layers.0.resid_out';
    const probe = biasedProbe(s.cache, s.splits.train, hook);
    // Unbalanced concept set: on this random SAE the balanced adversary finds no feature worth removing within 10 epochs.
    const eraser = await createSaeMaskFitter({ ...FAST, epochs: 10, balanceConcept: false }).fit(toyContext(s, hook, probe));
    const dir = mkdtempSync(join(tmpdir(), 'sae-mask-noerr-'));
    try {
      // The comparison only means something if the mask removes something.
      expect(asMaskEraser(eraser).removedUnits()[hook]!.length).toBeGreaterThan(0);
      const withError = compare(eraser, hook);
      expect(withError.worst).toBeLessThan(1e-5);
      expect(withError.change).toBeGreaterThan(1e-3);
      // The same mask with keepError false (the original's x' = decode(s * f)).
      saveEraser(eraser, dir);
      const path = join(dir, 'eraser.json');
      const json = JSON.parse(readFileSync(path, 'utf8')) as { options: { keepError: boolean }; hooks: { keepError: boolean }[] };
      json.options.keepError = false;
      for (const h of json.hooks) h.keepError = false;
      writeFileSync(path, JSON.stringify(json));
      const noError = loadEraser(dir, { saes: s.saes });
      try {
        const r = compare(noError, hook);
        expect(r.worst).toBeLessThan(1e-5);
        expect(r.change).toBeGreaterThan(withError.change);
      } finally {
        noError.dispose();
      }
    } finally {
      eraser.dispose();
      probe.dispose();
    }
  });

  it("upstream of the probe hook (model in the loop): removes the gender words' features", async () => {
    const probeHook = 'layers.0.resid_out';
    const probe = biasedProbe(s.cache, s.splits.train, probeHook);
    const eraser = await createSaeMaskFitter({ lr: 0.03, epochs: 8, hooks: ['embed'] }).fit(toyContext(s, probeHook, probe));
    try {
      expect(eraser.erasePooled(s.cache, s.splits.balanced.rows)).toBeUndefined();
      const removed = asMaskEraser(eraser).removedUnits().embed!;
      // axisSae: features 0 and 1 read the male and female word axes, 2 and 3 the profession axes.
      expect(removed).toEqual(expect.arrayContaining([0, 1]));
      expect(removed).not.toContain(2);
      expect(removed).not.toContain(3);
      const test = s.splits.balanced;
      const original = tf.tidy(() => groupAccuracy(probe, s.cache.pooled(probeHook, test.rows), test));
      const erased = tf.tidy(() => {
        const batch = toyTokenize([...test.texts]);
        const { captures } = s.model.run(batch, { capture: [probeHook], edits: eraser.edits() });
        return meanPool(captures[probeHook]!, batch.attentionMask);
      });
      const retrained = groupAccuracy(eraser.head!, erased, test);
      erased.dispose();
      expect(retrained.worst).toBeGreaterThan(original.worst + 0.3);
    } finally {
      eraser.dispose();
      probe.dispose();
    }
  });

  it('one mask per hook at several hooks, each with its own SAE; saved and loaded together', async () => {
    const probeHook = 'layers.0.resid_out';
    const probe = biasedProbe(s.cache, s.splits.train, probeHook);
    const eraser = await createSaeMaskFitter({ lr: 0.03, epochs: 3, hooks: ['embed', probeHook], retrainHead: false }).fit(toyContext(s, probeHook, probe));
    const dir = mkdtempSync(join(tmpdir(), 'sae-mask-multi-'));
    try {
      const mask = asMaskEraser(eraser);
      expect(Object.keys(eraser.edits()).sort()).toEqual(['embed', probeHook]);
      expect(eraser.erasePooled(s.cache, s.splits.balanced.rows)).toBeUndefined();
      const d = eraser.describe();
      expect(d.hooks).toEqual(['embed', probeHook]);
      expect(Object.keys(d.removed).sort()).toEqual(['embed', probeHook]);
      expect(mask.maskLogits('embed')).toHaveLength(10);
      expect(mask.maskLogits(probeHook)).toHaveLength(12);
      saveEraser(eraser, dir);
      const loaded = asMaskEraser(loadEraser(dir, { saes: s.saes }));
      expect(loaded.hooks).toEqual(['embed', probeHook]);
      expect(Array.from(loaded.maskLogits('embed'))).toEqual(Array.from(mask.maskLogits('embed')));
      expect(Array.from(loaded.maskLogits(probeHook))).toEqual(Array.from(mask.maskLogits(probeHook)));
      loaded.dispose();
      expect(() => loadEraser(dir, { saes: { embed: s.saes.embed! } })).toThrow(/was made for hook "layers\.0\.resid_out", but no SAE is given for it/);
    } finally {
      eraser.dispose();
      probe.dispose();
    }
  });

  it('a hook after the probe hook is an error', async () => {
    const probe = biasedProbe(s.cache, s.splits.train, 'embed');
    await expect(createSaeMaskFitter({ hooks: ['layers.0.resid_out'] }).fit(toyContext(s, 'embed', probe))).rejects.toThrow(
      /hook "layers\.0\.resid_out" comes after the probe hook "embed"/,
    );
    probe.dispose();
  });
});
