/**
 * The data behind the report's live feature explorer (`explorer/seed-<s>.json` in a run folder).
 *
 * Everything at the probe hook is affine, so zero-ablating SAE features there (the SAE error kept)
 * changes a probe's logits by a sum of per-feature terms. With x̄ a row's mean-pooled
 * representation, f̄_i its pooled code of feature i, d_i the feature's decoder direction and a head
 * h(x) = W x + b:
 *
 *     h(x̄ - Σ_{i∈S} f̄_i d_i) = h(x̄) - Σ_{i∈S} f̄_i (W d_i)
 *
 * so the page needs, per test row, the head's logits h(x̄) (`base`), per listed feature its pooled
 * codes and W d_i (`contrib`), and recomputes predictions for any feature set S by subtraction
 * (`explorerMetrics`, which the page's script mirrors). A method is listed only if this reproduces
 * its recorded metrics exactly, so the page's numbers for a method's own set equal them.
 */
import { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import { csrColumns } from '../erasure/ablate.js';
import type { EraserSae, LabelledSplit } from '../erasure/eraser.js';
import type { Batch, HookName, Model } from '../models/model.js';
import type { Probe } from '../probe/probe.js';
import type { MethodSeedResult } from './results.js';

export const EXPLORER_VERSION = 1;

/** The contents of `explorer/seed-<s>.json`. */
export interface ExplorerData {
  version: typeof EXPLORER_VERSION;
  seed: number;
  /** The probe hook, where every listed feature lives. */
  hook: HookName;
  /** Class names of the task labels y (0, 1). Gender z: 0 = male, 1 = female. */
  professions: [string, string];
  /** Texts of the reporting part of the test file (the bios metrics.json reports on): the row space every array below is aligned with. */
  texts: string[];
  /** The reporting part's splits over the row space: "balanced" and each subgroup (the tuning part is not shown). */
  splits: Record<string, { rows: number[]; y: number[]; z: number[] }>;
  /** Listed features: every feature a listed method removes, then the top ones by `genderScore`. */
  features: { index: number; codes: number[]; genderScore: number }[];
  /** Per head: logits of the unedited rows ([row][nOut]) and W d_i per listed feature ([feature][nOut]). */
  heads: Record<string, { nOut: number; base: number[][]; contrib: number[][] }>;
  /** Methods that zero-ablate SAE features at the hook: the head they score with and the features they remove. */
  methods: Record<string, { head: string; features: number[] }>;
  /** Methods that remove SAE features at the hook but whose logits this affine form does not reproduce, and why. */
  excluded: Record<string, string>;
  /**
   * Per-token activations on the top texts of each listed feature (see `addTokenActivations`), by
   * row: the row's tokens as display pieces (leading space included where the text has one) and,
   * per feature index, the SAE code of each token.
   */
  tokens?: Record<string, { pieces: string[]; acts: Record<string, number[]> }>;
  /** Language models: per listed feature index, the tokens its decoder direction promotes most through the unembedding. */
  promotes?: Record<string, string[]>;
}

/** What `addTokenActivations` runs: the model up to the hook, its tokenizer, and the hook's SAE. */
export interface TokenSource {
  model: Model;
  /** Right-padded batch for a list of texts. */
  tokenize: (texts: string[]) => Batch;
  /** A token id as it reads in the text, leading space included (see `displayPiece`). */
  piece: (id: number) => string;
  sae: EraserSae;
  /** Texts per forward pass. */
  batchSize: number;
}

/**
 * A vocabulary entry as it reads in running text: WordPiece continuations ("##s") attach to the
 * previous piece, byte-level BPE and sentencepiece mark a leading space with "Ġ" or "▁", and other
 * WordPiece tokens start a new word.
 */
export function displayPiece(token: string | undefined, modelType: 'BPE' | 'WordPiece' | 'Unigram'): string {
  if (token === undefined) return ' ?';
  if (modelType === 'WordPiece') return token.startsWith('##') ? token.slice(2) : ` ${token}`;
  return token.replace(/^[Ġ▁]/, ' ').replace(/Ċ/g, '\n');
}

/**
 * Adds `data.tokens`: for each listed feature, its `topK` test texts by pooled code (code > 0) get the
 * per-token codes of every listed feature that has them among its top texts, from one forward pass
 * to the hook per batch of those texts (the SAE error plays no part: codes are the SAE's encoding).
 */
export function addTokenActivations(data: ExplorerData, source: TokenSource, topK = 5): void {
  const wanted = new Map<number, Set<number>>();
  data.features.forEach((f, j) => {
    const top = f.codes
      .map((code, row) => ({ code, row }))
      .filter((x) => x.code > 0)
      .sort((a, b) => b.code - a.code || a.row - b.row)
      .slice(0, topK);
    for (const { row } of top) wanted.set(row, (wanted.get(row) ?? new Set()).add(j));
  });
  const rows = [...wanted.keys()].sort((a, b) => a - b);
  const columns = Int32Array.from(data.features, (f) => f.index);
  const tokens: NonNullable<ExplorerData['tokens']> = {};
  for (let start = 0; start < rows.length; start += source.batchSize) {
    const chunk = rows.slice(start, start + source.batchSize);
    const batch = source.tokenize(chunk.map((r) => data.texts[r]!));
    try {
      const [ids, mask, codes, seq] = tf.tidy(() => {
        const { captures } = source.model.run(batch, { capture: [data.hook], stopAfter: data.hook });
        const acts = captures[data.hook];
        if (acts === undefined) throw new Error(`explorer: the model returned no activation at "${data.hook}"`);
        const [b, t, d] = acts.shape;
        const f = source.sae.encode(tf.reshape(acts, [b * t, d]));
        const picked = tf.gather(f, tf.tensor1d(columns, 'int32'), 1);
        return [batch.inputIds.arraySync() as number[][], batch.attentionMask.arraySync() as number[][], picked.dataSync() as Float32Array, t] as const;
      });
      chunk.forEach((row, b) => {
        const positions = mask[b]!.flatMap((m, t) => (m > 0 ? [t] : []));
        const acts: Record<string, number[]> = {};
        for (const j of wanted.get(row)!) acts[String(data.features[j]!.index)] = positions.map((t) => Math.fround(codes[(b * seq + t) * columns.length + j]!));
        tokens[String(row)] = { pieces: positions.map((t) => source.piece(ids[b]![t]!)), acts };
      });
    } finally {
      tf.dispose([batch.inputIds, batch.attentionMask]);
    }
  }
  data.tokens = tokens;
}

/** Rounds to float32 precision so the JSON stays small without changing a prediction. */
const f32 = (v: number): number => Math.fround(v);

/** Collects one seed's explorer data while the runner scores methods. */
export class ExplorerCollector {
  private readonly rows: number[];
  private readonly local: Map<number, number>;
  /** W d_i for every SAE feature ([dSae][nOut]) and base logits ([row][nOut]), per head name. */
  private readonly heads = new Map<string, { nOut: number; base: Float32Array; contribAll: Float32Array }>();
  private readonly candidates = new Map<string, { head: string; features: number[]; recorded: MethodSeedResult }>();
  private readonly excluded: Record<string, string> = {};

  /**
   * @param seed The seed whose probe and erasers are collected.
   * @param hook The probe hook.
   * @param sae The SAE at the probe hook.
   * @param cache The activation cache holding the test rows (pooled activations and SAE codes).
   * @param splits The test splits by name ("balanced" and the subgroups): the reporting part's, as the recorded metrics are.
   * @param professions Class names of the task labels.
   */
  constructor(
    readonly seed: number,
    private readonly hook: HookName,
    private readonly sae: EraserSae,
    private readonly cache: ActivationCache,
    private readonly splits: Record<string, LabelledSplit>,
    private readonly professions: [string, string],
  ) {
    this.rows = [...new Set(Object.values(splits).flatMap((s) => Array.from(s.rows)))].sort((a, b) => a - b);
    this.local = new Map(this.rows.map((r, i) => [r, i]));
  }

  /** Adds a head (the biased probe, or a method's retrained head) under `name`, once. */
  addHead(name: string, head: Probe): void {
    if (this.heads.has(name)) return;
    const [base, contribAll, nOut] = tf.tidy(() => {
      const X = this.cache.pooled(this.hook, this.rows);
      const D = this.sae.decoderDirections();
      const zero = tf.zeros([1, D.shape[1]]) as tf.Tensor2D;
      const as2d = (t: tf.Tensor): tf.Tensor2D => (t.rank === 1 ? tf.reshape(t, [-1, 1]) : t) as tf.Tensor2D;
      // W d_i = h(d_i) - h(0) for an affine head.
      const contrib = tf.sub(as2d(head.logits(D)), as2d(head.logits(zero)));
      const b = as2d(head.logits(X));
      return [b.dataSync() as Float32Array, contrib.dataSync() as Float32Array, b.shape[1]] as const;
    });
    this.heads.set(name, { nOut, base, contribAll });
  }

  /**
   * A candidate: `method` removes `features` at the hook and scores with head `headName`; `recorded`
   * is its scored result. It is listed if the affine form reproduces that result (checked in `build`).
   */
  addMethod(method: string, headName: string, features: readonly number[], recorded: MethodSeedResult): void {
    if (!this.heads.has(headName)) throw new Error(`explorer: head "${headName}" was not added`);
    this.candidates.set(method, { head: headName, features: [...features].sort((a, b) => a - b), recorded });
  }

  /** Records why a method is not listed (it edits something other than SAE features at the hook). */
  exclude(method: string, why: string): void {
    this.excluded[method] = why;
  }

  /**
   * The explorer data: the features listed methods remove, then the top features by gender score on
   * the concept set (|mean pooled code over female rows - over male rows| x |W d_i| of the first head)
   * up to `maxFeatures` in all.
   */
  build(concept: LabelledSplit, texts: readonly string[], maxFeatures = 64): ExplorerData {
    const csr = this.cache.saePooledCsr(this.hook);
    const dSae = this.sae.dSae;
    const sums = [new Float64Array(dSae), new Float64Array(dSae)];
    const counts = [0, 0];
    const nRows = csr.offsets.length - 1;
    for (let i = 0; i < concept.rows.length; i++) {
      const r = concept.rows[i]!;
      if (r < 0 || r >= nRows) throw new Error(`explorer: concept row ${r} is outside the cache's ${nRows} rows`);
      const g = concept.z[i]!;
      counts[g]!++;
      for (let p = csr.offsets[r]!; p < csr.offsets[r + 1]!; p++) sums[g]![csr.indices[p]!]! += csr.values[p]!;
    }
    const first = this.heads.values().next().value;
    const weight = (i: number): number => {
      if (first === undefined) return 1;
      let s = 0;
      for (let o = 0; o < first.nOut; o++) s += Math.abs(first.contribAll[i * first.nOut + o]!);
      return s;
    };
    const score = new Float64Array(dSae);
    for (let i = 0; i < dSae; i++) score[i] = Math.abs(sums[1]![i]! / Math.max(1, counts[1]!) - sums[0]![i]! / Math.max(1, counts[0]!)) * weight(i);
    const listed = new Set<number>();
    for (const m of this.candidates.values()) for (const f of m.features) listed.add(f);
    const byScore = Array.from(score.keys()).sort((a, b) => score[b]! - score[a]!);
    for (const i of byScore) {
      if (listed.size >= Math.max(maxFeatures, 0) && listed.size > 0) break;
      listed.add(i);
    }
    const features = [...listed].sort((a, b) => score[b]! - score[a]! || a - b);
    const codes = csrColumns(csr, this.rows, Int32Array.from(features));
    const k = features.length;
    const data: ExplorerData = {
      version: EXPLORER_VERSION,
      seed: this.seed,
      hook: this.hook,
      professions: this.professions,
      texts: this.rows.map((r) => texts[r]!),
      splits: Object.fromEntries(
        Object.entries(this.splits).map(([name, s]) => [name, { rows: Array.from(s.rows, (r) => this.local.get(r)!), y: Array.from(s.y), z: Array.from(s.z) }]),
      ),
      features: features.map((index, j) => ({ index, codes: this.rows.map((_, r) => f32(codes[r * k + j]!)), genderScore: f32(score[index]!) })),
      heads: Object.fromEntries(
        [...this.heads].map(([name, h]) => [
          name,
          {
            nOut: h.nOut,
            base: this.rows.map((_, r) => Array.from(h.base.subarray(r * h.nOut, (r + 1) * h.nOut))),
            contrib: features.map((i) => Array.from(h.contribAll.subarray(i * h.nOut, (i + 1) * h.nOut))),
          },
        ]),
      ),
      methods: {},
      excluded: { ...this.excluded },
    };
    for (const [method, { head, features: removed, recorded }] of this.candidates) {
      const got = explorerMetrics(data, head, removed);
      const want = { profession_acc: recorded.profession_acc.value, gender_agreement: recorded.gender_agreement.value, ...subgroupValues(recorded) };
      const off = Object.entries(want).filter(([k, v]) => Math.abs((got.values[k] ?? NaN) - v) > 1e-9);
      if (off.length === 0) data.methods[method] = { head, features: removed };
      else
        data.excluded[method] =
          `the affine form gives ${off.map(([k]) => `${k} ${got.values[k]?.toFixed(4)}`).join(', ')} but the method scored ${off.map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')}`;
    }
    return data;
  }
}

function subgroupValues(r: MethodSeedResult): Record<string, number> {
  return Object.fromEntries(Object.entries(r.subgroup_acc).map(([g, iv]) => [g, iv.value]));
}

/** Predictions of `head` on every row with the features `removed` zero-ablated (see the module note). */
export function explorerPredictions(data: ExplorerData, headName: string, removed: readonly number[]): Int32Array {
  const head = data.heads[headName];
  if (head === undefined) throw new Error(`explorer: no head "${headName}" (heads: ${Object.keys(data.heads).join(', ')})`);
  const position = new Map(data.features.map((f, j) => [f.index, j]));
  const cols = removed.map((i) => {
    const j = position.get(i);
    if (j === undefined) throw new Error(`explorer: feature ${i} is not listed`);
    return j;
  });
  const { nOut } = head;
  const pred = new Int32Array(data.texts.length);
  const z = new Float64Array(nOut);
  for (let r = 0; r < pred.length; r++) {
    for (let o = 0; o < nOut; o++) {
      let v = head.base[r]![o]!;
      for (const j of cols) v -= data.features[j]!.codes[r]! * head.contrib[j]![o]!;
      z[o] = v;
    }
    let best = 0;
    for (let o = 1; o < nOut; o++) if (z[o]! > z[best]!) best = o;
    pred[r] = nOut === 1 ? (z[0]! > 0 ? 1 : 0) : best;
  }
  return pred;
}

/**
 * The explorer's metrics for a feature set, as the runner computes them: profession accuracy and
 * gender agreement on "balanced", accuracy on every other split (the subgroups), the worst of those.
 */
export function explorerMetrics(data: ExplorerData, headName: string, removed: readonly number[]): { values: Record<string, number>; worstGroup: string } {
  const pred = explorerPredictions(data, headName, removed);
  const acc = (rows: number[], labels: number[]): number => rows.reduce((a, r, i) => a + (pred[r] === labels[i] ? 1 : 0), 0) / rows.length;
  const values: Record<string, number> = {};
  let worstGroup = '';
  for (const [name, split] of Object.entries(data.splits)) {
    if (name === 'balanced') {
      values.profession_acc = acc(split.rows, split.y);
      values.gender_agreement = acc(split.rows, split.z);
    } else {
      values[name] = acc(split.rows, split.y);
      if (worstGroup === '' || values[name]! < values[worstGroup]!) worstGroup = name;
    }
  }
  if (worstGroup !== '') values.worst_group_acc = values[worstGroup]!;
  return { values, worstGroup };
}

/**
 * Adds `data.promotes` when the model has an unembedding (`Model.directionLogits`): for each listed
 * feature, the `topK` tokens whose logits its decoder direction raises most (a logit-lens reading,
 * without the final layer norm). Encoders have none and get nothing.
 */
export function addPromotedTokens(
  data: ExplorerData,
  source: { model: Pick<Model, 'directionLogits'>; piece: TokenSource['piece']; sae: EraserSae },
  topK = 10,
): void {
  const { model } = source;
  if (model.directionLogits === undefined || data.features.length === 0) return;
  const columns = Int32Array.from(data.features, (f) => f.index);
  const top = tf.tidy(() => {
    const directions = tf.gather(source.sae.decoderDirections(), tf.tensor1d(columns, 'int32')) as tf.Tensor2D;
    const logits = model.directionLogits!(directions);
    return tf.topk(logits, Math.min(topK, logits.shape[1])).indices.arraySync() as number[][];
  });
  data.promotes = Object.fromEntries(data.features.map((f, j) => [String(f.index), top[j]!.map((id) => source.piece(id))]));
}
