/**
 * The label-budget runner (src/experiment/budget.ts) on the synthetic problem of
 * test/experiment/synthetic-bios.ts: three sizes (16, 64, all = 160 bios) of two seeds, with the
 * original probe, the oracle and LEACE (no SAE, so nothing trains but probes: seconds).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseExperimentConfig, type ExperimentConfig } from '../../src/experiment/config.js';
import { checkBudgetSizes, parseBudgetSizes, runBudget, type BudgetResult } from '../../src/experiment/budget.js';
import type { ExperimentResult } from '../../src/experiment/results.js';
import { setQuiet } from '../../src/util/progress.js';
import { judge } from './claims.js';
import { writeSyntheticBios, writeTinyBert } from './synthetic-bios.js';

/** Bios per (profession, gender) group: the pool is 4 times this. */
const PER_GROUP = 40;
const POOL = 4 * PER_GROUP;
const SEEDS = [1, 2];

/** The synthetic setup's config with `methods` (and any top-level fields of `extra`). */
function syntheticConfig(dir: string, methods: Record<string, unknown>, extra: Record<string, unknown> = {}): ExperimentConfig {
  return parseExperimentConfig(
    {
      name: 'synthetic budget',
      model: join(dir, 'model'),
      maxLength: 16,
      probeHook: 'layers.1.resid_out',
      dataset: { train: join(dir, 'train.jsonl'), test: join(dir, 'test.jsonl'), professions: ['surgeon', 'nurse'] },
      methods,
      seeds: SEEDS,
      cacheDir: join(dir, 'cache'),
      probe: { epochs: 30 },
      ...extra,
    },
    join(dir, 'synthetic.json'),
  );
}

/** The results.jsonl of every size folder, as text. */
function resultLines(out: string): Record<string, string> {
  return Object.fromEntries(
    readdirSync(out, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? [[e.name, readFileSync(join(out, e.name, 'results.jsonl'), 'utf8')]] : [])),
  );
}

describe('checkBudgetSizes and parseBudgetSizes', () => {
  it('take increasing positive integers with "all" last', () => {
    expect(parseBudgetSizes(['64', '256', '1024', 'all'])).toEqual([64, 256, 1024, 'all']);
    expect(parseBudgetSizes(['all'])).toEqual(['all']);
    expect(() => checkBudgetSizes([1, 2])).not.toThrow();
  });

  it('refuse anything else, naming the offending size', () => {
    expect(() => parseBudgetSizes([])).toThrow(/none given/);
    expect(() => parseBudgetSizes(['64', 'many'])).toThrow(/"many" is neither a positive integer nor "all"/);
    expect(() => parseBudgetSizes(['0'])).toThrow(/0 is neither a positive integer/);
    expect(() => parseBudgetSizes(['1.5'])).toThrow(/"1.5" is neither/);
    expect(() => parseBudgetSizes(['-4'])).toThrow(/"-4" is neither/);
    expect(() => parseBudgetSizes(['64', '64'])).toThrow(/64 is listed twice/);
    expect(() => parseBudgetSizes(['all', 'all'])).toThrow(/all is listed twice/);
    expect(() => parseBudgetSizes(['256', '64'])).toThrow(/must increase: 64 comes after 256/);
    expect(() => parseBudgetSizes(['all', '64'])).toThrow(/"all" must come last/);
    expect(() => checkBudgetSizes([Number.NaN])).toThrow(/neither/);
  });
});

describe('runBudget on the synthetic problem', () => {
  let dir = '';
  let out = '';
  let config: ExperimentConfig;
  let budget: BudgetResult;
  const finished: string[] = [];

  beforeAll(async () => {
    setQuiet(true);
    dir = mkdtempSync(join(tmpdir(), 'budget-'));
    out = join(dir, 'out');
    writeTinyBert(join(dir, 'model'));
    const texts = new Set<string>();
    writeSyntheticBios(join(dir, 'train.jsonl'), PER_GROUP, 1, texts);
    writeSyntheticBios(join(dir, 'test.jsonl'), PER_GROUP, 2, texts);
    config = syntheticConfig(dir, { original: {}, oracle: {}, leace: {} });
    budget = await runBudget(config, { outDir: out, sizes: [16, 64, 'all'], onRun: (d) => finished.push(d) });
  }, 5 * 60_000);

  afterAll(() => {
    setQuiet(false);
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  it('writes budget.json as returned: per size the concept-set size used, per method the four summaries', () => {
    expect(JSON.parse(readFileSync(join(out, 'budget.json'), 'utf8'))).toEqual(JSON.parse(JSON.stringify(budget)));
    expect(budget).toMatchObject({ format: 'sae-eraser/budget', version: 1, pool: POOL, seeds: SEEDS, professions: ['surgeon', 'nurse'] });
    expect(budget.methods).toEqual(['original', 'oracle', 'leace']);
    expect(budget.concept_free).toEqual(['original', 'oracle']);
    expect(budget.points.map((p) => [p.size, p.n_concept, p.run])).toEqual([
      [16, 16, 'concept-16'],
      [64, 64, 'concept-64'],
      ['all', POOL, 'concept-all'],
    ]);
    expect(finished).toEqual(['concept-16', 'concept-64', 'concept-all'].map((r) => join(out, r)));
    for (const p of budget.points) {
      expect(Object.keys(p.methods)).toEqual(budget.methods);
      const metrics = JSON.parse(readFileSync(join(out, p.run, 'metrics.json'), 'utf8')) as ExperimentResult;
      expect(metrics.n_train.concept, p.run).toBe(p.n_concept);
      // LEACE is fitted on this size's concept set, in this size's folder.
      expect(p.methods.leace).toEqual({
        profession_acc: metrics.methods.leace!.profession_acc,
        gender_agreement: metrics.methods.leace!.gender_agreement,
        worst_group_acc: metrics.methods.leace!.worst_group_acc,
        gender_probe_acc: metrics.methods.leace!.gender_probe_acc,
        units_removed: metrics.methods.leace!.units_removed,
        n_concept: p.n_concept,
        run: p.run,
      });
      // The original probe and the oracle read no concept set: scored once, in the first folder.
      for (const m of ['original', 'oracle'])
        expect(p.methods[m], `${p.run} ${m}`).toEqual({ ...budget.points[0]!.methods[m], n_concept: null, run: 'concept-16' });
    }
    const first = JSON.parse(readFileSync(join(out, 'concept-16', 'metrics.json'), 'utf8')) as ExperimentResult;
    expect(Object.keys(first.methods)).toEqual(['original', 'oracle', 'leace']);
    expect(budget.points[2]!.methods.oracle!.worst_group_acc).toEqual(first.methods.oracle!.worst_group_acc);
    for (const run of ['concept-64', 'concept-all']) {
      const later = JSON.parse(readFileSync(join(out, run, 'metrics.json'), 'utf8')) as ExperimentResult;
      expect(Object.keys(later.methods), run).toEqual(['leace']);
      expect(later.seeds).toEqual(SEEDS);
    }
  });

  it('the concept sets grow and LEACE fitted on all of them leaves the gender probe at chance', () => {
    // With the whole pool the concept set is the balanced split the fresh gender probe trains on
    // (synthetic-bios.ts), so LEACE's guarantee applies to it exactly.
    const all = JSON.parse(readFileSync(join(out, 'concept-all', 'metrics.json'), 'utf8')) as ExperimentResult;
    // Judged on LEACE's own results (the original probe is in the first folder, not this one).
    const verdict = judge(all, 'leace', 'leaves the gender probe at chance', 'leace');
    expect(verdict.holds, verdict.detail).toBe(true);
    const original = budget.points[0]!.methods.original!.gender_probe_acc.mean;
    expect(budget.points[2]!.methods.leace!.gender_probe_acc.mean).toBeLessThan(original);
  });

  it('a second call reads the finished size folders and resumes an unfinished one, scoring nothing again', async () => {
    const before = resultLines(out);
    // Unfinish the middle size: its results stay, so the runner resumes it and scores no pair again.
    rmSync(join(out, 'concept-64', 'metrics.json'));
    const again = await runBudget(config, { outDir: out, sizes: [16, 64, 'all'] });
    expect(again).toEqual(budget);
    expect(resultLines(out)).toEqual(before);
    expect(existsSync(join(out, 'concept-64', 'metrics.json'))).toBe(true);
  }, 60_000);

  it('refuses a finished size folder of another config, before running anything', async () => {
    const other = syntheticConfig(dir, { original: {}, oracle: {}, leace: {} }, { probe: { epochs: 31 } });
    await expect(runBudget(other, { outDir: out, sizes: [16, 64, 'all'] })).rejects.toThrow(/concept-16 holds a finished run of another config \("probe"/);
    const moreSeeds = syntheticConfig(dir, { original: {}, oracle: {}, leace: {} }, { seeds: [1, 2, 3] });
    await expect(runBudget(moreSeeds, { outDir: out, sizes: [16] })).rejects.toThrow(/seeds 1,2 instead of 1,2,3/);
    const moreMethods = syntheticConfig(dir, { original: {}, oracle: {}, leace: {}, inlp: {} });
    await expect(runBudget(moreMethods, { outDir: out, sizes: [16] })).rejects.toThrow(/no result for inlp/);
  });

  it('refuses sizes beyond the pool, an "all" no larger than the size before it, a capped concept set and concept-free methods only, before any folder is made', async () => {
    const fresh = join(dir, 'fresh');
    await expect(runBudget(config, { outDir: fresh, sizes: [16, 1000] })).rejects.toThrow(
      new RegExp(`concept-set size 1000 exceeds the pool: .*train\\.jsonl has ${POOL} training bios of surgeon and nurse`),
    );
    await expect(runBudget(config, { outDir: fresh, sizes: [POOL, 'all'] })).rejects.toThrow(
      new RegExp(`"all" is ${POOL} bios .* not more than the size ${POOL}`),
    );
    await expect(runBudget(config, { outDir: fresh, sizes: [16, 16] })).rejects.toThrow(/listed twice/);
    const capped = syntheticConfig(dir, { leace: {} }, {});
    capped.dataset.limits = { concept: 50 };
    await expect(runBudget(capped, { outDir: fresh })).rejects.toThrow(/dataset\.limits\.concept \(50\) caps the concept set/);
    await expect(runBudget(syntheticConfig(dir, { original: {}, oracle: {}, word_deletion: {} }), { outDir: fresh })).rejects.toThrow(
      /none of the methods \(original, oracle, word_deletion\) reads the concept set/,
    );
    // A variant counts as its family.
    await expect(runBudget(syntheticConfig(dir, { original: {}, 'word_deletion@more': { extraWords: ['ward'] } }), { outDir: fresh })).rejects.toThrow(
      /none of the methods \(original, word_deletion@more\) reads the concept set/,
    );
    // What a method reads depends on its options: a task-objective mask reads no concept label.
    await expect(runBudget(syntheticConfig(dir, { original: {}, 'das_mask@task': { objective: 'task' } }), { outDir: fresh })).rejects.toThrow(
      /none of the methods \(original, das_mask@task\) reads the concept set/,
    );
    expect(existsSync(fresh)).toBe(false);
  });
});
