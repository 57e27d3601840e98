/**
 * Bias in Bios (De-Arteaga et al. 2019) in the Sparse Feature Circuits / SHIFT setup
 * (Marks et al. 2024): a binary profession task (y) whose training data is confounded with gender
 * (z).
 *
 * Loading: any JSONL, CSV or parquet file with a text, a profession and a gender field. Field names
 * are configurable; the defaults read both the Hugging Face `LabHC/bias_in_bios` parquet files
 * (`hard_text`, `profession` int, `gender` int 0 male / 1 female) and the project's shared JSONL
 * (`text`, `profession` "surgeon"/"nurse", `gender` "male"/"female").
 *
 * Professions are kept as names: integer codes (numbers, or digit strings from CSV) are mapped to
 * names through `HF_PROFESSIONS` (the LabHC numbering: nurse 13, professor 21, ...); other strings
 * are trimmed and lower-cased. A profession pair may therefore be given as names or as codes.
 *
 * Splits, exactly as the SHIFT code builds them (`get_data` / `get_subgroups` in the
 * feature-circuits repository), for a pair (p0, p1) with y = 0 for p0, y = 1 for p1, z = 0 male,
 * z = 1 female, and groups taken in dataset order:
 *  - ambiguous: n = min(|male p0|, |female p1|); the first n of each, male p0 first, then a seeded
 *    shuffle. Profession and gender agree perfectly (y = z), so a probe cannot tell which it uses.
 *  - balanced: n = smallest of the four groups; the first n of male p0, female p0, male p1,
 *    female p1 in that order, then a seeded shuffle.
 *  - subgroups: the four groups at full size, keyed `male_<p0>`, `female_<p0>`, `male_<p1>`,
 *    `female_<p1>` (the paper keys them by (y, z): (0,0), (0,1), (1,0), (1,1)).
 * The shuffle is the project PRNG's (src/data/prng.ts) with seed 42 by default, not Python's
 * `random.Random(42)`: the examples in each split are the paper's, their order differs.
 *
 * A test file is first cut into a tuning part and a reporting part (`splitForTuning`, stratified by
 * group and keyed by text), and the splits are built on each part, so that reported numbers come
 * from bios no choice was tuned on.
 */
import { permutation } from './prng.js';
import { readTable, type ReadTableOptions, type Table } from '../io/tabular.js';
import { minOf } from '../util/arrays.js';

/**
 * The LabHC/bias_in_bios profession codes: index = numerical label (alphabetical order, as in the
 * dataset card: accountant 0, ..., nurse 13, ..., professor 21, ..., yoga_teacher 27).
 */
export const HF_PROFESSIONS: readonly string[] = [
  'accountant',
  'architect',
  'attorney',
  'chiropractor',
  'comedian',
  'composer',
  'dentist',
  'dietitian',
  'dj',
  'filmmaker',
  'interior_designer',
  'journalist',
  'model',
  'nurse',
  'painter',
  'paralegal',
  'pastor',
  'personal_trainer',
  'photographer',
  'physician',
  'poet',
  'professor',
  'psychologist',
  'rapper',
  'software_engineer',
  'surgeon',
  'teacher',
  'yoga_teacher',
];

/** The paper's pair: professor (y = 0, male-dominated) vs nurse (y = 1, female-dominated). */
export const DEFAULT_PROFESSIONS = ['professor', 'nurse'] as const;

export const DEFAULT_SEED = 42;

/** 0 = male, 1 = female (the concept label z). */
export type Gender = 0 | 1;
/** 0 = first profession of the pair, 1 = second (the task label y). */
export type Label = 0 | 1;

export interface BiosFields {
  text: string;
  profession: string;
  gender: string;
}

export interface BiosLoadOptions extends ReadTableOptions {
  /**
   * Field names. Defaults: text = `hard_text` if the file has it, else `text`; profession =
   * `profession`; gender = `gender`.
   */
  fields?: Partial<BiosFields>;
  /** Names for integer profession codes (index = code); default `HF_PROFESSIONS`. */
  professionNames?: readonly string[];
  /**
   * Extra gender spellings (lower-cased string or number -> z). Always understood: 0/1, "0"/"1",
   * "male"/"female", "m"/"f", "man"/"woman".
   */
  genderValues?: Readonly<Record<string, Gender>>;
}

export interface BiosExample {
  text: string;
  /** The profession's name (see the module note). */
  profession: string;
  gender: Gender;
  /** Index of the source row, for tracing an example back to the file. */
  row: number;
}

export interface BiosDataset {
  /** The file the examples came from (named in every error). */
  source: string;
  fields: BiosFields;
  /** Names of integer profession codes used when loading (pairs given as codes map through it too). */
  professionNames: readonly string[];
  examples: BiosExample[];
  /** "file line 12": where example i's row came from. */
  where(row: number): string;
}

export interface SplitExample {
  text: string;
  /** Task label: 0 = first profession, 1 = second. */
  y: Label;
  /** Concept label: 0 = male, 1 = female. */
  z: Gender;
  /** Row in the source file. */
  row: number;
}

export type ProfessionPair = readonly [string | number, string | number];

export type SubgroupKey = string;

export interface BiosSplits {
  ambiguous: SplitExample[];
  balanced: SplitExample[];
  /** Keys in the order male_<p0>, female_<p0>, male_<p1>, female_<p1>. */
  subgroups: Record<SubgroupKey, SplitExample[]>;
  /** The pair as names, [p0, p1]. */
  professions: [string, string];
}

const BUILTIN_GENDERS: Readonly<Record<string, Gender>> = {
  '0': 0,
  male: 0,
  m: 0,
  man: 0,
  '1': 1,
  female: 1,
  f: 1,
  woman: 1,
};

/** The canonical name of a profession value: integer codes through `names`, strings trimmed and lower-cased. */
export function professionName(value: string | number | bigint, names: readonly string[] = HF_PROFESSIONS): string {
  if (typeof value !== 'string') {
    const code = Number(value);
    if (!Number.isInteger(code)) throw new Error(`profession code must be an integer, got ${value}`);
    return names[code] ?? String(code);
  }
  if (/^\s*\d+\s*$/.test(value)) return professionName(Number(value.trim()), names);
  const name = value.trim().toLowerCase();
  if (name === '') throw new Error('profession is an empty string');
  return name;
}

function describe(value: unknown): string {
  return typeof value === 'bigint' ? `${value}n` : (JSON.stringify(value) ?? String(value));
}

/** The gender label z of a cell, or an error naming the file, line and field. */
function parseGender(value: unknown, extra: Readonly<Record<string, Gender>>, where: string, field: string): Gender {
  if (value === undefined || value === null || value === '') {
    throw new Error(`${where}: field "${field}": missing gender label`);
  }
  let key: string | undefined;
  if (typeof value === 'number' || typeof value === 'bigint') key = String(value);
  else if (typeof value === 'string') key = value.trim().toLowerCase();
  const z = key === undefined ? undefined : (extra[key] ?? BUILTIN_GENDERS[key]);
  if (z === undefined) {
    throw new Error(`${where}: field "${field}": unknown gender label ${describe(value)} (expected 0/1 or "male"/"female")`);
  }
  return z;
}

function parseProfession(value: unknown, names: readonly string[], where: string, field: string): string {
  if (value === undefined || value === null || value === '') {
    throw new Error(`${where}: field "${field}": missing profession label`);
  }
  if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'bigint') {
    throw new Error(`${where}: field "${field}": profession must be a string or an integer code, got ${describe(value)}`);
  }
  try {
    return professionName(value, names);
  } catch (err) {
    throw new Error(`${where}: field "${field}": ${(err as Error).message}`, { cause: err });
  }
}

/** Resolves the field names against a table's columns (see `BiosLoadOptions.fields`). */
export function resolveFields(table: Table, fields: Partial<BiosFields> = {}): BiosFields {
  const text = fields.text ?? (table.columns.includes('hard_text') ? 'hard_text' : 'text');
  const resolved: BiosFields = { text, profession: fields.profession ?? 'profession', gender: fields.gender ?? 'gender' };
  for (const [role, name] of Object.entries(resolved)) {
    if (table.rows.length > 0 && !table.columns.includes(name)) {
      throw new Error(`${table.source}: no ${role} field "${name}" (fields: ${table.columns.join(', ')})`);
    }
  }
  return resolved;
}

/** Turns a table into Bias in Bios examples; every row must have a text, profession and gender. */
export function biosFromTable(table: Table, options: BiosLoadOptions = {}): BiosDataset {
  const fields = resolveFields(table, options.fields);
  const names = options.professionNames ?? HF_PROFESSIONS;
  const extraGenders: Record<string, Gender> = {};
  for (const [k, v] of Object.entries(options.genderValues ?? {})) extraGenders[k.trim().toLowerCase()] = v;
  const examples = table.rows.map((row, i): BiosExample => {
    const where = table.where(i);
    const text = row[fields.text];
    if (typeof text !== 'string') {
      throw new Error(
        `${where}: field "${fields.text}": ${text === undefined || text === null ? 'missing text' : `text must be a string, got ${describe(text)}`}`,
      );
    }
    return {
      text,
      profession: parseProfession(row[fields.profession], names, where, fields.profession),
      gender: parseGender(row[fields.gender], extraGenders, where, fields.gender),
      row: i,
    };
  });
  return { source: table.source, fields, professionNames: names, examples, where: (r) => table.where(r) };
}

/** Loads Bias in Bios examples from a JSONL, CSV or parquet file. */
export async function loadBiasInBios(path: string, options: BiosLoadOptions = {}): Promise<BiosDataset> {
  const table = await readTable(path, options);
  return biosFromTable(table, options);
}

interface Groups {
  p0: string;
  p1: string;
  /** In dataset order. */
  maleP0: SplitExample[];
  femaleP0: SplitExample[];
  maleP1: SplitExample[];
  femaleP1: SplitExample[];
}

function pairNames(pair: ProfessionPair, ds: BiosDataset): [string, string] {
  const p0 = professionName(pair[0], ds.professionNames);
  const p1 = professionName(pair[1], ds.professionNames);
  if (p0 === p1) throw new Error(`${ds.source}: the profession pair names one profession twice ("${p0}")`);
  return [p0, p1];
}

/** The four (profession, gender) groups of the pair, each in dataset order. */
function groupsOf(ds: BiosDataset, pair: ProfessionPair): Groups {
  const [p0, p1] = pairNames(pair, ds);
  const g: Groups = { p0, p1, maleP0: [], femaleP0: [], maleP1: [], femaleP1: [] };
  for (const ex of ds.examples) {
    const y: Label | undefined = ex.profession === p0 ? 0 : ex.profession === p1 ? 1 : undefined;
    if (y === undefined) continue;
    const item: SplitExample = { text: ex.text, y, z: ex.gender, row: ex.row };
    if (y === 0) (ex.gender === 0 ? g.maleP0 : g.femaleP0).push(item);
    else (ex.gender === 0 ? g.maleP1 : g.femaleP1).push(item);
  }
  for (const [p, n] of [
    [p0, g.maleP0.length + g.femaleP0.length],
    [p1, g.maleP1.length + g.femaleP1.length],
  ] as const) {
    if (n === 0) {
      const present = [...new Set(ds.examples.map((e) => e.profession))].sort();
      throw new Error(
        `${ds.source}: field "${ds.fields.profession}": profession "${p}" does not occur ` +
          `(present: ${present.slice(0, 30).join(', ')}${present.length > 30 ? ', ...' : ''})`,
      );
    }
  }
  return g;
}

function requireNonEmpty(ds: BiosDataset, split: string, groups: readonly [string, SplitExample[]][]): void {
  for (const [key, items] of groups) {
    if (items.length === 0) {
      throw new Error(`${ds.source}: group ${key} (fields "${ds.fields.profession}", "${ds.fields.gender}") is empty, so the ${split} split cannot be built`);
    }
  }
}

function shuffled(items: SplitExample[], seed: number): SplitExample[] {
  const p = permutation(items.length, seed);
  return Array.from(p, (i) => items[i]!);
}

function subgroupKeys(g: Groups): [string, string, string, string] {
  return [`male_${g.p0}`, `female_${g.p0}`, `male_${g.p1}`, `female_${g.p1}`];
}

/** The ambiguous split: male p0 + female p1, each cut to the smaller size, then shuffled with `seed`. */
export function ambiguousSplit(ds: BiosDataset, pair: ProfessionPair = DEFAULT_PROFESSIONS, seed = DEFAULT_SEED): SplitExample[] {
  const g = groupsOf(ds, pair);
  const [maleP0, , , femaleP1] = subgroupKeys(g);
  requireNonEmpty(ds, 'ambiguous', [
    [maleP0, g.maleP0],
    [femaleP1, g.femaleP1],
  ]);
  const n = Math.min(g.maleP0.length, g.femaleP1.length);
  return shuffled([...g.maleP0.slice(0, n), ...g.femaleP1.slice(0, n)], seed);
}

/** The balanced split: the four groups each cut to the smallest size, then shuffled with `seed`. */
export function balancedSplit(ds: BiosDataset, pair: ProfessionPair = DEFAULT_PROFESSIONS, seed = DEFAULT_SEED): SplitExample[] {
  const g = groupsOf(ds, pair);
  const keys = subgroupKeys(g);
  const groups = [g.maleP0, g.femaleP0, g.maleP1, g.femaleP1];
  requireNonEmpty(
    ds,
    'balanced',
    groups.map((items, k) => [keys[k]!, items] as [string, SplitExample[]]),
  );
  const n = minOf(groups.map((items) => items.length));
  return shuffled(
    groups.flatMap((items) => items.slice(0, n)),
    seed,
  );
}

/** The four groups at full size, in dataset order, keyed male_<p0>, female_<p0>, male_<p1>, female_<p1>. */
export function subgroupSplits(ds: BiosDataset, pair: ProfessionPair = DEFAULT_PROFESSIONS): Record<SubgroupKey, SplitExample[]> {
  const g = groupsOf(ds, pair);
  const keys = subgroupKeys(g);
  const groups = [g.maleP0, g.femaleP0, g.maleP1, g.femaleP1];
  requireNonEmpty(
    ds,
    'subgroups',
    groups.map((items, k) => [keys[k]!, items] as [string, SplitExample[]]),
  );
  const out: Record<SubgroupKey, SplitExample[]> = {};
  keys.forEach((k, i) => {
    out[k] = groups[i]!;
  });
  return out;
}

export interface SplitOptions {
  /** [p0, p1] as names or LabHC codes; default professor/nurse. */
  professions?: ProfessionPair;
  seed?: number;
}

/** All three splits of one file. */
export function buildSplits(ds: BiosDataset, options: SplitOptions = {}): BiosSplits {
  const pair = options.professions ?? DEFAULT_PROFESSIONS;
  const seed = options.seed ?? DEFAULT_SEED;
  return {
    ambiguous: ambiguousSplit(ds, pair, seed),
    balanced: balancedSplit(ds, pair, seed),
    subgroups: subgroupSplits(ds, pair),
    professions: pairNames(pair, ds),
  };
}

/**
 * The seed of the default tuning/reporting split of a test file (`splitForTuning`): fixed, and apart
 * from any run's seeds, so every run reports on the same bios. Changing it changes which bios those are.
 */
export const TEST_SPLIT_SEED = 2019;

/** A test file in two parts: one to tune choices on, one to report on (see `splitForTuning`). */
export interface TuningSplit {
  tuning: BiosDataset;
  reporting: BiosDataset;
}

/**
 * Splits a dataset into a tuning part and a reporting part, so that reported numbers come from bios
 * no choice was tuned on.
 *  - Stratified by (profession, gender), over every profession in the file: within each group, its
 *    distinct texts (in order of first occurrence) are permuted with `seed` (src/data/prng.ts) and the
 *    first floor(tuningFraction x count) go to the tuning part, the rest to the reporting part (which
 *    so gets the odd one of an odd count at one half).
 *  - Keyed by text: every row of a text goes where the text goes, so a bio repeated in the file never
 *    lands in both parts; a text under two labels belongs to the group of its first row.
 *  - Nothing else enters: the split depends on the file, `tuningFraction` and `seed` only, not on a
 *    run's seeds or caps (cap each part afterwards).
 * Each part keeps the file's row order and row numbers, so errors still name the file's lines; its
 * `source` says which part it is. `tuningFraction` 0 leaves the tuning part empty.
 */
export function splitForTuning(ds: BiosDataset, tuningFraction: number, seed = TEST_SPLIT_SEED): TuningSplit {
  if (!(tuningFraction >= 0 && tuningFraction < 1)) throw new Error(`${ds.source}: the tuning fraction must be in [0, 1), got ${tuningFraction}`);
  const groups = new Map<string, string[]>();
  const seen = new Set<string>();
  for (const ex of ds.examples) {
    if (seen.has(ex.text)) continue;
    seen.add(ex.text);
    const key = `${ex.profession}\u0000${ex.gender}`;
    const texts = groups.get(key);
    if (texts === undefined) groups.set(key, [ex.text]);
    else texts.push(ex.text);
  }
  const tuningTexts = new Set<string>();
  for (const texts of groups.values()) {
    const p = permutation(texts.length, seed);
    const n = Math.floor(tuningFraction * texts.length);
    for (let i = 0; i < n; i++) tuningTexts.add(texts[p[i]!]!);
  }
  const part = (name: string, examples: BiosExample[]): BiosDataset => ({ ...ds, source: `${ds.source} (${name} part)`, examples });
  const tuning = ds.examples.filter((e) => tuningTexts.has(e.text));
  const rest = ds.examples.filter((e) => !tuningTexts.has(e.text));
  // With no tuning part, the reporting part is the file itself (and errors name just the file).
  const reporting = tuning.length === 0 ? ds : part('reporting', rest);
  return { tuning: part('tuning', tuning), reporting };
}

/** Counts of the four (profession, gender) groups of a pair, keyed like `subgroupSplits`. */
export function groupCounts(ds: BiosDataset, pair: ProfessionPair = DEFAULT_PROFESSIONS): Record<SubgroupKey, number> {
  const g = groupsOf(ds, pair);
  const keys = subgroupKeys(g);
  const groups = [g.maleP0, g.femaleP0, g.maleP1, g.femaleP1];
  const out: Record<SubgroupKey, number> = {};
  keys.forEach((k, i) => {
    out[k] = groups[i]!.length;
  });
  return out;
}

/** Splits as parallel arrays: texts, y (Int32Array) and z (Int32Array). */
export function splitArrays(split: readonly SplitExample[]): { texts: string[]; y: Int32Array; z: Int32Array } {
  return {
    texts: split.map((e) => e.text),
    y: Int32Array.from(split, (e) => e.y),
    z: Int32Array.from(split, (e) => e.z),
  };
}
