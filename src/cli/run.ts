/**
 * `sae-eraser run`: the experiment runner (every configured method over several seeds).
 */
import { renderTable } from '../report/table.js';
import { applyOverrides, readExperimentConfig } from '../experiment/config.js';
import { runExperiment } from '../experiment/runner.js';
import type { CommandResult, Subcommand } from './subcommand.js';
import { optionalString, parse, requireString } from './args.js';
import { experimentOutDir, seedsOption, writeRunFiles } from './experiment-args.js';

const usage = `usage: sae-eraser run --config FILE.json --out DIR [--model M] [--train FILE] [--test FILE] [--seeds 42,43,44]
                      [--set KEY=VALUE ...] [--force] [--quiet]

Runs every method the config names over its seeds into the run folder DIR: config.json (the resolved
config and provenance), results.jsonl (one line per method and seed, as soon as it is scored),
history.jsonl (training curves), the fitted erasers (erasers/<method>/seed-<s>/), and at the end
metrics.json, table.md and report.html (see sae-eraser report). Running again into the same DIR resumes an interrupted run of the same
config (seeds and methods may be added); a finished run or a different config is refused unless
--force, which starts DIR afresh. The flags override the config's model, data files and seeds.

--set KEY=VALUE (repeatable) sets any config field before the config is validated, for example a
quick run: --set dataset.limits.ambiguous=200 --set methods.das_mask.epochs=1 --set maxLength=64.
KEY is a dotted path of fields (a field holding dots goes in brackets: saes[layers.4.resid_out].path);
VALUE is JSON when it parses as JSON ([42], true, {"epochs": 1}), else text. The resolved config is
recorded in DIR/config.json.

Data files may be hub references, hf://datasets/<owner>/<name>[@revision]/<path in repo>: they are
fetched into the Hugging Face cache like models (HF_HOME, HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE=1
to use the cache only). See configs/minilm-surgeon-nurse.json for the offline experiment and
configs/pythia70m-professor-nurse.json for the original setup (Pythia-70m-deduped from the hub).`;

async function main(argv: string[]): Promise<CommandResult> {
  const p = parse(argv, {
    config: { type: 'string' },
    out: { type: 'string' },
    model: { type: 'string' },
    train: { type: 'string' },
    test: { type: 'string' },
    seeds: { type: 'string' },
    set: { type: 'string', multiple: true },
  });
  const settings = (p.values.set as string[] | undefined) ?? [];
  const configPath = requireString(p, 'config');
  const config = applyOverrides(readExperimentConfig(configPath, settings), {
    model: optionalString(p, 'model'),
    train: optionalString(p, 'train'),
    test: optionalString(p, 'test'),
    seeds: seedsOption(p),
  });
  const outDir = experimentOutDir(p, configPath, config);
  const result = await runExperiment(config, { outDir, force: p.values.force === true });
  const report = writeRunFiles(outDir, result);
  return {
    json: { out: outDir, report, ...result },
    text: `${renderTable(result)}\nwrote ${outDir}/metrics.json, table.md and ${report} (${result.seconds.total.toFixed(0)} s)\n`,
  };
}

export const runCommand: Subcommand = {
  summary: 'Run an erasure experiment from a config file into a run folder (results, history, report.html).',
  example: 'sae-eraser run --config configs/ci-minilm-surgeon-nurse.json --out runs/ci',
  usage,
  main,
};
