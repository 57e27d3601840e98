/**
 * The run's Markdown table: one row per method, the labels it used, mean ± std over seeds in
 * percent, the worst group named, and the per-seed Wilson intervals of the first seed for scale.
 */
import { supervisionText, type Supervision } from '../erasure/eraser.js';
import type { ExperimentResult, Summary } from '../experiment/results.js';

const pct = (s: Summary): string => `${(100 * s.mean).toFixed(1)} ± ${(100 * s.std).toFixed(1)}`;

export function renderTable(result: ExperimentResult): string {
  const [p0, p1] = result.professions;
  const groups = [`male_${p0}`, `female_${p0}`, `male_${p1}`, `female_${p1}`];
  const lines = [
    `# ${result.name}`,
    '',
    `model \`${result.model}\`, probe at \`${result.probeHook}\`, ${p0} vs ${p1}, seeds ${result.seeds.join(', ')}; ` +
      `balanced test n = ${result.n_test.balanced}; subgroups ${groups.map((g) => `${g} ${result.n_test.subgroups[g] ?? 0}`).join(', ')}; ` +
      `train: ambiguous ${result.n_train.ambiguous}, balanced ${result.n_train.balanced} (oracle only), concept set ${result.n_train.concept}.` +
      (result.test_split === undefined ? '' : ` Reported on ${result.test_split.reported}.`),
    '',
    `| method | labels used | profession acc | gender agreement | worst group | ${groups.join(' | ')} | gender probe | units removed | seconds |`,
    `|---|---|---|---|---|${groups.map(() => '---|').join('')}---|---|---|`,
  ];
  for (const [method, m] of Object.entries(result.methods)) {
    const worstNames = [...new Set(m.per_seed.map((r) => r.worst_group_acc.group))].join('/');
    // A metrics.json read back from a run made before supervision was recorded has none.
    const used = m.supervision as Supervision | undefined;
    lines.push(
      `| ${method} | ${used === undefined ? 'not recorded' : supervisionText(used)} | ${pct(m.profession_acc)} | ${pct(m.gender_agreement)} | ${pct(m.worst_group_acc)} (${worstNames}) | ` +
        groups.map((g) => (m.subgroup_acc[g] === undefined ? '-' : pct(m.subgroup_acc[g]))).join(' | ') +
        ` | ${pct(m.gender_probe_acc)} | ${m.units_removed} | ${m.seconds.toFixed(1)} |`,
    );
  }
  lines.push(
    '',
    'Percent, mean ± std over seeds; `metrics.json` has 95% t-intervals over seeds and per-seed Wilson intervals. ' +
      'Labels used: the labels a method read when fitted (amb. = the ambiguous training split; concept = the concept-labelled set; balanced = the balanced training split; ' +
      'task = profession, gender = gender), and hand-picked when a person chose what it removes (a word list, listed features).',
    '',
  );
  return lines.join('\n');
}
