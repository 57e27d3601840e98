/**
 * `word_deletion`: the input-level baseline. Deletes explicitly gendered words from the texts
 * before tokenisation; there is no hook edit, and `erasePooled` is undefined (`erasedPooled` in
 * erased.ts re-caches the edited texts instead).
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
 * Option `words` replaces it, `extraWords` adds to it. Option `sae` replaces it by the words the
 * gendered features of an SAE fire on (src/erasure/word-selection.ts): no list written by hand, at
 * the price of reading the concept set's labels. By default the fitter retrains the probe head on
 * the edited training texts (head.ts).
 *
 * Checkpoint (layout in checkpoint.ts), format `sae-eraser/word-deletion`: eraser.json
 * { ..., words, deletedInTrain, options, found } (`found`: with `sae`, the SAE's concept features
 * and the words each chose, else null); eraser.safetensors holds no tensors.
 */
import { z } from 'zod';
import type { Edit, HookName } from '../models/model.js';
import type { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import { parseStrict } from '../util/schema.js';
import { checkpointFields, checkRetrainedHead, type LoadTarget, type StoredCheckpoint } from './checkpoint.js';
import {
  checkHooksUpToProbe,
  supervision,
  type CheckpointContent,
  type Eraser,
  type EraserDescription,
  type EraserFitter,
  type FitContext,
  type Supervision,
} from './eraser.js';
import { retrainHead, retrainHeadOption, withHead } from './head.js';
import { saeConceptWords, saeWordOptionsSchema, type SaeWords } from './word-selection.js';
import { ASSOCIATION_RULES } from './feature-selection.js';

/** The default gendered words, lower case. */
export const GENDERED_WORDS: readonly string[] = [
  // Pronouns.
  'he',
  'she',
  'him',
  'her',
  'his',
  'hers',
  'himself',
  'herself',
  // Titles and forms of address.
  'mr',
  'mrs',
  'ms',
  'miss',
  'mister',
  'sir',
  'madam',
  'madame',
  "ma'am",
  // People.
  'man',
  'woman',
  'men',
  'women',
  'boy',
  'girl',
  'boys',
  'girls',
  'gentleman',
  'gentlemen',
  'lady',
  'ladies',
  'male',
  'female',
  'males',
  'females',
  'guy',
  'guys',
  // Family and partners.
  'husband',
  'wife',
  'husbands',
  'wives',
  'son',
  'daughter',
  'sons',
  'daughters',
  'mother',
  'father',
  'mothers',
  'fathers',
  'mom',
  'mum',
  'dad',
  'moms',
  'mums',
  'dads',
  'brother',
  'sister',
  'brothers',
  'sisters',
  'uncle',
  'aunt',
  'uncles',
  'aunts',
  'nephew',
  'niece',
  'nephews',
  'nieces',
  'grandmother',
  'grandfather',
  'grandmothers',
  'grandfathers',
  'grandson',
  'granddaughter',
  'grandsons',
  'granddaughters',
  'boyfriend',
  'girlfriend',
  'boyfriends',
  'girlfriends',
  'fiance',
  'fiancee',
  'fiancé',
  'fiancée',
  'widow',
  'widower',
  'widows',
  'widowers',
];

/** After a deleted word, these take no space before them ("to him." -> "to."). */
const CLOSERS = new Set(['.', ',', ';', ':', '!', '?', ')', ']', '}', '\n', '\r']);
/** Before a deleted word, these take no space after them ("(she was" -> "(was"). */
const OPENERS = new Set(['(', '[', '{', '"', '“', "'", '‘', '\n', '\r']);

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

export const WORD_DELETION_FORMAT = 'sae-eraser/word-deletion';

export const wordDeletionOptionsSchema = z
  .strictObject({
    words: z
      .array(z.string())
      .optional()
      .describe(
        'The words to delete (single words, any case), replacing the default list GENDERED_WORDS (pronouns, titles, gendered nouns, family terms; no names).',
      ),
    extraWords: z.array(z.string()).default([]).describe('Words deleted in addition to `words` (or the default list). Default none.'),
    sae: saeWordOptionsSchema.optional(),
    retrainHead: retrainHeadOption,
  })
  .refine((o) => o.sae === undefined || o.words === undefined, {
    message: 'give either `words` (a list chosen by hand) or `sae` (words chosen by SAE features), not both',
  })
  .describe('Input-level baseline: delete gendered words from the texts before the model reads them.');

export type WordDeletionOptions = z.output<typeof wordDeletionOptionsSchema>;

/**
 * What word deletion reads: the ambiguous split's task labels, through the biased probe it keeps or
 * the head it retrains on them; with a hand-written list (the default list, `words` or
 * `extraWords`) nothing else, and the list is hand-picked; with `sae`, the concept set's gender
 * labels (and its task labels under `conceptLabels: "gender+task"`) that chose the features.
 */
export function wordDeletionSupervision(options: Pick<WordDeletionOptions, 'sae' | 'extraWords'> = { extraWords: [] }): Supervision {
  const { sae } = options;
  const handPicked = sae === undefined || options.extraWords.length > 0;
  return supervision(['ambiguous_task', sae !== undefined && 'concept_gender', sae?.conceptLabels === 'gender+task' && 'concept_task'], handPicked);
}

/** How `sae` chose the words: the SAE's hook, its concept features with their words and rule, and what was read. */
export type FoundWords = Omit<SaeWords, 'words'> & { hook: HookName };

/** Deletes a fixed word list from input texts; no hook edits. Immutable. */
export class WordDeletionEraser implements Eraser {
  readonly method = 'word_deletion' as const;
  readonly head = undefined;
  private readonly words: readonly string[];
  private readonly deleter: (text: string) => { text: string; deleted: number };

  constructor(
    words: readonly string[],
    /** Words deleted from the training texts at fit time (for the report), or null when unknown. */
    readonly deletedInTrain: number | null = null,
    /** The options it was fitted with, for the checkpoint; by default, exactly `words` and no retrained head. */
    readonly options: WordDeletionOptions = { words: [...words], extraWords: [], retrainHead: false },
    /** With option `sae`: how the words were found. */
    readonly found: FoundWords | null = null,
  ) {
    this.words = [...words];
    this.deleter = wordDeleter(this.words);
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
    // Word deletion edits the texts, never a hook; with `sae`, the features choose the words, and it is the words that are removed.
    const common = { method: this.method, hooks: [], unitsRemoved: this.words.length, removed: {}, supervision: wordDeletionSupervision(this.options) };
    const { found } = this;
    if (found === null) {
      return {
        ...common,
        summary: `deletes ${this.words.length} gendered words (pronouns, titles, gendered nouns, family terms; no names) from the input texts${count}`,
      };
    }
    const sae = this.options.sae!;
    const shown = this.words.slice(0, 12).join(', ');
    const test = found.rule === 'concept_only' ? '' : ` and >= ${sae.dominance} x task score`;
    const rule = `words of the training and concept texts that fire, read alone, one of the ${found.features.length} gendered features of the ${found.hook} SAE (concept score >= ${sae.minConceptScore}${test}, ${found.rule} rule) with every piece at >= ${sae.minActivation} of the feature's strongest word`;
    return {
      ...common,
      summary: `deletes ${this.words.length} words (${shown}${this.words.length > 12 ? ', ...' : ''}) from the input texts${count}: ${rule}`,
      selection: {
        rule,
        parameters: { ...sae, vocabulary: found.vocabulary, features: found.features },
        perHook: { [found.hook]: { candidates: found.candidates, selected: found.features.length } },
      },
    };
  }

  /** The words this eraser deletes. */
  wordList(): readonly string[] {
    return this.words;
  }

  checkpoint(): CheckpointContent {
    return {
      format: WORD_DELETION_FORMAT,
      // `found` only with option `sae`, so a hand-list checkpoint is as before it existed.
      fields: { words: [...this.words], deletedInTrain: this.deletedInTrain, options: this.options, ...(this.found === null ? {} : { found: this.found }) },
      tensors: {},
    };
  }

  dispose(): void {}
}

const wordDeletionCheckpointSchema = z.strictObject({
  ...checkpointFields,
  words: z.array(z.string()).describe('The deleted words (the default list or `words`, then `extraWords`).'),
  deletedInTrain: z.number().int().min(0).nullable().describe('Words deleted from the training texts at fit time, or null when unknown.'),
  options: wordDeletionOptionsSchema.describe('The options it was fitted with.'),
  found: z
    .strictObject({
      hook: z.string(),
      features: z.array(
        z.strictObject({ feature: z.number().int().min(0), conceptScore: z.number(), taskScore: z.number().optional(), words: z.array(z.string()) }),
      ),
      rule: z.enum(ASSOCIATION_RULES),
      vocabulary: z.number().int().min(0),
      candidates: z.number().int().min(0),
    })
    .nullable()
    .default(null)
    .describe('With option `sae`: the hook, its concept features and the words each chose, the vocabulary size and the candidates scored.'),
});

/** `loadEraser`'s restorer for the word-deletion format. */
export function restoreWordDeletionEraser(stored: StoredCheckpoint, _target: LoadTarget): Eraser {
  const { jsonPath, method } = stored;
  if (method !== 'word_deletion') throw new Error(`${jsonPath}: field "method" is ${JSON.stringify(method)}, expected "word_deletion"`);
  const { words, deletedInTrain, options, found } = parseStrict(wordDeletionCheckpointSchema, stored.json, jsonPath);
  checkRetrainedHead(stored, options.retrainHead);
  if ((options.sae === undefined) !== (found === null)) throw new Error(`${jsonPath}: field "found" must be given exactly when option "sae" is`);
  if (found !== null && found.hook !== options.sae!.hook)
    throw new Error(`${jsonPath}: field "found.hook" is "${found.hook}" but option sae.hook is "${options.sae!.hook}"`);
  return new WordDeletionEraser(words, deletedInTrain, options, found);
}

class WordDeletionFitter implements EraserFitter {
  readonly method = 'word_deletion' as const;

  constructor(private readonly options: WordDeletionOptions) {}

  async fit(ctx: FitContext): Promise<Eraser> {
    const { sae } = this.options;
    let found: FoundWords | null = null;
    let base: readonly string[] = this.options.words ?? GENDERED_WORDS;
    if (sae !== undefined) {
      checkHooksUpToProbe(ctx.model, ctx.probeHook, [sae.hook], 'word deletion (option sae)');
      const result = saeConceptWords(ctx, sae);
      found = { hook: sae.hook, features: result.features, rule: result.rule, vocabulary: result.vocabulary, candidates: result.candidates };
      base = result.words;
    }
    const words = [...base, ...this.options.extraWords];
    const deleter = wordDeleter(words);
    const deletedInTrain = ctx.train.texts.reduce((a, t) => a + deleter(t).deleted, 0);
    const eraser = new WordDeletionEraser(words, deletedInTrain, this.options, found);
    return withHead(eraser, this.options.retrainHead ? await retrainHead(eraser, ctx) : undefined);
  }
}

/** The fitter of `word_deletion`, with options parsed by `wordDeletionOptionsSchema`. */
export function createWordDeletionFitter(options: WordDeletionOptions): EraserFitter {
  return new WordDeletionFitter(options);
}
