/**
 * What an experiment run produces: per-seed scores of each method and their summary over seeds,
 * as written to `metrics.json`. Shared by the runner and the reports.
 */
import { aggregateSeeds, type Interval } from '../eval/metrics.js';
import type { HookName } from '../models/model.js';
import type { EraserDescription } from '../erasure/eraser.js';

export interface MethodSeedResult {
  seed: number;
  profession_acc: Interval;
  gender_agreement: Interval;
  worst_group_acc: Interval & { group: string };
  subgroup_acc: Record<string, Interval>;
  gender_probe_acc: Interval;
  units_removed: number;
  seconds: number;
  summary: string;
  /** What the eraser removed, per hook (absent for the original probe and the oracle). */
  removed?: EraserDescription['removed'];
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
      per_seed: MethodSeedResult[];
    }
  >;
  seconds: { cache: number; total: number };
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
