/**
 * Words chosen by an SAE's concept features, with no human in the loop: `word_deletion`'s `sae`
 * option, which keeps word deletion's input-level edit (delete the words from the texts before the
 * model reads them) and replaces its hand-written list by the words the SAE finds.
 *
 * Why an input edit: ablating gendered SAE features inside the model keeps the SAE's error term
 * (SHIFT's identity x' = x - sum_i f_i v_i), and at the embeddings the error and the token's other
 * features still carry the token, so the gender it signals reaches later layers. Deleting the words
 * removes the token with everything it carries; the SAE decides which words.
 *
 * ## Rule
 * 1. **Concept features.** Every feature of the SAE at `hook` is a candidate. Its mean-pooled
 *    activation on each concept-set example is scored by the rule of feature-selection.ts: with
 *    `conceptLabels: "gender+task"` the stratified rule (association with the concept within each
 *    task class, at least `dominance` times the association with the task within each concept
 *    class, reading both label sets of the concept set); with `"gender"` the concept-only rule
 *    (marginal association with the concept, reading its concept labels alone). A candidate with
 *    conceptScore >= minConceptScore that passes is a concept feature.
 * 2. **Words.** The vocabulary is every distinct word (lower-cased maximal run of letters, digits
 *    and underscores, as word deletion matches them) of the training and concept texts; reading the
 *    texts reads no label. Each word is read by the model on its own (special tokens around it, as a
 *    one-word text) up to `hook`, and its tokens are encoded by the SAE: a_wj = the smallest
 *    activation of concept feature j over word w's own tokens (special tokens excluded), so a word
 *    split into pieces fires j only if every piece does ("hernia" = "her" + "##nia" does not fire a
 *    feature of "her"). Word w is chosen when a_wj >= minActivation * max_w' a_w'j for some concept
 *    feature j: it fires the feature at least that fraction as strongly as the word that fires it
 *    most. Context-free by construction (a word is deleted everywhere or nowhere), as a word list is.
 *
 * Words of a test text that occur in neither the training nor the concept texts are never chosen;
 * this is the list's reach, as it is for a hand-written list.
 */
import { z } from 'zod';
import { tf } from '../engine/engine.js';
import type { HookName } from '../models/model.js';
import { maxOf } from '../util/arrays.js';
import { IdentityMemo } from '../util/memo.js';
import { progress } from '../util/progress.js';
import type { RankedFeature } from './attribution.js';
import type { FitContext } from './eraser.js';
import {
  conceptFeatureColumns,
  selectConceptFeatures,
  selectConceptOnlyFeatures,
  selectedCodes,
  type AssociationRule,
  type SelectionRecord,
} from './feature-selection.js';

/** Word deletion's option `sae`: which SAE finds the words, and the thresholds of the rule (module docstring). */
export const saeWordOptionsSchema = z
  .strictObject({
    hook: z.string().default('embed').describe('The hook whose SAE finds the words (at or before the probe hook). Default embed.'),
    conceptLabels: z
      .enum(['gender+task', 'gender'])
      .default('gender+task')
      .describe(
        'Labels of the concept set that score the features: "gender+task" (gender association within each profession, at least `dominance` times the profession association within each gender) or "gender" (gender association alone). Default "gender+task".',
      ),
    minConceptScore: z
      .number()
      .min(0)
      .max(1)
      .default(0.5)
      .describe("A concept feature's minimum concept score (rank-biserial, src/erasure/feature-selection.ts). Default 0.5."),
    dominance: z.number().min(0).default(1).describe('Concept score at least this times the task score ("gender+task" only). Default 1.'),
    minActivation: z
      .number()
      .gt(0)
      .max(1)
      .default(0.5)
      .describe(
        "A word is chosen when, read alone, it fires a concept feature at least this fraction of the feature's largest activation over the vocabulary. Default 0.5.",
      ),
  })
  .describe(
    "Choose the words automatically instead of by hand: the words of the training and concept texts that fire the gendered features of the SAE at `hook` (src/erasure/word-selection.ts). Replaces the default list; reads the concept set's labels.",
  );

export type SaeWordOptions = z.output<typeof saeWordOptionsSchema>;

/** A concept feature and the words it chose. */
export interface WordFeature {
  feature: number;
  conceptScore: number;
  taskScore?: number;
  /** The chosen words on which it fires, strongest first. */
  words: string[];
}

export interface SaeWords {
  /** The chosen words, sorted. */
  words: string[];
  /** The concept features, by concept score (highest first). */
  features: WordFeature[];
  /** How their scores were computed: "stratified" (or "marginal" when no stratum is large enough) with both label sets, "concept_only" with gender alone. */
  rule: AssociationRule;
  /** Distinct words read from the training and concept texts. */
  vocabulary: number;
  /** Candidates scored (the SAE's width). */
  candidates: number;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Word deletion's notion of a word, without its possessive suffix: a maximal run of letters, digits, underscores. */
const WORD = /[\p{L}\p{N}_]+/gu;

/** Distinct lower-cased words of `texts`, in first-seen order. */
export function vocabularyOf(texts: Iterable<string>): string[] {
  const seen = new Set<string>();
  for (const text of texts) for (const m of text.matchAll(WORD)) seen.add(m[0].toLowerCase());
  return [...seen];
}

/** The special tokens the tokenizer puts around every text: the token ids of the empty text. */
function specialTokens(tokenize: FitContext['tokenize']): number[] {
  const batch = tokenize(['']);
  try {
    const ids = batch.inputIds.arraySync()[0]!;
    const mask = batch.attentionMask.arraySync()[0]!;
    return ids.filter((_, t) => mask[t] === 1);
  } finally {
    tf.dispose([batch.inputIds, batch.attentionMask]);
  }
}

/**
 * The positions of a one-word text's own tokens among its `ids` (real tokens only): what is left
 * once the special tokens `special` are taken off, the first p of them from the front and the rest
 * from the back, for the smallest p that fits ([CLS] w [SEP]: p = 1). By position, so a word whose
 * own token has a special token's id keeps it.
 */
export function ownTokenRange(ids: readonly number[], special: readonly number[]): [number, number] {
  const k = special.length;
  for (let p = 0; p <= k && ids.length >= k; p++) {
    const tail = ids.length - (k - p);
    let fits = true;
    for (let i = 0; i < p && fits; i++) fits = ids[i] === special[i];
    for (let i = p; i < k && fits; i++) fits = ids[tail + i - p] === special[i];
    if (fits) return [p, tail];
  }
  // Cut by truncation: no special token to trust at either end.
  return [0, ids.length];
}

/** Single words are a few tokens, so many fit in one pass at the length of a short text. */
const WORDS_PER_PASS = 256;

/**
 * `[words, k]`: for each word, read alone, the smallest activation of each of `features` of the SAE
 * at `hook` over the word's own tokens (0 for a word with none).
 */
function wordActivations(ctx: FitContext, hook: HookName, features: Int32Array, words: readonly string[]): Float32Array {
  const sae = ctx.saes[hook]!;
  const k = features.length;
  const out = new Float32Array(words.length * k);
  const special = specialTokens(ctx.tokenize);
  const bar = progress(`word deletion: ${hook} SAE on ${words.length} words`, words.length, 'words');
  for (let start = 0; start < words.length; start += WORDS_PER_PASS) {
    const chunk = words.slice(start, start + WORDS_PER_PASS) as string[];
    const batch = ctx.tokenize(chunk);
    try {
      const ids = batch.inputIds.arraySync();
      const mask = batch.attentionMask.arraySync();
      const acts = ctx.model.run(batch, { capture: [hook], stopAfter: hook }).captures[hook];
      if (acts === undefined) throw new Error(`word deletion: the model returned no activation for hook "${hook}"`);
      try {
        // Only the words' own tokens are encoded: not the padding, nor the special tokens around each word.
        const [n, seq, d] = acts.shape;
        const own: number[] = [];
        const spans: [number, number][] = [];
        for (let row = 0; row < n; row++) {
          const positions = mask[row]!.flatMap((m, t) => (m === 1 ? [t] : []));
          const [from, to] = ownTokenRange(
            positions.map((t) => ids[row]![t]!),
            special,
          );
          spans.push([own.length, own.length + Math.max(0, to - from)]);
          for (let i = from; i < to; i++) own.push(row * seq + positions[i]!);
        }
        const x = tf.tidy(() => tf.gather(tf.reshape(acts, [n * seq, d]), tf.tensor1d(own, 'int32')) as tf.Tensor2D);
        let codes: Float32Array;
        try {
          codes = selectedCodes(sae, features, x);
        } finally {
          x.dispose();
        }
        spans.forEach(([a, b], row) => {
          if (a === b) return; // no own token: stays 0
          const dst = (start + row) * k;
          for (let c = 0; c < k; c++) {
            let least = Infinity;
            for (let j = a; j < b; j++) least = Math.min(least, codes[j * k + c]!);
            out[dst + c] = least;
          }
        });
      } finally {
        acts.dispose();
      }
    } finally {
      tf.dispose([batch.inputIds, batch.attentionMask]);
    }
    bar.tick(chunk.length);
  }
  bar.done();
  return out;
}

/**
 * Results by SAE, for the fits of one run: the words depend on the model, its tokenizer, the SAE,
 * the concept set and the training texts (compared by identity), not on the seed or the probe, so
 * a run's seeds share one computation. Results are frozen, as every eraser of the run shares them.
 */
const memo = new IdentityMemo<SaeWords>();

/** The words the concept features of the SAE at `options.hook` choose (module docstring). */
export function saeConceptWords(ctx: FitContext, options: SaeWordOptions): SaeWords {
  const { hook } = options;
  const sae = ctx.saes[hook];
  if (sae === undefined)
    throw new Error(`word deletion: option sae.hook is "${hook}", which has no SAE (SAEs at: ${Object.keys(ctx.saes).join(', ') || 'none'})`);
  return memo.get(sae, [ctx.model, ctx.tokenize, ctx.concept, ctx.train], JSON.stringify(options), () => deepFreeze(computeConceptWords(ctx, options)));
}

function computeConceptWords(ctx: FitContext, options: SaeWordOptions): SaeWords {
  const { hook } = options;
  const sae = ctx.saes[hook]!;
  const candidates: RankedFeature[] = Array.from({ length: sae.dSae }, (_, feature) => ({ hook, feature, attribution: 0 }));
  const columns = conceptFeatureColumns(ctx, candidates, ctx.concept, {
    batchSize: ctx.batchSize,
    progressLabel: `word deletion: ${hook} SAE features on the concept set`,
  });
  const records: SelectionRecord[] =
    options.conceptLabels === 'gender'
      ? selectConceptOnlyFeatures(candidates, columns, ctx.concept.z, { minConceptScore: options.minConceptScore })
      : selectConceptFeatures(candidates, columns, ctx.concept.y, ctx.concept.z, { minConceptScore: options.minConceptScore, dominance: options.dominance });
  const chosen = records.filter((r) => r.selected).sort((a, b) => b.conceptScore - a.conceptScore || a.feature - b.feature);
  if (chosen.length === 0) {
    const best = Math.max(0, maxOf(records.map((r) => r.conceptScore).filter(Number.isFinite)));
    throw new Error(
      `word deletion: no feature of the ${hook} SAE passes the concept rule (${records[0]?.rule ?? 'no candidates'}; highest concept score ${best.toFixed(3)}, minConceptScore ${options.minConceptScore}), so there are no words to delete; lower sae.minConceptScore or give a larger concept set`,
    );
  }
  const vocabulary = vocabularyOf([...ctx.train.texts, ...ctx.concept.texts]);
  const k = chosen.length;
  const acts = wordActivations(
    ctx,
    hook,
    Int32Array.from(chosen, (r) => r.feature),
    vocabulary,
  );
  const words = new Set<string>();
  const features: WordFeature[] = chosen.map((r, c) => {
    let top = 0;
    for (let w = 0; w < vocabulary.length; w++) top = Math.max(top, acts[w * k + c]!);
    const fired: { word: string; a: number }[] = [];
    if (top > 0) {
      for (let w = 0; w < vocabulary.length; w++) {
        const a = acts[w * k + c]!;
        if (a >= options.minActivation * top) fired.push({ word: vocabulary[w]!, a });
      }
    }
    fired.sort((x, y) => y.a - x.a || (x.word < y.word ? -1 : 1));
    for (const f of fired) words.add(f.word);
    return {
      feature: r.feature,
      conceptScore: r.conceptScore,
      ...(r.taskScore === undefined ? {} : { taskScore: r.taskScore }),
      words: fired.map((f) => f.word),
    };
  });
  return { words: [...words].sort(), features, rule: chosen[0]!.rule, vocabulary: vocabulary.length, candidates: sae.dSae };
}
