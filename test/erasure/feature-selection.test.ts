import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../../src/engine/engine.js';
import { buildActivationCache, type ActivationCache } from '../../src/cache/cache.js';
import { mulberry32, randomNormal } from '../../src/data/prng.js';
import type { RankedFeature } from '../../src/erasure/attribution.js';
import {
  associationDesign,
  cachedSaeWidth,
  conceptFeatureColumns,
  rankBiserial,
  selectConceptFeatures,
  selectConceptOnlyFeatures,
} from '../../src/erasure/feature-selection.js';
import { ToyModel, axisSae, plantedSplits, toyTokenize, type PlantedSplits, type ToySae } from './sae-toy.js';

beforeAll(async () => {
  await initEngine();
});

/** 2 AUC - 1 by counting pairs (ties count one half): the definition, O(n0 n1). */
function pairCountRankBiserial(values: number[], labels: number[]): number {
  let wins = 0;
  let pairs = 0;
  for (let i = 0; i < values.length; i++) {
    if (labels[i] !== 1) continue;
    for (let j = 0; j < values.length; j++) {
      if (labels[j] !== 0) continue;
      pairs++;
      if (values[i]! > values[j]!) wins += 1;
      else if (values[i] === values[j]) wins += 0.5;
    }
  }
  return (2 * wins) / pairs - 1;
}

describe('rankBiserial', () => {
  it('equals 2 AUC - 1 counted over pairs, with ties (sparse values)', () => {
    const rng = mulberry32(3);
    for (let trial = 0; trial < 5; trial++) {
      const n = 40 + trial * 17;
      const labels = Array.from({ length: n }, () => (rng() < 0.4 ? 1 : 0));
      // Many exact zeros, as pooled sparse features have, plus repeated values.
      const values = labels.map((l) => (rng() < 0.5 ? 0 : Math.round((rng() + 0.3 * l) * 4) / 4));
      expect(rankBiserial(values, labels)).toBeCloseTo(pairCountRankBiserial(values, labels), 10);
    }
  });

  it('is +1 / -1 for perfect separation, NaN with one class, and respects the subset', () => {
    expect(rankBiserial([0, 0, 1, 2], [0, 0, 1, 1])).toBe(1);
    expect(rankBiserial([3, 4, 1, 2], [0, 0, 1, 1])).toBe(-1);
    expect(rankBiserial([1, 2], [1, 1])).toBeNaN();
    expect(rankBiserial([9, 0, 1, 5], [1, 0, 1, 0], [1, 2])).toBe(1);
  });
});

/** Natural-distribution labels: y uniform, z = y with probability `agree`. */
function naturalLabels(n: number, agree: number, seed: number): { y: Int32Array; z: Int32Array } {
  const rng = mulberry32(seed);
  const y = new Int32Array(n);
  const z = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = rng() < 0.5 ? 0 : 1;
    z[i] = rng() < agree ? y[i]! : 1 - y[i]!;
  }
  return { y, z };
}

/** A sparse pooled feature: zero with probability 1 - pActive, else |N(mean, 0.3)|. */
function sparseFeature(n: number, seed: number, activeFor: (i: number) => number): Float32Array {
  const rng = mulberry32(seed);
  return Float32Array.from({ length: n }, (_, i) => (rng() < activeFor(i) ? Math.abs(randomNormal(rng, 1, 0.3)) : 0));
}

describe('selectConceptFeatures', () => {
  const n = 800;
  const { y, z } = naturalLabels(n, 0.85, 7);
  const features: { name: string; values: Float32Array; isConcept: boolean }[] = [
    { name: 'she', values: sparseFeature(n, 1, (i) => (z[i] === 1 ? 0.7 : 0.02)), isConcept: true },
    { name: 'his', values: sparseFeature(n, 2, (i) => (z[i] === 0 ? 0.5 : 0.03)), isConcept: true },
    { name: 'female names (weak)', values: sparseFeature(n, 3, (i) => (z[i] === 1 ? 0.3 : 0.05)), isConcept: true },
    { name: 'nursing', values: sparseFeature(n, 4, (i) => (y[i] === 1 ? 0.8 : 0.05)), isConcept: false },
    { name: 'surgery', values: sparseFeature(n, 5, (i) => (y[i] === 0 ? 0.6 : 0.02)), isConcept: false },
    { name: 'nursing, a bit more often in women', values: sparseFeature(n, 6, (i) => (y[i] === 1 ? 0.7 : 0.05) + (z[i] === 1 ? 0.08 : 0)), isConcept: false },
    { name: 'noise', values: sparseFeature(n, 7, () => 0.3), isConcept: false },
  ];
  const candidates: RankedFeature[] = features.map((_, i) => ({ hook: 'embed', feature: i, attribution: 1 - i / 10 }));

  it('keeps exactly the planted concept features among task distractors', () => {
    const records = selectConceptFeatures(
      candidates,
      features.map((f) => f.values),
      y,
      z,
    );
    records.forEach((r, i) =>
      expect(r.selected, `${features[i]!.name}: concept ${r.conceptScore.toFixed(2)}, task ${r.taskScore!.toFixed(2)}`).toBe(features[i]!.isConcept),
    );
    expect(records.every((r) => r.rule === 'stratified')).toBe(true);
    // The records carry the candidate's identity and attribution through.
    expect(records[3]).toMatchObject({ hook: 'embed', feature: 3, attribution: candidates[3]!.attribution });
  });

  it('needs the stratification: marginally, task features look associated with the concept', () => {
    // With 85% agreement a pure profession feature separates genders too, marginally.
    expect(Math.abs(rankBiserial(features[3]!.values, z))).toBeGreaterThan(0.3);
    const records = selectConceptFeatures(
      candidates,
      features.map((f) => f.values),
      y,
      z,
    );
    expect(records[3]!.conceptScore).toBeLessThan(0.15);
  });

  it('follows its thresholds: minConceptScore drops weak features, dominance rejects mixed ones', () => {
    const columns = features.map((f) => f.values);
    const strict = selectConceptFeatures(candidates, columns, y, z, { minConceptScore: 0.4 });
    expect(strict.filter((r) => r.selected).map((r) => r.feature)).toEqual([0, 1]);
    // Without the dominance test, the nursing feature that fires a bit more for women passes too:
    // it is associated with gender within professions, but far more with the profession.
    const loose = selectConceptFeatures(candidates, columns, y, z, { dominance: 0, minConceptScore: 0.15 });
    expect(loose.filter((r) => r.selected).map((r) => r.feature)).toEqual([0, 1, 2, 5]);
    expect(loose[5]!.taskScore).toBeGreaterThan(2 * loose[5]!.conceptScore);
  });

  it('falls back to marginal scores when no stratum has both classes, and refuses y = z', () => {
    const yy = Int32Array.from(y);
    const zz = Int32Array.from(y);
    // Only 3 counter-stereotypical examples: fewer than minGroupSize (5).
    for (let i = 0; i < 3; i++) zz[i] = 1 - zz[i]!;
    expect(associationDesign(yy, zz, 5).rule).toBe('marginal');
    expect(() =>
      selectConceptFeatures(
        candidates,
        features.map((f) => f.values),
        y,
        y,
      ),
    ).toThrow(/task label always equals the concept label/);
    const flipped = Int32Array.from(y, (v) => 1 - v);
    expect(() =>
      selectConceptFeatures(
        candidates,
        features.map((f) => f.values),
        y,
        flipped,
      ),
    ).toThrow(/is the opposite of/);
    expect(() =>
      selectConceptFeatures(
        candidates,
        features.map((f) => f.values),
        y,
        Int32Array.from(z, (v) => v * 2),
      ),
    ).toThrow(/binary labels/);
  });

  describe('the concept-only rule (no task labels)', () => {
    const columns = features.map((f) => f.values);

    it('scores |rank-biserial with z| over the whole set, records no task score, and keeps the concept features', () => {
      const records = selectConceptOnlyFeatures(candidates, columns, z);
      records.forEach((r, i) => {
        expect(r.conceptScore).toBe(Math.abs(rankBiserial(columns[i]!, z)));
        expect(r.rule).toBe('concept_only');
        expect(r).not.toHaveProperty('taskScore');
        expect(r.selected).toBe(r.conceptScore >= 0.2);
      });
      expect(records.filter((r) => features[r.feature]!.isConcept).every((r) => r.selected)).toBe(true);
      expect(records[6]!.selected).toBe(false); // noise
      expect(records[3]).toMatchObject({ hook: 'embed', feature: 3, attribution: candidates[3]!.attribution });
    });

    it('differs from the stratified rule where it should: profession features correlated with gender pass it', () => {
      const gender = selectConceptOnlyFeatures(candidates, columns, z);
      const both = selectConceptFeatures(candidates, columns, y, z);
      // 85% agreement: the nursing and surgery features separate genders marginally (documented price).
      for (const j of [3, 4]) {
        expect(gender[j]!.selected, features[j]!.name).toBe(true);
        expect(both[j]!.selected, features[j]!.name).toBe(false);
      }
      // A threshold above what the task-gender correlation gives a task feature keeps them out.
      const strict = selectConceptOnlyFeatures(candidates, columns, z, { minConceptScore: 0.6 });
      expect(strict.filter((r) => r.selected).map((r) => r.feature)).toEqual(gender.filter((r) => r.conceptScore >= 0.6).map((r) => r.feature));
      expect(strict[3]!.selected).toBe(false);
    });

    it('refuses a concept set with too few examples of a concept class, and non-binary labels', () => {
      const few = Int32Array.from(z, (_, i) => (i < 3 ? 1 : 0));
      expect(() => selectConceptOnlyFeatures(candidates, columns, few)).toThrow(/3 example\(s\) of its smaller concept class, fewer than minGroupSize 5/);
      expect(selectConceptOnlyFeatures(candidates, columns, few, { minGroupSize: 3 })).toHaveLength(candidates.length);
      expect(() =>
        selectConceptOnlyFeatures(
          candidates,
          columns,
          Int32Array.from(z, (v) => v * 2),
        ),
      ).toThrow(/binary labels/);
      expect(() => selectConceptOnlyFeatures(candidates, columns.slice(1), z)).toThrow(/6 value columns for 7 candidates/);
    });
  });
});

describe('conceptFeatureColumns', () => {
  let model: ToyModel;
  let saes: Record<string, ToySae>;
  let splits: PlantedSplits;
  let withCodes: ActivationCache;
  let withoutCodes: ActivationCache;
  const hook = 'layers.0.resid_out';

  beforeAll(async () => {
    model = new ToyModel({ nLayers: 1, seed: 4 });
    saes = { embed: axisSae(2, 1), [hook]: axisSae(2, 2) };
    splits = plantedSplits({ nTrain: 10, nConcept: 50, nBalanced: 10, seed: 3 });
    const spec = { modelId: 'toy', hooks: ['embed', hook], tokenizerId: 'toy', texts: splits.texts };
    withCodes = await buildActivationCache(
      { ...spec, saes: { embed: { sae: saes.embed!, id: 'e' }, [hook]: { sae: saes[hook]!, id: 'r' } } },
      { model, tokenize: toyTokenize, root: mkdtempSync(join(tmpdir(), 'fs-cache-')) },
    );
    withoutCodes = await buildActivationCache(spec, { model, tokenize: toyTokenize, root: mkdtempSync(join(tmpdir(), 'fs-cache-')) });
  });
  afterAll(() => {
    Object.values(saes).forEach((s) => s.dispose());
    model.dispose();
  });

  it('reads the pooled codes from the cache, or computes the same values with the model', () => {
    expect(cachedSaeWidth(withCodes, hook)).toBe(10);
    expect(cachedSaeWidth(withoutCodes, hook)).toBeUndefined();
    const candidates: RankedFeature[] = [
      { hook, feature: 1, attribution: 1 },
      { hook: 'embed', feature: 0, attribution: 0.5 },
      { hook, feature: 8, attribution: 0.2 },
    ];
    const calls = model.calls;
    const fromCache = conceptFeatureColumns({ model, tokenize: toyTokenize, cache: withCodes, saes }, candidates, splits.concept);
    expect(model.calls).toBe(calls);
    const fromModel = conceptFeatureColumns({ model, tokenize: toyTokenize, cache: withoutCodes, saes }, candidates, splits.concept, { batchSize: 7 });
    expect(model.calls).toBeGreaterThan(calls);
    for (let j = 0; j < candidates.length; j++) {
      expect(fromModel[j]!.length).toBe(splits.concept.rows.length);
      let worst = 0;
      for (let r = 0; r < fromModel[j]!.length; r++) worst = Math.max(worst, Math.abs(fromModel[j]![r]! - fromCache[j]![r]!));
      expect(worst).toBeLessThan(1e-5);
    }
    // The male-word feature is active in some examples and silent in others.
    expect(Math.max(...fromCache[1]!)).toBeGreaterThan(0.1);
    expect(Math.min(...fromCache[1]!)).toBe(0);
  });
});
