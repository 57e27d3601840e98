/**
 * What `sae-eraser run` and `sae-eraser budget` share: the `--seeds` list, the run folder `--out`
 * (checked against every local input of the config) and the files a run folder gets at the end.
 */
import { dirname, join, resolve, sep } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { isHubPath } from '../io/hub.js';
import type { ExperimentConfig } from '../experiment/config.js';
import type { ExperimentResult } from '../experiment/results.js';
import { HOOK_PLACEHOLDER } from '../experiment/saes.js';
import { writeReport } from '../report/html.js';
import { renderTable } from '../report/table.js';
import { UsageError, outputPath, requireString, stringList, type Parsed } from './args.js';

/** `--seeds 42,43,44` as integers, or undefined when not given (the config's seeds then). */
export function seedsOption(p: Parsed): number[] | undefined {
  const seeds = stringList(p, 'seeds').map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n)) throw new UsageError(`--seeds takes integers, got "${s}"`);
    return n;
  });
  return seeds.length > 0 ? seeds : undefined;
}

/**
 * The local paths an experiment of `config` (read from `configPath`) reads, which `out` may not
 * be: the config file, the data files (a hub reference is no local file: the hub cache it resolves
 * to cannot be the run folder), the model, the cache folder and the SAEs. An SAE path of a hook
 * pattern holds `{hook}`, which no real path equals: its parent folder (the path up to the part
 * holding `{hook}`) is protected instead, and `out` itself when it is one of the paths the pattern
 * makes (`saes/{hook}` protects `saes` and `saes/<any hook>`).
 */
export function experimentInputs(configPath: string, config: ExperimentConfig, out: string): string[] {
  const saePaths = Object.values(config.saes).flatMap(({ path }) => {
    const at = path.indexOf(HOOK_PLACEHOLDER);
    if (at < 0) return [path];
    const template = resolve(path);
    const parent = dirname(resolve(path.slice(0, at) + 'x'));
    // {hook} stands for a hook name: any characters but a path separator.
    const parts = template.split(HOOK_PLACEHOLDER).map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    const made = new RegExp(`^${parts.join(`[^${sep === '\\' ? '\\\\/' : '/'}]+`)}$`);
    return made.test(resolve(out)) ? [parent, out] : [parent];
  });
  return [configPath, ...[config.dataset.train, config.dataset.test].filter((file) => !isHubPath(file)), config.model, config.cacheDir, ...saePaths];
}

/** The run folder `--out`, checked before any work against the inputs of `config` (`experimentInputs`). */
export function experimentOutDir(p: Parsed, configPath: string, config: ExperimentConfig): string {
  return outputPath(p, 'folder', experimentInputs(configPath, config, requireString(p, 'out')));
}

/** Writes what a finished run folder gets beside metrics.json: table.md and report.html. Returns the report's path. */
export function writeRunFiles(dir: string, result: ExperimentResult): string {
  writeFileAtomic(join(dir, 'table.md'), renderTable(result));
  return writeReport(dir).path;
}
