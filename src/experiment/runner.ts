/**
 * The experiment runner behind `sae-eraser run`: every configured method, over several seeds, on
 * the SHIFT (Sparse Feature Circuits) Bias in Bios setup, written to a run folder.
 *
 * Flow: load splits -> open the model -> make sure the SAEs exist (train missing ones) -> one
 * activation cache over every text -> per seed: the biased probe (ambiguous train) and the oracle
 * (balanced train) -> per method: fit the eraser, erase the test representations (pooled fast path
 * or a forward pass with the eraser's edits), score and append to results.jsonl -> aggregate over
 * seeds -> metrics.json; the fitted erasers beside them (src/cli/run.ts writes table.md from the
 * result). The run folder (run-folder.ts) also holds the resolved config with provenance and the
 * training history, and lets an interrupted run resume where it stopped.
 *
 * Metrics (on the reporting part of the test file, and alike on its tuning part, recorded under
 * `tuning`: see `dataset.testSplit`): profession accuracy and gender agreement on the balanced split;
 * per-subgroup and worst-group accuracy on the four full-size subgroups; gender_probe_acc, a fresh
 * gender probe trained on erased balanced-train representations and scored on erased balanced-test
 * representations (chance is 50%).
 */
import { join } from 'node:path';
import { engineInfo, tf } from '../engine/engine.js';
import { ensureWheelFolder } from '../io/wheel.js';
import { resolveHubPath } from '../io/hub.js';
import { fileSha256 } from '../cache/identity.js';
import { buildActivationCache, weightsId, type ActivationCache, type CacheSpec } from '../cache/cache.js';
import { buildSplits, loadBiasInBios, splitForTuning, type BiosDataset, type BiosSplits, type SplitExample } from '../data/bias-in-bios.js';
import { permutation } from '../data/prng.js';
import { openModel } from '../models/open.js';
import type { HookName } from '../models/model.js';
import { LinearProbe, type LinearProbeOptions } from '../probe/linear.js';
import type { Probe } from '../probe/probe.js';
import { loadSae } from '../sae/load.js';
import { checkSaeFitsModel } from '../sae/hook-names.js';
import type { Sae } from '../sae/sae.js';
import { accuracy, genderAgreement, worstGroup, type Interval } from '../eval/metrics.js';
import { saeDownstreamCost } from '../eval/sae-cost.js';
import { seedsSupervision, summarizeScores, type ExperimentResult, type MethodSeedResult, type SeedScores, type TestSplitRecord } from './results.js';
import { progress } from '../util/progress.js';
import { checkHooksUpToProbe, type Eraser, type LabelledSplit } from '../erasure/eraser.js';
import { erasedPooledSplits } from '../erasure/erased.js';
import { hooksUpToProbe } from '../erasure/ablate.js';
import { saveEraser } from '../erasure/checkpoint.js';
import { createFitter, methodSupervision, namedHooks } from '../erasure/methods.js';
import type { ExperimentConfig } from './config.js';
import { ensureSaes, expandSaeSpecs, saeQuality } from './saes.js';
import { RunFolder, type ResolvedConfig } from './run-folder.js';
import { addPromotedTokens, addTokenActivations, displayPiece, ExplorerCollector } from './explorer-data.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { existsSync } from 'node:fs';
import { withStagePrefix, type HistoryLog } from '../util/history.js';

/** The examples an experiment uses, as split arrays over one list of unique texts. */
export interface ExperimentData {
  /** The local train and test files read (an `hf://` data path resolved to the hub cache). */
  files: { train: string; test: string };
  professions: [string, string];
  texts: string[];
  ambiguous: SplitExample[];
  balanced: SplitExample[];
  concept: SplitExample[];
  /** The reporting part of the test file (`dataset.testSplit`): the reported metrics' balanced split and subgroups. */
  testBalanced: SplitExample[];
  testSubgroups: Record<string, SplitExample[]>;
  /** The tuning part of the test file, split and capped alike; absent when the whole file is reported on. */
  tuning?: { balanced: SplitExample[]; subgroups: Record<string, SplitExample[]> };
  /** Which test bios are reported on, as metrics.json records it. */
  testSplit: TestSplitRecord;
}

function cap<T>(items: T[], limit: number | undefined, seed: number): T[] {
  if (limit === undefined || items.length <= limit) return items;
  // Keep a seeded subset in the original order, so capped runs stay comparable.
  const keep = Array.from(permutation(items.length, seed).subarray(0, limit)).sort((a, b) => a - b);
  return keep.map((i) => items[i]!);
}

/** Loads the train and test files (an `hf://` path through the hub cache) and builds the paper's splits plus the concept-labelled set. */
export async function loadExperimentData(config: ExperimentConfig): Promise<ExperimentData> {
  const { dataset } = config;
  const load = (path: string): Promise<BiosDataset> => loadBiasInBios(path, { fields: dataset.fields });
  const files = { train: await resolveHubPath(dataset.train), test: await resolveHubPath(dataset.test) };
  const train = await load(files.train);
  const test = await load(files.test);
  const trainSplits = buildSplits(train, { professions: dataset.professions });
  const { tuningFraction, seed: splitSeed } = dataset.testSplit;
  const testParts = splitForTuning(test, tuningFraction, splitSeed);
  const testSplits = buildSplits(testParts.reporting, { professions: dataset.professions });
  const tuningSplits = tuningFraction > 0 ? buildSplits(testParts.tuning, { professions: dataset.professions }) : undefined;
  const limits = dataset.limits ?? {};
  // Split first, then cap each part: a capped run reports on a subset of the same reporting part.
  const capTest = (splits: BiosSplits): NonNullable<ExperimentData['tuning']> => ({
    balanced: cap(splits.balanced, limits.testBalanced, 13),
    subgroups: Object.fromEntries(Object.entries(splits.subgroups).map(([k, v]) => [k, cap(v, limits.testSubgroup, 11)])),
  });
  const reporting = capTest(testSplits);
  const tuning = tuningSplits === undefined ? undefined : capTest(tuningSplits);
  // The concept set: natural-distribution examples of the two professions with gender labels.
  const pool = Object.values(trainSplits.subgroups)
    .flat()
    .sort((a, b) => a.row - b.row);
  const concept = cap(pool, dataset.conceptSize, 7);
  const testSubgroups = reporting.subgroups;
  const parts = {
    ambiguous: cap(trainSplits.ambiguous, limits.ambiguous, 3),
    balanced: cap(trainSplits.balanced, limits.balanced, 5),
    concept: cap(concept, limits.concept, 9),
    testBalanced: reporting.balanced,
  };
  const texts = [
    ...new Set(
      [
        ...parts.ambiguous,
        ...parts.balanced,
        ...parts.concept,
        ...parts.testBalanced,
        ...Object.values(testSubgroups).flat(),
        ...(tuning === undefined ? [] : [...tuning.balanced, ...Object.values(tuning.subgroups).flat()]),
      ].map((e) => e.text),
    ),
  ];
  const bios = (splits: BiosSplits | undefined): number => Object.values(splits?.subgroups ?? {}).reduce((a, v) => a + v.length, 0);
  const pct = (f: number): string => `${Number((100 * f).toFixed(1))}%`;
  const part = tuningFraction === 0.5 ? 'half' : 'part';
  const testSplit: TestSplitRecord = {
    reported:
      tuningFraction === 0
        ? 'the whole test file (no tuning part)'
        : `the reporting ${part} of the test file (${pct(1 - tuningFraction)} of each profession x gender subgroup, rounded up, split by text with seed ${splitSeed}); ` +
          `the tuning ${part}'s metrics are under "tuning" in metrics.json`,
    tuning_fraction: tuningFraction,
    seed: splitSeed,
    n_reporting: bios(testSplits),
    n_tuning: bios(tuningSplits),
  };
  return { files, professions: trainSplits.professions, texts, ...parts, testSubgroups, tuning, testSplit };
}

/** A split as cache rows and labels. */
function labelled(split: readonly SplitExample[], rowOf: Map<string, number>): LabelledSplit {
  return {
    rows: Int32Array.from(split, (e) => rowOf.get(e.text)!),
    y: Int32Array.from(split, (e) => e.y),
    z: Int32Array.from(split, (e) => e.z),
    texts: split.map((e) => e.text),
  };
}

function probeOptions(config: ExperimentConfig, seed: number): LinearProbeOptions {
  return { ...config.probe, seed };
}

/** Trains a linear probe; `log` receives its mean training loss per epoch. */
function trainProbe(X: tf.Tensor2D, y: Int32Array, options: LinearProbeOptions, log?: HistoryLog): Probe {
  const probe = new LinearProbe(X.shape[1], 2, options);
  const report = probe.fit(X, y);
  if (log !== undefined) {
    const perEpoch = report.steps / report.epochs;
    for (let e = 0; e < report.epochs; e++) {
      const losses = report.losses.subarray(e * perEpoch, (e + 1) * perEpoch);
      log({ stage: 'probe', step: e + 1, values: { loss: losses.reduce((a, b) => a + b, 0) / losses.length } });
    }
  }
  return probe;
}

/** A set of test bios as erased representations: the balanced split and each subgroup. */
interface ErasedTest {
  balanced: { X: tf.Tensor2D; split: LabelledSplit };
  subgroups: Record<string, { X: tf.Tensor2D; split: LabelledSplit }>;
}

/**
 * Scores a probe on each erased test set (the reporting part of the test file, then the tuning part
 * when there is one), with one fresh gender probe, trained on erased balanced data, for all of them.
 */
function score(
  probe: Probe,
  tests: readonly ErasedTest[],
  genderTrain: { X: tf.Tensor2D; z: Int32Array },
  seed: number,
  probeOpts: LinearProbeOptions,
): SeedScores[] {
  // A fresh gender probe, trained to convergence on erased balanced-train representations.
  // At least 10 epochs when the recipe gives a count: a short recipe would understate what a probe can still find.
  const epochs = probeOpts.epochs ?? 'converge';
  const genderProbe = trainProbe(genderTrain.X, genderTrain.z, {
    ...probeOpts,
    epochs: epochs === 'converge' ? epochs : Math.max(10, epochs),
    seed: seed + 1000,
  });
  try {
    return tests.map((test) => {
      const predBalanced = probe.predict(test.balanced.X);
      const subgroup_acc: Record<string, Interval> = {};
      for (const [group, { X, split }] of Object.entries(test.subgroups)) subgroup_acc[group] = accuracy(probe.predict(X), split.y);
      return {
        profession_acc: accuracy(predBalanced, test.balanced.split.y),
        gender_agreement: genderAgreement(predBalanced, test.balanced.split.z),
        worst_group_acc: worstGroup(subgroup_acc),
        subgroup_acc,
        gender_probe_acc: accuracy(genderProbe.predict(test.balanced.X), test.balanced.split.z),
      };
    });
  } finally {
    genderProbe.dispose();
  }
}

export interface RunOptions {
  /** The run folder (src/experiment/run-folder.ts): config.json, results.jsonl, history.jsonl, metrics.json, erasers/. */
  outDir: string;
  /** Start the folder afresh instead of resuming an unfinished run of the same config (or refusing a finished or different one). */
  force?: boolean;
  /**
   * A given biased probe instead of one trained per seed (`sae-eraser mask -pp`): `load(dIn)` makes a
   * fresh copy for a probe hook of width dIn (the runner disposes it); `id` identifies its weights,
   * recorded with the run's inputs so that a resumed run uses the same probe.
   */
  biasedProbe?: { id: string; load(dIn: number): Probe };
}

/**
 * Offers a scored method to the explorer when all it removes is SAE features at the probe hook (or
 * nothing); the explorer lists it only if its affine form reproduces the recorded metrics.
 */
function offerToExplorer(explorer: ExplorerCollector, method: string, result: MethodSeedResult, head: string, probeHook: HookName): void {
  const removed = result.removed ?? {};
  const hooks = Object.keys(removed);
  if (hooks.length === 0 && result.units_removed > 0) {
    // Word deletion: it edits the input texts, which no feature set at the hook stands for.
    explorer.exclude(method, `it removes ${result.units_removed} units that are not SAE features at ${probeHook} (${result.summary})`);
    return;
  }
  if (hooks.length === 0) {
    explorer.addMethod(method, head, [], result);
    return;
  }
  const atHook = removed[probeHook];
  if (hooks.length === 1 && atHook?.kind === 'sae_features' && atHook.indices !== undefined) {
    explorer.addMethod(method, head, atHook.indices, result);
  } else {
    explorer.exclude(method, `it removes ${hooks.map((h) => `${removed[h]!.kind} at ${h}`).join(', ')}, not only SAE features at ${probeHook}`);
  }
}

/** The config as the run folder records and compares it: everything but the path it was read from. */
export function resolvedConfig(config: ExperimentConfig): ResolvedConfig {
  const { source: _source, ...rest } = config;
  return JSON.parse(JSON.stringify(rest)) as ResolvedConfig;
}

/**
 * Runs the experiment into the run folder `options.outDir`, resuming it when it holds an unfinished
 * run of the same config: each method and seed is appended to results.jsonl as soon as it is scored,
 * training curves to history.jsonl, and metrics.json is written at the end.
 */
export async function runExperiment(config: ExperimentConfig, options: RunOptions): Promise<ExperimentResult> {
  const t0 = Date.now();
  const folder = RunFolder.open(options.outDir, resolvedConfig(config), { force: options.force, source: config.source, engine: await engineInfo() });
  try {
    return await runInFolder(config, folder, t0, options.biasedProbe);
  } finally {
    folder.close();
  }
}

async function runInFolder(config: ExperimentConfig, folder: RunFolder, t0: number, givenProbe?: RunOptions['biasedProbe']): Promise<ExperimentResult> {
  if (config.modelSource !== undefined) ensureWheelFolder(config.modelSource, config.model);
  const data = await loadExperimentData(config);
  const opened = await openModel(config.model, { maxLength: config.maxLength });
  const { model } = opened;
  if (!model.hookNames.includes(config.probeHook)) throw new Error(`${config.source}: probeHook "${config.probeHook}" does not exist in ${config.model}`);

  // The SAE specs by hook: patterns expanded against this model's hooks, unknown hooks refused.
  const saeSpecs = expandSaeSpecs(config.saes, model.hookNames, config.source);
  // Hooks named in method options, checked now rather than after SAE training and caching.
  for (const [name, parsed] of Object.entries(config.methods)) {
    const where = `${config.source}: methods.${name}`;
    const { hooks, needSae } = namedHooks(parsed!);
    checkHooksUpToProbe(model, config.probeHook, hooks, where);
    const bare = needSae ? hooks.filter((h) => saeSpecs[h] === undefined) : [];
    if (bare.length > 0) throw new Error(`${where}: hook "${bare[0]}" has no SAE in "saes" (SAEs at: ${Object.keys(saeSpecs).join(', ') || 'none'})`);
  }

  const saes: Record<HookName, Sae> = {};
  const saeIds: Record<HookName, string> = {};
  const saeQualities: NonNullable<ExperimentResult['saes']> = {};
  // Every missing SAE is trained from one activation pass over the training texts.
  const saePaths = await ensureSaes(
    saeSpecs,
    opened,
    config,
    data.ambiguous.concat(data.balanced).map((e) => e.text),
    folder.history,
  );
  for (const [hook, path] of Object.entries(saePaths)) {
    const sae = await loadSae(path, { hook });
    checkSaeFitsModel(sae, model, hook);
    saes[hook] = sae;
    saeIds[hook] = weightsId(path);
    saeQualities[hook] = saeQuality(path, sae);
  }
  // Results of an interrupted run count only if they were computed from the same weights and data.
  folder.checkInputs({
    model: weightsId(opened.dir),
    train: fileSha256(data.files.train),
    test: fileSha256(data.files.test),
    ...Object.fromEntries(Object.entries(saeIds).map(([hook, id]) => [`sae ${hook}`, id])),
    ...(givenProbe === undefined ? {} : { probe: givenProbe.id }),
  });

  const tCache = Date.now();
  const cacheHooks = [...new Set([config.probeHook, ...Object.keys(saes)])];
  const specFor = (texts: string[], probeOnly: boolean): CacheSpec => ({
    modelId: weightsId(opened.dir),
    hooks: probeOnly ? [config.probeHook] : cacheHooks,
    saes: probeOnly ? {} : Object.fromEntries(Object.entries(saes).map(([h, sae]) => [h, { sae, id: saeIds[h]! }])),
    tokenizerId: `${opened.tokenizer.path}:${opened.maxLength}`,
    texts,
  });
  const buildCache = (texts: string[], label: string, probeOnly = false): Promise<ActivationCache> =>
    buildActivationCache(specFor(texts, probeOnly), { model, tokenize: opened.tokenize, root: config.cacheDir, batchSize: config.batchSize, label });
  const cache = await buildCache(data.texts, 'caching activations');
  const cacheSeconds = (Date.now() - tCache) / 1000;
  const rowOf = new Map(data.texts.map((t, i) => [t, i]));
  const splits = {
    ambiguous: labelled(data.ambiguous, rowOf),
    balanced: labelled(data.balanced, rowOf),
    concept: labelled(data.concept, rowOf),
    testBalanced: labelled(data.testBalanced, rowOf),
    testSubgroups: Object.fromEntries(Object.entries(data.testSubgroups).map(([k, v]) => [k, labelled(v, rowOf)])),
    tuning:
      data.tuning === undefined
        ? undefined
        : {
            balanced: labelled(data.tuning.balanced, rowOf),
            subgroups: Object.fromEntries(Object.entries(data.tuning.subgroups).map(([k, v]) => [k, labelled(v, rowOf)])),
          },
  };
  // Edited texts are read only at the probe hook (erasedPooled), so their cache skips the other hooks and the SAE codes.
  const recache = (texts: string[]): Promise<ActivationCache> => buildCache(texts, 'caching edited texts', true);
  const fitInputs = {
    model,
    tokenize: opened.tokenize,
    cache,
    recache,
    batchSize: config.batchSize,
    saes,
    probeHook: config.probeHook,
    train: splits.ambiguous,
    concept: splits.concept,
    balanced: splits.balanced,
  };

  // The config's names: a family, or family@variant (config.methods[name].method is the family).
  const methods = Object.keys(config.methods);
  const perMethod: Record<string, MethodSeedResult[]> = Object.fromEntries(methods.map((m) => [m, []]));
  const bar = progress('methods', methods.length * config.seeds.length, 'fits');
  /** Fits one method (or trains the oracle) for a seed, scores it and saves its eraser. */
  const runMethod = async (
    method: string,
    seed: number,
    biasedProbe: Probe,
    popts: LinearProbeOptions,
    explorer: ExplorerCollector | undefined,
  ): Promise<MethodSeedResult> => {
    const t = Date.now();
    let eraser: Eraser | undefined;
    let oracle: Probe | undefined;
    try {
      if (method === 'oracle') {
        const Xb = cache.pooled(config.probeHook, splits.balanced.rows);
        try {
          oracle = trainProbe(Xb, splits.balanced.y, popts, withStagePrefix(folder.history, `oracle/seed-${seed}`));
        } finally {
          Xb.dispose();
        }
      } else if (method !== 'original') {
        const log = withStagePrefix(folder.history, `${method}/seed-${seed}`);
        eraser = await createFitter(config.methods[method]!).fit({ ...fitInputs, probe: biasedProbe, seed, log });
      }
      const probe = oracle ?? eraser?.head ?? biasedProbe;
      let erased: tf.Tensor2D[] = [];
      let scores: SeedScores & Pick<MethodSeedResult, 'tuning'>;
      try {
        // Every split in one erasing pass (one ONNX session, one re-cache), then taken apart again.
        const parts: [LabelledSplit, Record<string, LabelledSplit>][] = [[splits.testBalanced, splits.testSubgroups]];
        if (splits.tuning !== undefined) parts.push([splits.tuning.balanced, splits.tuning.subgroups]);
        const all = [...parts.flatMap(([balanced, subgroups]) => [balanced, ...Object.values(subgroups)]), splits.balanced];
        erased = await erasedPooledSplits(eraser, all, fitInputs);
        let next = 0;
        const take = (split: LabelledSplit): { X: tf.Tensor2D; split: LabelledSplit } => ({ X: erased[next++]!, split });
        // The reporting part first: its scores are the result's own; the tuning part's go under `tuning`.
        const tests: ErasedTest[] = parts.map(([balanced, subgroups]) => ({
          balanced: take(balanced),
          subgroups: Object.fromEntries(Object.entries(subgroups).map(([k, s]) => [k, take(s)] as const)),
        }));
        const genderX = take(splits.balanced).X;
        const [reported, tuning] = score(probe, tests, { X: genderX, z: splits.balanced.z }, seed, popts);
        scores = { ...reported!, ...(tuning === undefined ? {} : { tuning }) };
      } finally {
        tf.dispose(erased);
      }
      const description = eraser?.describe();
      const result: MethodSeedResult = {
        seed,
        ...scores,
        units_removed: description?.unitsRemoved ?? 0,
        seconds: (Date.now() - t) / 1000,
        summary: description?.summary ?? (method === 'oracle' ? 'probe trained on balanced data' : 'no erasure'),
        // The probes' own (the registry's: the oracle's balanced task labels, the original's ambiguous ones).
        supervision: description?.supervision ?? methodSupervision(config.methods[method]!),
        ...(description === undefined ? {} : { removed: description.removed }),
        ...(description?.selection === undefined ? {} : { selection: description.selection }),
      };
      if (explorer !== undefined) {
        const own = oracle ?? eraser?.head;
        if (own !== undefined) explorer.addHead(method, own);
        offerToExplorer(explorer, method, result, own === undefined ? 'original' : method, config.probeHook);
      }
      if (eraser !== undefined) saveEraser(eraser, join(folder.dir, 'erasers', method, `seed-${seed}`));
      return result;
    } finally {
      eraser?.dispose();
      oracle?.dispose();
    }
  };
  if (folder.resumed > 0) process.stderr.write(`${folder.dir}: resuming, ${folder.resumed} method/seed result(s) already in results.jsonl\n`);
  const costHooks = hooksUpToProbe(model, saes, config.probeHook);
  for (const seed of config.seeds) {
    const todo = methods.filter((m) => folder.result(m, seed) === undefined);
    let biasedProbe: Probe | undefined;
    const popts = probeOptions(config, seed);
    const explorerFile = join(folder.dir, 'explorer', `seed-${seed}.json`);
    const probeSae = saes[config.probeHook];
    const explorer =
      probeSae !== undefined && !existsSync(explorerFile)
        ? new ExplorerCollector(seed, config.probeHook, probeSae, cache, { balanced: splits.testBalanced, ...splits.testSubgroups }, data.professions)
        : undefined;
    // The first seed's probe also measures what each SAE at or before the probe hook costs downstream (below).
    const measureCost = seed === config.seeds[0] && costHooks.length > 0;
    if (todo.length > 0 || explorer !== undefined || measureCost) {
      const original = tf.tidy(() => cache.pooled(config.probeHook, splits.ambiguous.rows));
      biasedProbe =
        givenProbe?.load(original.shape[1]) ?? trainProbe(original, splits.ambiguous.y, popts, withStagePrefix(folder.history, `original/seed-${seed}`));
      original.dispose();
      explorer?.addHead('original', biasedProbe);
    }
    try {
      if (measureCost) {
        // Each SAE's reconstruction in place of its hook, scored by the biased probe (src/eval/sae-cost.ts),
        // on the tuning part when there is one: the reporting part stays for the methods' scores.
        const [costSplit, costPart] = splits.tuning === undefined ? [splits.testBalanced, 'whole' as const] : [splits.tuning.balanced, 'tuning' as const];
        const costs = await saeDownstreamCost(
          { model, tokenize: opened.tokenize, saes, probeHook: config.probeHook, probe: biasedProbe!, cache, split: costSplit },
          { batchSize: config.batchSize },
        );
        for (const [hook, cost] of Object.entries(costs)) {
          const quality = saeQualities[hook];
          if (quality === undefined) continue;
          quality.downstream = cost;
          quality.downstream_split = costPart;
        }
      }
      for (const method of methods) {
        let run = folder.result(method, seed);
        if (run === undefined) {
          run = await runMethod(method, seed, biasedProbe!, popts, explorer);
          folder.record(method, seed, run);
        } else if (explorer !== undefined) {
          // Scored by an earlier run: its own head (if any) is not at hand, so it is offered with the
          // biased probe's, and listed only if that reproduces its recorded metrics.
          offerToExplorer(explorer, method, run, 'original', config.probeHook);
        }
        perMethod[method]!.push(run);
        bar.tick(1, method);
      }
      if (explorer !== undefined) {
        const built = explorer.build(splits.concept, data.texts);
        const { tokenizer } = opened;
        const source = {
          model,
          tokenize: opened.tokenize,
          piece: (id: number) => displayPiece(tokenizer.idToToken(id), tokenizer.modelType),
          sae: probeSae!,
          batchSize: config.batchSize,
        };
        addTokenActivations(built, source);
        addPromotedTokens(built, source);
        writeJsonAtomic(explorerFile, built);
      }
    } finally {
      biasedProbe?.dispose();
    }
  }
  bar.done();

  const result: ExperimentResult = {
    config: config.source,
    name: config.name,
    model: config.model,
    probeHook: config.probeHook,
    professions: data.professions,
    seeds: config.seeds,
    n_test: {
      balanced: splits.testBalanced.rows.length,
      subgroups: Object.fromEntries(Object.entries(splits.testSubgroups).map(([k, s]) => [k, s.rows.length])),
    },
    test_split: data.testSplit,
    n_train: { ambiguous: splits.ambiguous.rows.length, balanced: splits.balanced.rows.length, concept: splits.concept.rows.length },
    methods: {},
    seconds: { cache: cacheSeconds, total: 0 },
    saes: saeQualities,
    ...(splits.tuning === undefined
      ? {}
      : {
          tuning: {
            n_test: {
              balanced: splits.tuning.balanced.rows.length,
              subgroups: Object.fromEntries(Object.entries(splits.tuning.subgroups).map(([k, s]) => [k, s.rows.length])),
            },
            methods: {},
          },
        }),
  };
  for (const [method, runs] of Object.entries(perMethod)) {
    if (result.tuning !== undefined) {
      const tuning = runs.map((r) => {
        if (r.tuning === undefined) throw new Error(`${folder.dir}: the result of ${method} at seed ${r.seed} has no tuning-part scores; rerun with --force`);
        return r.tuning;
      });
      result.tuning.methods[method] = summarizeScores(tuning);
    }
    result.methods[method] = {
      ...summarizeScores(runs),
      n_test: result.n_test.balanced,
      units_removed: Math.round(runs.reduce((a, r) => a + r.units_removed, 0) / runs.length),
      seconds: runs.reduce((a, r) => a + r.seconds, 0) / runs.length,
      supervision: seedsSupervision(runs),
      per_seed: runs,
    };
  }
  result.seconds.total = (Date.now() - t0) / 1000;
  folder.finish(result);
  model.dispose();
  return result;
}
