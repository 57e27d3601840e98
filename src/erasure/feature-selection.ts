/**
 * Automatic selection of concept features, with no human in the loop.
 *
 * SHIFT (Sparse Feature Circuits) ranks SAE features by their attribution to a biased probe, then a
 * person reads each top feature and keeps those about the unintended concept (gender) rather than
 * the task (profession). Here the reading is replaced by a measurable test on the concept-labelled
 * set (`FitContext.concept`: natural-distribution examples carrying both labels, task y and
 * concept z): a feature is about the concept if its pooled activation separates the concept classes
 * *among examples of the same task class* and does so more strongly than it separates the task
 * classes among examples of the same concept class.
 *
 * ## Rule
 * Association is the rank-biserial correlation D = 2 AUC - 1 in [-1, 1] (AUC of the mean-pooled
 * feature activation for class 1 vs class 0, ties at midranks: scale-free, robust to the many zeros
 * of sparse features). For a candidate feature with pooled activations a on the concept set:
 *   conceptScore = | sum_c w_c D(a, z | y = c) / sum_c w_c |        (z-association within task strata)
 *   taskScore    = | sum_c w_c D(a, y | z = c) / sum_c w_c |        (y-association within concept strata)
 * with w = n0 n1 / (n0 + n1 + 1) for a stratum with n0 and n1 examples of the two classes (the
 * inverse of the Mann-Whitney AUC's null variance, up to a constant). Strata with fewer than
 * `minGroupSize` examples of either class are skipped. A feature is selected when
 *   conceptScore >= minConceptScore   and   conceptScore >= dominance * taskScore .
 * Stratifying removes the association a pure task feature inherits from the task-concept
 * correlation of the natural distribution (and vice versa): a pure gender feature has
 * conceptScore ~ its within-profession separation and taskScore ~ 0; a pure profession feature the
 * reverse. Signs are averaged before the absolute value, so a feature whose direction flips between
 * strata does not count as associated.
 *
 * Defaults: minConceptScore 0.2 (AUC 0.6 within professions), dominance 1 (at least as much about
 * the concept as about the task), minGroupSize 5.
 * When no stratum has enough examples of both classes (the concept set is almost perfectly
 * correlated), the marginal D(a, z) and D(a, y) are compared instead (rule "marginal", recorded per
 * feature). When y equals z (or 1 - z) on every example, no data can tell a concept feature from a
 * task feature, and selection fails with an error asking for a natural-distribution concept set.
 * Both labels must be binary.
 *
 * ## Concept-only rule (SHIFT's `conceptLabels: "gender"`)
 * `selectConceptOnlyFeatures` reads the concept labels z of the concept set and nothing else:
 *   conceptScore = |D(a, z)| over the whole concept set (marginal),
 * and a feature is selected when conceptScore >= minConceptScore (each concept class needs
 * `minGroupSize` examples). There is no task score, so no dominance test, and no stratification:
 * both need task labels on data where task and concept vary apart, and the only task labels such a
 * method holds are the ambiguous split's, where y = z on every example (stratifying by y there
 * leaves one concept class per stratum, and D(a, y) = D(a, z), so they cannot tell a task feature
 * from a concept feature). The biased probe's predictions are no stand-in for y either: the probe
 * leans on the concept, which is the bias being removed. The price: on natural data a pure task
 * feature inherits an association with z from the task-concept correlation (a feature equal to y
 * has D(a, z) = P(y = 1 | z = 1) - P(y = 1 | z = 0)), and is selected when that reaches
 * minConceptScore; a threshold above that correlation keeps such features out.
 */
import { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import type { Batch, HookName, Model } from '../models/model.js';
import { progress } from '../util/progress.js';
import { chunkRows, csrColumns } from './ablate.js';
import type { RankedFeature } from './attribution.js';
import type { EraserSae, LabelledSplit } from './eraser.js';

export interface ConceptSelectionOptions {
  /** Minimum |stratified rank-biserial| with the concept; default 0.2. */
  minConceptScore?: number;
  /** conceptScore must be at least this times taskScore; default 1. */
  dominance?: number;
  /** Minimum examples of each class in a stratum; default 5. */
  minGroupSize?: number;
}

export const CONCEPT_SELECTION_DEFAULTS: Required<ConceptSelectionOptions> = { minConceptScore: 0.2, dominance: 1, minGroupSize: 5 };

/** How a candidate's scores were computed: stratified or marginal (both labels), or concept-only (z alone, no task score). */
export const ASSOCIATION_RULES = ['stratified', 'marginal', 'concept_only'] as const;

export type AssociationRule = (typeof ASSOCIATION_RULES)[number];

/** A candidate feature with its association scores and the verdict. */
export interface SelectionRecord extends RankedFeature {
  conceptScore: number;
  /** Absent for the concept-only rule, which reads no task labels. */
  taskScore?: number;
  rule: AssociationRule;
  selected: boolean;
}

function resolve(options: ConceptSelectionOptions): Required<ConceptSelectionOptions> {
  const o = { ...CONCEPT_SELECTION_DEFAULTS, ...options };
  if (!(o.minConceptScore >= 0 && o.minConceptScore <= 1)) throw new Error(`concept selection: minConceptScore must be in [0, 1], got ${o.minConceptScore}`);
  if (!(o.dominance >= 0) || !Number.isFinite(o.dominance)) throw new Error(`concept selection: dominance must be a non-negative number, got ${o.dominance}`);
  if (!Number.isInteger(o.minGroupSize) || o.minGroupSize < 1)
    throw new Error(`concept selection: minGroupSize must be a positive integer, got ${o.minGroupSize}`);
  return o;
}

/**
 * Rank-biserial correlation 2 AUC - 1 of `values` for label 1 against label 0 over the examples
 * `subset` (all when omitted), with midranks for ties. NaN when either class is absent.
 * AUC = (R1 - n1 (n1 + 1) / 2) / (n0 n1), R1 the rank sum of class 1.
 */
export function rankBiserial(values: ArrayLike<number>, labels: ArrayLike<number>, subset?: ArrayLike<number>): number {
  const idx = subset === undefined ? Array.from({ length: values.length }, (_, i) => i) : Array.from(subset);
  idx.sort((a, b) => values[a]! - values[b]!);
  let n1 = 0;
  let rankSum1 = 0;
  for (let i = 0; i < idx.length;) {
    let j = i;
    while (j + 1 < idx.length && values[idx[j + 1]!] === values[idx[i]!]) j++;
    const midrank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) {
      if (labels[idx[k]!] === 1) {
        n1++;
        rankSum1 += midrank;
      }
    }
    i = j + 1;
  }
  const n0 = idx.length - n1;
  if (n0 === 0 || n1 === 0) return NaN;
  const auc = (rankSum1 - (n1 * (n1 + 1)) / 2) / (n0 * n1);
  return 2 * auc - 1;
}

/** Examples grouped by the value of `strata`: stratum value -> example indices. */
function groupBy(strata: ArrayLike<number>): Map<number, number[]> {
  const groups = new Map<number, number[]>();
  for (let i = 0; i < strata.length; i++) {
    const g = groups.get(strata[i]!);
    if (g === undefined) groups.set(strata[i]!, [i]);
    else g.push(i);
  }
  return groups;
}

interface Stratum {
  members: number[];
  weight: number;
}

/** Strata of `strata` in which `target` has at least `minGroupSize` examples of each class. */
function validStrata(target: ArrayLike<number>, strata: ArrayLike<number>, minGroupSize: number): Stratum[] {
  const out: Stratum[] = [];
  for (const members of groupBy(strata).values()) {
    let n1 = 0;
    for (const i of members) if (target[i] === 1) n1++;
    const n0 = members.length - n1;
    if (n0 >= minGroupSize && n1 >= minGroupSize) out.push({ members, weight: (n0 * n1) / (n0 + n1 + 1) });
  }
  return out;
}

function weightedScore(values: ArrayLike<number>, target: ArrayLike<number>, strata: Stratum[]): number {
  let num = 0;
  let den = 0;
  for (const s of strata) {
    num += s.weight * rankBiserial(values, target, s.members);
    den += s.weight;
  }
  return Math.abs(num / den);
}

function checkBinary(what: string, labels: ArrayLike<number>): void {
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] !== 0 && labels[i] !== 1)
      throw new Error(`concept selection: ${what} label ${i} is ${labels[i]}; automatic selection needs binary labels 0/1`);
  }
}

/** The association design for labels y, z: stratified when both directions have a usable stratum. */
export interface AssociationDesign {
  rule: AssociationRule;
  conceptStrata: Stratum[];
  taskStrata: Stratum[];
}

export function associationDesign(y: ArrayLike<number>, z: ArrayLike<number>, minGroupSize: number): AssociationDesign {
  if (y.length !== z.length) throw new Error(`concept selection: ${y.length} task labels but ${z.length} concept labels`);
  checkBinary('task', y);
  checkBinary('concept', z);
  let same = 0;
  let flipped = 0;
  for (let i = 0; i < y.length; i++) {
    if (y[i] === z[i]) same++;
    else flipped++;
  }
  if (same === 0 || flipped === 0) {
    throw new Error(
      `concept selection: on the concept-labelled set (${y.length} examples) the task label always ${flipped === 0 ? 'equals' : 'is the opposite of'} the concept label, so no feature can be told apart as concept rather than task; give a natural-distribution concept set that includes counter-stereotypical examples`,
    );
  }
  const conceptStrata = validStrata(z, y, minGroupSize);
  const taskStrata = validStrata(y, z, minGroupSize);
  if (conceptStrata.length > 0 && taskStrata.length > 0) return { rule: 'stratified', conceptStrata, taskStrata };
  const all = Array.from({ length: y.length }, (_, i) => i);
  return { rule: 'marginal', conceptStrata: [{ members: all, weight: 1 }], taskStrata: [{ members: all, weight: 1 }] };
}

/** conceptScore and taskScore of one feature's pooled activations (see the module docstring). */
export function associationScores(
  values: ArrayLike<number>,
  y: ArrayLike<number>,
  z: ArrayLike<number>,
  design: AssociationDesign,
): { conceptScore: number; taskScore: number } {
  if (values.length !== y.length) throw new Error(`concept selection: ${values.length} feature values for ${y.length} examples`);
  return { conceptScore: weightedScore(values, z, design.conceptStrata), taskScore: weightedScore(values, y, design.taskStrata) };
}

/**
 * Applies the rule to candidates: `columns[j]` holds candidate j's mean-pooled activation on each
 * concept-set example, `y`/`z` their task and concept labels.
 */
export function selectConceptFeatures(
  candidates: readonly RankedFeature[],
  columns: readonly ArrayLike<number>[],
  y: ArrayLike<number>,
  z: ArrayLike<number>,
  options: ConceptSelectionOptions = {},
): SelectionRecord[] {
  const o = resolve(options);
  if (columns.length !== candidates.length) throw new Error(`concept selection: ${columns.length} value columns for ${candidates.length} candidates`);
  if (candidates.length === 0) return [];
  const design = associationDesign(y, z, o.minGroupSize);
  return candidates.map((c, j) => {
    const { conceptScore, taskScore } = associationScores(columns[j]!, y, z, design);
    const selected = conceptScore >= o.minConceptScore && conceptScore >= o.dominance * taskScore;
    return { ...c, conceptScore, taskScore, rule: design.rule, selected };
  });
}

/**
 * The concept-only rule (module docstring): `columns[j]` holds candidate j's mean-pooled activation
 * on each concept-set example, `z` their concept labels; no task label is read. `dominance` does not
 * apply (there is no task score).
 */
export function selectConceptOnlyFeatures(
  candidates: readonly RankedFeature[],
  columns: readonly ArrayLike<number>[],
  z: ArrayLike<number>,
  options: Omit<ConceptSelectionOptions, 'dominance'> = {},
): SelectionRecord[] {
  const o = resolve(options);
  if (columns.length !== candidates.length) throw new Error(`concept selection: ${columns.length} value columns for ${candidates.length} candidates`);
  if (candidates.length === 0) return [];
  checkBinary('concept', z);
  let n1 = 0;
  for (let i = 0; i < z.length; i++) n1 += z[i]!;
  const least = Math.min(n1, z.length - n1);
  if (least < o.minGroupSize) {
    throw new Error(
      `concept selection: the concept-labelled set has ${least} example(s) of its smaller concept class, fewer than minGroupSize ${o.minGroupSize}`,
    );
  }
  return candidates.map((c, j) => {
    const values = columns[j]!;
    if (values.length !== z.length) throw new Error(`concept selection: ${values.length} feature values for ${z.length} examples`);
    const conceptScore = Math.abs(rankBiserial(values, z));
    return { ...c, conceptScore, rule: 'concept_only' as const, selected: conceptScore >= o.minConceptScore };
  });
}

/** What `conceptFeatureColumns` needs to read pooled SAE codes. */
export interface ColumnSource {
  model: Model;
  tokenize: (texts: string[]) => Batch;
  cache: ActivationCache;
  saes: Readonly<Record<HookName, EraserSae>>;
}

/** The SAE width cached at `hook`, or undefined when the cache holds no SAE codes there. */
export function cachedSaeWidth(cache: ActivationCache, hook: HookName): number | undefined {
  return cache.hasSae(hook) ? cache.dSae(hook) : undefined;
}

/**
 * Mean-pooled activations of each candidate feature on the examples of `split`, one Float32Array
 * per candidate (in candidate order). Read from the cache's pooled SAE codes when it holds them for
 * the hook (with the same SAE width); otherwise computed by running the model on the split's texts.
 */
export function conceptFeatureColumns(
  source: ColumnSource,
  candidates: readonly RankedFeature[],
  split: LabelledSplit,
  options: { batchSize?: number; progressLabel?: string } = {},
): Float32Array[] {
  const columns = new Array<Float32Array>(candidates.length);
  const byHook = new Map<HookName, number[]>();
  candidates.forEach((c, j) => {
    const list = byHook.get(c.hook);
    if (list === undefined) byHook.set(c.hook, [j]);
    else list.push(j);
  });
  const toRun: HookName[] = [];
  for (const [hook, js] of byHook) {
    const sae = source.saes[hook];
    if (sae === undefined) throw new Error(`concept selection: no SAE at hook "${hook}"`);
    const width = cachedSaeWidth(source.cache, hook);
    if (width === undefined) {
      toRun.push(hook);
      continue;
    }
    if (width !== sae.dSae)
      throw new Error(
        `concept selection: the cache ${source.cache.dir} holds SAE codes of width ${width} at "${hook}", but the SAE given there has width ${sae.dSae}`,
      );
    const feats = Int32Array.from(js, (j) => candidates[j]!.feature);
    const dense = csrColumns(source.cache.saePooledCsr(hook), split.rows, feats);
    js.forEach((j, c) => (columns[j] = Float32Array.from({ length: split.rows.length }, (_, r) => dense[r * feats.length + c]!)));
  }
  if (toRun.length > 0) {
    const computed = pooledFeatureValues(
      source,
      toRun,
      new Map(toRun.map((h) => [h, Int32Array.from(byHook.get(h)!, (j) => candidates[j]!.feature)])),
      split.texts,
      options,
    );
    for (const hook of toRun) {
      const js = byHook.get(hook)!;
      const values = computed.get(hook)!;
      js.forEach((j, c) => (columns[j] = Float32Array.from({ length: split.texts.length }, (_, r) => values[r * js.length + c]!)));
    }
  }
  return columns;
}

/**
 * Mean over real tokens of SAE features `features.get(hook)` at each hook, `[texts, k]` per hook,
 * from forward passes over `texts` (one pass per batch captures every hook).
 */
function pooledFeatureValues(
  source: ColumnSource,
  hooks: HookName[],
  features: Map<HookName, Int32Array>,
  texts: readonly string[],
  options: { batchSize?: number; progressLabel?: string },
): Map<HookName, Float32Array> {
  const batchSize = options.batchSize ?? 16;
  const out = new Map(hooks.map((h) => [h, new Float32Array(texts.length * features.get(h)!.length)]));
  const bar = progress(options.progressLabel ?? 'concept-set feature activations', texts.length, 'ex');
  for (let start = 0; start < texts.length; start += batchSize) {
    const chunk = texts.slice(start, start + batchSize) as string[];
    const batch = source.tokenize(chunk);
    try {
      const { captures } = source.model.run(batch, { capture: hooks });
      try {
        const mask = batch.attentionMask.arraySync();
        for (const hook of hooks) {
          const acts = captures[hook];
          if (acts === undefined) throw new Error(`concept selection: the model returned no activation for hook "${hook}"`);
          poolSelectedFeatures(source.saes[hook]!, features.get(hook)!, acts, mask, out.get(hook)!, start);
        }
      } finally {
        tf.dispose(Object.values(captures));
      }
    } finally {
      tf.dispose([batch.inputIds, batch.attentionMask]);
    }
    bar.tick(chunk.length);
  }
  bar.done();
  return out;
}

/** Writes mean over real tokens of f_S for each example of `acts [n, seq, d]` into rows start.. of `target`. */
function poolSelectedFeatures(sae: EraserSae, feats: Int32Array, acts: tf.Tensor3D, mask: number[][], target: Float32Array, start: number): void {
  const k = feats.length;
  forEachTokenCodes(sae, feats, acts, (row, codes) => {
    const m = mask[row]!;
    const len = m.reduce((a, v) => a + v, 0);
    const dst = (start + row) * k;
    for (let t = 0; t < m.length; t++) {
      if (m[t] !== 1) continue;
      for (let c = 0; c < k; c++) target[dst + c]! += codes[t * k + c]! / Math.max(len, 1);
    }
  });
}

/**
 * Features `feats` of `sae`'s codes of the rows of `x [m, d]`: `[m, feats.length]` row-major,
 * encoded in chunks that bound the memory of the full code.
 */
export function selectedCodes(sae: EraserSae, feats: Int32Array, x: tf.Tensor2D): Float32Array {
  const [m, d] = x.shape;
  const k = feats.length;
  const out = new Float32Array(m * k);
  const step = chunkRows(sae.dSae);
  for (let r0 = 0; r0 < m; r0 += step) {
    const rows = Math.min(step, m - r0);
    const codes = tf.tidy(() => tf.gather(sae.encode(tf.slice(x, [r0, 0], [rows, d])), tf.tensor1d(feats, 'int32'), 1));
    out.set(codes.dataSync(), r0 * k);
    codes.dispose();
  }
  return out;
}

/**
 * Calls `visit(row, codes)` for each row of the token activations `acts [n, seq, d]` with the codes
 * of features `feats` at its tokens: `codes[t * feats.length + c]` is feature `feats[c]` at token t
 * (padding included; the caller masks).
 */
function forEachTokenCodes(sae: EraserSae, feats: Int32Array, acts: tf.Tensor3D, visit: (row: number, codes: Float32Array) => void): void {
  const [n, seq, d] = acts.shape;
  const k = feats.length;
  const flat = tf.reshape(acts, [n * seq, d]) as tf.Tensor2D;
  let values: Float32Array;
  try {
    values = selectedCodes(sae, feats, flat);
  } finally {
    flat.dispose();
  }
  for (let r = 0; r < n; r++) visit(r, values.subarray(r * seq * k, (r + 1) * seq * k));
}
