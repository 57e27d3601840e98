import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { ActivationCache } from '../../src/cache/cache.js';
import { saveEraser } from '../../src/erasure/checkpoint.js';
import { erasedPooled } from '../../src/erasure/erased.js';
import type { FitContext, LabelledSplit } from '../../src/erasure/eraser.js';
import { loadEraser } from '../../src/erasure/load.js';
import { GENDERED_WORDS, WordDeletionEraser, createWordDeletionFitter, wordDeleter, wordDeletionOptionsSchema } from '../../src/erasure/word-deletion.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { parseStrict } from '../../src/util/schema.js';
import { editCheckpointJson } from './checkpoint-files.js';
import { auditedContext, expectStatedReads } from './label-audit.js';

const HOOK = 'layers.0.resid_out';

beforeAll(async () => {
  await initEngine();
});

/** A stand-in for a cache of the edited texts: per text, its length and its count of "e"s and spaces. */
function textFeatures(texts: readonly string[]): Float32Array {
  return Float32Array.from(texts.flatMap((t) => [t.length, [...t].filter((c) => c === 'e').length, [...t].filter((c) => c === ' ').length]));
}

function fitWordDeletion(options: Record<string, unknown>, ctx: Partial<FitContext>): Promise<WordDeletionEraser> {
  return createWordDeletionFitter(parseStrict(wordDeletionOptionsSchema, options, 'methods.word_deletion')).fit(
    ctx as FitContext,
  ) as Promise<WordDeletionEraser>;
}

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
    const train: LabelledSplit = {
      rows: Int32Array.from([0, 1]),
      y: Int32Array.from([0, 1]),
      z: Int32Array.from([0, 1]),
      texts: ['He operates.', 'She and her team nurse.'],
    };
    const eraser = await fitWordDeletion({ extraWords: ['Operates'], retrainHead: false }, { train });
    expect(eraser).toBeInstanceOf(WordDeletionEraser);
    expect(eraser.editTexts(train.texts)).toEqual(['.', 'and team nurse.']);
    expect(eraser.edits()).toEqual({});
    expect(eraser.erasePooled({} as never, [0])).toBeUndefined();
    expect(eraser.head).toBeUndefined();
    const d = eraser.describe();
    expect(d).toMatchObject({ method: 'word_deletion', hooks: [], unitsRemoved: GENDERED_WORDS.length + 1 });
    // Hand-picked words, no label read but the biased probe's (ambiguous task labels).
    expect(d.supervision).toEqual({ labels: ['ambiguous_task'], handPicked: true });
    expect(d.summary).toMatch(/4 occurrences in the training texts/);
    const dir = mkdtempSync(join(tmpdir(), 'word-del-'));
    saveEraser(eraser, dir);
    const loaded = loadEraser(dir);
    expect(loaded.editTexts!(train.texts)).toEqual(eraser.editTexts(train.texts));
    expect(loaded.describe()).toEqual(d);
    expect(loaded.head).toBeUndefined();
    // The checkpoint is parsed strictly: a malformed or unknown field is refused, naming the file and the field.
    const good = readFileSync(join(dir, 'eraser.json'), 'utf8');
    expect(JSON.parse(good)).toMatchObject({
      words: [...GENDERED_WORDS, 'Operates'],
      deletedInTrain: 4,
      options: { extraWords: ['Operates'], retrainHead: false },
    });
    const withJson = (edit: (json: Record<string, unknown>) => void): (() => ReturnType<typeof loadEraser>) => {
      writeFileSync(join(dir, 'eraser.json'), good);
      editCheckpointJson(dir, edit);
      return () => loadEraser(dir);
    };
    expect(withJson((j) => (j.deletedInTrain = 'four'))).toThrow(/eraser\.json: field "deletedInTrain": /);
    expect(withJson((j) => (j.words = ['he', 3]))).toThrow(/eraser\.json: field "words\[1\]": /);
    expect(withJson((j) => (j.extra = true))).toThrow(/eraser\.json: unknown field "extra"/);
    expect(withJson((j) => delete j.options)).toThrow(/eraser\.json: field "options": /);
    expect(withJson((j) => (j.options = { retrainHead: false, word: ['x'] }))).toThrow(/unknown field "options\.word"/);
    expect(withJson((j) => (j.deletedInTrain = null))().describe().summary).not.toMatch(/occurrences/);
    writeFileSync(join(dir, 'eraser.json'), JSON.stringify({ format: 'sae-eraser/word-deletion', version: 2, method: 'shift', head: null, words: [] }));
    expect(() => loadEraser(dir)).toThrow(/field "method" is "shift"/);
    expect(() => parseStrict(wordDeletionOptionsSchema, { wrds: [] }, 'methods.word_deletion')).toThrow(/unknown field "wrds"/);
    expect(() => parseStrict(wordDeletionOptionsSchema, { words: 'he' }, 'methods.word_deletion')).toThrow(/field "words"/);
    expect(parseStrict(wordDeletionOptionsSchema, {}, 'methods.word_deletion')).toEqual({ extraWords: [], retrainHead: true });
    // `words` replaces the default list.
    const only = await fitWordDeletion({ words: ['team'], retrainHead: false }, { train });
    expect(only.editTexts(train.texts)).toEqual(['He operates.', 'She and her nurse.']);
    await expect(fitWordDeletion({ words: ['two words'] }, { train })).rejects.toThrow(/not a single word/);
  });

  it('retrains the head on the re-cached edited training texts; the head round-trips', async () => {
    const texts = ['He operates on her.', 'She nurses him.', 'The surgeon said he would.', 'The nurse and her team.', 'His clinic.', 'A nurse.'];
    const train: LabelledSplit = { rows: Int32Array.from(texts.keys()), y: Int32Array.from([1, 0, 1, 0, 1, 0]), z: Int32Array.from([1, 0, 1, 0, 1, 0]), texts };
    const cache = ActivationCache.fromArrays(texts.length, { [HOOK]: textFeatures(texts) });
    const recache = (edited: string[]): Promise<ActivationCache> =>
      Promise.resolve(ActivationCache.fromArrays(edited.length, { [HOOK]: textFeatures(edited) }));
    const probe = new LinearProbe(3, 2, { epochs: 3, batchSize: 2, seed: 7 });
    const X0 = cache.pooled(HOOK);
    probe.fit(X0, train.y);
    const ctx = { train, cache, recache, probe, probeHook: HOOK, batchSize: 4 } as unknown as FitContext;
    const audit = auditedContext(ctx);
    const eraser = await createWordDeletionFitter(parseStrict(wordDeletionOptionsSchema, {}, 'methods.word_deletion')).fit(audit.ctx);
    // The head read the ambiguous task labels; no gender label is read: the word list is hand-picked.
    expect(eraser.describe().supervision).toEqual({ labels: ['ambiguous_task'], handPicked: true });
    expectStatedReads(eraser, audit.reads);
    expect([...audit.reads]).toEqual(['ambiguous_task']);
    const head = eraser.head!;
    expect(head).toBeDefined();
    expect(eraser.describe().summary).toMatch(/probe head retrained/);
    // The head: the biased probe's recipe, trained on the edited texts' representations.
    const X = await erasedPooled(eraser, train, ctx);
    expect(Array.from(X.dataSync())).toEqual(Array.from(textFeatures(eraser.editTexts!(texts))));
    const manual = new LinearProbe(3, 2, { ...probe.options, progressLabel: undefined });
    manual.fit(X, train.y);
    const dir = mkdtempSync(join(tmpdir(), 'word-del-head-'));
    saveEraser(eraser, dir);
    const loaded = loadEraser(dir);
    expect(loaded.editTexts!(texts)).toEqual(eraser.editTexts!(texts));
    expect(loaded.describe()).toEqual(eraser.describe());
    const [z1, z2, z3] = [head.logits(X), loaded.head!.logits(X), manual.logits(X)];
    expect(Array.from(z2.dataSync())).toEqual(Array.from(z1.dataSync()));
    expect(Array.from(z3.dataSync())).toEqual(Array.from(z1.dataSync()));
    // Options that say the head was retrained, with the head gone, are refused rather than loaded headless.
    editCheckpointJson(dir, (j) => (j.head = null));
    expect(() => loadEraser(dir)).toThrow(/retrainHead: true, but field "head" is null/);
    tf.dispose([X0, X, z1, z2, z3]);
    [probe, manual, loaded, eraser].forEach((p) => p.dispose());
  });

  it('documents its list: pronouns, titles, gendered nouns and family terms, no first names', () => {
    for (const w of [
      'he',
      'she',
      'him',
      'her',
      'his',
      'hers',
      'himself',
      'herself',
      'mr',
      'mrs',
      'ms',
      'miss',
      'man',
      'woman',
      'husband',
      'wife',
      'mother',
      'father',
    ]) {
      expect(GENDERED_WORDS).toContain(w);
    }
    for (const name of ['john', 'mary', 'james', 'sarah']) expect(GENDERED_WORDS).not.toContain(name);
    expect(new Set(GENDERED_WORDS).size).toBe(GENDERED_WORDS.length);
  });
});
