/**
 * Reading a run folder (the layout of src/experiment/run-folder.ts) for the report: every file is
 * parsed with a zod schema through `parseStrict`, so a malformed line is an error naming the file,
 * the line and the field. Files written by this project's runner are read with schemas that ignore
 * fields they do not name (a newer runner may add some); the explorer files, a versioned format,
 * are read strictly (explorer.ts).
 *
 * A finished run has metrics.json, whose per-seed results are the ones reported; a run still going
 * (or stopped) has only results.jsonl and gets a page marked partial. A last line without its newline
 * is a line being written (or cut by a crash): it is left out, with a warning on the page.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { readCheckpoint, ERASER_JSON } from '../erasure/checkpoint.js';
import { MASK_FORMAT } from '../erasure/mask/checkpoint.js';
import { supervisionSchema } from '../erasure/eraser.js';
import { readJsonLines, type JsonLines } from '../io/jsonl.js';
import { readJson } from '../io/text.js';
import { parseStrict } from '../util/schema.js';
import { parseExplorer, type ExplorerData } from './explorer.js';

const interval = z.object({ value: z.number(), lo: z.number(), hi: z.number(), n: z.number() });

/** One method's result at one seed (MethodSeedResult in src/experiment/results.ts). */
const seedResult = z.object({
  seed: z.number().int(),
  profession_acc: interval,
  gender_agreement: interval,
  worst_group_acc: interval.extend({ group: z.string() }),
  subgroup_acc: z.record(z.string(), interval),
  gender_probe_acc: interval,
  units_removed: z.number(),
  seconds: z.number(),
  summary: z.string(),
  supervision: supervisionSchema.optional().describe('The labels the method read and whether it was hand-picked (absent in runs from before it was recorded).'),
  removed: z
    .record(
      z.string(),
      z.object({
        kind: z.enum(['sae_features', 'neurons', 'directions', 'tokens']),
        indices: z.array(z.number().int()).optional(),
        rank: z.number().optional(),
      }),
    )
    .optional()
    .describe('What the method removed, per hook.'),
});

export type SeedResult = z.output<typeof seedResult>;

const resultLine = z.object({ method: z.string().min(1), seed: z.number().int(), result: seedResult });

/** A line of results.jsonl. */
export type ResultLine = z.output<typeof resultLine>;

const metricsFile = z.object({
  name: z.string(),
  model: z.string(),
  probeHook: z.string(),
  professions: z.tuple([z.string(), z.string()]),
  seeds: z.array(z.number().int()),
  n_test: z.object({ balanced: z.number(), subgroups: z.record(z.string(), z.number()) }),
  methods: z.record(z.string(), z.object({ per_seed: z.array(seedResult) })),
  seconds: z.object({ cache: z.number(), total: z.number() }),
});

const configFile = z.object({
  source: z.string(),
  config: z
    .object({
      name: z.string().optional(),
      model: z.string().optional(),
      probeHook: z.string().optional(),
      seeds: z.array(z.number().int()),
      methods: z.record(z.string(), z.unknown()),
      dataset: z.object({ professions: z.array(z.union([z.string(), z.number()])).optional() }).optional(),
    })
    .describe('The resolved config.'),
  provenance: z
    .object({
      package: z.object({ name: z.string(), version: z.string() }),
      git: z.union([z.object({ commit: z.string(), dirty: z.boolean() }), z.object({ error: z.string() }), z.null()]),
      node: z.string(),
      platform: z.string(),
      backend: z.string(),
      threads: z.number(),
      onnxThreads: z.number().optional(),
      started: z.string(),
    })
    .optional(),
});

export type RunConfig = z.output<typeof configFile>;

/** A line of history.jsonl: stage, step, elapsed seconds and the logged values. */
export interface HistoryLine {
  stage: string;
  step: number;
  values: Record<string, number>;
}

const historyLine = z.object({ stage: z.string().min(1), step: z.number(), elapsed: z.number().optional() }).catchall(z.union([z.number(), z.null()]));

/** The learned mask logits of one mask eraser at one hook. */
export interface MaskLogits {
  method: string;
  seed: number;
  hook: string;
  logits: Float32Array;
  /** True when the eraser applies the hard gate [m > 0]; false for the soft gate sigmoid(m / T). */
  hardMask: boolean;
}

export interface RunDir {
  dir: string;
  config: RunConfig;
  /** metrics.json when the run finished. */
  metrics?: z.output<typeof metricsFile>;
  /** Every scored method and seed, in the order scored (from metrics.json when finished). */
  results: ResultLine[];
  history: HistoryLine[];
  /** explorer/seed-<s>.json, by increasing seed. */
  explorers: ExplorerData[];
  masks: MaskLogits[];
  /** Things the page should mention (incomplete last lines, unreadable pieces skipped). */
  warnings: string[];
}

/** Non-empty lines of a JSON-lines file, each parsed; a last line without newline is dropped with a warning. */
function completeLines(path: string, warnings: string[]): JsonLines['lines'] {
  const { lines, incomplete } = readJsonLines(path);
  if (incomplete) warnings.push(`${path}: the last line is incomplete (being written, or cut short when the run stopped) and is left out.`);
  return lines;
}

/** Subfolders named `seed-<s>` of `dir`, with their seeds. */
function seedFolders(dir: string): { seed: number; path: string }[] {
  return readdirSync(dir)
    .map((name) => ({ name, m: /^seed-(-?\d+)$/.exec(name) }))
    .filter((e) => e.m !== null && statSync(join(dir, e.name)).isDirectory())
    .map((e) => ({ seed: Number(e.m![1]), path: join(dir, e.name) }))
    .sort((a, b) => a.seed - b.seed);
}

const maskHooks = z.object({
  hooks: z.array(z.object({ hook: z.string().min(1), units: z.number().int().min(1) })).min(1),
  options: z.object({ hardMask: z.boolean() }),
});

/**
 * The mask logits of every saved mask eraser in `dir/erasers`. The checkpoint's common part is read
 * with `readCheckpoint`, which needs no SAE; only the fields naming the masked hooks and the
 * `<hook>.mask_logits` tensors are read (restoring the eraser would need the SAEs). A folder without
 * eraser.json is a save that did not complete, and is skipped with a warning.
 */
function readMasks(dir: string, warnings: string[]): MaskLogits[] {
  const root = join(dir, 'erasers');
  if (!existsSync(root)) return [];
  const out: MaskLogits[] = [];
  for (const method of readdirSync(root).sort()) {
    if (!statSync(join(root, method)).isDirectory()) continue;
    for (const { seed, path } of seedFolders(join(root, method))) {
      if (!existsSync(join(path, ERASER_JSON))) {
        warnings.push(`${path}: no ${ERASER_JSON} (a checkpoint not completely saved); its mask is not shown.`);
        continue;
      }
      const stored = readCheckpoint(path);
      if (stored.format !== MASK_FORMAT) continue;
      const { hooks, options } = parseStrict(maskHooks, stored.json, stored.jsonPath);
      for (const { hook, units } of hooks) {
        const name = `${hook}.mask_logits`;
        if (!stored.tensors.has(name)) throw new Error(`${stored.tensors.path}: missing tensor "${name}"`);
        const logits = stored.tensors.float32(name);
        if (logits.length !== units) throw new Error(`${stored.tensors.path}: tensor "${name}" has ${logits.length} values, eraser.json says ${units} units`);
        out.push({ method, seed, hook, logits, hardMask: options.hardMask });
      }
    }
  }
  return out;
}

/** Reads the run folder `dir` for a report; throws a clear error when it is not one or has nothing scored. */
export function readRunDir(dir: string): RunDir {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${dir}: not a folder`);
  const configPath = join(dir, 'config.json');
  if (!existsSync(configPath)) {
    throw new Error(`${dir}: not a run folder (no config.json; a run folder is the --out of \`sae-eraser run\`)`);
  }
  const config = parseStrict(configFile, readJson(configPath), configPath);
  const warnings: string[] = [];
  const metricsPath = join(dir, 'metrics.json');
  const metrics = existsSync(metricsPath) ? parseStrict(metricsFile, readJson(metricsPath), metricsPath) : undefined;
  const resultsPath = join(dir, 'results.jsonl');
  const results: ResultLine[] =
    metrics !== undefined
      ? Object.entries(metrics.methods).flatMap(([method, m]) => m.per_seed.map((result) => ({ method, seed: result.seed, result })))
      : completeLines(resultsPath, warnings).map(({ line, value }) => parseStrict(resultLine, value, `${resultsPath}:${line}`));
  if (results.length === 0) {
    throw new Error(`${dir}: the run has not scored any method yet (results.jsonl is missing or empty, and there is no metrics.json); nothing to report`);
  }
  const historyPath = join(dir, 'history.jsonl');
  const history = completeLines(historyPath, warnings).map(({ line, value }) => {
    const { stage, step, elapsed: _elapsed, ...rest } = parseStrict(historyLine, value, `${historyPath}:${line}`);
    const values: Record<string, number> = {};
    for (const [k, v] of Object.entries(rest)) if (typeof v === 'number') values[k] = v;
    return { stage, step, values };
  });
  const explorerDir = join(dir, 'explorer');
  const explorers: ExplorerData[] = [];
  if (existsSync(explorerDir)) {
    for (const name of readdirSync(explorerDir).sort()) {
      const m = /^seed-(-?\d+)\.json$/.exec(name);
      if (m === null) continue;
      const path = join(explorerDir, name);
      const data = parseExplorer(readJson(path), path);
      if (data.seed !== Number(m[1])) throw new Error(`${path}: field "seed" is ${data.seed}, but the file is named for seed ${m[1]}`);
      explorers.push(data);
    }
    explorers.sort((a, b) => a.seed - b.seed);
  }
  return { dir, config, metrics, results, history, explorers, masks: readMasks(dir, warnings), warnings };
}
