import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ambiguousSplit,
  balancedSplit,
  biosFromTable,
  buildSplits,
  groupCounts,
  loadBiasInBios,
  professionName,
  splitArrays,
  splitForTuning,
  subgroupSplits,
  TEST_SPLIT_SEED,
  type BiosDataset,
  type SplitExample,
} from '../../src/data/bias-in-bios.js';
import { permutation } from '../../src/data/prng.js';
import { parseJsonl } from '../../src/io/tabular.js';
import { sharedPath } from '../../src/io/shared.js';
import { writeParquetFixture } from '../io/parquet-fixture.js';
import { skipWithout } from '../require.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sae-eraser-bios-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/**
 * The hand example. Rows (profession, gender, text):
 *  0 surgeon male A | 1 surgeon male B | 2 nurse female C | 3 surgeon female D | 4 nurse male E
 *  5 surgeon male F | 6 nurse female G | 7 nurse female H | 8 surgeon female I | 9 nurse male J
 *  10 nurse female K | 11 dentist male L
 * Groups for (surgeon, nurse), in file order:
 *  male_surgeon [A, B, F], female_surgeon [D, I], male_nurse [E, J], female_nurse [C, G, H, K].
 */
const HAND: [string, string, string][] = [
  ['surgeon', 'male', 'A'],
  ['surgeon', 'male', 'B'],
  ['nurse', 'female', 'C'],
  ['surgeon', 'female', 'D'],
  ['nurse', 'male', 'E'],
  ['surgeon', 'male', 'F'],
  ['nurse', 'female', 'G'],
  ['nurse', 'female', 'H'],
  ['surgeon', 'female', 'I'],
  ['nurse', 'male', 'J'],
  ['nurse', 'female', 'K'],
  ['dentist', 'male', 'L'],
];

function handJsonl(rows = HAND): string {
  return rows.map(([profession, gender, text]) => JSON.stringify({ text, profession, gender })).join('\n') + '\n';
}

function handDataset(): BiosDataset {
  return biosFromTable(parseJsonl(handJsonl(), 'hand.jsonl'));
}

const t = (split: readonly SplitExample[]): string => split.map((e) => e.text).join('');

describe('Bias in Bios splits on a hand example', () => {
  const pair = ['surgeon', 'nurse'] as const;

  it('ambiguous: the first 3 male surgeons and first 3 female nurses, shuffled with seed 42', () => {
    // n = min(3, 4) = 3; before the shuffle: A B F (y = z = 0) then C G H (y = z = 1).
    const before = ['A', 'B', 'F', 'C', 'G', 'H'];
    const split = ambiguousSplit(handDataset(), pair, 42);
    const order = permutation(6, 42);
    expect(split.map((e) => e.text)).toEqual(Array.from(order, (i) => before[i]));
    for (const e of split) {
      expect(e.y).toBe(e.z);
      expect(e.y).toBe(['A', 'B', 'F'].includes(e.text) ? 0 : 1);
    }
    expect(split.map((e) => e.row).sort((a, b) => a - b)).toEqual([0, 1, 2, 5, 6, 7]);
  });

  it('balanced: the first 2 of each group in the order male/female surgeon, male/female nurse, shuffled', () => {
    // n = min(3, 2, 2, 4) = 2.
    const before: [string, number, number][] = [
      ['A', 0, 0],
      ['B', 0, 0],
      ['D', 0, 1],
      ['I', 0, 1],
      ['E', 1, 0],
      ['J', 1, 0],
      ['C', 1, 1],
      ['G', 1, 1],
    ];
    const split = balancedSplit(handDataset(), pair, 42);
    const order = permutation(8, 42);
    expect(split.map((e) => [e.text, e.y, e.z])).toEqual(Array.from(order, (i) => before[i]));
  });

  it('subgroups: all four groups at full size in file order', () => {
    const g = subgroupSplits(handDataset(), pair);
    expect(Object.keys(g)).toEqual(['male_surgeon', 'female_surgeon', 'male_nurse', 'female_nurse']);
    expect(t(g.male_surgeon!)).toBe('ABF');
    expect(t(g.female_surgeon!)).toBe('DI');
    expect(t(g.male_nurse!)).toBe('EJ');
    expect(t(g.female_nurse!)).toBe('CGHK');
    expect(g.female_surgeon!.every((e) => e.y === 0 && e.z === 1)).toBe(true);
    expect(g.male_nurse!.every((e) => e.y === 1 && e.z === 0)).toBe(true);
    expect(groupCounts(handDataset(), pair)).toEqual({ male_surgeon: 3, female_surgeon: 2, male_nurse: 2, female_nurse: 4 });
  });

  it('swapping the pair swaps y; another seed gives another order of the same examples', () => {
    const swapped = ambiguousSplit(handDataset(), ['nurse', 'surgeon'], 42);
    // Now male nurses (E, J) and female surgeons (D, I): n = 2.
    expect(swapped.map((e) => e.text).sort()).toEqual(['D', 'E', 'I', 'J']);
    for (const e of swapped) expect(e.y).toBe(['E', 'J'].includes(e.text) ? 0 : 1);
    const a = t(balancedSplit(handDataset(), pair, 1));
    const b = t(balancedSplit(handDataset(), pair, 2));
    expect(a).not.toBe(b);
    expect([...a].sort()).toEqual([...b].sort());
    const all = buildSplits(handDataset(), { professions: pair });
    expect(t(all.ambiguous)).toBe(t(ambiguousSplit(handDataset(), pair, 42)));
    expect(all.professions).toEqual(['surgeon', 'nurse']);
    const arrays = splitArrays(all.balanced);
    expect(arrays.texts).toEqual(all.balanced.map((e) => e.text));
    expect(Array.from(arrays.z)).toEqual(all.balanced.map((e) => e.z));
  });
});

describe('Bias in Bios loading', () => {
  it('reads the HF layout from parquet with integer codes, and the default professor/nurse pair', async () => {
    const path = join(dir, 'hf.parquet');
    // professor = 21, nurse = 13, surgeon = 25; gender 0 male, 1 female.
    writeParquetFixture(path, [
      { name: 'hard_text', type: 'string', values: ['p0', 'p1', 'n0', 'n1', 's0', 'p2', 'n2'] },
      { name: 'profession', type: 'int64', values: [21, 21, 13, 13, 25, 21, 13] },
      { name: 'gender', type: 'int64', values: [0, 1, 1, 0, 0, 0, 1] },
    ]);
    const ds = await loadBiasInBios(path);
    expect(ds.fields).toEqual({ text: 'hard_text', profession: 'profession', gender: 'gender' });
    expect(ds.examples.map((e) => e.profession)).toEqual(['professor', 'professor', 'nurse', 'nurse', 'surgeon', 'professor', 'nurse']);
    const g = subgroupSplits(ds);
    expect(Object.keys(g)).toEqual(['male_professor', 'female_professor', 'male_nurse', 'female_nurse']);
    expect(t(g.male_professor!)).toBe('p0p2');
    expect(t(g.female_nurse!)).toBe('n0n2');
    expect(t(g.male_nurse!)).toBe('n1');
    expect(t(g.female_professor!)).toBe('p1');
    // The pair can be given as codes too.
    expect(t(ambiguousSplit(ds, [21, 13]))).toBe(t(ambiguousSplit(ds, ['professor', 'nurse'])));
  });

  it('reads CSV with configurable field names and digit-string labels', async () => {
    const path = join(dir, 'bios.csv');
    writeFileSync(path, 'bio,job,sex\n"He operates, daily.",25,0\n"She nurses.",13,1\n"He nurses.",13,0\n"She operates.",25,1\n');
    const ds = await loadBiasInBios(path, { fields: { text: 'bio', profession: 'job', gender: 'sex' } });
    expect(ds.examples.map((e) => [e.text, e.profession, e.gender])).toEqual([
      ['He operates, daily.', 'surgeon', 0],
      ['She nurses.', 'nurse', 1],
      ['He nurses.', 'nurse', 0],
      ['She operates.', 'surgeon', 1],
    ]);
    expect(balancedSplit(ds, ['surgeon', 'nurse']).length).toBe(4);
  });

  it('maps string labels case-insensitively and accepts extra gender spellings', () => {
    const table = parseJsonl('{"text": "x", "profession": " Surgeon ", "gender": "F"}\n{"text": "y", "profession": "NURSE", "gender": "w"}\n', 'g.jsonl');
    const ds = biosFromTable(table, { genderValues: { W: 1 } });
    expect(ds.examples.map((e) => [e.profession, e.gender])).toEqual([
      ['surgeon', 1],
      ['nurse', 1],
    ]);
    expect(professionName(13)).toBe('nurse');
    expect(professionName('21')).toBe('professor');
    expect(professionName(99)).toBe('99');
  });

  it('names the file, line and field of a missing or unknown label', () => {
    const lines = (bad: string): string => `{"text": "a", "profession": "nurse", "gender": "male"}\n${bad}\n`;
    expect(() => biosFromTable(parseJsonl(lines('{"text": "b", "profession": "nurse"}'), 'm.jsonl'))).toThrow(
      /m\.jsonl line 2: field "gender": missing gender label/,
    );
    expect(() => biosFromTable(parseJsonl(lines('{"text": "b", "profession": "nurse", "gender": "x"}'), 'u.jsonl'))).toThrow(
      /u\.jsonl line 2: field "gender": unknown gender label "x"/,
    );
    expect(() => biosFromTable(parseJsonl(lines('{"text": "b", "profession": "nurse", "gender": 2}'), 'u2.jsonl'))).toThrow(
      /u2\.jsonl line 2: field "gender": unknown gender label 2/,
    );
    expect(() => biosFromTable(parseJsonl(lines('{"text": "b", "profession": null, "gender": 1}'), 'p.jsonl'))).toThrow(
      /p\.jsonl line 2: field "profession": missing profession label/,
    );
    expect(() => biosFromTable(parseJsonl(lines('{"text": "b", "profession": 1.5, "gender": 1}'), 'f.jsonl'))).toThrow(
      /f\.jsonl line 2: field "profession": profession code must be an integer/,
    );
    expect(() => biosFromTable(parseJsonl(lines('{"profession": "nurse", "gender": 1}'), 't.jsonl'))).toThrow(/t\.jsonl line 2: field "text": missing text/);
    expect(() => biosFromTable(parseJsonl(lines('{"text": "b", "profession": "nurse", "gender": 1}'), 'n.jsonl'), { fields: { gender: 'sex' } })).toThrow(
      /n\.jsonl: no gender field "sex" \(fields: text, profession, gender\)/,
    );
  });

  it('names the file and field when a profession does not occur or a group is empty', () => {
    const ds = handDataset();
    expect(() => ambiguousSplit(ds, ['professor', 'nurse'])).toThrow(
      /hand\.jsonl: field "profession": profession "professor" does not occur \(present: dentist, nurse, surgeon\)/,
    );
    expect(() => ambiguousSplit(ds, ['nurse', 'nurse'])).toThrow(/hand\.jsonl: the profession pair names one profession twice/);
    // Without male nurses the balanced split and the subgroups cannot be built; ambiguous still can.
    const noMaleNurse = biosFromTable(parseJsonl(handJsonl(HAND.filter(([p, g]) => !(p === 'nurse' && g === 'male'))), 'nm.jsonl'));
    expect(ambiguousSplit(noMaleNurse, ['surgeon', 'nurse']).length).toBe(6);
    expect(() => balancedSplit(noMaleNurse, ['surgeon', 'nurse'])).toThrow(
      /nm\.jsonl: group male_nurse \(fields "profession", "gender"\) is empty, so the balanced split cannot be built/,
    );
    expect(() => subgroupSplits(noMaleNurse, ['surgeon', 'nurse'])).toThrow(/nm\.jsonl: group male_nurse .* subgroups split/);
    const noFemaleNurse = biosFromTable(parseJsonl(handJsonl(HAND.filter(([p, g]) => !(p === 'nurse' && g === 'female'))), 'nf.jsonl'));
    expect(() => ambiguousSplit(noFemaleNurse, ['surgeon', 'nurse'])).toThrow(/nf\.jsonl: group female_nurse .* ambiguous split/);
  });
});

describe('splitForTuning: a tuning part and a reporting part of a test file', () => {
  /**
   * Groups of 9 male surgeons, 4 female surgeons, 5 male nurses and 20 female nurses (distinct
   * texts), 3 dentists, interleaved; then repeats: every third female nurse's text again with the
   * same labels, and one male surgeon's text under another gender (a mislabelled copy).
   */
  function dataset(): BiosDataset {
    const sizes: [string, string, number][] = [
      ['surgeon', 'male', 9],
      ['surgeon', 'female', 4],
      ['nurse', 'male', 5],
      ['nurse', 'female', 20],
      ['dentist', 'male', 3],
    ];
    const rows: [string, string, string][] = [];
    for (let i = 0; i < 20; i++) for (const [p, g, n] of sizes) if (i < n) rows.push([p, g, `${p} ${g} ${i}`]);
    for (let i = 0; i < 20; i += 3) rows.push(['nurse', 'female', `nurse female ${i}`]);
    rows.push(['surgeon', 'female', 'surgeon male 2']);
    return biosFromTable(parseJsonl(handJsonl(rows), 'split.jsonl'));
  }
  const key = (e: { profession: string; gender: number }): string => `${e.profession}/${e.gender}`;
  const distinctPerGroup = (ds: BiosDataset): Record<string, number> => {
    const seen = new Map<string, string>();
    for (const e of ds.examples) if (!seen.has(e.text)) seen.set(e.text, key(e));
    const out: Record<string, number> = {};
    for (const k of seen.values()) out[k] = (out[k] ?? 0) + 1;
    return out;
  };

  it('stratifies by profession and gender: floor(fraction x distinct texts) of each group to tuning, the rest to reporting', () => {
    const ds = dataset();
    const { tuning, reporting } = splitForTuning(ds, 0.5, TEST_SPLIT_SEED);
    // Distinct texts by the group of their first row: 9, 4, 5, 20, 3.
    expect(distinctPerGroup(tuning)).toEqual({ 'surgeon/0': 4, 'surgeon/1': 2, 'nurse/0': 2, 'nurse/1': 10, 'dentist/0': 1 });
    expect(distinctPerGroup(reporting)).toEqual({ 'surgeon/0': 5, 'surgeon/1': 2, 'nurse/0': 3, 'nurse/1': 10, 'dentist/0': 2 });
    const quarter = splitForTuning(ds, 0.25, TEST_SPLIT_SEED);
    expect(distinctPerGroup(quarter.tuning)).toEqual({ 'surgeon/0': 2, 'surgeon/1': 1, 'nurse/0': 1, 'nurse/1': 5 });
    expect(tuning.source).toBe('split.jsonl (tuning part)');
    expect(reporting.source).toBe('split.jsonl (reporting part)');
  });

  it('is disjoint by text and covers the file: every row of a text, repeats and a mislabelled copy included, lands in one part, in file order', () => {
    const ds = dataset();
    const { tuning, reporting } = splitForTuning(ds, 0.5, TEST_SPLIT_SEED);
    const tuningTexts = new Set(tuning.examples.map((e) => e.text));
    expect(reporting.examples.filter((e) => tuningTexts.has(e.text))).toEqual([]);
    const rows = (d: BiosDataset): number[] => d.examples.map((e) => e.row);
    expect([...rows(tuning), ...rows(reporting)].sort((a, b) => a - b)).toEqual(rows(ds));
    expect(rows(tuning)).toEqual([...rows(tuning)].sort((a, b) => a - b));
    expect(rows(reporting)).toEqual([...rows(reporting)].sort((a, b) => a - b));
    // Each repeated text (7 repeated female nurses, the mislabelled copy) has all its rows in one part.
    const repeated = [...new Set(ds.examples.map((e) => e.text))].filter((text) => ds.examples.filter((e) => e.text === text).length > 1);
    expect(repeated).toHaveLength(8);
    for (const text of repeated) {
      const inTuning = tuning.examples.filter((e) => e.text === text).length;
      const inReporting = reporting.examples.filter((e) => e.text === text).length;
      expect(inTuning === 0 || inReporting === 0, text).toBe(true);
      expect(inTuning + inReporting, text).toBe(ds.examples.filter((e) => e.text === text).length);
    }
  });

  it('is deterministic in its seed and the file, and another seed gives another split of the same sizes', () => {
    const texts = (d: BiosDataset): string[] => d.examples.map((e) => e.text);
    const a = splitForTuning(dataset(), 0.5, TEST_SPLIT_SEED);
    const b = splitForTuning(dataset(), 0.5, TEST_SPLIT_SEED);
    expect(texts(a.tuning)).toEqual(texts(b.tuning));
    expect(texts(splitForTuning(dataset(), 0.5).tuning)).toEqual(texts(a.tuning));
    const other = splitForTuning(dataset(), 0.5, TEST_SPLIT_SEED + 1);
    expect(texts(other.tuning)).not.toEqual(texts(a.tuning));
    expect(distinctPerGroup(other.tuning)).toEqual(distinctPerGroup(a.tuning));
    // The splits of the pair's groups build on each part.
    const parts = buildSplits(a.reporting, { professions: ['surgeon', 'nurse'] });
    expect(groupCounts(a.reporting, ['surgeon', 'nurse'])).toEqual({ male_surgeon: 5, female_surgeon: 2, male_nurse: 3, female_nurse: 13 });
    expect(parts.balanced).toHaveLength(4 * 2);
  });

  it('fraction 0 reports on the whole file; a fraction outside [0, 1) is an error naming the file', () => {
    const ds = dataset();
    const { tuning, reporting } = splitForTuning(ds, 0, TEST_SPLIT_SEED);
    expect(reporting).toBe(ds);
    expect(tuning.examples).toEqual([]);
    expect(() => splitForTuning(ds, 1)).toThrow(/split\.jsonl: the tuning fraction must be in \[0, 1\), got 1/);
    expect(() => splitForTuning(ds, -0.1)).toThrow(/got -0\.1/);
  });
});

const trainPath = sharedPath('data', 'bias_in_bios', 'train.jsonl');
const validatePath = sharedPath('data', 'bias_in_bios', 'validate.jsonl');

describe.skipIf(skipWithout(trainPath === undefined, 'the shared Bias in Bios tests need ../shared/data/bias_in_bios (set SAE_ERASER_SHARED)'))(
  'Bias in Bios shared surgeon/nurse data',
  () => {
    it('has the group sizes of the shared README and builds splits of the expected sizes', async () => {
      const pair = ['surgeon', 'nurse'] as const;
      const train = await loadBiasInBios(trainPath!);
      // README table: surgeon/male 1839, surgeon/female 258, nurse/female 1585, nurse/male 150.
      expect(groupCounts(train, pair)).toEqual({ male_surgeon: 1839, female_surgeon: 258, male_nurse: 150, female_nurse: 1585 });
      const splits = buildSplits(train, { professions: pair });
      expect(splits.ambiguous.length).toBe(2 * 1585);
      expect(splits.balanced.length).toBe(4 * 150);
      expect(splits.ambiguous.every((e) => e.y === e.z)).toBe(true);
      const counts = [0, 0, 0, 0];
      for (const e of splits.balanced) counts[2 * e.y + e.z]!++;
      expect(counts).toEqual([150, 150, 150, 150]);
      const validate = await loadBiasInBios(validatePath!);
      expect(groupCounts(validate, pair)).toEqual({ male_surgeon: 615, female_surgeon: 95, male_nurse: 50, female_nurse: 517 });
      // The default split of the test file (the counts the README gives).
      const { tuning, reporting } = splitForTuning(validate, 0.5, TEST_SPLIT_SEED);
      expect(groupCounts(tuning, pair)).toEqual({ male_surgeon: 307, female_surgeon: 47, male_nurse: 25, female_nurse: 258 });
      expect(groupCounts(reporting, pair)).toEqual({ male_surgeon: 308, female_surgeon: 48, male_nurse: 25, female_nurse: 259 });
    });
  },
);
