/**
 * Claims about an experiment's results, judged with the uncertainty of the test set: each method
 * against a reference method (the original biased probe, or the oracle) seed by seed, through the
 * per-seed Wilson intervals in metrics.json. The across-seed t-interval says nothing with one seed
 * (it is the point itself), and even with several seeds it measures training noise only, not the
 * sampling noise of a test set every seed shares.
 *
 * A change "beyond the interval" is one whose 95% interval for the difference excludes zero:
 * Newcombe's interval (`differenceInterval`) for accuracies and gender agreement, and the same on
 * `worstGroupInterval`s for the worst group. Both methods are scored on the same test bios, so the
 * two proportions are paired; the interval treats them as independent, which for positively
 * correlated predictions makes it conservative (a change it reports is real at the 5% level, and
 * small changes may go unreported). A paired test (McNemar's) would need per-example predictions,
 * which metrics.json does not keep.
 */
import { differenceInterval, normalQuantile, wilson, worstGroupInterval, type Interval } from '../../src/eval/metrics.js';
import type { ExperimentResult, MethodSeedResult } from '../../src/experiment/results.js';

export interface Verdict {
  holds: boolean;
  /** One line per seed: the numbers the verdict rests on. */
  detail: string;
}

/** What a method is claimed to do to the results, compared with a reference method. */
export type Effect =
  | 'removes units'
  | 'raises the worst group'
  | 'lowers gender agreement'
  | 'lowers the gender probe'
  | 'keeps profession accuracy'
  | 'keeps the worst group'
  | 'stays within noise'
  | 'leaves gender agreement at chance'
  | 'leaves the gender probe at chance';

/** Effects judged on the method's results alone (the reference is not used). */
const ABSOLUTE: readonly Effect[] = ['removes units', 'leaves gender agreement at chance', 'leaves the gender probe at chance'];

const pct = (v: number): string => `${(100 * v).toFixed(1)}`;
const signed = (v: number): string => `${v >= 0 ? '+' : ''}${(100 * v).toFixed(1)}`;

/** "70.0 - 44.0 = +26.0 [+10.3, +40.2]": a difference with its interval, in percent. */
function describeDifference(after: Interval, before: Interval, d: Interval): string {
  return `${pct(after.value)} - ${pct(before.value)} = ${signed(d.value)} [${signed(d.lo)}, ${signed(d.hi)}]`;
}

/** The 95% interval of the difference of one metric (method minus reference), per seed. */
type Metric = 'profession_acc' | 'gender_agreement' | 'gender_probe_acc' | 'worst_group';

function metricInterval(r: MethodSeedResult, metric: Metric): Interval {
  return metric === 'worst_group' ? worstGroupInterval(r.subgroup_acc) : r[metric];
}

function difference(r: MethodSeedResult, ref: MethodSeedResult, metric: Metric): { d: Interval; text: string } {
  const a = metricInterval(r, metric);
  const b = metricInterval(ref, metric);
  const d = differenceInterval(a, b);
  return { d, text: `${metric} ${describeDifference(a, b, d)}` };
}

/** Each seed's result of `method` beside the same seed's result of `reference`. */
function pairs(result: ExperimentResult, method: string, reference: string): [MethodSeedResult, MethodSeedResult][] {
  const m = result.methods[method];
  const ref = result.methods[reference];
  if (m === undefined) throw new Error(`no results for method ${method}`);
  if (ref === undefined) throw new Error(`no results for reference method ${reference}`);
  return m.per_seed.map((r) => {
    const other = ref.per_seed.find((x) => x.seed === r.seed);
    if (other === undefined) throw new Error(`${reference} has no result for seed ${r.seed}`);
    return [r, other];
  });
}

/**
 * Whether a proportion is within noise of 1/2: its Wilson interval at level 1 - 0.05 / tests
 * (Bonferroni over the `tests` seeds judged together) contains 0.5.
 */
function atChance(p: Interval, tests: number, what: string): { holds: boolean; text: string } {
  const w = wilson(Math.round(p.value * p.n), p.n, normalQuantile(1 - 0.05 / (2 * tests)));
  return {
    holds: w.lo <= 0.5 && 0.5 <= w.hi,
    text: `${what} ${pct(p.value)} [${pct(w.lo)}, ${pct(w.hi)}] (${(100 - 5 / tests).toFixed(2)}% Wilson) around 50`,
  };
}

/** One seed's verdict on an effect (of `seeds` judged together): whether it holds and the numbers behind it. */
function judgeSeed(effect: Effect, r: MethodSeedResult, ref: MethodSeedResult, seeds: number): { holds: boolean; text: string } {
  switch (effect) {
    case 'leaves gender agreement at chance':
      return atChance(r.gender_agreement, seeds, 'gender_agreement');
    case 'leaves the gender probe at chance':
      return atChance(r.gender_probe_acc, seeds, 'gender_probe_acc');
    case 'removes units':
      return { holds: r.units_removed > 0, text: `units removed ${r.units_removed}` };
    case 'raises the worst group': {
      const { d, text } = difference(r, ref, 'worst_group');
      return { holds: d.lo > 0, text };
    }
    case 'lowers gender agreement': {
      const { d, text } = difference(r, ref, 'gender_agreement');
      return { holds: d.hi < 0, text };
    }
    case 'lowers the gender probe': {
      const { d, text } = difference(r, ref, 'gender_probe_acc');
      return { holds: d.hi < 0, text };
    }
    case 'keeps profession accuracy': {
      // Not significantly below the reference: catches a method that wrecks the task.
      const { d, text } = difference(r, ref, 'profession_acc');
      return { holds: d.hi >= 0, text };
    }
    case 'keeps the worst group': {
      // Not significantly below the reference (with the oracle as reference: as good as it, within noise).
      const { d, text } = difference(r, ref, 'worst_group');
      return { holds: d.hi >= 0, text };
    }
    case 'stays within noise': {
      // Every headline metric's difference interval contains zero.
      const parts = (['profession_acc', 'gender_agreement', 'worst_group'] as const).map((m) => difference(r, ref, m));
      return { holds: parts.every(({ d }) => d.lo <= 0 && d.hi >= 0), text: parts.map((p) => p.text).join('; ') };
    }
  }
}

/** Whether `method` has `effect` relative to `reference` on every seed of the run. */
export function judge(result: ExperimentResult, method: string, effect: Effect, reference = 'original'): Verdict {
  const paired = pairs(result, method, reference);
  const seeds = paired.map(([r, ref]) => ({ seed: r.seed, ...judgeSeed(effect, r, ref, paired.length) }));
  return {
    holds: seeds.every((s) => s.holds),
    detail: seeds
      .map((s) => `${method}${ABSOLUTE.includes(effect) ? '' : ` vs ${reference}`}, seed ${s.seed}: ${s.text}${s.holds ? '' : ' (does not hold)'}`)
      .join('\n'),
  };
}
