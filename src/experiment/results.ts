/**
 * What an experiment run produces: per-seed scores of each method and their summary over seeds,
 * as written to `metrics.json`. Shared by the runner and the reports.
 */
import { aggregateSeeds, type Interval } from '../eval/metrics.js';
import type { SaeDownstreamCost } from '../eval/sae-cost.js';
import type { HookName } from '../models/model.js';
import { supervision, type EraserDescription, type Supervision } from '../erasure/eraser.js';

/** A method's scores at one seed on one set of test bios (the reporting or the tuning part of the test file). */
export interface SeedScores {
  profession_acc: Interval;
  gender_agreement: Interval;
  worst_group_acc: Interval & { group: string };
  subgroup_acc: Record<string, Interval>;
  gender_probe_acc: Interval;
}

/** A method's result at one seed: its scores on the reporting part of the test file, at the top level. */
export interface MethodSeedResult extends SeedScores {
  seed: number;
  /** The same scores on the tuning part of the test file (absent when the whole file is reported on). */
  tuning?: SeedScores;
  units_removed: number;
  seconds: number;
  summary: string;
  /**
   * The labels the method's fit read and whether it was hand-picked (the eraser's description; for
   * the probes, the runner's: ambiguous task labels for the original, balanced ones for the oracle).
   */
  supervision: Supervision;
  /** What the eraser removed, per hook (absent for the original probe and the oracle). */
  removed?: EraserDescription['removed'];
  /** How the removed SAE features were chosen (SHIFT and the random control): the rule, its settings, candidates and selected per hook. */
  selection?: EraserDescription['selection'];
}

export interface ExperimentResult {
  config: string;
  name: string;
  model: string;
  probeHook: HookName;
  professions: [string, string];
  seeds: number[];
  n_test: { balanced: number; subgroups: Record<string, number> };
  n_train: { ambiguous: number; balanced: number; concept: number };
  methods: Record<
    string,
    {
      profession_acc: Summary;
      gender_agreement: Summary;
      worst_group_acc: Summary;
      subgroup_acc: Record<string, Summary>;
      gender_probe_acc: Summary;
      n_test: number;
      units_removed: number;
      seconds: number;
      /** The labels read at any seed (`seedsSupervision`). */
      supervision: Supervision;
      per_seed: MethodSeedResult[];
    }
  >;
  seconds: { cache: number; total: number };
  /** The SAEs the run used, by hook (in forward order), with their quality as trained (absent in runs from before it was recorded). */
  saes?: Record<HookName, SaeQuality>;
  /** Which test bios the metrics above come from (absent in runs from before the test file was split, which used the whole file). */
  test_split?: TestSplitRecord;
  /**
   * The same metrics on the tuning part of the test file, the ones to tune choices on (the reported
   * ones stay untouched by tuning). Absent when the whole test file is reported on.
   */
  tuning?: {
    n_test: { balanced: number; subgroups: Record<string, number> };
    methods: Record<string, ScoreSummary>;
  };
}

/** One SAE of a run: where it is, its size and architecture, and its held-out quality when its folder records it (null when not). */
export interface SaeQuality {
  path: string;
  /** Fraction of variance explained on held-out tokens. */
  fve: number | null;
  /** Mean active features per held-out token. */
  l0: number | null;
  /** Fraction of features that never fired on the held-out tokens. */
  dead_fraction: number | null;
  d_sae: number;
  /** relu, topk or jumprelu (from the training record, else the SAE's activation). */
  arch: string | null;
  /**
   * For hooks at or before the probe hook: the first seed's biased probe on the balanced split of
   * the test file's tuning part (of the whole test file when it has none: `downstream_split`) with
   * this hook replaced by the SAE's reconstruction, without and with the error term
   * (src/eval/sae-cost.ts). Absent after the probe hook and in runs from before it was recorded.
   */
  downstream?: SaeDownstreamCost;
  /**
   * The test bios `downstream` was measured on: "tuning" (the tuning part's balanced split, leaving
   * the reporting part to the methods' scores) or "whole" (the whole test file's, when it has no
   * tuning part). Absent with `downstream`, and in runs from before it was recorded (the reporting part).
   */
  downstream_split?: 'tuning' | 'whole';
}

/** How the test file was split into a tuning and a reporting part (config `dataset.testSplit`). */
export interface TestSplitRecord {
  /** In words, e.g. for table.md's header. */
  reported: string;
  tuning_fraction: number;
  seed: number;
  /** Bios of the two professions in each part of the test file, before any cap. */
  n_reporting: number;
  n_tuning: number;
}

/** Each score summarised over seeds. */
export interface ScoreSummary {
  profession_acc: Summary;
  gender_agreement: Summary;
  worst_group_acc: Summary;
  subgroup_acc: Record<string, Summary>;
  gender_probe_acc: Summary;
}

export interface Summary {
  mean: number;
  std: number;
  ci95: [number, number];
}

export function summarize(values: number[]): Summary {
  const s = aggregateSeeds(values);
  // One seed has no spread; report the point value as its own interval edges as NaN-free JSON.
  return { mean: s.mean, std: Number.isNaN(s.std) ? 0 : s.std, ci95: [Number.isNaN(s.lo) ? s.mean : s.lo, Number.isNaN(s.hi) ? s.mean : s.hi] };
}

/** Summarises each score over seeds (the subgroups of the first seed's scores). */
export function summarizeScores(runs: readonly SeedScores[]): ScoreSummary {
  if (runs.length === 0) throw new Error('summarizeScores: no seeds to summarise');
  const pick = (f: (r: SeedScores) => number): Summary => summarize(runs.map(f));
  return {
    profession_acc: pick((r) => r.profession_acc.value),
    gender_agreement: pick((r) => r.gender_agreement.value),
    worst_group_acc: pick((r) => r.worst_group_acc.value),
    subgroup_acc: Object.fromEntries(Object.keys(runs[0]!.subgroup_acc).map((g) => [g, pick((r) => r.subgroup_acc[g]!.value)])),
    gender_probe_acc: pick((r) => r.gender_probe_acc.value),
  };
}

/** The labels a method read at any of its seeds (the same at every seed unless its options depend on the seed), hand-picked if at any. */
export function seedsSupervision(runs: readonly Pick<MethodSeedResult, 'supervision'>[]): Supervision {
  return supervision(
    runs.flatMap((r) => r.supervision.labels),
    runs.some((r) => r.supervision.handPicked),
  );
}
