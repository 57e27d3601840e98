/**
 * `word_deletion`: the input-level baseline. Deletes explicitly gendered words from the texts
 * before tokenisation; there is no hook edit, and `erasePooled` is undefined (the runner caches the
 * edited texts and evaluates on those).
 *
 * Matching: case-insensitive, whole words only (a word is a maximal run of Unicode letters, digits
 * and underscores, so "he" never matches inside "the", "hello" or "hé"), with an optional
 * possessive or contraction suffix ('s, 'd, 'll, with ' or ’) deleted along with the word; the
 * titles mr, mrs, ms also take a following period. A word between two spaces leaves one space; a
 * word before closing punctuation or a line end takes the spaces before it ("to him." -> "to."), a
 * word after the text start, a line start, an opening bracket or quote takes the spaces after it
 * ("He is" -> "is", "(she was" -> "(was"). Text away from deletions is left as it is. Hyphenated
 * compounds lose only the listed part ("step-mother" -> "step-", "woman-led" -> "-led").
 *
 * The default list, `GENDERED_WORDS`, is documented below: pronouns, titles and forms of address,
 * gendered nouns for people, family and partner terms. It holds no first names (a name list would
 * be long, culture-bound and never complete; names are exactly what an input-level baseline misses).
 * `options.words` replaces it, `options.extraWords` adds to it.
 */
import { join } from 'node:path';
import { existsSync, readFileSync } from 'node:fs';
import { writeJsonAtomic } from '../io/atomic.js';
import { writeSafetensors } from '../io/safetensors.js';
import type { Edit, HookName } from '../models/model.js';
import type { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import type { Eraser, EraserDescription, FitContext } from './eraser.js';

/** The default gendered words, lower case. */
export const GENDERED_WORDS: readonly string[] = [
  // Pronouns.
  'he', 'she', 'him', 'her', 'his', 'hers', 'himself', 'herself',
  // Titles and forms of address.
  'mr', 'mrs', 'ms', 'miss', 'mister', 'sir', 'madam', 'madame', 'ma\'am',
  // People.
  'man', 'woman', 'men', 'women', 'boy', 'girl', 'boys', 'girls', 'gentleman', 'gentlemen', 'lady', 'ladies',
  'male', 'female', 'males', 'females', 'guy', 'guys',
  // Family and partners.
  'husband', 'wife', 'husbands', 'wives', 'son', 'daughter', 'sons', 'daughters',
  'mother', 'father', 'mothers', 'fathers', 'mom', 'mum', 'dad', 'moms', 'mums', 'dads',
  'brother', 'sister', 'brothers', 'sisters', 'uncle', 'aunt', 'uncles', 'aunts',
  'nephew', 'niece', 'nephews', 'nieces', 'grandmother', 'grandfather', 'grandmothers', 'grandfathers',
  'grandson', 'granddaughter', 'grandsons', 'granddaughters', 'boyfriend', 'girlfriend', 'boyfriends', 'girlfriends',
  'fiance', 'fiancee', 'fiancé', 'fiancée', 'widow', 'widower', 'widows', 'widowers',
];

/** After a deleted word, these take no space before them ("to him." -> "to."). */
const CLOSERS = new Set(['.', ',', ';', ':', '!', '?', ')', ']', '}', '\n', '\r']);
/** Before a deleted word, these take no space after them ("(she was" -> "(was"). */
const OPENERS = new Set(['(', '[', '{', '"', '“', '\'', '‘', '\n', '\r']);

/** Titles that may carry a period ("Mr."), deleted with it. */
const TITLES = new Set(['mr', 'mrs', 'ms']);

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A matcher deleting `words` from texts (see the module docstring). */
export function wordDeleter(words: readonly string[]): (text: string) => { text: string; deleted: number } {
  const list = [...new Set(words.map((w) => w.toLowerCase()))];
  for (const w of list) {
    if (!/^[\p{L}\p{N}_'’]+$/u.test(w)) throw new Error(`word deletion: "${w}" is not a single word (letters, digits, apostrophes)`);
  }
  if (list.length === 0) return (text) => ({ text, deleted: 0 });
  // Longest first, so that "hers" wins over "her" at the same position.
  list.sort((a, b) => b.length - a.length || (a < b ? -1 : 1));
  const alternatives = list.map((w) => (TITLES.has(w) ? `${escapeRegExp(w)}\\.?` : escapeRegExp(w))).join('|');
  // The spaces on both sides are matched too, so that a deletion leaves one space between two
  // words and none next to punctuation or the start of a line.
  const pattern = new RegExp(`([ \\t]*)(?<![\\p{L}\\p{N}_])(?:${alternatives})(?:['’](?:s|d|ll))?(?![\\p{L}\\p{N}_])([ \\t]*)`, 'giu');
  return (text) => {
    let deleted = 0;
    const out = text.replace(pattern, (match: string, before: string, after: string, offset: number, whole: string) => {
      deleted++;
      if (before.length > 0 && after.length > 0) return ' ';
      if (after.length === 0) {
        const next = whole[offset + match.length];
        return next === undefined || CLOSERS.has(next) ? '' : before;
      }
      // A space before the word that `before` did not take was taken by the previous deletion.
      const prev = offset > 0 ? whole[offset - 1] : undefined;
      return prev === undefined || OPENERS.has(prev) || prev === ' ' || prev === '\t' ? '' : after;
    });
    return { text: out, deleted };
  };
}

interface WordDeletionJson {
  format: 'sae-eraser/word-deletion';
  version: 1;
  method: 'word_deletion';
  words: string[];
  /** Words deleted from the training texts at fit time (for the report). */
  deletedInTrain: number | null;
}

function readWordList(o: Readonly<Record<string, unknown>>, key: string): string[] | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((w) => typeof w !== 'string')) throw new Error(`word_deletion option "${key}" must be a list of words`);
  return v as string[];
}

export class WordDeletionEraser implements Eraser {
  readonly method = 'word_deletion' as const;
  private words: string[];
  private deleter: (text: string) => { text: string; deleted: number };
  private deletedInTrain: number | null = null;

  constructor(words: readonly string[] = GENDERED_WORDS) {
    this.words = [...words];
    this.deleter = wordDeleter(this.words);
  }

  async fit(ctx: FitContext): Promise<void> {
    for (const key of Object.keys(ctx.options)) {
      if (key !== 'words' && key !== 'extraWords') throw new Error(`word_deletion option "${key}" is unknown (known: words, extraWords)`);
    }
    const words = readWordList(ctx.options, 'words') ?? [...GENDERED_WORDS];
    const extra = readWordList(ctx.options, 'extraWords') ?? [];
    this.words = [...words, ...extra];
    this.deleter = wordDeleter(this.words);
    this.deletedInTrain = ctx.train.texts.reduce((a, t) => a + this.deleter(t).deleted, 0);
  }

  editTexts(texts: readonly string[]): string[] {
    return texts.map((t) => this.deleter(t).text);
  }

  edits(): Record<HookName, Edit> {
    return {};
  }

  erasePooled(_cache: ActivationCache, _rows: ArrayLike<number>): tf.Tensor2D | undefined {
    return undefined;
  }

  describe(): EraserDescription {
    const count = this.deletedInTrain === null ? '' : ` (${this.deletedInTrain} occurrences in the training texts)`;
    return {
      method: this.method,
      hooks: [],
      unitsRemoved: this.words.length,
      summary: `deletes ${this.words.length} gendered words (pronouns, titles, gendered nouns, family terms; no names) from the input texts${count}`,
      removed: {},
    };
  }

  /** The words this eraser deletes. */
  wordList(): readonly string[] {
    return this.words;
  }

  save(dir: string): void {
    const json: WordDeletionJson = { format: 'sae-eraser/word-deletion', version: 1, method: 'word_deletion', words: this.words, deletedInTrain: this.deletedInTrain };
    writeSafetensors(join(dir, 'eraser.safetensors'), {}, { format: json.format, method: this.method });
    writeJsonAtomic(join(dir, 'eraser.json'), json);
  }

  static load(dir: string): WordDeletionEraser {
    const path = join(dir, 'eraser.json');
    if (!existsSync(path)) throw new Error(`${dir}: no eraser checkpoint (eraser.json is missing)`);
    let json: WordDeletionJson;
    try {
      json = JSON.parse(readFileSync(path, 'utf8')) as WordDeletionJson;
    } catch (err) {
      throw new Error(`${path}: not valid JSON: ${(err as Error).message}`, { cause: err });
    }
    if (json.method !== 'word_deletion') throw new Error(`${path}: field "method" is ${JSON.stringify(json.method)}, expected "word_deletion"`);
    if (json.version !== 1) throw new Error(`${path}: field "version" is ${JSON.stringify(json.version)}; this build reads version 1`);
    if (!Array.isArray(json.words) || json.words.some((w) => typeof w !== 'string')) throw new Error(`${path}: field "words" must be a list of words`);
    const eraser = new WordDeletionEraser(json.words);
    eraser.deletedInTrain = typeof json.deletedInTrain === 'number' ? json.deletedInTrain : null;
    return eraser;
  }

  dispose(): void {}
}

export function createWordDeletionEraser(): WordDeletionEraser {
  return new WordDeletionEraser();
}
