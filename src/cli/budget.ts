/**
 * `sae-eraser budget`: the label-budget curve, the experiment once per concept-set size
 * (src/experiment/budget.ts), with its table (budget.md) and chart (budget.svg).
 */
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { applyOverrides, readExperimentConfig, type ExperimentConfig } from '../experiment/config.js';
import { DEFAULT_BUDGET_SIZES, parseBudgetSizes, runBudget, selectMethods, type BudgetSize } from '../experiment/budget.js';
import { renderBudgetChart, renderBudgetTable } from '../report/budget.js';
import type { CommandResult, Subcommand } from './subcommand.js';
import { UsageError, parse, requireString, stringList } from './args.js';
import { experimentOutDir, seedsOption, writeRunFiles } from './experiment-args.js';

const usage = `usage: sae-eraser budget --config FILE.json --out DIR [--sizes 64,256,1024,all] [--seeds 42,43,44]
                         [--methods M,M,...] [--set KEY=VALUE ...] [--force] [--quiet]

The label-budget curve: runs the config's experiment (as sae-eraser run) once per concept-set size,
each into its own run folder DIR/concept-<size>/ with dataset.conceptSize set to that size, then writes
DIR/budget.json (per size and method: the summaries over seeds and the concept-set size used),
DIR/budget.md (a table: one row per method, profession / agreement / worst group / gender probe per
size) and DIR/budget.svg (worst-group accuracy, gender agreement and the post-erasure gender probe
against the size on a log axis, one line per method, chance at 50% marked).

--sizes     concept-set sizes, increasing: positive integers, and "all" last for every training bio of
            the two professions (default ${DEFAULT_BUDGET_SIZES.join(',')}); a size larger than that pool is an error
--seeds     seeds of every size (default: the config's)
--methods   run only these of the config's methods (default: all of them)
--set       sets a config field before validation, as in sae-eraser run (repeatable)

Methods that read no label of the concept set (the original probe, the oracle, word_deletion, and
with such options SHIFT with selection top or manual, random with k or perHook, masks with objective
task) run only at the first size and appear at every size with that result (as dashed horizontal
references in the chart). Running
again into the same DIR resumes: a finished size folder of the same config is read, an unfinished one
resumes; --force runs every size afresh.`;

async function main(argv: string[]): Promise<CommandResult> {
  const p = parse(argv, {
    config: { type: 'string' },
    out: { type: 'string' },
    sizes: { type: 'string' },
    seeds: { type: 'string' },
    methods: { type: 'string' },
    set: { type: 'string', multiple: true },
  });
  const sizeItems = stringList(p, 'sizes');
  let sizes: BudgetSize[] = [...DEFAULT_BUDGET_SIZES];
  if (p.values.sizes !== undefined) {
    try {
      sizes = parseBudgetSizes(sizeItems);
    } catch (err) {
      throw new UsageError(`--sizes: ${(err as Error).message}`);
    }
  }
  const path = requireString(p, 'config');
  const read = applyOverrides(readExperimentConfig(path, (p.values.set as string[] | undefined) ?? []), { seeds: seedsOption(p) });
  const config = onlyMethods(read, stringList(p, 'methods'));
  // As in sae-eraser run: every local input is protected.
  const outDir = experimentOutDir(p, path, config);
  const budget = await runBudget(config, {
    outDir,
    sizes,
    force: p.values.force === true,
    // Each size folder gets what sae-eraser run leaves in a run folder.
    onRun: (dir, result) => void writeRunFiles(dir, result),
  });
  const table = renderBudgetTable(budget);
  writeFileAtomic(join(outDir, 'budget.md'), table);
  writeFileAtomic(join(outDir, 'budget.svg'), renderBudgetChart(budget));
  const files = ['budget.json', 'budget.md', 'budget.svg'].map((f) => join(outDir, f));
  return {
    json: { out: outDir, files, ...budget },
    text: `${table}\nwrote ${files.join(', ')} and ${budget.points.map((pt) => `${pt.run}/`).join(', ')}\n`,
  };
}

/** The config with only `names` among its methods (all of them when none are named), in the config's order. */
function onlyMethods(config: ExperimentConfig, names: readonly string[]): ExperimentConfig {
  if (names.length === 0) return config;
  const known = Object.keys(config.methods);
  for (const name of names) {
    if (!known.includes(name)) throw new UsageError(`--methods: "${name}" is not a method of ${config.source} (it has ${known.join(', ')})`);
  }
  return { ...config, methods: selectMethods(config, names) };
}

export const budgetCommand: Subcommand = {
  summary: 'The label-budget curve: every method as the concept-labelled set grows (table and chart).',
  example: 'sae-eraser budget --config configs/ci-minilm-surgeon-nurse.json --out runs/ci-budget --sizes 64,256,all',
  usage,
  main,
};
