/**
 * The results part of the report: the table with 95% intervals, a bar chart per metric (methods x
 * seeds, each bar with its Wilson interval) and the subgroup accuracies as a method x subgroup
 * heatmap, all from the per-seed results.
 *
 * Intervals in the table: a method scored at one seed shows that seed's Wilson interval (over the
 * test examples); a method scored at several shows the mean with its Student-t 95% interval over
 * seeds (`summarize`, as in metrics.json). Each row says which.
 */
import { supervisionText } from '../erasure/eraser.js';
import { seedsSupervision, summarize } from '../experiment/results.js';
import type { ResultLine, SeedResult } from './run-dir.js';
import { escapeHtml } from './escape.js';
import { barChart, colour, heatmap, legend, percent, type BarGroup } from './svg.js';

type Interval = { value: number; lo: number; hi: number };

/** Per-seed results grouped by method (in order of first appearance), each method's seeds ascending. */
export function byMethod(results: readonly ResultLine[]): Map<string, SeedResult[]> {
  const out = new Map<string, SeedResult[]>();
  for (const line of results) {
    const list = out.get(line.method) ?? [];
    list.push(line.result);
    out.set(line.method, list);
  }
  for (const list of out.values()) list.sort((a, b) => a.seed - b.seed);
  return out;
}

/** Subgroup names: the four of the two professions in the table's order when present, then any others. */
export function subgroupNames(results: readonly ResultLine[], professions: readonly string[] | undefined): string[] {
  const seen: string[] = [];
  for (const line of results) for (const g of Object.keys(line.result.subgroup_acc)) if (!seen.includes(g)) seen.push(g);
  if (professions === undefined || professions.length !== 2) return seen;
  const [p0, p1] = professions;
  const preferred = [`male_${p0}`, `female_${p0}`, `male_${p1}`, `female_${p1}`].filter((g) => seen.includes(g));
  return [...preferred, ...seen.filter((g) => !preferred.includes(g))];
}

/** The table cell's estimate: one seed's Wilson interval, or the mean and t-interval over seeds. */
export function estimate(per: readonly (Interval | undefined)[]): (Interval & { seeds: number }) | undefined {
  const present = per.filter((v): v is Interval => v !== undefined);
  if (present.length === 0) return undefined;
  if (present.length === 1) return { ...present[0]!, seeds: 1 };
  const s = summarize(present.map((v) => v.value));
  return { value: s.mean, lo: s.ci95[0], hi: s.ci95[1], seeds: present.length };
}

/** Percent with one decimal; an interval edge is clipped to [0, 100] (a t-interval over few seeds can pass the bounds of a proportion). */
const pc = (v: number): string => (100 * Math.min(1, Math.max(0, v))).toFixed(1);

const cell = (e: Interval | undefined, below = ''): string =>
  e === undefined ? '<td class="num">–</td>' : `<td class="num">${pc(e.value)}<br><small>[${pc(e.lo)}, ${pc(e.hi)}]${below}</small></td>`;

/** The labels the method read at any of its seeds, as the table's short text ("not recorded" for runs from before they were). */
function labelsUsed(runs: readonly SeedResult[]): string {
  const recorded = runs.flatMap((r) => (r.supervision === undefined ? [] : [{ supervision: r.supervision }]));
  if (recorded.length === 0) return 'not recorded';
  return supervisionText(seedsSupervision(recorded));
}

/** Metrics with a bar chart, and their names. */
const CHARTED = [
  ['profession_acc', 'profession accuracy'],
  ['gender_agreement', 'gender agreement'],
  ['worst_group_acc', 'worst-group accuracy'],
  ['gender_probe_acc', 'gender recoverable by a fresh probe'],
] as const;

/** The results table's HTML. */
export function resultsTable(results: readonly ResultLine[], professions: readonly string[] | undefined): string {
  const methods = byMethod(results);
  const groups = subgroupNames(results, professions);
  const head =
    `<tr><th>method</th><th>labels used</th><th class="num">seeds</th><th class="num">profession acc</th><th class="num">gender agreement</th><th class="num">worst group</th>` +
    groups.map((g) => `<th class="num">${escapeHtml(g).replace(/_/g, '_<wbr>')}</th>`).join('') +
    `<th class="num">gender probe</th><th class="num">units removed</th><th class="num">seconds</th></tr>`;
  const rows = [...methods.entries()].map(([method, runs]) => {
    const est = (f: (r: SeedResult) => Interval | undefined): (Interval & { seeds: number }) | undefined => estimate(runs.map(f));
    const worstNames = [...new Set(runs.map((r) => r.worst_group_acc.group))];
    const kind = runs.length === 1 ? 'Wilson' : 't over seeds';
    const mean = (f: (r: SeedResult) => number): number => runs.reduce((a, r) => a + f(r), 0) / runs.length;
    return (
      `<tr><th scope="row">${escapeHtml(method)}</th><td>${escapeHtml(labelsUsed(runs))}</td><td class="num">${runs.map((r) => r.seed).join(', ')}<br><small>${escapeHtml(kind)}</small></td>` +
      cell(est((r) => r.profession_acc)) +
      cell(est((r) => r.gender_agreement)) +
      cell(
        est((r) => r.worst_group_acc),
        `<br>${worstNames.map(escapeHtml).join('/<wbr>')}`,
      ) +
      groups.map((g) => cell(est((r) => r.subgroup_acc[g]))).join('') +
      cell(est((r) => r.gender_probe_acc)) +
      `<td class="num">${Math.round(mean((r) => r.units_removed))}</td><td class="num">${mean((r) => r.seconds).toFixed(1)}</td></tr>`
    );
  });
  const summaries = [...methods.entries()].map(([method, runs]) => `<dt>${escapeHtml(method)}</dt><dd>${escapeHtml(runs[0]!.summary)}</dd>`).join('');
  return (
    `<div class="scroll"><table class="results"><thead>${head}</thead><tbody>${rows.join('')}</tbody></table></div>` +
    `<p class="note">Percent. Brackets: 95% intervals — for a method scored at one seed, that seed's Wilson interval over the test examples; ` +
    `at several seeds, the mean with its Student-t interval over seeds (the "seeds" column says which), clipped to [0, 100]. ` +
    `Labels used: the labels a method read when fitted (amb. = ambiguous training split, concept = concept-labelled set, balanced = balanced training split; task = profession), ` +
    `and hand-picked when a person chose what it removes. Gender agreement: the profession ` +
    `predictions scored against gender (50% = the probe ignores gender on the balanced set). Gender probe: a fresh probe's gender accuracy on the erased representations.</p>` +
    `<details><summary>What each method did (first seed)</summary><dl class="summaries">${summaries}</dl></details>`
  );
}

/** One bar chart per metric: methods x seeds with per-seed Wilson error bars. */
export function metricCharts(results: readonly ResultLine[]): string {
  const methods = byMethod(results);
  const seeds = [...new Set(results.map((l) => l.seed))].sort((a, b) => a - b);
  const charts = CHARTED.map(([key, name]) => {
    const groups: BarGroup[] = [...methods.entries()].map(([method, runs]) => ({
      label: method,
      bars: seeds.map((s, i) => {
        const r = runs.find((x) => x.seed === s);
        if (r === undefined) return undefined;
        const v = r[key];
        return { label: `seed ${s}`, value: v.value, lo: v.lo, hi: v.hi, colour: colour(i) };
      }),
    }));
    return `<figure><figcaption>${escapeHtml(name)}</figcaption>${barChart(name, groups, name === 'gender agreement' ? 'agreement' : 'accuracy')}</figure>`;
  });
  return `<div class="charts">${charts.join('')}</div>${legend(seeds.map((s, i) => ({ label: `seed ${s}`, colour: colour(i) })))}<p class="note">Error bars: each seed's 95% Wilson interval over the test examples.</p>`;
}

/** The method x subgroup heatmap of accuracies (mean over seeds). */
export function subgroupHeatmap(results: readonly ResultLine[], professions: readonly string[] | undefined): string {
  const methods = byMethod(results);
  const groups = subgroupNames(results, professions);
  if (groups.length === 0) return '<p class="note">No subgroup accuracies were recorded.</p>';
  const values = [...methods.values()].map((runs) =>
    groups.map((g) => {
      const vs = runs.map((r) => r.subgroup_acc[g]?.value).filter((v): v is number => v !== undefined);
      return vs.length === 0 ? undefined : vs.reduce((a, b) => a + b, 0) / vs.length;
    }),
  );
  return `<figure>${heatmap('subgroup accuracy (mean over seeds)', [...methods.keys()], groups, values)}<figcaption class="below">Accuracy per subgroup, mean over the seeds scored; darker is higher. ${escapeHtml(
    percent(0.5),
  )} is chance.</figcaption></figure>`;
}
