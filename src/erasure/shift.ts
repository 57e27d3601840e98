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
 *       the automatic concept rule of feature-selection.ts on the concept-labelled split: with
 *       `conceptLabels` "gender+task" (default) the stratified rule, which reads the concept set's
 *       gender and task labels; with "gender" the concept-only rule, which reads its gender labels
 *       alone;
 *     - "top": the top features by attribution themselves (no concept test);
 *     - "manual": the features listed in `features` ({ hook: [indices] }), as SFC's human annotators
 *       chose them; no attribution is run.
 *  3. Ablation: x' = x - sum_{i in S} f_i(x) v_i at each hook, SAE error kept (ablate.ts), by a
 *     `FeatureAblationEraser` (feature-ablation.ts) that records the attributions and selection.
 * `shift_retrain` then retrains the probe head on the ablated ambiguous training representations
 * (`retrainHead` of head.ts: the biased probe's training options overridden by `retrain`).
 *
 * The options, their defaults and which settings read which field are in shift-options.ts. The
 * labels a fit reads (`shiftSupervision`) depend on them: the ambiguous split's task labels always
 * (the attribution target, the biased probe, shift_retrain's head), the concept set's labels with
 * "auto", and none chosen by hand except with "manual".
 */
import { tf } from '../engine/engine.js';
import type { HookName } from '../models/model.js';
import type { LinearProbeOptions } from '../probe/linear.js';
import { hooksUpToProbe } from './ablate.js';
import { attributionPatching, integratedGradients, pooledProbeHookAttribution, rankFeatures, type HookAttribution, type RankedFeature } from './attribution.js';
import { supervision, type Eraser, type EraserFitter, type FitContext, type LabelledSplit, type Supervision } from './eraser.js';
import { FeatureAblationEraser } from './feature-ablation.js';
import { conceptFeatureColumns, selectConceptFeatures, selectConceptOnlyFeatures, type SelectionRecord } from './feature-selection.js';
import { retrainHead, withHead } from './head.js';
import { resolveShiftOptions, shiftOptionsRecord, type ShiftOptions, type ShiftRetrainOptions, type ShiftSettings } from './shift-options.js';
import { IdentityMemo } from '../util/memo.js';

export type ShiftMethod = 'shift' | 'shift_retrain';

export { shiftOptionsSchema, shiftRetrainOptionsSchema, type ShiftOptions, type ShiftRetrainOptions } from './shift-options.js';

/** The first `n` examples of a split. */
function headOf(split: LabelledSplit, n: number): LabelledSplit {
  if (n >= split.texts.length) return split;
  // Labels are sliced when read, so that a rule that never reads a label never touches it.
  return {
    rows: split.rows.slice(0, n),
    texts: split.texts.slice(0, n),
    get y() {
      return split.y.slice(0, n);
    },
    get z() {
      return split.z.slice(0, n);
    },
  };
}

/**
 * The labels SHIFT reads with these settings (what `chooseShiftFeatures` reads, plus the biased
 * probe's and the retrained head's ambiguous task labels): the ambiguous split's task labels always;
 * with selection "auto" the concept set's gender labels and, with conceptLabels "gender+task", its
 * task labels; "manual" features are chosen by hand.
 */
export function shiftSupervision(o: Pick<ShiftSettings, 'selection' | 'conceptLabels'>): Supervision {
  const auto = o.selection === 'auto';
  return supervision(['ambiguous_task', auto && 'concept_gender', auto && o.conceptLabels === 'gender+task' && 'concept_task'], o.selection === 'manual');
}

/**
 * Attributions through the model already computed for a biased probe and training split, by the
 * settings that determine them. shift, shift_retrain and the random control of one seed share the
 * probe and split objects, so their identical (and costly: forward and backward passes at every
 * upstream hook) attribution runs once. Keyed weakly by those objects, so nothing outlives them;
 * the stored attributions are plain arrays, never modified after they are made.
 */
const attributionMemo = new IdentityMemo<Record<HookName, HookAttribution>>();

function remembered(
  ctx: FitContext,
  o: ShiftSettings,
  hooks: readonly HookName[],
  examples: number,
  compute: () => Record<HookName, HookAttribution>,
): Record<HookName, HookAttribution> {
  const key = JSON.stringify([hooks, examples, o.attribution, o.batchSize, o.attribution === 'ig' ? o.steps : 0]);
  const found = attributionMemo.get(ctx.probe, [ctx.model, ctx.saes, ctx.train], key, compute);
  // A copy of the record, so that adding the probe hook's attribution below leaves the memo as it was.
  return { ...found };
}

export interface ShiftFitResult {
  /** Attributions per attributed hook (none with manual selection). */
  attributions: Record<HookName, HookAttribution>;
  /** Candidates with their concept scores and verdict ("auto"), or the ranked features ("top"). */
  selection: SelectionRecord[] | RankedFeature[];
  features: Record<HookName, number[]>;
  /** The labels the choice read (`shiftSupervision`). */
  supervision: Supervision;
}

/**
 * Steps 1 and 2 of SHIFT without building an eraser: the features to ablate, per hook.
 * Exported for the random control (which matches SHIFT's per-hook counts) and for reports.
 */
export function chooseShiftFeatures(ctx: FitContext, o: ShiftSettings): ShiftFitResult {
  if (o.selection === 'manual') {
    const features = o.features ?? {};
    const hooks = hooksUpToProbe(ctx.model, ctx.saes, ctx.probeHook, Object.keys(features));
    return { attributions: {}, selection: [], features: Object.fromEntries(hooks.map((h) => [h, features[h]!])), supervision: shiftSupervision(o) };
  }
  const hooks = hooksUpToProbe(ctx.model, ctx.saes, ctx.probeHook, o.hooks);
  if (hooks.length === 0)
    throw new Error(`shift: no hook with an SAE at or before the probe hook "${ctx.probeHook}" (SAEs at: ${Object.keys(ctx.saes).join(', ') || 'none'})`);
  const train = headOf(ctx.train, o.attributionExamples);
  const input = {
    model: ctx.model,
    tokenize: ctx.tokenize,
    saes: ctx.saes,
    hooks,
    probeHook: ctx.probeHook,
    probe: ctx.probe,
    texts: train.texts,
    labels: train.y,
  };
  // At the probe's own hook the metric is affine in the SAE codes: IG is exact from cached pooled
  // codes, with no forward pass. Other hooks go through the model.
  const pooledHooks = hooks.filter((h) => h === ctx.probeHook && ctx.probe.kind === 'linear' && ctx.probe.nClasses === 2 && ctx.cache.hasSae(h));
  const modelHooks = hooks.filter((h) => !pooledHooks.includes(h));
  const modelInput = { ...input, hooks: modelHooks };
  const attributions: Record<HookName, HookAttribution> =
    modelHooks.length === 0
      ? {}
      : remembered(ctx, o, modelHooks, train.texts.length, () =>
          o.attribution === 'atp'
            ? attributionPatching(modelInput, { batchSize: o.batchSize, progressLabel: 'shift: attribution patching' })
            : integratedGradients(modelInput, { steps: o.steps, batchSize: o.batchSize, stepsPerPass: o.stepsPerPass, progressLabel: 'shift: IG attribution' }),
        );
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
    // The concept-only rule never reads concept.y (shiftSupervision says so).
    const records =
      o.conceptLabels === 'gender'
        ? selectConceptOnlyFeatures(ranked, columns, concept.z, { minConceptScore: o.minConceptScore, minGroupSize: o.minGroupSize })
        : selectConceptFeatures(ranked, columns, concept.y, concept.z, {
            minConceptScore: o.minConceptScore,
            dominance: o.dominance,
            minGroupSize: o.minGroupSize,
          });
    chosen = records.filter((r) => r.selected);
    selection = records;
  }
  const features: Record<HookName, number[]> = {};
  for (const c of chosen) (features[c.hook] ??= []).push(c.feature);
  return { attributions, selection, features, supervision: shiftSupervision(o) };
}

/** How SHIFT chose its features, in words (the end of the eraser's summary). */
function selectedBy(o: ShiftSettings, candidates: number): string {
  const method = o.attribution === 'atp' ? 'attribution patching (first order)' : `IG attribution (${o.steps} steps, zero baseline)`;
  const ig = `${method} to the probe on ${o.attributionExamples} ambiguous training examples`;
  const by = o.score === 'abs' ? '|attribution|' : 'attribution';
  switch (o.selection) {
    case 'manual':
      return 'features listed in the config';
    case 'top':
      return `the top ${o.candidates} features by ${by} from ${ig}`;
    default:
      if (o.conceptLabels === 'gender') {
        return (
          `chosen automatically from the top ${candidates} features by ${by} (${ig}): kept when their pooled activation ` +
          `separates the concept on the concept-labelled set (|rank-biserial| >= ${o.minConceptScore}), from its gender labels alone (no task labels, no dominance test)`
        );
      }
      return (
        `chosen automatically from the top ${candidates} features by ${by} (${ig}): kept when their pooled activation ` +
        `separates the concept within task classes (stratified rank-biserial >= ${o.minConceptScore}) at least ${o.dominance}x as strongly as it separates the task within concept classes`
      );
  }
}

/** Fits `shift` (features only) or, given `retrain`, `shift_retrain` (features, then a retrained head). */
class ShiftFitter implements EraserFitter {
  constructor(
    readonly method: ShiftMethod,
    private readonly options: ShiftSettings,
    /** Overrides of the biased probe's options for the retrained head; undefined: no head (`shift`). */
    private readonly retrain: LinearProbeOptions | undefined,
  ) {}

  async fit(ctx: FitContext): Promise<Eraser> {
    const o = this.options;
    const chosen = chooseShiftFeatures(ctx, o);
    const eraser = FeatureAblationEraser.create(this.method, ctx.saes, ctx.probeHook, chosen.features, {
      selectedBy: selectedBy(o, chosen.selection.length),
      attributions: chosen.attributions,
      selection: chosen.selection,
      fields: { options: shiftOptionsRecord(o, this.retrain) },
      supervision: chosen.supervision,
      // What chooseShiftFeatures read: the first attributionExamples (conceptExamples) of each split.
      examplesUsed:
        o.selection === 'manual'
          ? undefined
          : {
              attribution: Math.min(o.attributionExamples, ctx.train.texts.length),
              concept: o.selection === 'auto' ? Math.min(o.conceptExamples ?? Infinity, ctx.concept.texts.length) : undefined,
            },
    });
    if (this.retrain === undefined) return eraser;
    try {
      // Upstream ablations run the model over the training texts in batches of evalBatchSize.
      return withHead(eraser, await retrainHead(eraser, { ...ctx, batchSize: o.evalBatchSize }, this.retrain));
    } catch (err) {
      eraser.dispose();
      throw err;
    }
  }
}

/** The fitter of `shift` or `shift_retrain`, with options parsed by the method's schema. */
export function createShiftFitter(method: 'shift', options: ShiftOptions): EraserFitter;
export function createShiftFitter(method: 'shift_retrain', options: ShiftRetrainOptions): EraserFitter;
export function createShiftFitter(method: ShiftMethod, options: ShiftOptions | ShiftRetrainOptions): EraserFitter {
  const retrain = method === 'shift_retrain' ? ((options as Partial<ShiftRetrainOptions>).retrain ?? {}) : undefined;
  return new ShiftFitter(method, resolveShiftOptions(options), retrain);
}
