/**
 * The options of SHIFT (`shift`, `shift_retrain`; the method is in shift.ts), shared with the
 * `random` control, which falls back to SHIFT's per-hook counts, and with the feature-ablation
 * checkpoint, which records them.
 *
 * Which fields SHIFT reads depends on `selection`, `attribution` and the method:
 *   - selection "manual" ablates the listed `features`: no attribution, candidates or concept test;
 *   - selection "top" keeps the top candidates: no concept test (minConceptScore, dominance,
 *     minGroupSize, conceptExamples, conceptLabels);
 *   - conceptLabels "gender" scores features by their association with gender alone, reading no
 *     task labels of the concept set: no task score, so no dominance;
 *   - attribution "atp" takes no interpolation steps (steps, stepsPerPass);
 *   - evalBatchSize batches the concept test ("auto") and the forward passes of shift_retrain's
 *     head retraining; `shift` with "top" or "manual" runs neither.
 * A field given where it is not read is refused when the config is read (`checkShiftOptions`), so
 * the fields that some settings ignore have no schema default: `resolveShiftOptions` fills in the
 * documented defaults (SHIFT_DEFAULTS) where the options are used.
 */
import { z } from 'zod';
import type { HookName } from '../models/model.js';
import { linearProbeOptionsSchema, type LinearProbeOptions } from '../probe/linear.js';
import { positiveInt } from '../util/schema.js';
import { CONCEPT_SELECTION_DEFAULTS } from './feature-selection.js';

/** The defaults of SHIFT's options (SFC's settings where the paper has one). */
export const SHIFT_DEFAULTS = {
  attribution: 'ig',
  steps: 10,
  batchSize: 4,
  stepsPerPass: 1,
  attributionExamples: 100,
  selection: 'auto',
  candidates: 100,
  threshold: 0,
  score: 'abs',
  minConceptScore: CONCEPT_SELECTION_DEFAULTS.minConceptScore,
  dominance: CONCEPT_SELECTION_DEFAULTS.dominance,
  minGroupSize: CONCEPT_SELECTION_DEFAULTS.minGroupSize,
  conceptLabels: 'gender+task',
  evalBatchSize: 16,
} as const;

const D = SHIFT_DEFAULTS;

/**
 * The fields of SHIFT's options, shared with the `random` control. Use the schemas below, which
 * add the cross-field checks.
 */
export const shiftOptionFields = {
  attribution: z
    .enum(['ig', 'atp'])
    .optional()
    .describe(
      `Attribution method: ig (integrated gradients, SFC's SHIFT) or atp (first-order attribution patching: one pass per batch for all hooks, about steps x hooks times cheaper and cruder). Not with selection "manual". Default ${D.attribution}.`,
    ),
  steps: positiveInt().optional().describe(`Integrated-gradients interpolation steps (zero baseline); attribution "ig" only. Default ${D.steps}.`),
  batchSize: positiveInt().optional().describe(`Texts per attribution batch (SFC: 4). Not with selection "manual". Default ${D.batchSize}.`),
  stepsPerPass: positiveInt()
    .optional()
    .describe(
      `Integrated-gradients steps stacked into one forward/backward pass (memory for speed; same result); attribution "ig" only. Default ${D.stepsPerPass}.`,
    ),
  attributionExamples: positiveInt()
    .optional()
    .describe(
      `Attribute on the first this many examples of the ambiguous training split (SFC: 25 batches of 4). Not with selection "manual". Default ${D.attributionExamples}.`,
    ),
  hooks: z
    .array(z.string())
    .optional()
    .describe(
      'Hooks to attribute and ablate at. Not with selection "manual" (the hooks of `features`). Default every hook with an SAE at or before the probe hook.',
    ),
  selection: z
    .enum(['auto', 'top', 'manual'])
    .optional()
    .describe(
      `How features are chosen: auto (top candidates kept by the automatic concept test), top (the top candidates by attribution), manual (the listed \`features\`). Default ${D.selection}.`,
    ),
  candidates: positiveInt()
    .optional()
    .describe(`Top features by attribution score, over all hooks, that go to selection. Not with selection "manual". Default ${D.candidates}.`),
  threshold: z
    .number()
    .min(0)
    .optional()
    .describe(`Only features whose attribution score is above this become candidates. Not with selection "manual". Default ${D.threshold}.`),
  score: z
    .enum(['abs', 'positive'])
    .optional()
    .describe(`Attribution score: abs ranks by |attribution|, positive by the signed attribution. Not with selection "manual". Default ${D.score}.`),
  minConceptScore: z
    .number()
    .min(0)
    .max(1)
    .optional()
    .describe(
      `Concept test (selection "auto" only): minimum |stratified rank-biserial| of a feature with the concept (0.2: AUC 0.6 within task classes). Default ${D.minConceptScore}.`,
    ),
  dominance: z
    .number()
    .min(0)
    .optional()
    .describe(`Concept test (selection "auto" only): the concept score must be at least this times the task score. Default ${D.dominance}.`),
  minGroupSize: positiveInt()
    .optional()
    .describe(`Concept test (selection "auto" only): minimum examples of each class in a stratum. Default ${D.minGroupSize}.`),
  conceptExamples: positiveInt()
    .optional()
    .describe('Concept test (selection "auto" only): use the first this many examples of the concept-labelled split. Default all.'),
  conceptLabels: z
    .enum(['gender+task', 'gender'])
    .optional()
    .describe(
      `Concept test (selection "auto" only): the concept set's labels it reads. "gender+task": a feature is kept when it separates gender within professions at least dominance times as strongly as it separates profession within genders (stratified rank-biserial). "gender": gender labels only, kept when |rank-biserial with gender| >= minConceptScore over the concept set, with no task score and no dominance (it cannot tell a profession feature correlated with gender from a gender feature: feature-selection.ts). Default ${D.conceptLabels}.`,
    ),
  features: z
    .record(z.string(), z.array(z.number().int().min(0)))
    .optional()
    .describe('Selection "manual" only: the features to ablate, { hook: [feature indices] }.'),
  evalBatchSize: positiveInt()
    .optional()
    .describe(
      `Texts per forward pass for the concept-set feature activations (selection "auto") and, in shift_retrain, when the model runs with the ablation to retrain the head. Default ${D.evalBatchSize}.`,
    ),
};

export type ShiftField = keyof typeof shiftOptionFields;

/** SHIFT's options as parsed: every field optional. */
export type ShiftOptionValues = { [F in ShiftField]?: z.output<(typeof shiftOptionFields)[F]> };

/** The attribution and candidate fields: unread with selection "manual". */
const ATTRIBUTION_FIELDS: readonly ShiftField[] = [
  'attribution',
  'steps',
  'batchSize',
  'stepsPerPass',
  'attributionExamples',
  'hooks',
  'candidates',
  'threshold',
  'score',
];
/** The concept test's fields: read with selection "auto" only. */
const CONCEPT_FIELDS: readonly ShiftField[] = ['minConceptScore', 'dominance', 'minGroupSize', 'conceptExamples', 'conceptLabels'];
/** Integrated gradients' own fields: unread with attribution "atp". */
const IG_FIELDS: readonly ShiftField[] = ['steps', 'stepsPerPass'];

/**
 * The fields SHIFT does not read with these options, each with why (the rules of the module
 * docstring). `retrains`: shift_retrain, whose head retraining reads evalBatchSize.
 */
function unusedShiftFields(o: ShiftOptionValues, retrains: boolean): Partial<Record<ShiftField, string>> {
  const selection = o.selection ?? D.selection;
  const attribution = o.attribution ?? D.attribution;
  const unused: Partial<Record<ShiftField, string>> = {};
  if (selection === 'manual') {
    for (const f of ATTRIBUTION_FIELDS)
      unused[f] = 'applies only to selection "auto" or "top" (selection is "manual": the listed features are ablated, no attribution runs)';
  } else {
    unused.features = `"features" is only used with selection "manual" (selection is "${selection}")`;
    if (attribution === 'atp') for (const f of IG_FIELDS) unused[f] = 'applies only to attribution "ig" (attribution is "atp")';
  }
  if (selection !== 'auto')
    for (const f of CONCEPT_FIELDS) unused[f] = `applies only to selection "auto", which runs the concept test (selection is "${selection}")`;
  else if ((o.conceptLabels ?? D.conceptLabels) === 'gender')
    unused.dominance = 'applies only to conceptLabels "gender+task" (conceptLabels is "gender": with no task labels there is no task score to dominate)';
  if (selection !== 'auto' && !retrains) {
    unused.evalBatchSize = `applies only to selection "auto" (the concept test) or to shift_retrain (selection is "${selection}")`;
  }
  return unused;
}

/** Cross-field checks of SHIFT's options: "manual" needs `features`, and no field is given where it is not read. */
export function checkShiftOptions(o: ShiftOptionValues, ctx: z.RefinementCtx, retrains: boolean): void {
  if ((o.selection ?? D.selection) === 'manual' && o.features === undefined) {
    ctx.addIssue({ code: 'custom', path: ['features'], message: 'selection "manual" needs "features": { hook: [feature indices] }' });
  }
  for (const [field, why] of Object.entries(unusedShiftFields(o, retrains))) {
    if (o[field as ShiftField] !== undefined) ctx.addIssue({ code: 'custom', path: [field], message: why });
  }
}

export const shiftOptionsSchema = z
  .strictObject(shiftOptionFields)
  .superRefine((o, ctx) => checkShiftOptions(o, ctx, false))
  .describe('SHIFT: zero-ablate the SAE features a biased probe relies on that are about the concept.');

export const shiftRetrainOptionsSchema = z
  .strictObject({
    ...shiftOptionFields,
    retrain: linearProbeOptionsSchema
      .default({})
      .describe("Overrides of the biased probe's training options for the retrained head (unset fields keep the biased probe's)."),
  })
  .superRefine((o, ctx) => checkShiftOptions(o, ctx, true))
  .describe('SHIFT, then a probe head retrained on the ablated ambiguous training set.');

export type ShiftOptions = z.output<typeof shiftOptionsSchema>;
export type ShiftRetrainOptions = z.output<typeof shiftRetrainOptionsSchema>;

/** SHIFT's options with every default filled in: what the fitting code reads. */
export interface ShiftSettings {
  attribution: 'ig' | 'atp';
  steps: number;
  batchSize: number;
  stepsPerPass: number;
  attributionExamples: number;
  /** Undefined: every hook with an SAE at or before the probe hook. */
  hooks: HookName[] | undefined;
  selection: 'auto' | 'top' | 'manual';
  candidates: number;
  threshold: number;
  score: 'abs' | 'positive';
  minConceptScore: number;
  dominance: number;
  minGroupSize: number;
  /** Undefined: the whole concept-labelled split. */
  conceptExamples: number | undefined;
  /** The concept set's labels the concept test reads. */
  conceptLabels: 'gender+task' | 'gender';
  features: Record<HookName, number[]> | undefined;
  evalBatchSize: number;
}

/** Parsed options (SHIFT's, or the random control's SHIFT fields) with the documented defaults applied. */
export function resolveShiftOptions(o: ShiftOptionValues): ShiftSettings {
  return {
    attribution: o.attribution ?? D.attribution,
    steps: o.steps ?? D.steps,
    batchSize: o.batchSize ?? D.batchSize,
    stepsPerPass: o.stepsPerPass ?? D.stepsPerPass,
    attributionExamples: o.attributionExamples ?? D.attributionExamples,
    hooks: o.hooks,
    selection: o.selection ?? D.selection,
    candidates: o.candidates ?? D.candidates,
    threshold: o.threshold ?? D.threshold,
    score: o.score ?? D.score,
    minConceptScore: o.minConceptScore ?? D.minConceptScore,
    dominance: o.dominance ?? D.dominance,
    minGroupSize: o.minGroupSize ?? D.minGroupSize,
    conceptExamples: o.conceptExamples,
    conceptLabels: o.conceptLabels ?? D.conceptLabels,
    features: o.features,
    evalBatchSize: o.evalBatchSize ?? D.evalBatchSize,
  };
}

/**
 * The options a SHIFT checkpoint records: the settings SHIFT read (defaults included, unread
 * fields left out), plus shift_retrain's `retrain`. They parse again with the method's schema.
 */
export function shiftOptionsRecord(s: ShiftSettings, retrain: LinearProbeOptions | undefined): ShiftOptions | ShiftRetrainOptions {
  const unused = unusedShiftFields(s, retrain !== undefined);
  const record = Object.fromEntries(
    Object.entries(s).filter(([field, value]) => value !== undefined && unused[field as ShiftField] === undefined),
  ) as ShiftOptions;
  return retrain === undefined ? record : { ...record, retrain };
}
