/**
 * The run's Markdown table: one row per method, mean ± std over seeds in percent, the worst group
 * named, and the per-seed Wilson intervals of the first seed for scale.
 */
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
      `train: ambiguous ${result.n_train.ambiguous}, balanced ${result.n_train.balanced} (oracle only), concept set ${result.n_train.concept}.`,
    '',
    `| method | profession acc | gender agreement | worst group | ${groups.join(' | ')} | gender probe | units removed | seconds |`,
    `|---|---|---|---|${groups.map(() => '---|').join('')}---|---|---|`,
  ];
  for (const [method, m] of Object.entries(result.methods)) {
    const worstNames = [...new Set(m.per_seed.map((r) => r.worst_group_acc.group))].join('/');
    lines.push(
      `| ${method} | ${pct(m.profession_acc)} | ${pct(m.gender_agreement)} | ${pct(m.worst_group_acc)} (${worstNames}) | ` +
        groups.map((g) => (m.subgroup_acc[g] === undefined ? '-' : pct(m.subgroup_acc[g]))).join(' | ') +
        ` | ${pct(m.gender_probe_acc)} | ${m.units_removed} | ${m.seconds.toFixed(1)} |`,
    );
  }
  lines.push('', 'Percent, mean ± std over seeds; `metrics.json` has 95% t-intervals over seeds and per-seed Wilson intervals.', '');
  return lines.join('\n');
}
