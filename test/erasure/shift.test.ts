import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { ActivationCache } from '../../src/cache/cache.js';
import { csrColumns, zeroAblate, zeroAblatePooled } from '../../src/erasure/ablate.js';
import { saveEraser } from '../../src/erasure/checkpoint.js';
import { erasedPooled as erasedPooledFor } from '../../src/erasure/erased.js';
import type { Eraser, EraserSae, FitContext, LabelledSplit } from '../../src/erasure/eraser.js';
import { FeatureAblationEraser } from '../../src/erasure/feature-ablation.js';
import { loadEraser } from '../../src/erasure/load.js';
import { createFitter, isConceptFree, methodSupervision, parseMethodOptions } from '../../src/erasure/methods.js';
import { supervision } from '../../src/erasure/eraser.js';
import { createRandomFitter, randomOptionsSchema } from '../../src/erasure/random-ablation.js';
import { createShiftFitter, shiftOptionsSchema, shiftRetrainOptionsSchema, shiftSupervision } from '../../src/erasure/shift.js';
import { resolveShiftOptions } from '../../src/erasure/shift-options.js';
import type { SelectionRecord } from '../../src/erasure/feature-selection.js';
import type { HookName } from '../../src/models/model.js';
import { pooledWithEdits } from '../../src/models/pool.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { parseStrict } from '../../src/util/schema.js';
import type { Probe } from '../../src/probe/probe.js';
import { D, TOY_PROBE_HOOK, ToyModel, axisSae, randomSae, toyFit, toyTokenize, type PlantedSplits, type ToyFit, type ToySae } from './sae-toy.js';
import { editCheckpointJson, editTensorMetadata, setCheckpointMethod } from './checkpoint-files.js';
import { auditedContext, expectStatedReads } from './label-audit.js';

const PROBE_HOOK = TOY_PROBE_HOOK;

let toy: ToyFit;
let model: ToyModel;
let saes: Record<HookName, ToySae>;
let splits: PlantedSplits;
let cache: ActivationCache;
let probe: LinearProbe;

beforeAll(async () => {
  await initEngine();
  toy = await toyFit();
  ({ model, saes, splits, cache, probe } = toy);
});

afterAll(() => toy.dispose());

function context(extra: Partial<FitContext> = {}): FitContext {
  return toy.context({ recache: () => Promise.reject(new Error('these erasers never edit texts')), ...extra });
}

/** The feature ablation a fitter returns (with its head, if any, unwrapped by the caller). */
function asFeatureAblation(e: Eraser): FeatureAblationEraser {
  expect(e).toBeInstanceOf(FeatureAblationEraser);
  return e as FeatureAblationEraser;
}

async function fitShift(options: Record<string, unknown> = {}): Promise<FeatureAblationEraser> {
  return asFeatureAblation(await createShiftFitter('shift', parseStrict(shiftOptionsSchema, options, 'shift options')).fit(context()));
}

async function fitRandom(options: Record<string, unknown> = {}): Promise<FeatureAblationEraser> {
  return asFeatureAblation(await createRandomFitter(parseStrict(randomOptionsSchema, options, 'random options')).fit(context()));
}

/** Pooled probe-hook representations of a split, through the eraser's cheapest path. */
function erasedPooled(eraser: Eraser, split: LabelledSplit): Promise<tf.Tensor2D> {
  return erasedPooledFor(eraser, split, context());
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
    const slow = pooledWithEdits(model, toyTokenize, splits.balanced.texts, PROBE_HOOK, {
      [PROBE_HOOK]: (a: tf.Tensor3D) => zeroAblate(sae, S, dirs, a) as tf.Tensor3D,
    });
    expect(maxAbsDiff(fast, slow)).toBeLessThan(1e-5);
    expect(maxAbsDiff(fast, pooled)).toBeGreaterThan(0.05);
    tf.dispose([dirs, pooled, fast, slow]);
  });
});

describe('shift', () => {
  let shift: FeatureAblationEraser;
  beforeAll(async () => {
    shift = await fitShift();
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
    const records = shift.record.selection as SelectionRecord[];
    const task = records.filter((r) => r.feature === 2 || r.feature === 3);
    expect(task.length).toBeGreaterThan(0);
    for (const r of task) {
      expect(r.selected).toBe(false);
      expect(r.taskScore).toBeGreaterThan(r.conceptScore);
    }
    expect(records.every((r) => r.rule === 'stratified')).toBe(true);
  });

  it('acts upstream of the probe hook, so it has no pooled fast path; the edits remove the bias', async () => {
    expect(shift.erasePooled(cache, splits.balanced.rows)).toBeUndefined();
    const before = cache.pooled(PROBE_HOOK, splits.balanced.rows);
    const after = await erasedPooled(shift, splits.balanced);
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
    expect(shift.head).toBeUndefined();
    // The selection, as the run's results record it: the rule, its settings as run, counts per hook.
    const sel = d.selection!;
    expect(d.summary.endsWith(sel.rule)).toBe(true);
    expect(sel.parameters).toMatchObject({ attribution: 'ig', steps: 10, candidates: 100, score: 'abs', minConceptScore: 0.2, dominance: 1, minGroupSize: 5 });
    // 100 attribution examples asked for, of 160 in the training split; the whole concept set (400).
    expect(sel.parameters.examplesUsed).toEqual({ attribution: 100, concept: 400 });
    expect(sel.parameters.conceptRules).toEqual(['stratified']);
    expect(Object.keys(sel.perHook)).toEqual(['embed', PROBE_HOOK]);
    const records = shift.record.selection!;
    for (const h of ['embed', PROBE_HOOK]) {
      expect(sel.perHook[h]).toEqual({ candidates: records.filter((r) => r.hook === h).length, selected: shift.ablatedFeatures()[h]!.length });
    }
    expect(sel.perHook.embed!.candidates).toBeGreaterThan(sel.perHook.embed!.selected);
  });

  it('saves and loads: same features and edits; another SAE width or another SAE is refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shift-save-'));
    saveEraser(shift, dir);
    const loaded = asFeatureAblation(loadEraser(dir, { saes, probeHook: PROBE_HOOK }));
    expect(loaded.method).toBe('shift');
    expect(loaded.head).toBeUndefined();
    expect(loaded.describe()).toEqual(shift.describe());
    expect(loaded.describe().removed).toEqual(shift.describe().removed);
    expect(Array.from(loaded.record.attributions!.embed!.features)).toEqual(Array.from(shift.record.attributions!.embed!.features));
    expect(loaded.record.attributions!.embed!.error).toBe(shift.record.attributions!.embed!.error);
    expect(loaded.record.selection).toEqual(shift.record.selection);
    expect(loaded.record.fields).toEqual(JSON.parse(JSON.stringify(shift.record.fields)));
    const a = pooledWithEdits(model, toyTokenize, splits.balanced.texts.slice(0, 20), PROBE_HOOK, shift.edits());
    const b = pooledWithEdits(model, toyTokenize, splits.balanced.texts.slice(0, 20), PROBE_HOOK, loaded.edits());
    expect(maxAbsDiff(a, b)).toBe(0);
    tf.dispose([a, b]);
    loaded.dispose();
    const wider = { ...saes, embed: axisSae(4, 5) };
    expect(() => loadEraser(dir, { saes: wider })).toThrow(/fitted with an SAE of width 10 \(dSae\), but the SAE given for "embed" has width 12/);
    const other = { ...saes, embed: randomSae(10, 99) };
    expect(() => loadEraser(dir, { saes: other })).toThrow(/not the SAE the eraser was fitted with/);
    expect(() => loadEraser(dir, { saes, probeHook: 'embed' })).toThrow(/fitted for a probe at "layers.0.resid_out", not at "embed"/);
    expect(() => loadEraser(dir)).toThrow(/no SAE is given for that hook/);
    setCheckpointMethod(dir, 'leace');
    expect(() => loadEraser(dir, { saes })).toThrow(/field "method" is "leace"/);
    wider.embed.dispose();
    other.embed.dispose();
  });

  it('refuses a malformed checkpoint, naming the file and the field', () => {
    const dir = mkdtempSync(join(tmpdir(), 'shift-bad-'));
    saveEraser(shift, dir);
    const good = readFileSync(join(dir, 'eraser.json'), 'utf8');
    const withJson = (edit: (json: Record<string, unknown> & { hooks: Record<string, Record<string, unknown>> }) => void): (() => unknown) => {
      writeFileSync(join(dir, 'eraser.json'), good);
      editCheckpointJson(dir, edit as (json: Record<string, unknown>) => void);
      return () => loadEraser(dir, { saes });
    };
    expect(withJson((j) => (j.errorAttribution = { embed: 'large', [PROBE_HOOK]: 1 }))).toThrow(/eraser\.json: field "errorAttribution\.embed": /);
    expect(withJson((j) => (j.errorAttribution = { [PROBE_HOOK]: 1 }))).toThrow(/field "errorAttribution" has no entry for hook "embed"/);
    expect(withJson((j) => (j.notes = 'x'))).toThrow(/eraser\.json: unknown field "notes"/);
    expect(withJson((j) => (j.options = { steps: 0 }))).toThrow(/eraser\.json: field "options\.steps": must be a positive integer/);
    expect(withJson((j) => (j.options = { selection: 'top', dominance: 2 }))).toThrow(/field "options\.dominance": applies only to selection "auto"/);
    expect(withJson((j) => delete j.options)).toThrow(/eraser\.json: field "options": /);
    expect(withJson((j) => (j.plan = { seed: 1, source: 'k', k: 1, hooks: [] }))).toThrow(/unknown field "plan"/);
    expect(withJson((j) => (j.hooks.embed!.features = [0, 'one']))).toThrow(/field "hooks\.embed\.features\[1\]": /);
    expect(withJson((j) => (j.hooks.embed!.dSae = -1))).toThrow(/field "hooks\.embed\.dSae": must be a positive integer/);
    expect(withJson((j) => (j.selection = [{ hook: 'embed', feature: 0 }]))).toThrow(/field "selection\[0\]/);
    expect(withJson((j) => (j.version = 1))).toThrow(/field "version" is 1, an earlier checkpoint layout/);
    // Version 2 (before `supervision` was saved): refused with the remedy, not a missing-field error.
    expect(
      withJson((j) => {
        j.version = 2;
        delete j.supervision;
      }),
    ).toThrow(/field "version" is 2, an earlier checkpoint layout of this format, without the labels the fit read .*refit the eraser/);
    expect(withJson((j) => (j.version = 4))).toThrow(/field "version" is 4; this build reads versions 2 and 3/);
    writeFileSync(join(dir, 'eraser.json'), good);
    editTensorMetadata(dir, (m) => (m.format = 'sae-eraser/affine'));
    expect(() => loadEraser(dir, { saes })).toThrow(
      /field "format" is "sae-eraser\/feature-ablation", but .*eraser\.safetensors was written for format "sae-eraser\/affine"/,
    );
    editTensorMetadata(dir, (m) => delete m.format);
    expect(() => loadEraser(dir, { saes })).toThrow(/was written for format null/);
    editTensorMetadata(dir, (m) => (m.format = 'sae-eraser/feature-ablation'));
    loadEraser(dir, { saes }).dispose();
  });
});

describe('shift at the probe hook only', () => {
  it('has a pooled fast path equal to running the model with its edits', async () => {
    const eraser = await fitShift({ hooks: [PROBE_HOOK], selection: 'top', candidates: 4, steps: 5 });
    expect(eraser.hooks()).toEqual([PROBE_HOOK]);
    expect(eraser.unitsRemoved()).toBe(4);
    const fast = eraser.erasePooled(cache, splits.balanced.rows)!;
    const slow = pooledWithEdits(model, toyTokenize, splits.balanced.texts, PROBE_HOOK, eraser.edits());
    expect(maxAbsDiff(fast, slow)).toBeLessThan(1e-5);
    // The round trip keeps the pooled path exactly.
    const dir = mkdtempSync(join(tmpdir(), 'shift-pooled-'));
    saveEraser(eraser, dir);
    const loaded = loadEraser(dir, { saes });
    const again = loaded.erasePooled(cache, splits.balanced.rows)!;
    expect(maxAbsDiff(fast, again)).toBe(0);
    tf.dispose([fast, slow, again]);
    loaded.dispose();
    eraser.dispose();
  });

  it('with attribution patching (atp), still finds the planted gender features at the embedding', async () => {
    const eraser = await fitShift({ attribution: 'atp' });
    const embed = Array.from(eraser.ablatedFeatures().embed ?? []);
    expect(embed).toEqual(expect.arrayContaining([0, 1]));
    expect(embed).not.toContain(2);
    expect(embed).not.toContain(3);
    expect(eraser.describe().summary).toMatch(/attribution patching/);
    eraser.dispose();
  });

  it('manual selection ablates exactly the listed features, without attribution', async () => {
    const eraser = await fitShift({ selection: 'manual', features: { embed: [1, 0], [PROBE_HOOK]: [5] } });
    expect(Array.from(eraser.ablatedFeatures().embed!)).toEqual([0, 1]);
    expect(Array.from(eraser.ablatedFeatures()[PROBE_HOOK]!)).toEqual([5]);
    expect(Object.keys(eraser.record.attributions!)).toEqual([]);
    const sel = eraser.describe().selection!;
    expect(sel.rule).toBe('features listed in the config');
    expect(sel.perHook).toEqual({ embed: { candidates: 2, selected: 2 }, [PROBE_HOOK]: { candidates: 1, selected: 1 } });
    expect(sel.parameters).toEqual({ selection: 'manual', features: { embed: [1, 0], [PROBE_HOOK]: [5] } });
    eraser.dispose();
  });

  it('rejects unknown or malformed options with a clear message', async () => {
    const parse = (o: Record<string, unknown>): unknown => parseStrict(shiftOptionsSchema, o, 'methods.shift');
    expect(() => parse({ stpes: 3 })).toThrow(/methods.shift: unknown field "stpes"/);
    expect(() => parse({ selection: 'manual' })).toThrow(/needs "features"/);
    expect(() => parse({ features: { embed: [1] } })).toThrow(/"features" is only used with selection "manual"/);
    expect(() => parse({ candidates: 0 })).toThrow(/field "candidates": must be a positive integer/);
    expect(() => parse({ attribution: 'exact' })).toThrow(/field "attribution": .*"ig"\|"atp"/);
    expect(() => parse({ minConceptScore: 1.5 })).toThrow(/field "minConceptScore"/);
    // The random control's and shift_retrain's options are not shift's.
    expect(() => parse({ k: 5 })).toThrow(/unknown field "k"/);
    expect(() => parseMethodOptions('shift', { k: 5 }, 'methods.shift')).toThrow(/methods.shift: unknown field "k"/);
    expect(parseMethodOptions('random', { k: 5 }, 'methods.random').options).toEqual({ k: 5 });
    expect(() => parse({ perHook: {}, seed: 1 })).toThrow(/unknown fields "perHook", "seed"/);
    expect(() => parse({ retrain: {} })).toThrow(/unknown field "retrain"/);
    await expect(fitShift({ selection: 'manual', features: { embed: [10] } })).rejects.toThrow(/feature index 10 is outside \[0, 10\)/);
  });

  it('fills in the documented defaults', () => {
    // Parsing keeps only what the config sets; the fitter resolves the defaults.
    expect(parseStrict(shiftOptionsSchema, {}, 'shift')).toEqual({});
    expect(resolveShiftOptions(parseStrict(shiftOptionsSchema, {}, 'shift'))).toEqual({
      attribution: 'ig',
      steps: 10,
      batchSize: 4,
      stepsPerPass: 1,
      attributionExamples: 100,
      selection: 'auto',
      candidates: 100,
      threshold: 0,
      score: 'abs',
      minConceptScore: 0.2,
      dominance: 1,
      minGroupSize: 5,
      conceptLabels: 'gender+task',
      evalBatchSize: 16,
    });
    expect(parseStrict(shiftRetrainOptionsSchema, {}, 'shift_retrain').retrain).toEqual({});
    expect(() => parseStrict(shiftRetrainOptionsSchema, { retrain: { epoch: 3 } }, 'shift_retrain')).toThrow(/unknown field "retrain.epoch"/);
  });

  it('refuses fields the chosen selection and attribution do not read, naming the field and why', () => {
    const shift = (o: Record<string, unknown>): unknown => parseStrict(shiftOptionsSchema, o, 'methods.shift');
    const retrain = (o: Record<string, unknown>): unknown => parseStrict(shiftRetrainOptionsSchema, o, 'methods.shift_retrain');
    const manual = { selection: 'manual', features: { embed: [0] } };
    // Manual selection runs no attribution, ranking or concept test.
    for (const [field, value] of Object.entries({
      attribution: 'atp',
      steps: 5,
      batchSize: 2,
      stepsPerPass: 2,
      attributionExamples: 10,
      hooks: ['embed'],
      candidates: 5,
      threshold: 0.1,
      score: 'positive',
    })) {
      expect(() => shift({ ...manual, [field]: value })).toThrow(
        new RegExp(`^methods.shift: field "${field}": applies only to selection "auto" or "top" \\(selection is "manual"`),
      );
      expect(() => retrain({ ...manual, [field]: value })).toThrow(new RegExp(`field "${field}": applies only to selection "auto" or "top"`));
    }
    // The concept test runs with "auto" only.
    for (const [field, value] of Object.entries({ minConceptScore: 0.3, dominance: 2, minGroupSize: 3, conceptExamples: 50 })) {
      for (const selection of ['top', 'manual']) {
        const o = selection === 'manual' ? manual : { selection };
        expect(() => shift({ ...o, [field]: value })).toThrow(
          new RegExp(`field "${field}": applies only to selection "auto", which runs the concept test \\(selection is "${selection}"\\)`),
        );
      }
      expect(shift({ [field]: value })).toEqual({ [field]: value });
    }
    // Attribution patching takes no interpolation steps.
    expect(() => shift({ attribution: 'atp', steps: 5 })).toThrow(/field "steps": applies only to attribution "ig" \(attribution is "atp"\)/);
    expect(() => shift({ attribution: 'atp', stepsPerPass: 2 })).toThrow(/field "stepsPerPass": applies only to attribution "ig"/);
    expect(shift({ attribution: 'atp', batchSize: 8, attributionExamples: 20 })).toEqual({ attribution: 'atp', batchSize: 8, attributionExamples: 20 });
    expect(shift({ attribution: 'ig', steps: 5, stepsPerPass: 5 })).toEqual({ attribution: 'ig', steps: 5, stepsPerPass: 5 });
    // evalBatchSize batches the concept test and shift_retrain's head retraining; plain shift with top or manual runs neither.
    expect(() => shift({ selection: 'top', evalBatchSize: 8 })).toThrow(
      /field "evalBatchSize": applies only to selection "auto" \(the concept test\) or to shift_retrain/,
    );
    expect(() => shift({ ...manual, evalBatchSize: 8 })).toThrow(/field "evalBatchSize"/);
    expect(shift({ evalBatchSize: 8 })).toEqual({ evalBatchSize: 8 });
    expect(retrain({ ...manual, evalBatchSize: 8 })).toMatchObject({ evalBatchSize: 8 });
    expect(retrain({ selection: 'top', evalBatchSize: 8, candidates: 3 })).toMatchObject({ evalBatchSize: 8, candidates: 3 });
    // Every problem at once.
    expect(() => shift({ ...manual, steps: 5, dominance: 2 })).toThrow(/field "steps": .*; field "dominance": /);
  });

  it('records the options it read, defaults included, in its checkpoint', async () => {
    const eraser = await fitShift({ hooks: [PROBE_HOOK], selection: 'top', candidates: 4, attribution: 'atp' });
    const dir = mkdtempSync(join(tmpdir(), 'shift-options-'));
    saveEraser(eraser, dir);
    const json = JSON.parse(readFileSync(join(dir, 'eraser.json'), 'utf8')) as { options: unknown };
    expect(json.options).toEqual({
      attribution: 'atp',
      batchSize: 4,
      attributionExamples: 100,
      hooks: [PROBE_HOOK],
      selection: 'top',
      candidates: 4,
      threshold: 0,
      score: 'abs',
    });
    const loaded = asFeatureAblation(loadEraser(dir, { saes }));
    expect(loaded.record.fields).toEqual({ options: json.options });
    loaded.dispose();
    eraser.dispose();
  });
});

describe('shift_retrain', () => {
  it('retrains the head on the ablated ambiguous train set; the head survives save/load', async () => {
    const eraser = await createShiftFitter(
      'shift_retrain',
      parseStrict(shiftRetrainOptionsSchema, { retrain: { epochs: 40, batchSize: 32 } }, 'shift_retrain'),
    ).fit(context());
    expect(eraser.method).toBe('shift_retrain');
    const head = eraser.head!;
    expect(head).toBeDefined();
    expect(head).not.toBe(probe);
    const X = await erasedPooled(eraser, splits.balanced);
    const acc = groupAccuracies(head, X, splits.balanced);
    expect(Math.min(...acc)).toBeGreaterThan(0.8);
    // The head is the biased probe's recipe with the overrides, trained on the ablated training set.
    const Xtrain = await erasedPooled(eraser, splits.train);
    const manual = new LinearProbe(D, 2, { ...probe.options, progressLabel: undefined, epochs: 40, batchSize: 32 });
    manual.fit(Xtrain, splits.train.y);
    const zManual = manual.logits(X);
    const dir = mkdtempSync(join(tmpdir(), 'shift-retrain-'));
    saveEraser(eraser, dir);
    const loaded = loadEraser(dir, { saes });
    expect(loaded.method).toBe('shift_retrain');
    expect(loaded.describe()).toEqual(eraser.describe());
    const z1 = head.logits(X);
    const z2 = loaded.head!.logits(X);
    expect(maxAbsDiff(z1, z2)).toBe(0);
    expect(maxAbsDiff(z1, zManual)).toBe(0);
    editCheckpointJson(dir, (j) => (j.head = null));
    expect(() => loadEraser(dir, { saes })).toThrow(/a shift_retrain checkpoint needs its retrained head \(field "head" is null\)/);
    tf.dispose([X, Xtrain, z1, z2, zManual]);
    manual.dispose();
    loaded.dispose();
    eraser.dispose();
    const plain = await fitShift({ selection: 'manual', features: { embed: [0] } });
    expect(plain.head).toBeUndefined();
    plain.dispose();
  });
});

describe('random', () => {
  it('draws k features from all eligible hooks, reproducibly from the seed', async () => {
    const [a, b, c] = [await fitRandom({ k: 5, seed: 1 }), await fitRandom({ k: 5, seed: 1 }), await fitRandom({ k: 5, seed: 2 })];
    expect(a.unitsRemoved()).toBe(5);
    expect(a.describe().removed).toEqual(b.describe().removed);
    expect(a.describe().removed).not.toEqual(c.describe().removed);
    for (const h of a.hooks()) expect(['embed', PROBE_HOOK]).toContain(h);
    [a, b, c].forEach((e) => e.dispose());
  });

  it('matches per-hook counts and uses the same edit as SHIFT (pooled path = token path)', async () => {
    const e = await fitRandom({ perHook: { [PROBE_HOOK]: 3 } });
    expect(e.hooks()).toEqual([PROBE_HOOK]);
    expect(e.ablatedFeatures()[PROBE_HOOK]!.length).toBe(3);
    const fast = e.erasePooled(cache, splits.balanced.rows)!;
    const slow = pooledWithEdits(model, toyTokenize, splits.balanced.texts, PROBE_HOOK, e.edits());
    expect(maxAbsDiff(fast, slow)).toBeLessThan(1e-5);
    const dir = mkdtempSync(join(tmpdir(), 'random-save-'));
    saveEraser(e, dir);
    const loaded = asFeatureAblation(loadEraser(dir, { saes }));
    expect(loaded.describe()).toEqual({ ...e.describe() });
    // Drawn from all 10 features of the hook's SAE.
    expect(e.describe().selection!.perHook).toEqual({ [PROBE_HOOK]: { candidates: 10, selected: 3 } });
    expect(e.describe().selection!.parameters).toMatchObject({ source: 'perHook', perHook: { [PROBE_HOOK]: 3 } });
    // One loader for the family: the checkpoint comes back as the random control, not as SHIFT.
    expect(loaded.method).toBe('random');
    expect(loaded.head).toBeUndefined();
    expect(loaded.record.fields).toEqual(e.record.fields);
    const again = loaded.erasePooled(cache, splits.balanced.rows)!;
    expect(maxAbsDiff(fast, again)).toBe(0);
    tf.dispose([fast, slow, again]);
    loaded.dispose();
    e.dispose();
  });

  it('without k or perHook, removes as many features per hook as SHIFT does', async () => {
    const shift = await fitShift({ steps: 5 });
    const e = await fitRandom({ steps: 5 });
    const counts = (x: FeatureAblationEraser): Record<string, number> => Object.fromEntries(Object.entries(x.ablatedFeatures()).map(([h, f]) => [h, f.length]));
    expect(counts(e)).toEqual(counts(shift));
    expect(e.describe().summary).toMatch(/matching the per-hook counts SHIFT selects/);
    shift.dispose();
    e.dispose();
  });

  it('refuses k together with perHook, and malformed counts', () => {
    const parse = (o: Record<string, unknown>): unknown => parseStrict(randomOptionsSchema, o, 'methods.random');
    expect(() => parse({ k: 3, perHook: { embed: 2 } })).toThrow(/"perHook" and "k" are exclusive/);
    expect(() => parse({ k: -1 })).toThrow(/field "k"/);
    expect(() => parse({ perHook: { embed: 1.5 } })).toThrow(/field "perHook.embed"/);
    expect(() => parse({ seed: 'x' })).toThrow(/field "seed"/);
    expect(() => parse({ retrain: {} })).toThrow(/unknown field "retrain"/);
  });

  it("refuses SHIFT's fields once the counts are given, and hooks with perHook", () => {
    const parse = (o: Record<string, unknown>): unknown => parseStrict(randomOptionsSchema, o, 'methods.random');
    for (const counts of [{ k: 3 }, { perHook: { embed: 2 } }]) {
      const given = 'k' in counts ? '"k"' : '"perHook"';
      for (const [field, value] of Object.entries({ steps: 5, selection: 'top', candidates: 4, minConceptScore: 0.3, evalBatchSize: 8, attribution: 'atp' })) {
        expect(() => parse({ ...counts, [field]: value })).toThrow(
          new RegExp(`^methods.random: field "${field}": applies only when SHIFT chooses the counts, without "k" or "perHook" \\(${given} is given\\)`),
        );
      }
      expect(parse({ ...counts, seed: 3 })).toEqual({ ...counts, seed: 3 });
    }
    // k draws from `hooks`; perHook names its own.
    expect(parse({ k: 3, hooks: ['embed'] })).toEqual({ k: 3, hooks: ['embed'] });
    expect(() => parse({ perHook: { embed: 2 }, hooks: ['embed'] })).toThrow(/field "hooks": applies only with "k" .*"perHook" names its own hooks/);
    // Without counts, SHIFT's own rules apply.
    expect(parse({ selection: 'top', candidates: 4, hooks: ['embed'] })).toEqual({ selection: 'top', candidates: 4, hooks: ['embed'] });
    expect(() => parse({ selection: 'top', dominance: 2 })).toThrow(/field "dominance": applies only to selection "auto"/);
    expect(() => parse({ attribution: 'atp', steps: 3 })).toThrow(/field "steps": applies only to attribution "ig"/);
    expect(() => parse({ selection: 'top', evalBatchSize: 8 })).toThrow(/field "evalBatchSize"/);
  });
});

describe('supervision', () => {
  const fitAudited = async (
    method: 'shift' | 'shift_retrain' | 'random',
    options: Record<string, unknown>,
    ctx: FitContext = context(),
  ): Promise<{ eraser: Eraser; reads: Set<string> }> => {
    const audit = auditedContext(ctx);
    const fitter =
      method === 'random'
        ? createRandomFitter(parseStrict(randomOptionsSchema, options, 'random'))
        : method === 'shift'
          ? createShiftFitter('shift', parseStrict(shiftOptionsSchema, options, 'shift'))
          : createShiftFitter('shift_retrain', parseStrict(shiftRetrainOptionsSchema, options, 'shift_retrain'));
    return { eraser: await fitter.fit(audit.ctx), reads: audit.reads };
  };
  const manual = { selection: 'manual', features: { embed: [0, 1] } };

  it('depends on the selection: concept labels only with "auto", task ones only with conceptLabels "gender+task"', () => {
    const of = (o: Record<string, unknown>): unknown => shiftSupervision(resolveShiftOptions(parseStrict(shiftOptionsSchema, o, 'shift')));
    expect(of({})).toEqual({ labels: ['ambiguous_task', 'concept_gender', 'concept_task'], handPicked: false });
    expect(of({ conceptLabels: 'gender' })).toEqual({ labels: ['ambiguous_task', 'concept_gender'], handPicked: false });
    expect(of({ selection: 'top' })).toEqual({ labels: ['ambiguous_task'], handPicked: false });
    expect(of(manual)).toEqual({ labels: ['ambiguous_task'], handPicked: true });
  });

  it('states what each selection read, and survives save and load', async () => {
    const cases: [string, 'shift' | 'shift_retrain' | 'random', Record<string, unknown>, { labels: string[]; handPicked: boolean }][] = [
      ['auto', 'shift', { steps: 3 }, { labels: ['ambiguous_task', 'concept_gender', 'concept_task'], handPicked: false }],
      ['auto, gender only', 'shift', { steps: 3, conceptLabels: 'gender' }, { labels: ['ambiguous_task', 'concept_gender'], handPicked: false }],
      ['top', 'shift', { steps: 3, selection: 'top', candidates: 4 }, { labels: ['ambiguous_task'], handPicked: false }],
      ['manual', 'shift', manual, { labels: ['ambiguous_task'], handPicked: true }],
      [
        'retrain, gender only',
        'shift_retrain',
        { attribution: 'atp', conceptLabels: 'gender' },
        { labels: ['ambiguous_task', 'concept_gender'], handPicked: false },
      ],
      ['retrain, manual', 'shift_retrain', manual, { labels: ['ambiguous_task'], handPicked: true }],
      // The random control inherits what SHIFT's counts were chosen with, and nothing else.
      ['random k', 'random', { k: 3 }, { labels: ['ambiguous_task'], handPicked: false }],
      ['random, SHIFT auto counts', 'random', { attribution: 'atp' }, { labels: ['ambiguous_task', 'concept_gender', 'concept_task'], handPicked: false }],
      [
        'random, SHIFT gender-only counts',
        'random',
        { attribution: 'atp', conceptLabels: 'gender' },
        { labels: ['ambiguous_task', 'concept_gender'], handPicked: false },
      ],
      ['random, manual SHIFT counts', 'random', manual, { labels: ['ambiguous_task'], handPicked: true }],
    ];
    for (const [name, method, options, want] of cases) {
      const { eraser, reads } = await fitAudited(method, options);
      expect(eraser.describe().supervision, name).toEqual(want);
      expectStatedReads(eraser, reads);
      const dir = mkdtempSync(join(tmpdir(), 'shift-supervision-'));
      saveEraser(eraser, dir);
      const loaded = loadEraser(dir, { saes });
      expect(loaded.describe().supervision, name).toEqual(want);
      loaded.dispose();
      eraser.dispose();
    }
  });

  it("the gender-only rule never reads the concept set's task labels: the same selection whatever they are", async () => {
    const concept = splits.concept;
    // y that throws when read, all zeros, or random: the selection cannot depend on them.
    const throwing: LabelledSplit = {
      rows: concept.rows,
      texts: concept.texts,
      z: concept.z,
      get y(): Int32Array {
        throw new Error("the concept set's task labels were read");
      },
    };
    const zeros = { ...concept, y: new Int32Array(concept.y.length) };
    const options = { conceptLabels: 'gender', minConceptScore: 0.3, conceptExamples: 300 };
    const fits = await Promise.all(
      [concept, throwing, zeros].map((c) => createShiftFitter('shift', parseStrict(shiftOptionsSchema, options, 'shift')).fit(context({ concept: c }))),
    );
    const [base, ...others] = fits.map(asFeatureAblation);
    for (const other of others) {
      expect(other.describe().removed).toEqual(base!.describe().removed);
      expect(other.record.selection).toEqual(base!.record.selection);
    }
    const records = base!.record.selection as SelectionRecord[];
    expect(records.length).toBeGreaterThan(0);
    for (const r of records) {
      expect(r.rule).toBe('concept_only');
      expect(r).not.toHaveProperty('taskScore');
    }
    expect(base!.describe().summary).toMatch(/from its gender labels alone \(no task labels, no dominance test\)/);
    // The default rule does read them.
    const reading = createShiftFitter('shift', parseStrict(shiftOptionsSchema, {}, 'shift'));
    await expect(reading.fit(context({ concept: throwing }))).rejects.toThrow(/task labels were read/);
    fits.forEach((e) => e.dispose());
  });

  it('differs from the default rule where it should: profession features correlated with gender pass it', async () => {
    // 75% of the concept set is stereotypical, so the profession axes (features 2, 3) separate genders marginally.
    const both = await fitShift({ steps: 3 });
    const gender = await fitShift({ steps: 3, conceptLabels: 'gender' });
    const at = (e: FeatureAblationEraser, hook: HookName): number[] => Array.from(e.ablatedFeatures()[hook] ?? []);
    for (const hook of ['embed', PROBE_HOOK]) {
      expect(at(both, hook)).not.toContain(2);
      expect(at(both, hook)).not.toContain(3);
      expect(at(gender, hook)).toEqual(expect.arrayContaining([0, 1, 2, 3]));
    }
    // Above the profession axes' marginal association (about 0.5 at the embedding), only the gender axes pass there.
    const strict = await fitShift({ steps: 3, conceptLabels: 'gender', minConceptScore: 0.8 });
    expect(at(strict, 'embed')).toEqual([0, 1]);
    [both, gender, strict].forEach((e) => e.dispose());
  });

  it('conceptLabels: with selection "auto" only; "gender" refuses dominance; recorded in the checkpoint options', async () => {
    const parse = (o: Record<string, unknown>): unknown => parseStrict(shiftOptionsSchema, o, 'methods.shift');
    expect(() => parse({ selection: 'top', conceptLabels: 'gender' })).toThrow(/field "conceptLabels": applies only to selection "auto"/);
    expect(() => parse({ conceptLabels: 'gender', dominance: 2 })).toThrow(/field "dominance": applies only to conceptLabels "gender\+task"/);
    expect(() => parse({ conceptLabels: 'task' })).toThrow(/field "conceptLabels"/);
    expect(parse({ conceptLabels: 'gender', minGroupSize: 3 })).toEqual({ conceptLabels: 'gender', minGroupSize: 3 });
    expect(parse({ conceptLabels: 'gender+task', dominance: 2 })).toEqual({ conceptLabels: 'gender+task', dominance: 2 });
    const eraser = await fitShift({ attribution: 'atp', conceptLabels: 'gender' });
    expect(eraser.record.fields?.options).toMatchObject({ conceptLabels: 'gender', minConceptScore: 0.2, minGroupSize: 5 });
    expect(eraser.record.fields?.options).not.toHaveProperty('dominance');
    const auto = await fitShift({ attribution: 'atp' });
    expect(auto.record.fields?.options).toMatchObject({ conceptLabels: 'gender+task', dominance: 1 });
    [eraser, auto].forEach((e) => e.dispose());
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
    const e = await fitRandom({ perHook: { embed: 2, [PROBE_HOOK]: 2 } });
    const edits = e.edits();
    const run = (): void => pooledWithEdits(model, toyTokenize, splits.balanced.texts.slice(0, 9), PROBE_HOOK, edits, { batchSize: 4 }).dispose();
    run();
    const before = tf.memory().numTensors;
    run();
    expect(tf.memory().numTensors).toBe(before);
    e.dispose();
  });
});

describe('the registry states what a fit reads', () => {
  it("equals the fitted eraser's describe() for each option set, and tells the concept-free ones", async () => {
    const cases: [string, Record<string, unknown>, boolean][] = [
      ['shift', { steps: 5 }, false],
      ['shift', { steps: 5, conceptLabels: 'gender' }, false],
      ['shift', { selection: 'top', candidates: 3, steps: 5 }, true],
      ['shift', { selection: 'manual', features: { embed: [1] } }, true],
      ['random', { k: 3 }, true],
      ['random', { perHook: { embed: 2 } }, true],
      ['random', { steps: 5 }, false],
      ['leace', {}, false],
    ];
    for (const [method, options, conceptFree] of cases) {
      const parsed = parseMethodOptions(method as 'shift', options, `methods.${method}`);
      const eraser = await createFitter(parsed).fit(context());
      const where = `${method} ${JSON.stringify(options)}`;
      expect(methodSupervision(parsed), where).toEqual(eraser.describe().supervision);
      expect(isConceptFree(parsed), where).toBe(conceptFree);
      eraser.dispose();
    }
    // The probes the runner trains: the original on the ambiguous task labels, the oracle on the balanced ones.
    expect(methodSupervision(parseMethodOptions('original', {}, 'methods.original'))).toEqual(supervision(['ambiguous_task']));
    expect(methodSupervision(parseMethodOptions('oracle', {}, 'methods.oracle'))).toEqual(supervision(['balanced_task']));
    expect(isConceptFree(parseMethodOptions('sae_mask', { objective: 'task' }, 'methods.sae_mask'))).toBe(true);
    expect(isConceptFree(parseMethodOptions('sae_mask', { objective: 'concept' }, 'methods.sae_mask'))).toBe(false);
  });
});
