/**
 * SHIFT (Sparse Feature Circuits, Marks et al. 2024, section 4): find the SAE features a biased
 * probe relies on, keep those about the unintended concept, and zero-ablate them.
 *
 * `shift` fits in three steps:
 *  1. Attribution: integrated gradients (10 steps, zero baseline, SFC conventions; see
 *     attribution.ts) of the probe's labelled-class logit to the SAE features and errors of every
 *     hook with an SAE at or before the probe hook, on the first `attributionExamples` examples of
 *     the ambiguous training split (SFC: 25 batches of 4 = 100).
 *  2. Selection, by `selection`:
 *     - "auto" (default): the `candidates` top features by |attribution| (over all hooks), kept by
 *       the automatic concept rule of feature-selection.ts on the concept-labelled split;
 *     - "top": the top features by attribution themselves (no concept test);
 *     - "manual": the features listed in `features` ({ hook: [indices] }), as SFC's human annotators
 *       chose them; no attribution is run.
 *  3. Ablation: x' = x - sum_{i in S} f_i(x) v_i at each hook, SAE error kept (ablate.ts).
 * `shift_retrain` then retrains the probe head on the ablated ambiguous training representations,
 * with the linear probe recipe (src/probe/linear.ts; options of the given probe when it is a
 * LinearProbe, overridden by `retrain`), exposed through `retrainedProbe()`.
 *
 * Options (FitContext.options), with defaults:
 *   attribution "ig" ("atp": first-order attribution patching, one pass per batch for all
 *   hooks, about steps x hooks times cheaper and cruder), steps 10, batchSize 4,
 *   stepsPerPass 1, attributionExamples 100, hooks (all with an SAE up to the probe hook),
 *   selection "auto", candidates 100, threshold 0, score "abs", minConceptScore 0.2, dominance 1,
 *   minGroupSize 5, conceptExamples (all), features (manual), evalBatchSize 16,
 *   retrain {} (LinearProbeOptions).
 */
import { tf } from '../engine/engine.js';
import type { RawTensor } from '../io/safetensors.js';
import type { HookName } from '../models/model.js';
import { LinearProbe, type LinearProbeOptions } from '../probe/linear.js';
import type { Probe } from '../probe/probe.js';
import { FeatureAblationEraser, hooksUpToProbe, pooledWithEdits, readFeatureAblationCheckpoint } from './ablate.js';
import { attributionPatching, integratedGradients, pooledProbeHookAttribution, rankFeatures, type HookAttribution, type RankedFeature } from './attribution.js';
import type { EraserSae, FitContext, LabelledSplit } from './eraser.js';
import { CONCEPT_SELECTION_DEFAULTS, conceptFeatureColumns, selectConceptFeatures, type SelectionRecord } from './feature-selection.js';

export type ShiftMethod = 'shift' | 'shift_retrain';
export type ShiftSelection = 'auto' | 'top' | 'manual';

export interface ShiftOptions {
  /** 'ig' (integrated gradients, SFC's SHIFT) or 'atp' (first-order attribution patching, one pass for all hooks). */
  attribution: 'ig' | 'atp';
  steps: number;
  batchSize: number;
  stepsPerPass: number;
  attributionExamples: number;
  hooks: HookName[] | undefined;
  selection: ShiftSelection;
  candidates: number;
  threshold: number;
  score: 'abs' | 'positive';
  minConceptScore: number;
  dominance: number;
  minGroupSize: number;
  conceptExamples: number | undefined;
  features: Record<HookName, number[]> | undefined;
  evalBatchSize: number;
  retrain: LinearProbeOptions;
}

const KNOWN_OPTIONS = new Set([
  'attribution', 'steps', 'batchSize', 'stepsPerPass', 'attributionExamples', 'hooks', 'selection', 'candidates', 'threshold', 'score',
  'minConceptScore', 'dominance', 'minGroupSize', 'conceptExamples', 'features', 'evalBatchSize', 'retrain',
  // Read by the random-ablation control, which shares the option block.
  'k', 'perHook', 'seed',
]);

function positiveInt(o: Readonly<Record<string, unknown>>, key: string, fallback: number): number {
  const v = o[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`shift option "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function nonNegative(o: Readonly<Record<string, unknown>>, key: string, fallback: number): number {
  const v = o[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new Error(`shift option "${key}" must be a non-negative number, got ${JSON.stringify(v)}`);
  return v;
}

/** Validated SHIFT options from an experiment config's option block. */
export function resolveShiftOptions(o: Readonly<Record<string, unknown>>): ShiftOptions {
  for (const key of Object.keys(o)) {
    if (!KNOWN_OPTIONS.has(key)) throw new Error(`shift option "${key}" is unknown (known: ${[...KNOWN_OPTIONS].join(', ')})`);
  }
  const steps = positiveInt(o, 'steps', 10);
  const selection = o.selection ?? 'auto';
  if (selection !== 'auto' && selection !== 'top' && selection !== 'manual') throw new Error(`shift option "selection" must be "auto", "top" or "manual", got ${JSON.stringify(selection)}`);
  const score = o.score ?? 'abs';
  if (score !== 'abs' && score !== 'positive') throw new Error(`shift option "score" must be "abs" or "positive", got ${JSON.stringify(score)}`);
  let hooks: HookName[] | undefined;
  if (o.hooks !== undefined) {
    if (!Array.isArray(o.hooks) || o.hooks.some((h) => typeof h !== 'string')) throw new Error(`shift option "hooks" must be a list of hook names, got ${JSON.stringify(o.hooks)}`);
    hooks = o.hooks as string[];
  }
  let features: Record<HookName, number[]> | undefined;
  if (o.features !== undefined) {
    if (typeof o.features !== 'object' || o.features === null || Array.isArray(o.features)) throw new Error('shift option "features" must map hook names to lists of feature indices');
    for (const [h, list] of Object.entries(o.features)) {
      if (!Array.isArray(list) || list.some((v) => typeof v !== 'number')) throw new Error(`shift option "features"["${h}"] must be a list of feature indices`);
    }
    features = o.features as Record<HookName, number[]>;
  }
  if (selection === 'manual' && features === undefined) throw new Error('shift option selection "manual" needs "features": { hook: [feature indices] }');
  if (selection !== 'manual' && features !== undefined) throw new Error(`shift option "features" is only used with selection "manual" (selection is "${selection}")`);
  const retrain = o.retrain ?? {};
  if (typeof retrain !== 'object' || retrain === null || Array.isArray(retrain)) throw new Error('shift option "retrain" must be an object of linear probe options');
  const minConceptScore = nonNegative(o, 'minConceptScore', CONCEPT_SELECTION_DEFAULTS.minConceptScore);
  if (minConceptScore > 1) throw new Error(`shift option "minConceptScore" must be in [0, 1], got ${minConceptScore}`);
  const attribution = o.attribution ?? 'ig';
  if (attribution !== 'ig' && attribution !== 'atp') throw new Error(`shift option "attribution" must be "ig" or "atp", got ${JSON.stringify(attribution)}`);
  return {
    attribution,
    steps,
    batchSize: positiveInt(o, 'batchSize', 4),
    stepsPerPass: positiveInt(o, 'stepsPerPass', 1),
    attributionExamples: positiveInt(o, 'attributionExamples', 100),
    hooks,
    selection,
    candidates: positiveInt(o, 'candidates', 100),
    threshold: nonNegative(o, 'threshold', 0),
    score,
    minConceptScore,
    dominance: nonNegative(o, 'dominance', CONCEPT_SELECTION_DEFAULTS.dominance),
    minGroupSize: positiveInt(o, 'minGroupSize', CONCEPT_SELECTION_DEFAULTS.minGroupSize),
    conceptExamples: o.conceptExamples === undefined ? undefined : positiveInt(o, 'conceptExamples', 1),
    features,
    evalBatchSize: positiveInt(o, 'evalBatchSize', 16),
    retrain: retrain as LinearProbeOptions,
  };
}

/** The first `n` examples of a split. */
function headOf(split: LabelledSplit, n: number): LabelledSplit {
  if (n >= split.texts.length) return split;
  return { rows: split.rows.slice(0, n), y: split.y.slice(0, n), z: split.z.slice(0, n), texts: split.texts.slice(0, n) };
}

export interface ShiftFitResult {
  /** IG attributions per attributed hook (absent with manual selection). */
  attributions: Record<HookName, HookAttribution>;
  /** Candidates with their concept scores and verdict ("auto"), or the ranked features ("top"). */
  selection: SelectionRecord[] | RankedFeature[];
  features: Record<HookName, number[]>;
}

/**
 * Steps 1 and 2 of SHIFT without building an eraser: the features to ablate, per hook.
 * Exported for the random control (which matches SHIFT's per-hook counts) and for reports.
 */
export function chooseShiftFeatures(ctx: FitContext, o: ShiftOptions): ShiftFitResult {
  if (o.selection === 'manual') {
    const hooks = hooksUpToProbe(ctx.model, ctx.saes, ctx.probeHook, Object.keys(o.features!));
    return { attributions: {}, selection: [], features: Object.fromEntries(hooks.map((h) => [h, o.features![h]!])) };
  }
  const hooks = hooksUpToProbe(ctx.model, ctx.saes, ctx.probeHook, o.hooks);
  if (hooks.length === 0) throw new Error(`shift: no hook with an SAE at or before the probe hook "${ctx.probeHook}" (SAEs at: ${Object.keys(ctx.saes).join(', ') || 'none'})`);
  const train = headOf(ctx.train, o.attributionExamples);
  const input = { model: ctx.model, tokenize: ctx.tokenize, saes: ctx.saes, hooks, probeHook: ctx.probeHook, probe: ctx.probe, texts: train.texts, labels: train.y };
  // At the probe's own hook the metric is affine in the SAE codes: IG is exact from cached pooled
  // codes, with no forward pass. Other hooks go through the model.
  const pooledHooks = hooks.filter((h) => h === ctx.probeHook && ctx.probe.kind === 'linear' && ctx.probe.nClasses === 2 && ctx.cache.hasSae(h));
  const modelHooks = hooks.filter((h) => !pooledHooks.includes(h));
  const modelInput = { ...input, hooks: modelHooks };
  const attributions: Record<HookName, HookAttribution> =
    modelHooks.length === 0
      ? {}
      : o.attribution === 'atp'
        ? attributionPatching(modelInput, { batchSize: o.batchSize, progressLabel: 'shift: attribution patching' })
        : integratedGradients(modelInput, { steps: o.steps, batchSize: o.batchSize, stepsPerPass: o.stepsPerPass, progressLabel: 'shift: IG attribution' });
  for (const hook of pooledHooks) {
    const codes = ctx.cache.saePooledDense(hook, train.rows);
    const errors = ctx.cache.saeErrorPooled(hook, train.rows);
    attributions[hook] = pooledProbeHookAttribution(hook, ctx.saes[hook]!, ctx.probe, codes, errors, train.y);
    tf.dispose([codes, errors]);
  }
  const ranked = rankFeatures(attributions, { topK: o.candidates, threshold: o.threshold, score: o.score });
  let chosen: RankedFeature[];
  let selection: SelectionRecord[] | RankedFeature[];
  if (o.selection === 'top') {
    chosen = ranked;
    selection = ranked;
  } else {
    const concept = o.conceptExamples === undefined ? ctx.concept : headOf(ctx.concept, o.conceptExamples);
    const columns = conceptFeatureColumns(ctx, ranked, concept, { batchSize: o.evalBatchSize, progressLabel: 'shift: concept-set features' });
    const records = selectConceptFeatures(ranked, columns, concept.y, concept.z, { minConceptScore: o.minConceptScore, dominance: o.dominance, minGroupSize: o.minGroupSize });
    chosen = records.filter((r) => r.selected);
    selection = records;
  }
  const features: Record<HookName, number[]> = {};
  for (const c of chosen) (features[c.hook] ??= []).push(c.feature);
  return { attributions, selection, features };
}

export class ShiftEraser extends FeatureAblationEraser {
  private options: ShiftOptions | undefined;
  private attributions: Record<HookName, HookAttribution> = {};
  private selection: SelectionRecord[] | RankedFeature[] = [];
  private probe: LinearProbe | undefined;

  constructor(override readonly method: ShiftMethod = 'shift') {
    super(method);
  }

  async fit(ctx: FitContext): Promise<void> {
    const o = resolveShiftOptions(ctx.options);
    this.options = o;
    const result = chooseShiftFeatures(ctx, o);
    this.attributions = result.attributions;
    this.selection = result.selection;
    this.setAblation(ctx.saes, ctx.probeHook, result.features);
    if (this.method === 'shift_retrain') this.retrain(ctx, o);
  }

  /** Retrains a linear head on the ablated training representations (shift_retrain). */
  private retrain(ctx: FitContext, o: ShiftOptions): void {
    const X =
      this.erasePooled(ctx.cache, ctx.train.rows) ??
      pooledWithEdits(ctx.model, ctx.tokenize, ctx.train.texts, ctx.probeHook, this.edits(), { batchSize: o.evalBatchSize, label: 'shift_retrain: ablated train activations' });
    try {
      const base: LinearProbeOptions = ctx.probe instanceof LinearProbe ? ctx.probe.options : {};
      const { progressLabel: _unused, ...inherited } = base;
      this.probe?.dispose();
      this.probe = new LinearProbe(X.shape[1], ctx.probe.nClasses, { ...inherited, ...o.retrain });
      this.probe.fit(X, ctx.train.y);
    } finally {
      X.dispose();
    }
  }

  retrainedProbe(): Probe | undefined {
    return this.method === 'shift_retrain' ? this.probe : undefined;
  }

  /** IG attributions from fit (or the checkpoint), per attributed hook. */
  attributionsByHook(): Readonly<Record<HookName, HookAttribution>> {
    return this.attributions;
  }

  /** The candidates and verdicts of the selection step. */
  selectionRecords(): readonly (SelectionRecord | RankedFeature)[] {
    return this.selection;
  }

  protected how(): string {
    const o = this.options;
    const retrain = this.method === 'shift_retrain' ? '; the probe head is then retrained on the ablated ambiguous training set' : '';
    if (o === undefined) return `features from a checkpoint${retrain}`;
    const method = o.attribution === 'atp' ? 'attribution patching (first order)' : `IG attribution (${o.steps} steps, zero baseline)`;
    const ig = `${method} to the probe on ${o.attributionExamples} ambiguous training examples`;
    switch (o.selection) {
      case 'manual':
        return `features listed in the config${retrain}`;
      case 'top':
        return `the top ${o.candidates} features by ${o.score === 'abs' ? '|attribution|' : 'attribution'} from ${ig}${retrain}`;
      default: {
        const n = this.selection.length;
        return (
          `chosen automatically from the top ${n} features by ${o.score === 'abs' ? '|attribution|' : 'attribution'} (${ig}): kept when their pooled activation ` +
          `separates the concept within task classes (stratified rank-biserial >= ${o.minConceptScore}) at least ${o.dominance}x as strongly as it separates the task within concept classes${retrain}`
        );
      }
    }
  }

  protected override extraTensors(): Record<string, RawTensor> {
    const out: Record<string, RawTensor> = {};
    for (const [hook, a] of Object.entries(this.attributions)) out[`attribution.${hook}`] = { dtype: 'F32', shape: [a.features.length], data: a.features };
    if (this.probe !== undefined) {
      const { weight, bias } = this.probe.parameters();
      out['probe.weight'] = { dtype: 'F32', shape: [this.probe.nOut, this.probe.dIn], data: weight };
      out['probe.bias'] = { dtype: 'F32', shape: [this.probe.nOut], data: bias };
    }
    return out;
  }

  protected override extraJson(): Record<string, unknown> {
    const out: Record<string, unknown> = {
      options: this.options ?? null,
      errorAttribution: Object.fromEntries(Object.entries(this.attributions).map(([h, a]) => [h, a.error])),
      selection: this.selection,
    };
    if (this.probe !== undefined) out.retrainedProbe = { dIn: this.probe.dIn, nClasses: this.probe.nClasses, options: this.probe.options };
    return out;
  }

  /** Reads a `shift` or `shift_retrain` checkpoint; `saes` must be the SAEs it was fitted with. */
  static load(dir: string, saes: Readonly<Record<HookName, EraserSae>>): ShiftEraser {
    const ckpt = readFeatureAblationCheckpoint(dir, saes, ['shift', 'shift_retrain']);
    const eraser = new ShiftEraser(ckpt.json.method as ShiftMethod);
    eraser.restore(ckpt, saes);
    const json = ckpt.json as unknown as { options: ShiftOptions | null; errorAttribution?: Record<HookName, number>; selection?: SelectionRecord[]; retrainedProbe?: { dIn: number; nClasses: number; options: LinearProbeOptions } };
    eraser.options = json.options ?? undefined;
    eraser.selection = json.selection ?? [];
    for (const name of ckpt.tensors.names()) {
      if (!name.startsWith('attribution.')) continue;
      const hook = name.slice('attribution.'.length);
      eraser.attributions[hook] = { hook, features: ckpt.tensors.float32(name), error: json.errorAttribution?.[hook] ?? NaN };
    }
    if (json.retrainedProbe !== undefined) {
      const { dIn, nClasses, options } = json.retrainedProbe;
      const probe = new LinearProbe(dIn, nClasses, options);
      try {
        probe.setParameters(ckpt.tensors.float32('probe.weight'), ckpt.tensors.float32('probe.bias'));
      } catch (err) {
        probe.dispose();
        throw new Error(`${dir}/eraser.safetensors: retrained probe: ${(err as Error).message}`, { cause: err });
      }
      eraser.probe = probe;
    } else if (eraser.method === 'shift_retrain') {
      throw new Error(`${dir}/eraser.json: a shift_retrain checkpoint needs "retrainedProbe"`);
    }
    return eraser;
  }

  override dispose(): void {
    super.dispose();
    this.probe?.dispose();
    this.probe = undefined;
  }
}

/** Factory for the `shift` and `shift_retrain` methods. */
export function createShiftEraser(method: ShiftMethod = 'shift'): ShiftEraser {
  return new ShiftEraser(method);
}
