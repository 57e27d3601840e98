import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { saveEraser } from '../../src/erasure/checkpoint.js';
import type { FitContext } from '../../src/erasure/eraser.js';
import { loadEraser } from '../../src/erasure/load.js';
import { methodSupervision, parseMethodOptions } from '../../src/erasure/methods.js';
import { WordDeletionEraser, createWordDeletionFitter, wordDeletionOptionsSchema } from '../../src/erasure/word-deletion.js';
import { ownTokenRange, saeConceptWords, vocabularyOf, type SaeWordOptions } from '../../src/erasure/word-selection.js';
import type { Batch, HookName } from '../../src/models/model.js';
import { parseStrict } from '../../src/util/schema.js';
import {
  FEMALE_WORDS,
  FILLER_WORDS,
  MALE_WORDS,
  NURSE_WORDS,
  SURGEON_WORDS,
  plantedSplits,
  toyFit,
  toyTokenize,
  type PlantedSplits,
  type ToyFit,
  type ToySae,
} from './sae-toy.js';
import { auditedContext, expectStatedReads } from './label-audit.js';
import { editCheckpointJson } from './checkpoint-files.js';

/**
 * Compound words the toy tokenizer splits into two of its words, as WordPiece splits "hernia" into
 * "her" + "##nia": one with two female pieces, one with a female and a filler piece.
 */
const COMPOUNDS: Record<string, string> = { shehers: 'she hers', herteam: 'her team' };

/** toyTokenize, with the compounds split into their pieces. */
function tokenize(texts: string[]): Batch {
  return toyTokenize(texts.map((t) => t.replace(/\b(shehers|herteam)\b/g, (w) => COMPOUNDS[w]!)));
}

let toy: ToyFit;
let saes: Record<HookName, ToySae>;
let splits: PlantedSplits;

beforeAll(async () => {
  await initEngine();
  const planted = plantedSplits({ seed: 42 });
  // The compounds occur in the training texts only (whose labels the selection never reads).
  planted.train = { ...planted.train, texts: planted.train.texts.map((t, i) => (i === 0 ? `${t} shehers` : i === 1 ? `${t} herteam` : t)) };
  toy = await toyFit({ tokenize, splits: planted });
  ({ saes, splits } = toy);
});

afterAll(() => toy.dispose());

function context(extra: Partial<FitContext> = {}): FitContext {
  return toy.context(extra);
}

const fitOptions = (sae: Record<string, unknown>): Promise<unknown> =>
  createWordDeletionFitter(parseStrict(wordDeletionOptionsSchema, { sae, retrainHead: false }, 'methods.word_deletion')).fit(context());

const OPTIONS: SaeWordOptions = { hook: 'embed', conceptLabels: 'gender+task', minConceptScore: 0.5, dominance: 1, minActivation: 0.5 };

describe('words chosen by SAE concept features', () => {
  it('reads the vocabulary as word deletion matches words, lower-cased and distinct', () => {
    expect(vocabularyOf(["He said: she's HERE, he", 'fiancée—x_y 42'])).toEqual(['he', 'said', 'she', 's', 'here', 'fiancée', 'x_y', '42']);
  });

  it('finds the gender features of the planted embedding axes and exactly the gendered words, not task words', () => {
    const found = saeConceptWords(context(), OPTIONS);
    // Features 0 and 1 read the male and female axes; 2 and 3 the professions (task features).
    expect(found.features.map((f) => f.feature).sort()).toEqual([0, 1]);
    expect(found.candidates).toBe(saes.embed!.dSae);
    // Every piece of "shehers" fires the female feature; "herteam" has a filler piece, so it is kept.
    expect(found.words).toEqual([...MALE_WORDS, ...FEMALE_WORDS, 'shehers'].sort());
    expect(found.vocabulary).toBe(vocabularyOf([...splits.train.texts, ...splits.concept.texts]).length);
    for (const f of found.features) expect(f.conceptScore).toBeGreaterThanOrEqual(OPTIONS.minConceptScore);
    // The same inputs give the same (remembered) result.
    expect(saeConceptWords(context(), OPTIONS)).toBe(found);
  });

  it('with gender labels alone, a low threshold also takes task words (the documented price); a high one does not', () => {
    const gender = { ...OPTIONS, conceptLabels: 'gender' as const };
    const strict = saeConceptWords(context(), { ...gender, minConceptScore: 0.8 });
    expect(strict.words).toEqual([...MALE_WORDS, ...FEMALE_WORDS, 'shehers'].sort());
    // The concept set agrees with the task 75% of the time, so profession features score about 0.5 on gender alone.
    const loose = saeConceptWords(context(), { ...gender, minConceptScore: 0.3 });
    expect(loose.words).toEqual(expect.arrayContaining([...SURGEON_WORDS, ...NURSE_WORDS]));
    for (const w of FILLER_WORDS) expect(loose.words).not.toContain(w);
  });

  it('fits word deletion with option sae: deletes the found words, states the labels it read, round-trips', async () => {
    const options = parseStrict(wordDeletionOptionsSchema, { sae: { minConceptScore: 0.5 }, retrainHead: false }, 'methods.word_deletion');
    const audit = auditedContext(context());
    const eraser = (await createWordDeletionFitter(options).fit(audit.ctx)) as WordDeletionEraser;
    expect(eraser.wordList()).toEqual([...MALE_WORDS, ...FEMALE_WORDS, 'shehers'].sort());
    expect(eraser.editTexts(['he works at the hospital with her team'])).toEqual(['works at the hospital with team']);
    const d = eraser.describe();
    expect(d.supervision).toEqual({ labels: ['ambiguous_task', 'concept_gender', 'concept_task'], handPicked: false });
    expect(d.supervision).toEqual(methodSupervision(parseMethodOptions('word_deletion', { sae: {}, retrainHead: false }, 'x')));
    expectStatedReads(eraser, audit.reads);
    expect(d.removed).toEqual({});
    expect(d.hooks).toEqual([]);
    expect(d.selection!.perHook).toEqual({ embed: { candidates: saes.embed!.dSae, selected: 2 } });
    expect(d.summary).toMatch(/^deletes 7 words \(he, her, hers, him, his, she, shehers\) from the input texts .*stratified rule/);
    const dir = mkdtempSync(join(tmpdir(), 'word-selection-ckpt-'));
    saveEraser(eraser, dir);
    const loaded = loadEraser(dir);
    expect(loaded.describe()).toEqual(d);
    expect(loaded.editTexts!(splits.concept.texts)).toEqual(eraser.editTexts(splits.concept.texts));
    const good = readFileSync(join(dir, 'eraser.json'), 'utf8');
    const withJson = (edit: (j: Record<string, unknown>) => void): (() => unknown) => {
      writeFileSync(join(dir, 'eraser.json'), good);
      editCheckpointJson(dir, edit);
      return () => loadEraser(dir);
    };
    expect(withJson((j) => delete j.found)).toThrow(/field "found" must be given exactly when option "sae" is/);
    expect(withJson((j) => ((j.found as { hook: string }).hook = 'layers.0.resid_out'))).toThrow(
      /field "found\.hook" is "layers\.0\.resid_out" but option sae\.hook is "embed"/,
    );
    expect(withJson((j) => delete (j.options as Record<string, unknown>).sae)).toThrow(/field "found" must be given exactly when option "sae" is/);
    // Gender labels alone: the concept set's task labels are never read.
    const genderOnly = auditedContext(context());
    const g = await createWordDeletionFitter(
      parseStrict(wordDeletionOptionsSchema, { sae: { conceptLabels: 'gender', minConceptScore: 0.8 }, retrainHead: false }, 'methods.word_deletion'),
    ).fit(genderOnly.ctx);
    expect(g.describe().supervision).toEqual({ labels: ['ambiguous_task', 'concept_gender'], handPicked: false });
    expectStatedReads(g, genderOnly.reads);
    [eraser, loaded, g].forEach((e) => e.dispose());
  });

  it('retrains the head on the edited texts by default and holds no tensor after dispose', async () => {
    const before = tf.memory().numTensors;
    // Fresh splits, so the words are computed here rather than remembered from an earlier test.
    const fresh = context({ train: { ...splits.train }, concept: { ...splits.concept } });
    const eraser = await createWordDeletionFitter(parseStrict(wordDeletionOptionsSchema, { sae: {} }, 'methods.word_deletion')).fit(fresh);
    expect(saeConceptWords(fresh, OPTIONS)).not.toBe(saeConceptWords(context(), OPTIONS));
    expect(eraser.head).toBeDefined();
    expect(eraser.describe().summary).toMatch(/probe head retrained/);
    eraser.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it("judges a word by its own tokens, not the special tokens around it, even when one has a word's id", () => {
    expect(ownTokenRange([101, 7, 8, 102], [101, 102])).toEqual([1, 3]);
    expect(ownTokenRange([7, 8], [])).toEqual([0, 2]);
    expect(ownTokenRange([5, 5], [5])).toEqual([0, 1]);
    expect(ownTokenRange([5, 9], [5])).toEqual([1, 2]);
    // A tokenizer that puts "his" (a male word) before every text: were it read as one of each word's
    // pieces, no female word would fire the female feature with every piece, and none would be chosen.
    const prefixed = context({ tokenize: (texts) => tokenize(texts.map((t) => `his ${t}`)) });
    expect(saeConceptWords(prefixed, OPTIONS).words).toEqual([...MALE_WORDS, ...FEMALE_WORDS, 'shehers'].sort());
  });

  it('refuses bad options before any work, with clear errors', async () => {
    // Gender labels that have nothing to do with the texts: no feature passes, and the fit says so rather than deleting nothing.
    const noise = { ...splits.concept, z: Int32Array.from(splits.concept.z, (_, i) => (i >> 1) % 2) };
    await expect(
      createWordDeletionFitter(parseStrict(wordDeletionOptionsSchema, { sae: {}, retrainHead: false }, 'methods.word_deletion')).fit(
        context({ concept: noise }),
      ),
    ).rejects.toThrow(
      /no feature of the embed SAE passes the concept rule \(stratified; highest concept score 0\.\d+, minConceptScore 0\.5\), so there are no words to delete/,
    );
    expect(() => parseStrict(wordDeletionOptionsSchema, { sae: {}, words: ['he'] }, 'methods.word_deletion')).toThrow(/either `words`.*or `sae`/);
    expect(() => parseStrict(wordDeletionOptionsSchema, { sae: { minActivation: 0 } }, 'methods.word_deletion')).toThrow(/sae\.minActivation/);
    expect(() => parseStrict(wordDeletionOptionsSchema, { sae: { conceptLabels: 'task' } }, 'methods.word_deletion')).toThrow(/sae\.conceptLabels/);
    const fit = fitOptions;
    await expect(fit({ hook: 'layers.0.mlp_out' })).rejects.toThrow(
      /sae\.hook is "layers\.0\.mlp_out", which has no SAE \(SAEs at: embed, layers\.0\.resid_out\)/,
    );
    await expect(fit({ hook: 'layers.9.resid_out' })).rejects.toThrow(/not a hook of the model/);
  });
});
