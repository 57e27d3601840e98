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
import { tf } from '../engine/engine.js';
import type { HookName } from '../models/model.js';
import { progress } from '../util/progress.js';
import { chunkRows } from './ablate.js';
import type { RankedFeature } from './attribution.js';
import type { FitContext } from './eraser.js';
import { conceptFeatureColumns, selectConceptFeatures, selectConceptOnlyFeatures, type SelectionRecord } from './feature-selection.js';

export interface SaeWordOptions {
  /** The hook whose SAE finds the words (at or before the probe hook); usually `embed`. */
  hook: HookName;
  /** "gender+task": stratified rule (concept and task labels of the concept set); "gender": concept labels alone. */
  conceptLabels: 'gender+task' | 'gender';
  /** Minimum concept score of a concept feature (rank-biserial, see feature-selection.ts). */
  minConceptScore: number;
  /** Concept score at least this times the task score (stratified rule only). */
  dominance: number;
  /** A word is chosen when it fires a concept feature at least this fraction of the feature's largest activation over the vocabulary. */
  minActivation: number;
}

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
  /** Distinct words read from the training and concept texts. */
  vocabulary: number;
  /** Candidates scored (the SAE's width). */
  candidates: number;
}

/** Word deletion's notion of a word, without its possessive suffix: a maximal run of letters, digits, underscores. */
const WORD = /[\p{L}\p{N}_]+/gu;

/** Distinct lower-cased words of `texts`, in first-seen order. */
export function vocabularyOf(texts: Iterable<string>): string[] {
  const seen = new Set<string>();
  for (const text of texts) for (const m of text.matchAll(WORD)) seen.add(m[0].toLowerCase());
  return [...seen];
}

/** Token ids the tokenizer adds to every text (those of the empty text). */
function specialTokenIds(tokenize: FitContext['tokenize']): Set<number> {
  const batch = tokenize(['']);
  try {
    const ids = batch.inputIds.arraySync()[0]!;
    const mask = batch.attentionMask.arraySync()[0]!;
    return new Set(ids.filter((_, t) => mask[t] === 1));
  } finally {
    tf.dispose([batch.inputIds, batch.attentionMask]);
  }
}

/**
 * `[words, k]`: for each word, read alone, the smallest activation of each of `features` of the SAE
 * at `hook` over the word's own tokens (0 for a word with none).
 */
function wordActivations(ctx: FitContext, hook: HookName, features: Int32Array, words: readonly string[]): Float32Array {
  const sae = ctx.saes[hook]!;
  const k = features.length;
  const out = new Float32Array(words.length * k).fill(Infinity);
  const special = specialTokenIds(ctx.tokenize);
  const batchSize = 256;
  const bar = progress(`word deletion: ${hook} SAE on ${words.length} words`, words.length, 'words');
  for (let start = 0; start < words.length; start += batchSize) {
    const chunk = words.slice(start, start + batchSize) as string[];
    const batch = ctx.tokenize(chunk);
    try {
      const ids = batch.inputIds.arraySync();
      const mask = batch.attentionMask.arraySync();
      const acts = ctx.model.run(batch, { capture: [hook], stopAfter: hook }).captures[hook];
      if (acts === undefined) throw new Error(`word deletion: the model returned no activation for hook "${hook}"`);
      try {
        const [n, seq, d] = acts.shape;
        const rowsPerChunk = Math.max(1, Math.floor(chunkRows(sae.dSae) / seq));
        for (let r0 = 0; r0 < n; r0 += rowsPerChunk) {
          const rows = Math.min(rowsPerChunk, n - r0);
          const codes = tf.tidy(() => {
            const x = tf.reshape(tf.slice(acts, [r0, 0, 0], [rows, seq, d]), [rows * seq, d]);
            return tf.gather(sae.encode(x), tf.tensor1d(features, 'int32'), 1);
          });
          const values = codes.dataSync();
          codes.dispose();
          for (let r = 0; r < rows; r++) {
            const dst = (start + r0 + r) * k;
            for (let t = 0; t < seq; t++) {
              if (mask[r0 + r]![t] !== 1 || special.has(ids[r0 + r]![t]!)) continue;
              for (let c = 0; c < k; c++) out[dst + c] = Math.min(out[dst + c]!, values[(r * seq + t) * k + c]!);
            }
          }
        }
      } finally {
        acts.dispose();
      }
    } finally {
      tf.dispose([batch.inputIds, batch.attentionMask]);
    }
    bar.tick(chunk.length);
  }
  bar.done();
  for (let i = 0; i < out.length; i++) if (out[i] === Infinity) out[i] = 0;
  return out;
}

/**
 * Results by SAE, for the fits of one run: the words depend on the model, the SAE, the concept set
 * and the training texts, not on the seed or the probe, so a run's seeds share one computation.
 */
const memo = new WeakMap<object, { inputs: readonly object[]; key: string; value: SaeWords }[]>();

/** The words the concept features of the SAE at `options.hook` choose (module docstring). */
export function saeConceptWords(ctx: FitContext, options: SaeWordOptions): SaeWords {
  const { hook } = options;
  const sae = ctx.saes[hook];
  if (sae === undefined)
    throw new Error(`word deletion: option sae.hook is "${hook}", which has no SAE (SAEs at: ${Object.keys(ctx.saes).join(', ') || 'none'})`);
  const inputs = [ctx.model, ctx.concept, ctx.train];
  const key = JSON.stringify(options);
  let entries = memo.get(sae);
  if (entries === undefined) memo.set(sae, (entries = []));
  let found = entries.find((e) => e.key === key && e.inputs.every((x, i) => x === inputs[i]))?.value;
  if (found === undefined) entries.push({ inputs, key, value: (found = computeConceptWords(ctx, options)) });
  return found;
}

function computeConceptWords(ctx: FitContext, options: SaeWordOptions): SaeWords {
  const { hook } = options;
  const sae = ctx.saes[hook]!;
  if (!(options.minActivation > 0 && options.minActivation <= 1))
    throw new Error(`word deletion: sae.minActivation must be in (0, 1], got ${options.minActivation}`);
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
  const vocabulary = vocabularyOf([...ctx.train.texts, ...ctx.concept.texts]);
  const k = chosen.length;
  const acts =
    k === 0
      ? new Float32Array(0)
      : wordActivations(
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
  return { words: [...words].sort(), features, vocabulary: vocabulary.length, candidates: sae.dSae };
}
