/**
 * The label-budget curve behind `sae-eraser budget`: the experiment (runner.ts `runExperiment`)
 * once per concept-set size, so that every method's metrics can be read against the number of
 * gender labels it was given.
 *
 * Layout of the budget folder DIR:
 *   concept-<size>/   one normal run folder per size (`concept-64`, ..., `concept-all`), with
 *                     `dataset.conceptSize` set to that size; run-folder.ts resumes an unfinished
 *                     one, and a finished one (metrics.json) of the same config is read, not run
 *                     again, so an interrupted budget picks up where it stopped
 *   budget.json       `BudgetResult`: per size and method, the summaries over seeds
 *
 * Sizes are positive integers or "all", increasing. "all" is every training bio of the two
 * professions (the pool the concept set is drawn from); it is resolved to that number before any
 * run, and that number is what `concept-all/config.json` records. A size larger than the pool is an
 * error before any work. The runner draws the concept set as the first `size` rows of one seeded
 * permutation of the pool, so the sets are nested: each size adds rows to the one before.
 *
 * Methods that read no label of the concept set (src/erasure/methods.ts `isConceptFree`, from the
 * supervision each method states for its options: the original probe, the oracle, word deletion
 * with a hand-written list,
 * SHIFT with selection "top" or "manual", the random control with `k` or `perHook`, masks with
 * objective "task") give the same result at every size: they run only in the first size's folder,
 * and budget.json repeats that result at every size with `run` naming the folder it came from and
 * `n_concept` null. The other folders hold only the methods that read the concept set.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { writeJsonAtomic } from '../io/atomic.js';
import { readJson } from '../io/text.js';
import { isQuiet } from '../util/progress.js';
import { isConceptFree } from '../erasure/methods.js';
import type { ExperimentConfig } from './config.js';
import type { ExperimentResult, Summary } from './results.js';
import { configDifferences, type RunConfigFile } from './run-folder.js';
import { loadExperimentData, resolvedConfig, runExperiment } from './runner.js';

/** A concept-set size: a number of bios, or "all" of the pool. */
export type BudgetSize = number | 'all';

/** The sizes of the issue's curve. */
export const DEFAULT_BUDGET_SIZES: readonly BudgetSize[] = [64, 256, 1024, 'all'];

/** The four metrics of the curve, as in metrics.json. */
export const BUDGET_METRICS = ['profession_acc', 'gender_agreement', 'worst_group_acc', 'gender_probe_acc'] as const;
export type BudgetMetric = (typeof BUDGET_METRICS)[number];

/** One method at one size. */
export type BudgetMethodResult = Record<BudgetMetric, Summary> & {
  /** Mean number of units the method removed over the seeds (metrics.json `units_removed`). */
  units_removed: number;
  /** Concept-set rows the method was fitted with; null for a method that reads no concept set. */
  n_concept: number | null;
  /** The run folder (relative to the budget folder) whose metrics.json holds it. */
  run: string;
};

/** One size of the curve. */
export interface BudgetPoint {
  /** The size asked for. */
  size: BudgetSize;
  /** Concept-set rows the run used (its n_train.concept): the size, or the pool for "all". */
  n_concept: number;
  /** The size's run folder, relative to the budget folder. */
  run: string;
  /** Every method of the budget, in config order (concept-free ones repeated from the first size). */
  methods: Record<string, BudgetMethodResult>;
}

/** The contents of budget.json. */
export interface BudgetResult {
  format: 'sae-eraser/budget';
  version: 1;
  /** The config file the budget was run from. */
  config: string;
  name: string;
  model: string;
  probeHook: string;
  professions: [string, string];
  seeds: number[];
  /** Training bios of the two professions with gender labels: the largest possible concept set. */
  pool: number;
  /** Methods in config order. */
  methods: string[];
  /** The methods among them that read no concept set (scored at the first size only). */
  concept_free: string[];
  points: BudgetPoint[];
}

export interface BudgetOptions {
  /** The budget folder: one run folder per size, and budget.json. */
  outDir: string;
  /** Concept-set sizes, increasing; default `DEFAULT_BUDGET_SIZES`. */
  sizes?: readonly BudgetSize[];
  /** Start every size's run folder afresh (run-folder.ts), finished ones included. */
  force?: boolean;
  /** Called with each size's folder and result once it is finished (or read), e.g. to write its table and report. */
  onRun?: (dir: string, result: ExperimentResult) => void;
}

/** Throws unless `sizes` is a non-empty, strictly increasing list of positive integers, with "all" (if any) last. */
export function checkBudgetSizes(sizes: readonly BudgetSize[]): void {
  if (sizes.length === 0) throw new Error('concept-set sizes: none given');
  sizes.forEach((s, i) => {
    if (s !== 'all' && !(Number.isInteger(s) && s > 0)) throw new Error(`concept-set sizes: ${JSON.stringify(s)} is neither a positive integer nor "all"`);
    if (i === 0) return;
    const prev = sizes[i - 1]!;
    if (prev === s) throw new Error(`concept-set sizes: ${s} is listed twice`);
    if (prev === 'all') throw new Error(`concept-set sizes: "all" must come last (it is every bio), but ${s} follows it`);
    if (s !== 'all' && s < prev) throw new Error(`concept-set sizes must increase: ${s} comes after ${prev}`);
  });
}

/** Sizes from text items ("64", "all"), checked by `checkBudgetSizes`. */
export function parseBudgetSizes(items: readonly string[]): BudgetSize[] {
  const sizes = items.map((item): BudgetSize => {
    if (item === 'all') return 'all';
    if (!/^\d+$/.test(item)) throw new Error(`concept-set sizes: "${item}" is neither a positive integer nor "all"`);
    return Number(item);
  });
  checkBudgetSizes(sizes);
  return sizes;
}

/** The run folder of a size, relative to the budget folder. */
export function sizeFolder(size: BudgetSize): string {
  return `concept-${size}`;
}

/**
 * The result of a finished run in `dir` of `config` (its methods may be a superset), or undefined
 * when `dir` holds no finished run (runExperiment then starts or resumes it). A finished run of
 * another config is an error: reading it would mix results of different configs into one curve.
 */
function finishedRun(dir: string, config: ExperimentConfig): ExperimentResult | undefined {
  const metricsPath = join(dir, 'metrics.json');
  if (!existsSync(metricsPath) || !existsSync(join(dir, 'config.json'))) return undefined;
  const hint = '; choose another --out, or --force to run every size again';
  const before = (readJson(join(dir, 'config.json'), hint) as RunConfigFile).config;
  const now = resolvedConfig(config);
  const differences = configDifferences(before, now);
  const sameSeeds = before.seeds.length === now.seeds.length && now.seeds.every((s) => before.seeds.includes(s));
  if (!sameSeeds) differences.push(`seeds ${before.seeds.join(',')} instead of ${now.seeds.join(',')}`);
  const missing = Object.keys(now.methods).filter((m) => !(m in before.methods));
  if (missing.length > 0) differences.push(`no result for ${missing.join(', ')}`);
  if (differences.length > 0) throw new Error(`${dir} holds a finished run of another config (${differences.join('; ')})${hint}`);
  return readJson(metricsPath, hint) as ExperimentResult;
}

/** The config's methods named in `names` (each one of them), in the config's order. */
export function selectMethods(config: ExperimentConfig, names: readonly string[]): ExperimentConfig['methods'] {
  const methods: ExperimentConfig['methods'] = {};
  for (const [name, options] of Object.entries(config.methods)) if (names.includes(name)) methods[name] = options;
  return methods;
}

/** One line on stderr per size, unless --quiet. */
function say(line: string): void {
  if (!isQuiet()) process.stderr.write(`${line}\n`);
}

/**
 * Runs the experiment of `config` once per concept-set size into `options.outDir` (see the module
 * note), writes budget.json there and returns its contents. Sizes and the pool are checked, and
 * the pool counted from the train file, before any run starts.
 */
export async function runBudget(config: ExperimentConfig, options: BudgetOptions): Promise<BudgetResult> {
  const sizes = options.sizes ?? DEFAULT_BUDGET_SIZES;
  checkBudgetSizes(sizes);
  const methods = Object.keys(config.methods);
  // By what each method with its own options reads (a variant may read what its family does not).
  const conceptFree = methods.filter((m) => isConceptFree(config.methods[m]!));
  const learners = methods.filter((m) => !conceptFree.includes(m));
  if (learners.length === 0) {
    throw new Error(
      `${config.source}: none of the methods (${methods.join(', ')}) reads the concept set, so their results do not depend on its size; name at least one other method`,
    );
  }
  const limit = config.dataset.limits?.concept;
  if (limit !== undefined) {
    throw new Error(`${config.source}: dataset.limits.concept (${limit}) caps the concept set whose size the budget varies; remove it from the config`);
  }

  // The pool: the concept set drawn with no size cap (the runner caps only when the pool is larger).
  const uncapped = await loadExperimentData({ ...config, dataset: { ...config.dataset, conceptSize: Number.MAX_SAFE_INTEGER } });
  const pool = uncapped.concept.length;
  const [p0, p1] = uncapped.professions;
  const counts = sizes.map((size, i) => {
    if (size === 'all') {
      const prev = sizes[i - 1];
      if (typeof prev === 'number' && pool <= prev) {
        throw new Error(`concept-set size "all" is ${pool} bios (of ${p0} and ${p1} in ${config.dataset.train}), not more than the size ${prev} before it`);
      }
      return pool;
    }
    if (size > pool) {
      throw new Error(
        `concept-set size ${size} exceeds the pool: ${config.dataset.train} has ${pool} training bios of ${p0} and ${p1} with gender labels (use "all" for all of them)`,
      );
    }
    return size;
  });

  const results: ExperimentResult[] = [];
  for (const [i, size] of sizes.entries()) {
    const run = sizeFolder(size);
    const dir = join(options.outDir, run);
    const todo = i === 0 ? methods : learners;
    const sizeConfig: ExperimentConfig = {
      ...config,
      dataset: { ...config.dataset, conceptSize: counts[i]! },
      methods: selectMethods(config, todo),
    };
    const label = `budget ${i + 1}/${sizes.length}: concept set ${size === 'all' ? `all (${counts[i]})` : size}`;
    const finished = options.force === true ? undefined : finishedRun(dir, sizeConfig);
    if (finished !== undefined) say(`${label}: finished earlier, read from ${join(dir, 'metrics.json')}`);
    else say(`${label} -> ${dir} (${todo.join(', ')})`);
    const result = finished ?? (await runExperiment(sizeConfig, { outDir: dir, force: options.force }));
    if (result.n_train.concept !== counts[i]) {
      // The runner caps the concept set at conceptSize; fewer rows would mean the pool changed under us.
      throw new Error(`${dir}: the run used ${result.n_train.concept} concept-set bios, not the ${counts[i]} asked for`);
    }
    options.onRun?.(dir, result);
    results.push(result);
  }

  const first = results[0]!;
  const entry = (result: ExperimentResult, method: string, run: string, nConcept: number | null): BudgetMethodResult => {
    const m = result.methods[method];
    if (m === undefined) throw new Error(`${join(options.outDir, run, 'metrics.json')} has no result for ${method}`);
    return { ...Object.fromEntries(BUDGET_METRICS.map((k) => [k, m[k]])), units_removed: m.units_removed, n_concept: nConcept, run } as BudgetMethodResult;
  };
  const budget: BudgetResult = {
    format: 'sae-eraser/budget',
    version: 1,
    config: config.source,
    name: config.name,
    model: config.model,
    probeHook: config.probeHook,
    professions: first.professions,
    seeds: config.seeds,
    pool,
    methods,
    concept_free: conceptFree,
    points: sizes.map((size, i) => ({
      size,
      n_concept: counts[i]!,
      run: sizeFolder(size),
      methods: Object.fromEntries(
        methods.map((m) => [m, conceptFree.includes(m) ? entry(first, m, sizeFolder(sizes[0]!), null) : entry(results[i]!, m, sizeFolder(size), counts[i]!)]),
      ),
    })),
  };
  writeJsonAtomic(join(options.outDir, 'budget.json'), budget);
  return budget;
}
