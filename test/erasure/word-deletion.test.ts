import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FitContext, LabelledSplit } from '../../src/erasure/eraser.js';
import { GENDERED_WORDS, WordDeletionEraser, wordDeleter } from '../../src/erasure/word-deletion.js';

const del = (text: string): string => wordDeleter(GENDERED_WORDS)(text).text;

describe('word deletion', () => {
  it('deletes gendered words case-insensitively, whole words only', () => {
    expect(del('She is a nurse and her patients love her.')).toBe('is a nurse and patients love.');
    expect(del('HE works with HIS team; Himself a surgeon.')).toBe('works with team; a surgeon.');
    // Never inside another word.
    expect(del('the theme: shepherds, hermits, heroes, manager, woman-led')).toBe('the theme: shepherds, hermits, heroes, manager, -led');
    expect(del('Mother Teresa')).toBe('Teresa');
  });

  it('takes titles with their period, and possessives and contractions with the word', () => {
    expect(del('Mr. Smith met Mrs Jones and Ms. Lee.')).toBe('Smith met Jones and Lee.');
    expect(del("She's been at her husband's clinic; he'll stay.")).toBe('been at clinic; stay.');
    expect(del('her’s and he’d')).toBe('and');
  });

  it('leaves one space between words, none before punctuation, and the rest of the text as it was', () => {
    expect(del('(she was)   trained ,  then   his  work')).toBe('(was)   trained ,  then work');
    expect(del('he\nshe\nhim')).toBe('\n\n');
    expect(del('no gendered words here , at all')).toBe('no gendered words here , at all');
  });

  it('counts deletions and handles non-ASCII letters at word edges', () => {
    const d = wordDeleter(['he', 'fiancée']);
    expect(d('hé he héhe fiancée fiancées')).toEqual({ text: 'hé héhe fiancées', deleted: 2 });
    expect(() => wordDeleter(['two words'])).toThrow(/not a single word/);
  });

  it('is an eraser: edits texts, no hook edits, no pooled path; options, describe, save and load', async () => {
    const train: LabelledSplit = { rows: Int32Array.from([0, 1]), y: Int32Array.from([0, 1]), z: Int32Array.from([0, 1]), texts: ['He operates.', 'She and her team nurse.'] };
    const eraser = new WordDeletionEraser();
    await eraser.fit({ train, options: { extraWords: ['Operates'] } } as unknown as FitContext);
    expect(eraser.editTexts(train.texts)).toEqual(['.', 'and team nurse.']);
    expect(eraser.edits()).toEqual({});
    expect(eraser.erasePooled({} as never, [0])).toBeUndefined();
    const d = eraser.describe();
    expect(d).toMatchObject({ method: 'word_deletion', hooks: [], unitsRemoved: GENDERED_WORDS.length + 1 });
    expect(d.summary).toMatch(/4 occurrences in the training texts/);
    const dir = mkdtempSync(join(tmpdir(), 'word-del-'));
    eraser.save(dir);
    const loaded = WordDeletionEraser.load(dir);
    expect(loaded.editTexts(train.texts)).toEqual(eraser.editTexts(train.texts));
    expect(loaded.describe()).toEqual(d);
    writeFileSync(join(dir, 'eraser.json'), JSON.stringify({ method: 'shift', version: 1, words: [] }));
    expect(() => WordDeletionEraser.load(dir)).toThrow(/field "method" is "shift"/);
    await expect(new WordDeletionEraser().fit({ train, options: { wrds: [] } } as unknown as FitContext)).rejects.toThrow(/option "wrds" is unknown/);
  });

  it('documents its list: pronouns, titles, gendered nouns and family terms, no first names', () => {
    for (const w of ['he', 'she', 'him', 'her', 'his', 'hers', 'himself', 'herself', 'mr', 'mrs', 'ms', 'miss', 'man', 'woman', 'husband', 'wife', 'mother', 'father']) {
      expect(GENDERED_WORDS).toContain(w);
    }
    for (const name of ['john', 'mary', 'james', 'sarah']) expect(GENDERED_WORDS).not.toContain(name);
    expect(new Set(GENDERED_WORDS).size).toBe(GENDERED_WORDS.length);
  });
});
