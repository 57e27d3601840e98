/**
 * `sae-eraser run`: the experiment runner (every configured method over several seeds).
 */
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { renderTable } from '../report/table.js';
import { writeReport } from '../report/html.js';
import { applyOverrides, readExperimentConfig } from '../experiment/config.js';
import { runExperiment } from '../experiment/runner.js';
import type { Subcommand } from './subcommand.js';
import { UsageError, outputPath, optionalString, parse, requireString, stringList } from './args.js';

const usage = `usage: sae-eraser run --config FILE.json --out DIR [--model M] [--train FILE] [--test FILE] [--seeds 42,43,44] [--force] [--quiet]

Runs every method the config names over its seeds into the run folder DIR: config.json (the resolved
config and provenance), results.jsonl (one line per method and seed, as soon as it is scored),
history.jsonl (training curves), the fitted erasers (erasers/<method>/seed-<s>/), and at the end
metrics.json, table.md and report.html (see sae-eraser report). Running again into the same DIR resumes an interrupted run of the same
config (seeds and methods may be added); a finished run or a different config is refused unless
--force, which starts DIR afresh. The flags override the config's model, data files and seeds. See
configs/minilm-surgeon-nurse.json for the offline experiment.`;

async function main(argv: string[]): Promise<void> {
  const p = parse(argv, {
    config: { type: 'string' },
    out: { type: 'string' },
    model: { type: 'string' },
    train: { type: 'string' },
    test: { type: 'string' },
    seeds: { type: 'string' },
  });
  const seedList = stringList(p, 'seeds');
  const seeds = seedList.map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n)) throw new UsageError(`--seeds takes integers, got "${s}"`);
    return n;
  });
  const config = applyOverrides(readExperimentConfig(requireString(p, 'config')), {
    model: optionalString(p, 'model'),
    train: optionalString(p, 'train'),
    test: optionalString(p, 'test'),
    seeds: seeds.length > 0 ? seeds : undefined,
  });
  const outDir = outputPath(p, 'folder', [
    requireString(p, 'config'),
    config.dataset.train,
    config.dataset.test,
    config.model,
    config.cacheDir,
    ...Object.values(config.saes).map((s) => s.path),
  ]);
  const result = await runExperiment(config, { outDir, force: p.values.force === true });
  writeFileAtomic(join(outDir, 'table.md'), renderTable(result));
  const report = writeReport(outDir);
  process.stdout.write(`${renderTable(result)}\nwrote ${outDir}/metrics.json, table.md and ${report.path} (${result.seconds.total.toFixed(0)} s)\n`);
}

export const runCommand: Subcommand = { summary: 'Run an erasure experiment from a config file.', usage, main };
