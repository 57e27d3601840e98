/**
 * The test file's tuning and reporting parts through the runner (config `dataset.testSplit`): which
 * bios each part holds (`loadExperimentData`), and that a run reports on the reporting part and
 * records the tuning part's metrics under "tuning". On the synthetic problem of
 * test/experiment/synthetic-bios.ts with the methods that need no SAE (original, oracle, LEACE) and
 * one seed, so it needs neither ../shared nor Python.
 *
 * "Reported on the reporting part only" is checked against a second run whose test file holds the
 * reporting part's rows alone (whole-file mode): the two must score the same. Training data, seeds
 * and probes are the same in both, so any difference would come from the test bios scored.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSplits, loadBiasInBios, splitForTuning, TEST_SPLIT_SEED, type SplitExample } from '../../src/data/bias-in-bios.js';
import { parseExperimentConfig, type ExperimentConfig } from '../../src/experiment/config.js';
import { loadExperimentData, runExperiment, type ExperimentData } from '../../src/experiment/runner.js';
import type { ExperimentResult, SeedScores } from '../../src/experiment/results.js';
import type { RunConfigFile } from '../../src/experiment/run-folder.js';
import { renderTable } from '../../src/report/table.js';
import { writeSyntheticBios, writeTinyBert } from './synthetic-bios.js';

/** Bios per (profession, gender) group: odd in the test file, so the reporting part gets the extra one. */
const TRAIN_PER_GROUP = 60;
const TEST_PER_GROUP = 41;
const GROUPS = ['male_surgeon', 'female_surgeon', 'male_nurse', 'female_nurse'] as const;
const METHODS = { original: {}, oracle: {}, leace: {} } as const;
const SCORES = ['profession_acc', 'gender_agreement', 'worst_group_acc', 'subgroup_acc', 'gender_probe_acc'] as const;

let dir = '';
/** The test file: distinct bios, then every fifth female nurse's line again (a repeated bio). */
let testFile = '';
let repeated: string[] = [];

function configFor(dataset: Record<string, unknown> = {}, over: Record<string, unknown> = {}): ExperimentConfig {
  return parseExperimentConfig(
    {
      name: 'test split',
      model: join(dir, 'model'),
      maxLength: 16,
      probeHook: 'layers.1.resid_out',
      dataset: { train: join(dir, 'train.jsonl'), test: testFile, professions: ['surgeon', 'nurse'], ...dataset },
      methods: METHODS,
      seeds: [1],
      cacheDir: join(dir, 'cache'),
      probe: { epochs: 30 },
      ...over,
    },
    join(dir, 'split.json'),
  );
}

const texts = (split: readonly SplitExample[]): string[] => split.map((e) => e.text);
const testTexts = (data: ExperimentData): Set<string> => new Set([...data.testBalanced, ...Object.values(data.testSubgroups).flat()].map((e) => e.text));
const tuningTexts = (data: ExperimentData): Set<string> =>
  new Set([...data.tuning!.balanced, ...Object.values(data.tuning!.subgroups).flat()].map((e) => e.text));
const scoresOf = (r: SeedScores): SeedScores => Object.fromEntries(SCORES.map((k) => [k, r[k]])) as unknown as SeedScores;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'runner-test-split-'));
  writeTinyBert(join(dir, 'model'));
  const seen = new Set<string>();
  writeSyntheticBios(join(dir, 'train.jsonl'), TRAIN_PER_GROUP, 1, seen);
  testFile = join(dir, 'test.jsonl');
  writeSyntheticBios(testFile, TEST_PER_GROUP, 2, seen);
  const lines = readFileSync(testFile, 'utf8').trim().split('\n');
  const again = lines.filter((l) => l.includes('"gender":"female"') && l.includes('"profession":"nurse"')).filter((_, i) => i % 5 === 0);
  appendFileSync(testFile, `${again.join('\n')}\n`);
  repeated = again.map((l) => (JSON.parse(l) as { text: string }).text);
});

afterAll(() => {
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

describe('loadExperimentData: the test file in a tuning and a reporting part', () => {
  it('stratifies by subgroup and keys by text: half of each group (rounded down) to tuning, no text in both parts, repeats together', async () => {
    const data = await loadExperimentData(configFor());
    const half = Math.floor(TEST_PER_GROUP / 2);
    // Subgroups hold every row: female nurses have their repeats on top (9 repeated texts in all).
    expect(repeated).toHaveLength(9);
    const rows = (part: Record<string, SplitExample[]>): Record<string, number> => Object.fromEntries(GROUPS.map((g) => [g, part[g]!.length]));
    const distinct = (part: Record<string, SplitExample[]>): Record<string, number> =>
      Object.fromEntries(GROUPS.map((g) => [g, new Set(texts(part[g]!)).size]));
    expect(distinct(data.tuning!.subgroups)).toEqual(Object.fromEntries(GROUPS.map((g) => [g, half])));
    expect(distinct(data.testSubgroups)).toEqual(Object.fromEntries(GROUPS.map((g) => [g, TEST_PER_GROUP - half])));
    const extra = (part: Record<string, SplitExample[]>): number => rows(part).female_nurse! - distinct(part).female_nurse!;
    expect(extra(data.tuning!.subgroups) + extra(data.testSubgroups)).toBe(repeated.length);
    const reporting = testTexts(data);
    for (const text of tuningTexts(data)) expect(reporting.has(text), text).toBe(false);
    // Every test bio is in one part: the two parts' subgroups are the whole file's, row for row.
    const all = (await loadBiasInBios(testFile)).examples.map((e) => e.row);
    const partRows = [...Object.values(data.testSubgroups).flat(), ...Object.values(data.tuning!.subgroups).flat()].map((e) => e.row);
    expect(partRows.sort((a, b) => a - b)).toEqual(all);
    // Balanced splits are built within each part: the smallest group of the part, each group alike.
    expect(data.testBalanced).toHaveLength(4 * (TEST_PER_GROUP - half));
    expect(data.tuning!.balanced).toHaveLength(4 * half);
    for (const text of texts(data.testBalanced)) expect(reporting.has(text)).toBe(true);
    // One activation cache holds both parts.
    const cached = new Set(data.texts);
    for (const text of [...reporting, ...tuningTexts(data)]) expect(cached.has(text)).toBe(true);
    expect(data.testSplit).toEqual({
      reported: expect.stringMatching(
        /^the reporting half of the test file \(50% of each profession x gender subgroup, rounded up, split by text with seed 2019\)/,
      ) as string,
      tuning_fraction: 0.5,
      seed: TEST_SPLIT_SEED,
      n_reporting: Object.values(data.testSubgroups).flat().length,
      n_tuning: Object.values(data.tuning!.subgroups).flat().length,
    });
  });

  it("does not depend on the run's seeds or caps: a capped run scores a subset of each same part", async () => {
    const data = await loadExperimentData(configFor());
    const reseeded = await loadExperimentData(configFor({}, { seeds: [7, 8] }));
    expect(texts(reseeded.testBalanced)).toEqual(texts(data.testBalanced));
    expect(texts(reseeded.tuning!.balanced)).toEqual(texts(data.tuning!.balanced));
    const capped = await loadExperimentData(configFor({ limits: { testSubgroup: 7, testBalanced: 10 } }));
    expect(capped.testBalanced).toHaveLength(10);
    expect(capped.tuning!.balanced).toHaveLength(10);
    const within = (small: readonly SplitExample[], big: readonly SplitExample[]): void => {
      const rows = new Set(big.map((e) => e.row));
      expect(small.filter((e) => !rows.has(e.row))).toEqual([]);
    };
    within(capped.testBalanced, data.testBalanced);
    within(capped.tuning!.balanced, data.tuning!.balanced);
    for (const g of GROUPS) {
      expect(capped.testSubgroups[g]).toHaveLength(7);
      expect(capped.tuning!.subgroups[g]).toHaveLength(7);
      within(capped.testSubgroups[g]!, data.testSubgroups[g]!);
      within(capped.tuning!.subgroups[g]!, data.tuning!.subgroups[g]!);
    }
    expect(capped.testSplit).toEqual(data.testSplit);
  });

  it('another split seed draws other bios; tuningFraction 0 reports on the whole file as before, with no tuning part', async () => {
    const data = await loadExperimentData(configFor());
    const other = await loadExperimentData(configFor({ testSplit: { seed: 5 } }));
    expect(other.testSplit.seed).toBe(5);
    expect(texts(other.testBalanced).sort()).not.toEqual(texts(data.testBalanced).sort());
    const whole = await loadExperimentData(configFor({ testSplit: { tuningFraction: 0 } }));
    expect(whole.tuning).toBeUndefined();
    expect(whole.testSplit).toMatchObject({ reported: 'the whole test file (no tuning part)', tuning_fraction: 0, n_tuning: 0 });
    // The whole file's subgroups in file order and its balanced split, as the runner built them before the split existed.
    const { reporting } = splitForTuning(await loadBiasInBios(testFile), 0);
    const expected = buildSplits(reporting, { professions: ['surgeon', 'nurse'] });
    expect(whole.testSubgroups).toEqual(expected.subgroups);
    expect(whole.testBalanced).toEqual(expected.balanced);
    expect(whole.testSplit.n_reporting).toBe(4 * TEST_PER_GROUP + repeated.length);
  });
});

describe('a run reports on the reporting part and records the tuning part under "tuning"', () => {
  let split: ExperimentResult;
  let alone: ExperimentResult;
  let whole: ExperimentResult;
  let data: ExperimentData;

  beforeAll(async () => {
    data = await loadExperimentData(configFor());
    split = await runExperiment(configFor(), { outDir: join(dir, 'split') });
    // The reporting part's rows alone, as a test file of their own, reported whole.
    const reportingRows = new Set(
      Object.values(data.testSubgroups)
        .flat()
        .map((e) => e.row),
    );
    const lines = readFileSync(testFile, 'utf8').trim().split('\n');
    writeFileSync(join(dir, 'reporting.jsonl'), `${lines.filter((_, row) => reportingRows.has(row)).join('\n')}\n`);
    alone = await runExperiment(configFor({ test: join(dir, 'reporting.jsonl'), testSplit: { tuningFraction: 0 } }), { outDir: join(dir, 'alone') });
    whole = await runExperiment(configFor({ testSplit: { tuningFraction: 0 } }), { outDir: join(dir, 'whole') });
  }, 5 * 60_000);

  it('metrics.json: reported numbers are those of the reporting part alone; the tuning part is summarised under "tuning"', () => {
    const written = JSON.parse(readFileSync(join(dir, 'split', 'metrics.json'), 'utf8')) as ExperimentResult;
    expect(written).toEqual(JSON.parse(JSON.stringify(split)));
    expect(written.n_test).toEqual(alone.n_test);
    expect(written.test_split).toEqual(data.testSplit);
    for (const method of Object.keys(METHODS)) {
      const [r] = written.methods[method]!.per_seed;
      const [a] = alone.methods[method]!.per_seed;
      expect(scoresOf(r!), method).toEqual(scoresOf(a!));
      const { per_seed: _p, seconds: _s, ...summary } = written.methods[method]!;
      const { per_seed: _pa, seconds: _sa, ...summaryAlone } = alone.methods[method]!;
      expect(summary, method).toEqual(summaryAlone);
      // The tuning part: its own counts, per seed beside the reported scores and summarised over seeds.
      expect(r!.tuning, method).toBeDefined();
      expect(r!.tuning!.subgroup_acc.female_nurse!.n, method).toBe(data.tuning!.subgroups.female_nurse!.length);
      expect(written.tuning!.methods[method]!.profession_acc.mean, method).toBe(r!.tuning!.profession_acc.value);
      expect(Object.keys(written.tuning!.methods[method]!).sort(), method).toEqual([...SCORES].sort());
    }
    expect(written.tuning!.n_test).toEqual({
      balanced: data.tuning!.balanced.length,
      subgroups: Object.fromEntries(GROUPS.map((g) => [g, data.tuning!.subgroups[g]!.length])),
    });
    expect(Object.keys(written.tuning!.methods)).toEqual(Object.keys(METHODS));
    expect(renderTable(written)).toContain('Reported on the reporting half of the test file (50% of each profession x gender subgroup');
  });

  it('whole-file mode scores every test bio: per subgroup, its correct answers are the two parts\' together, and there is no "tuning"', () => {
    expect(whole.tuning).toBeUndefined();
    expect(whole.test_split?.reported).toBe('the whole test file (no tuning part)');
    expect(whole.n_test.subgroups).toEqual(Object.fromEntries(GROUPS.map((g) => [g, data.testSubgroups[g]!.length + data.tuning!.subgroups[g]!.length])));
    expect(renderTable(whole)).toContain('Reported on the whole test file (no tuning part).');
    const correct = (iv: { value: number; n: number }): number => Math.round(iv.value * iv.n);
    for (const method of Object.keys(METHODS)) {
      const [w] = whole.methods[method]!.per_seed;
      const [s] = split.methods[method]!.per_seed;
      expect(w!.tuning, method).toBeUndefined();
      for (const g of GROUPS) {
        expect(correct(s!.subgroup_acc[g]!) + correct(s!.tuning!.subgroup_acc[g]!), `${method} ${g}`).toBe(correct(w!.subgroup_acc[g]!));
      }
    }
  });

  it(
    'resumes an interrupted run with its tuning scores, and refuses a folder from before the split',
    async () => {
      const again = join(dir, 'resumed');
      cpSync(join(dir, 'split'), again, { recursive: true });
      rmSync(join(again, 'metrics.json'));
      const lines = readFileSync(join(again, 'results.jsonl'), 'utf8').trim().split('\n');
      writeFileSync(join(again, 'results.jsonl'), `${lines.slice(0, -1).join('\n')}\n`);
      const resumed = await runExperiment(configFor(), { outDir: again });
      const strip = (r: ExperimentResult): unknown =>
        JSON.parse(JSON.stringify({ methods: r.methods, tuning: r.tuning }, (k: string, v: unknown) => (k === 'seconds' ? undefined : v)));
      expect(strip(resumed)).toEqual(strip(split));
      // Every result already there and no SAE to measure: no probe is trained again (its history gets no new line).
      const complete = join(dir, 'complete');
      cpSync(join(dir, 'split'), complete, { recursive: true });
      rmSync(join(complete, 'metrics.json'));
      const probeLines = (): number =>
        readFileSync(join(complete, 'history.jsonl'), 'utf8')
          .split('\n')
          .filter((l) => l.includes('"original/seed-')).length;
      const before = probeLines();
      expect(before).toBeGreaterThan(0);
      expect(strip(await runExperiment(configFor(), { outDir: complete }))).toEqual(strip(split));
      expect(probeLines()).toBe(before);
      // A run folder from before this option: its config has no dataset.testSplit, so it is another config.
      const old = join(dir, 'old');
      cpSync(join(dir, 'split'), old, { recursive: true });
      rmSync(join(old, 'metrics.json'));
      const file = JSON.parse(readFileSync(join(old, 'config.json'), 'utf8')) as RunConfigFile;
      delete (file.config.dataset as Record<string, unknown>).testSplit;
      writeFileSync(join(old, 'config.json'), JSON.stringify(file));
      await expect(runExperiment(configFor(), { outDir: old })).rejects.toThrow(/holds a run of a different config \("dataset" differ/);
    },
    5 * 60_000,
  );
});
