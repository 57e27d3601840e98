/**
 * The explorer's affine form against real erasers on the toy SAE problem: for SHIFT (biased head)
 * and SHIFT with a retrained head it reproduces the metrics the erased representations score, and
 * a method whose recorded metrics it cannot reproduce is excluded with the reason.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { ActivationCache, buildActivationCache } from '../../src/cache/cache.js';
import { erasedPooled } from '../../src/erasure/erased.js';
import type { Eraser, FitContext, LabelledSplit } from '../../src/erasure/eraser.js';
import { createShiftFitter, shiftOptionsSchema, shiftRetrainOptionsSchema } from '../../src/erasure/shift.js';
import { accuracy, genderAgreement, worstGroup, type Interval } from '../../src/eval/metrics.js';
import {
  addPromotedTokens,
  addTokenActivations,
  displayPiece,
  ExplorerCollector,
  explorerMetrics,
  explorerPredictions,
} from '../../src/experiment/explorer-data.js';
import type { MethodSeedResult } from '../../src/experiment/results.js';
import type { Model } from '../../src/models/model.js';
import { LinearProbe } from '../../src/probe/linear.js';
import type { Probe } from '../../src/probe/probe.js';
import { parseStrict } from '../../src/util/schema.js';
import { D, ToyModel, VOCAB, axisSae, plantedSplits, toyTokenize, type PlantedSplits, type ToySae } from '../erasure/sae-toy.js';

const HOOK = 'layers.0.resid_out';
let model: ToyModel;
let sae: ToySae;
let splits: PlantedSplits;
let cache: ActivationCache;
let probe: LinearProbe;
let testSplits: Record<string, LabelledSplit>;

/** A split's subset where (y, z) is one group. */
function group(split: LabelledSplit, y: number, z: number): LabelledSplit {
  const keep = Array.from(split.rows.keys()).filter((i) => split.y[i] === y && split.z[i] === z);
  return {
    rows: Int32Array.from(keep, (i) => split.rows[i]!),
    y: Int32Array.from(keep, (i) => split.y[i]!),
    z: Int32Array.from(keep, (i) => split.z[i]!),
    texts: keep.map((i) => split.texts[i]!),
  };
}

beforeAll(async () => {
  await initEngine();
  model = new ToyModel({ nLayers: 1, seed: 42 });
  sae = axisSae(2, 6);
  splits = plantedSplits({ seed: 42 });
  cache = await buildActivationCache(
    { modelId: 'toy', hooks: [HOOK], tokenizerId: 'toy', texts: splits.texts, saes: { [HOOK]: { sae, id: 'resid' } } },
    { model, tokenize: toyTokenize, root: mkdtempSync(join(tmpdir(), 'explorer-cache-')), batchSize: 64 },
  );
  probe = new LinearProbe(D, 2, { epochs: 40, batchSize: 32 });
  const X = cache.pooled(HOOK, splits.train.rows);
  probe.fit(X, splits.train.y);
  X.dispose();
  const b = splits.balanced;
  testSplits = { balanced: b, male_surgeon: group(b, 0, 0), female_surgeon: group(b, 0, 1), male_nurse: group(b, 1, 0), female_nurse: group(b, 1, 1) };
});

afterAll(() => {
  probe.dispose();
  sae.dispose();
  model.dispose();
});

function context(): FitContext {
  return {
    model,
    tokenize: toyTokenize,
    cache,
    recache: () => Promise.reject(new Error('not used')),
    batchSize: 64,
    saes: { [HOOK]: sae },
    probeHook: HOOK,
    probe,
    train: splits.train,
    concept: splits.concept,
    seed: 42,
  };
}

/** Scores `head` on the eraser's erased test splits, as the runner does. */
async function scored(eraser: Eraser | undefined, head: Probe): Promise<MethodSeedResult> {
  const accs: Record<string, Interval> = {};
  let balanced: { pred: Int32Array; split: LabelledSplit } | undefined;
  for (const [name, split] of Object.entries(testSplits)) {
    const X = await erasedPooled(eraser, split, context());
    const pred = head.predict(X);
    X.dispose();
    if (name === 'balanced') balanced = { pred, split };
    else accs[name] = accuracy(pred, split.y);
  }
  return {
    seed: 42,
    profession_acc: accuracy(balanced!.pred, balanced!.split.y),
    gender_agreement: genderAgreement(balanced!.pred, balanced!.split.z),
    worst_group_acc: worstGroup(accs),
    subgroup_acc: accs,
    gender_probe_acc: accuracy(balanced!.pred, balanced!.split.z),
    units_removed: 0,
    seconds: 0,
    summary: '',
    supervision: { labels: ['ambiguous_task'], handPicked: false },
  };
}

describe('explorer data', () => {
  it('reproduces the recorded metrics of SHIFT (biased head) and SHIFT with a retrained head, and of the unedited probe', async () => {
    const shift = await createShiftFitter('shift', parseStrict(shiftOptionsSchema, {}, 'shift')).fit(context());
    const retrain = await createShiftFitter('shift_retrain', parseStrict(shiftRetrainOptionsSchema, {}, 'shift_retrain')).fit(context());
    try {
      const features = (e: Eraser): number[] => e.describe().removed[HOOK]!.indices!;
      expect(features(shift).length).toBeGreaterThan(0);
      const collector = new ExplorerCollector(42, HOOK, sae, cache, testSplits, ['surgeon', 'nurse']);
      collector.addHead('original', probe);
      collector.addHead('shift_retrain', retrain.head!);
      const results = { original: await scored(undefined, probe), shift: await scored(shift, probe), shift_retrain: await scored(retrain, retrain.head!) };
      collector.addMethod('original', 'original', [], results.original);
      collector.addMethod('shift', 'original', features(shift), results.shift);
      collector.addMethod('shift_retrain', 'shift_retrain', features(retrain), results.shift_retrain);
      // A wrong head for shift_retrain's recorded metrics: not reproduced unless the heads agree everywhere.
      collector.addMethod('wrong_head', 'original', features(retrain), results.shift_retrain);
      const data = collector.build(splits.concept, splits.texts, 4);

      expect(Object.keys(data.methods).sort()).toEqual(['original', 'shift', 'shift_retrain']);
      expect(data.excluded.wrong_head).toMatch(/the affine form gives .* but the method scored/);
      for (const method of ['original', 'shift', 'shift_retrain'] as const) {
        const { head, features: removed } = data.methods[method]!;
        const got = explorerMetrics(data, head, removed);
        const r = results[method];
        expect(got.values.profession_acc, method).toBe(r.profession_acc.value);
        expect(got.values.gender_agreement, method).toBe(r.gender_agreement.value);
        expect(got.values.worst_group_acc, method).toBe(r.worst_group_acc.value);
        expect(got.worstGroup, method).toBe(r.worst_group_acc.group);
      }
      // The erasure changed something, so toggling features in the page changes predictions.
      const before = explorerPredictions(data, 'original', []);
      const after = explorerPredictions(data, 'original', data.methods.shift!.features);
      expect(before.some((p, i) => p !== after[i])).toBe(true);
      // Listed features: every removed one, then the top by gender score; the rows are the test texts.
      for (const f of data.methods.shift!.features) expect(data.features.map((x) => x.index)).toContain(f);
      expect(data.features.length).toBeGreaterThanOrEqual(4);
      expect(data.texts.length).toBe(new Set(testSplits.balanced!.rows).size);
      expect(data.features.every((f) => f.codes.length === data.texts.length)).toBe(true);
      // JSON round trip keeps the numbers (float32 values are exact in JSON).
      const back = JSON.parse(JSON.stringify(data)) as typeof data;
      expect(explorerMetrics(back, 'original', data.methods.shift!.features)).toEqual(explorerMetrics(data, 'original', data.methods.shift!.features));
    } finally {
      shift.dispose();
      retrain.dispose();
    }
  });

  it('refuses a feature that is not listed and a head that was not added, and leaks no tensors', () => {
    const collector = new ExplorerCollector(42, HOOK, sae, cache, testSplits, ['surgeon', 'nurse']);
    expect(() => collector.addMethod('x', 'nope', [], {} as MethodSeedResult)).toThrow(/head "nope" was not added/);
    const tensors = tf.memory().numTensors;
    collector.addHead('original', probe);
    const data = collector.build(splits.concept, splits.texts, 2);
    expect(tf.memory().numTensors, 'tensors leaked by addHead/build').toBe(tensors);
    expect(() => explorerMetrics(data, 'original', [999])).toThrow(/feature 999 is not listed/);
  });

  it('adds per-token codes for the top texts of each listed feature, whose mean over the tokens is the pooled code', () => {
    const collector = new ExplorerCollector(42, HOOK, sae, cache, testSplits, ['surgeon', 'nurse']);
    collector.addHead('original', probe);
    const data = collector.build(splits.concept, splits.texts, 4);
    const tensors = tf.memory().numTensors;
    addTokenActivations(data, { model, tokenize: toyTokenize, piece: (id) => ` ${VOCAB[id]}`, sae, batchSize: 16 }, 3);
    expect(tf.memory().numTensors, 'tensors leaked').toBe(tensors);
    const tokens = data.tokens!;
    let checked = 0;
    data.features.forEach((f) => {
      const top = f.codes
        .map((code, row) => ({ code, row }))
        .filter((x) => x.code > 0)
        .sort((a, b) => b.code - a.code)
        .slice(0, 3);
      for (const { code, row } of top) {
        const t = tokens[String(row)]!;
        expect(t.pieces.join('').trim()).toBe(data.texts[row]);
        const acts = t.acts[String(f.index)]!;
        expect(acts).toHaveLength(t.pieces.length);
        expect(acts.reduce((a, b) => a + b, 0) / acts.length).toBeCloseTo(code, 4);
        checked++;
      }
    });
    expect(checked).toBeGreaterThan(0);
  });

  it('shows vocabulary entries as they read in text', () => {
    expect(['un', '##believ', '##able'].map((t) => displayPiece(t, 'WordPiece')).join('')).toBe(' unbelievable');
    expect(['ĠThe', 'Ġnurse', "'s"].map((t) => displayPiece(t, 'BPE')).join('')).toBe(" The nurse's");
    expect(displayPiece(undefined, 'BPE')).toBe(' ?');
  });

  it('lists the tokens each feature direction promotes through an unembedding, and nothing for an encoder', () => {
    const collector = new ExplorerCollector(42, HOOK, sae, cache, testSplits, ['surgeon', 'nurse']);
    collector.addHead('original', probe);
    const data = collector.build(splits.concept, splits.texts, 4);
    const encoder: Model = model;
    addPromotedTokens(data, { model: encoder, piece: (id) => `t${id}`, sae });
    expect(data.promotes).toBeUndefined();
    // An unembedding that is the identity on the first D of 2D tokens: a direction promotes the tokens of its largest components.
    const unembed = { directionLogits: (d: tf.Tensor2D) => tf.concat([d, tf.zerosLike(d)], 1) as tf.Tensor2D };
    addPromotedTokens(data, { model: unembed, piece: (id) => `t${id}`, sae }, 3);
    const rows = sae.decoderDirections().arraySync();
    for (const f of data.features) {
      const row = rows[f.index]!;
      const best = row.indexOf(Math.max(...row.slice(0, D)));
      expect(data.promotes![String(f.index)]).toHaveLength(3);
      expect(data.promotes![String(f.index)]![0], `feature ${f.index}`).toBe(`t${best}`);
    }
  });
});
