/**
 * Experiment configs: which model, data, SAEs and methods a `sae-eraser run` compares.
 *
 * Paths are relative to the current directory; `${shared}` expands to the shared data folder
 * (`../shared` or `SAE_ERASER_SHARED`). Every field is checked, and an unknown method or field
 * is an error naming the config file, so a typo never silently runs a different experiment.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isMethodName, METHOD_NAMES, type MethodName } from '../erasure/eraser.js';
import { sharedDir } from '../io/shared.js';

export interface SaeSpec {
  /** Folder or file of the SAE (any supported format). */
  path: string;
  /** How to train it when `path` is missing (the `train-sae` options); omit to require the file. */
  train?: Record<string, unknown>;
}

export interface DatasetSpec {
  train: string;
  /** Optional validation file (used for early choices only; never for reported metrics). */
  val?: string;
  test: string;
  /** [first profession (y = 0), second (y = 1)]. */
  professions: [string | number, string | number];
  fields?: { text?: string; profession?: string; gender?: string };
  /** Size of the concept-labelled set drawn from the train file's natural distribution. */
  conceptSize: number;
  /** Optional caps for quick runs: at most this many rows of each split (seeded subsample). */
  limits?: { ambiguous?: number; balanced?: number; concept?: number; testBalanced?: number; testSubgroup?: number };
}

export interface ExperimentConfig {
  /** Where the config came from, for messages. */
  source: string;
  name: string;
  model: string;
  /** Shell script run before the model is opened (e.g. extracting weights from a package). */
  modelSetup?: string;
  maxLength: number;
  probeHook: string;
  dataset: DatasetSpec;
  saes: Record<string, SaeSpec>;
  methods: Partial<Record<MethodName, Record<string, unknown>>>;
  seeds: number[];
  /** Probe recipe overrides (see LinearProbeOptions). */
  probe: Record<string, unknown>;
  cacheDir: string;
  batchSize: number;
}

type Json = Record<string, unknown>;

function expandShared(path: string, source: string): string {
  if (!path.includes('${shared}')) return path;
  const dir = sharedDir();
  if (dir === undefined) throw new Error(`${source}: "${path}" needs the shared data folder (../shared or SAE_ERASER_SHARED), which is absent`);
  return path.replaceAll('${shared}', dir);
}

function field<T>(obj: Json, key: string, source: string, check: (v: unknown) => v is T, what: string, fallback?: T): T {
  const v = obj[key];
  if (v === undefined) {
    if (fallback !== undefined) return fallback;
    throw new Error(`${source}: missing field "${key}" (${what})`);
  }
  if (!check(v)) throw new Error(`${source}: field "${key}" must be ${what}, got ${JSON.stringify(v)}`);
  return v;
}

const isString = (v: unknown): v is string => typeof v === 'string' && v !== '';
const isPositiveInt = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isIntArray = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x));

function checkKeys(obj: Json, allowed: readonly string[], source: string, where: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) throw new Error(`${source}: unknown field "${k}" in ${where} (known: ${allowed.join(', ')})`);
  }
}

/** Validates a parsed config object. */
export function parseExperimentConfig(raw: unknown, source: string): ExperimentConfig {
  if (!isObject(raw)) throw new Error(`${source}: the config must be a JSON object`);
  checkKeys(raw, ['name', 'model', 'modelSetup', 'maxLength', 'probeHook', 'dataset', 'saes', 'methods', 'seeds', 'probe', 'cacheDir', 'batchSize', 'description'], source, 'the config');
  const ds = field(raw, 'dataset', source, isObject, 'an object');
  checkKeys(ds, ['train', 'val', 'test', 'professions', 'fields', 'conceptSize', 'limits'], source, 'dataset');
  const professions = field(ds, 'professions', source, (v): v is [string | number, string | number] => Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'string' || Number.isInteger(x)), 'a pair of profession names or codes');
  const methodsRaw = field(raw, 'methods', source, isObject, 'an object of method name -> options');
  const methods: ExperimentConfig['methods'] = {};
  for (const [name, opts] of Object.entries(methodsRaw)) {
    if (!isMethodName(name)) throw new Error(`${source}: unknown method "${name}" (known: ${METHOD_NAMES.join(', ')})`);
    if (!isObject(opts)) throw new Error(`${source}: options of method "${name}" must be an object`);
    methods[name] = opts;
  }
  if (Object.keys(methods).length === 0) throw new Error(`${source}: "methods" names no method`);
  const saesRaw = field(raw, 'saes', source, isObject, 'an object of hook -> SAE spec', {});
  const saes: Record<string, SaeSpec> = {};
  for (const [hook, spec] of Object.entries(saesRaw)) {
    if (!isObject(spec)) throw new Error(`${source}: SAE spec for "${hook}" must be an object`);
    checkKeys(spec, ['path', 'train'], source, `saes["${hook}"]`);
    saes[hook] = {
      path: expandShared(field(spec, 'path', source, isString, 'a path'), source),
      train: spec.train === undefined ? undefined : field(spec, 'train', source, isObject, 'an object'),
    };
  }
  const limits = ds.limits === undefined ? undefined : field(ds, 'limits', source, isObject, 'an object');
  if (limits !== undefined) {
    checkKeys(limits, ['ambiguous', 'balanced', 'concept', 'testBalanced', 'testSubgroup'], source, 'dataset.limits');
    for (const [k, v] of Object.entries(limits)) if (!isPositiveInt(v)) throw new Error(`${source}: dataset.limits.${k} must be a positive integer`);
  }
  const fields = ds.fields === undefined ? undefined : field(ds, 'fields', source, isObject, 'an object');
  return {
    source,
    name: field(raw, 'name', source, isString, 'a string', 'experiment'),
    model: field(raw, 'model', source, isString, 'a model folder or hub id'),
    modelSetup: raw.modelSetup === undefined ? undefined : field(raw, 'modelSetup', source, isString, 'a script path'),
    maxLength: field(raw, 'maxLength', source, isPositiveInt, 'a positive integer', 128),
    probeHook: field(raw, 'probeHook', source, isString, 'a hook name'),
    dataset: {
      train: expandShared(field(ds, 'train', source, isString, 'a path'), source),
      val: ds.val === undefined || ds.val === null ? undefined : expandShared(field(ds, 'val', source, isString, 'a path'), source),
      test: expandShared(field(ds, 'test', source, isString, 'a path'), source),
      professions,
      fields: fields as DatasetSpec['fields'],
      conceptSize: field(ds, 'conceptSize', source, isPositiveInt, 'a positive integer', 256),
      limits: limits as DatasetSpec['limits'],
    },
    saes,
    methods,
    seeds: field(raw, 'seeds', source, isIntArray, 'a non-empty list of integer seeds', [42, 43, 44]),
    probe: field(raw, 'probe', source, isObject, 'an object', {}),
    cacheDir: field(raw, 'cacheDir', source, isString, 'a folder', '.cache/activations'),
    batchSize: field(raw, 'batchSize', source, isPositiveInt, 'a positive integer', 32),
  };
}

/** Reads and validates a config file. */
export function readExperimentConfig(path: string): ExperimentConfig {
  if (!existsSync(path)) throw new Error(`${path}: config file not found`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
  return parseExperimentConfig(raw, path);
}

/** Command-line overrides (`--model`, `--train`, `--val`, `--test`, `--seeds`). */
export interface ConfigOverrides {
  model?: string;
  train?: string;
  val?: string;
  test?: string;
  seeds?: number[];
}

export function applyOverrides(config: ExperimentConfig, o: ConfigOverrides): ExperimentConfig {
  return {
    ...config,
    model: o.model ?? config.model,
    seeds: o.seeds ?? config.seeds,
    dataset: {
      ...config.dataset,
      train: o.train ?? config.dataset.train,
      val: o.val ?? config.dataset.val,
      test: o.test ?? config.dataset.test,
    },
  };
}
