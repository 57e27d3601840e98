/**
 * Options of the learned-mask erasers: the fields the three methods share (`MASK_OPTION_FIELDS`),
 * from which each method file declares its strict schema (refined by `checkObjectiveFields`), and
 * the resolution into the trainer's `MaskConfig` of the fields whose default depends on the fit
 * (`hooks`, `seed`, `retrainHead`) or that apply to one objective only.
 * Why the defaults are what they are: docs/masks.md.
 */
import { z } from 'zod';
import { withDefaults } from '../../util/schema.js';
import type { HookName } from '../../models/model.js';
import { supervision, type FitContext, type Supervision } from '../eraser.js';

/** The learned-mask methods. */
export type MaskMethod = 'sae_mask' | 'neuron_mask' | 'das_mask';

/** `initNoise`, with its default per method (das_mask breaks the tie of a uniform gate with it). */
export function initNoiseField(fallback: number): z.ZodDefault<z.ZodNumber> {
  return z
    .number()
    .min(0)
    .default(fallback)
    .describe(`Std of multiplicative Gaussian noise on the initial logits, m = m0 (1 + initNoise * N(0, 1)). Default ${fallback}.`);
}

/**
 * Defaults of the fields that apply to one objective only. The schemas leave these fields optional,
 * so that one given with the other objective can be refused (`checkObjectiveFields`);
 * `resolveMaskConfig` fills them in.
 */
const OBJECTIVE_DEFAULTS = {
  taskSplit: 'train',
  conceptWeight: 1,
  taskHead: 'adapt',
  headLr: 1e-2,
  adversaryEvery: 20,
  adversarySteps: 5,
  adversaryInitSteps: 200,
  adversaryCrossFit: true,
  balanceConcept: true,
} as const;

type ObjectiveField = keyof typeof OBJECTIVE_DEFAULTS;

/** The objective each objective-only field belongs to. */
const FIELD_OBJECTIVE: Readonly<Record<ObjectiveField, 'concept' | 'task'>> = {
  taskSplit: 'task',
  conceptWeight: 'concept',
  taskHead: 'concept',
  headLr: 'concept',
  adversaryEvery: 'concept',
  adversarySteps: 'concept',
  adversaryInitSteps: 'concept',
  adversaryCrossFit: 'concept',
  balanceConcept: 'concept',
};

/** Fields shared by `sae_mask`, `neuron_mask` and `das_mask` (das_mask overrides `initNoise`). */
export const MASK_OPTION_FIELDS = {
  hooks: z
    .array(z.string())
    .min(1)
    .refine((hooks) => new Set(hooks).size === hooks.length, { message: 'lists a hook twice' })
    .optional()
    .describe(
      'Hooks to mask, each at or before the probe hook, no hook twice; one mask per hook, trained jointly. Default: the probe hook alone (trains on cached pooled values; any other hook reruns the model every step).',
    ),
  objective: z
    .enum(['concept', 'task'])
    .default('concept')
    .describe(
      '"concept": keep the task on the ambiguous training split while adversaries on the concept-labelled set are driven to chance (needs no balanced task labels). "task": the original method, cross-entropy of the frozen biased probe on `taskSplit`.',
    ),
  taskSplit: z
    .enum(['train', 'balanced'])
    .optional()
    .describe(
      `Split of the "task" objective: "train", or "balanced" as the original did (needs balanced task labels). Default "${OBJECTIVE_DEFAULTS.taskSplit}". Objective "task" only.`,
    ),
  epochs: z.number().int().min(1).default(25).describe('Passes over the task split.'),
  batchSize: z.number().int().min(1).default(16).describe('Rows per mask step (task batch, and concept batch).'),
  lr: z.number().positive().default(1e-3).describe('Adam learning rate of the mask logits (and of the DAS directions).'),
  tempStart: z.number().positive().default(0.1).describe('Gate temperature at the first step; annealed linearly (float32) per step to `tempEnd`.'),
  tempEnd: z.number().positive().default(0.001).describe('Gate temperature at the last step, and of the soft gate applied when `hardMask` is false.'),
  initKeep: z
    .number()
    .gt(0)
    .lt(1)
    .default(0.99)
    .describe('Initial gate of every unit: logits start at m0 = tempStart * logit(initKeep). 0.5 is the zero-logit start (every unit half removed).'),
  initNoise: initNoiseField(0),
  l1: z.number().min(0).default(0.05).describe('Cost of removed units, l1 * sum_j (1 - s_j), in loss units per unit.'),
  hardMask: z
    .boolean()
    .default(true)
    .describe('Apply the hard gate [m > 0] once fitted; false applies the soft gate sigmoid(m / tempEnd), as the original did.'),
  conceptWeight: z.number().min(0).optional().describe(`Weight of the adversary loss. Default ${OBJECTIVE_DEFAULTS.conceptWeight}. Objective "concept" only.`),
  taskHead: z
    .enum(['adapt', 'frozen'])
    .optional()
    .describe(
      `"adapt": the task head (starting as the biased probe) is re-fitted with the adversaries; "frozen": the biased probe throughout. Default "${OBJECTIVE_DEFAULTS.taskHead}". Objective "concept" only.`,
    ),
  headLr: z
    .number()
    .positive()
    .optional()
    .describe(`AdamW learning rate of the adapting task head and of the adversaries. Default ${OBJECTIVE_DEFAULTS.headLr}. Objective "concept" only.`),
  adversaryEvery: z
    .number()
    .int()
    .min(1)
    .optional()
    .describe(
      `Mask steps between re-fits of the adversaries (and the adapting task head). Default ${OBJECTIVE_DEFAULTS.adversaryEvery}. Objective "concept" only.`,
    ),
  adversarySteps: z
    .number()
    .int()
    .min(1)
    .optional()
    .describe(`Full-batch AdamW steps per re-fit. Default ${OBJECTIVE_DEFAULTS.adversarySteps}. Objective "concept" only.`),
  adversaryInitSteps: z
    .number()
    .int()
    .min(1)
    .optional()
    .describe(
      `Full-batch AdamW steps of the initial fit, before the first mask step. Default ${OBJECTIVE_DEFAULTS.adversaryInitSteps}. Objective "concept" only.`,
    ),
  adversaryCrossFit: z
    .boolean()
    .optional()
    .describe(
      `Fit two adversaries on halves of the concept set (stratified by concept), each scoring the mask on the other half; false: one adversary on the whole set. Default ${OBJECTIVE_DEFAULTS.adversaryCrossFit}. Objective "concept" only.`,
    ),
  balanceConcept: z
    .boolean()
    .optional()
    .describe(
      `Weight the concept set so that the concept is independent of the task label (every (task, concept) cell weighs the same) for the adversaries' fits and the adversary loss: on natural data the concept predicts the task, and an unweighted adversary also uses, and the mask then removes, the task's own directions. das_mask's mean-difference term then uses square-root balancing (cell weights n^-1/2). Needs the concept set's task labels. Default ${OBJECTIVE_DEFAULTS.balanceConcept}. Objective "concept" only.`,
    ),
  retrainHead: z
    .boolean()
    .optional()
    .describe(
      'Train a new probe head on the erased training split once the mask is fixed, with the biased probe\'s options. Default: true for the "concept" objective, false for "task".',
    ),
  seed: z
    .number()
    .int()
    .min(-(2 ** 31))
    .optional()
    .describe("Seed of the initial logits (seed + 1), the concept folds, batch order and head samples (seed). Default: the run's seed."),
};

/** `keepError` of sae_mask. */
export const KEEP_ERROR_FIELD = z
  .boolean()
  .default(true)
  .describe("Keep the SAE error: x' = decode(s ⊙ f(x)) + (x - decode(f(x))); false drops it as the original did (x' = decode(s ⊙ f(x))).");

/** `keepError` of the methods without an SAE: refused with a message saying why. */
export const NO_KEEP_ERROR_FIELD = z
  .never({ error: 'keepError applies only to sae_mask' })
  .optional()
  .describe('Not an option of this method (keepError applies only to sae_mask).');

type SharedSchema = z.ZodObject<typeof MASK_OPTION_FIELDS>;

/** Parsed options of any mask method (`keepError` only for sae_mask, `rank` and `meanDifferenceWeight` only for das_mask). */
export type MaskOptions = z.output<SharedSchema> & { keepError?: boolean; rank?: number; meanDifferenceWeight?: number };

/** The options a trainer runs with: every default resolved (saved in checkpoints as `options`). */
export interface MaskConfig extends Omit<MaskOptions, 'hooks' | 'retrainHead' | 'seed' | ObjectiveField>, Required<Pick<MaskOptions, ObjectiveField>> {
  hooks: HookName[];
  retrainHead: boolean;
  seed: number;
}

/**
 * The refinement of every mask method's option schema: a field of one objective given with the
 * other would be silently ignored by the trainer, so it is refused.
 */
export function checkObjectiveFields(options: MaskOptions, ctx: z.RefinementCtx): void {
  for (const [field, objective] of Object.entries(FIELD_OBJECTIVE)) {
    if (options[field as ObjectiveField] !== undefined && options.objective !== objective) {
      ctx.addIssue({ code: 'custom', path: [field], message: `applies only to objective "${objective}" (the objective here is "${options.objective}")` });
    }
  }
}

/** Resolves the fit-dependent defaults (hooks [probeHook], the run's seed, retrainHead by objective) and the objective-only ones. */
export function resolveMaskConfig(options: MaskOptions, ctx: Pick<FitContext, 'probeHook' | 'seed'>): MaskConfig {
  const { hooks, retrainHead, seed, ...rest } = options;
  return {
    ...withDefaults(rest, OBJECTIVE_DEFAULTS),
    hooks: hooks === undefined ? [ctx.probeHook] : [...hooks],
    retrainHead: retrainHead ?? options.objective === 'concept',
    seed: seed ?? ctx.seed,
  };
}

/**
 * The labels a mask fit with this config reads (`MaskFitter.fit`, trainer.ts):
 *  - the ambiguous split's task labels, always: the biased probe (trained on them) starts the task
 *    head ("concept", "adapt") or is it (frozen), the task split is the ambiguous one unless
 *    `taskSplit` is "balanced", and `retrainHead` trains on them;
 *  - the balanced split's task labels with objective "task" and taskSplit "balanced";
 *  - with objective "concept": the concept set's gender labels (the adversaries, das_mask's
 *    mean-difference term) and, with `balanceConcept`, its task labels (the cell weights).
 */
export function maskSupervision(config: Pick<MaskConfig, 'objective' | 'taskSplit' | 'balanceConcept'>): Supervision {
  const concept = config.objective === 'concept';
  return supervision([
    'ambiguous_task',
    config.objective === 'task' && config.taskSplit === 'balanced' && 'balanced_task',
    concept && 'concept_gender',
    concept && config.balanceConcept && 'concept_task',
  ]);
}

/** Schema of a resolved `MaskConfig` as checkpoints store it (see `maskConfigSchema`). */
export type MaskConfigSchema = z.ZodObject<Record<string, z.ZodType>, z.core.$strict>;

/**
 * The schema of a trainer config as a checkpoint stores it, from a method's option fields: every
 * field required, with no default and no objective refinement (a config holds every field,
 * resolved); a field that is never valid (`keepError` of the methods without an SAE) stays absent.
 */
export function maskConfigSchema(fields: Readonly<Record<string, z.ZodType>>): MaskConfigSchema {
  const shape: Record<string, z.ZodType> = {};
  for (const [name, field] of Object.entries(fields)) {
    let core: z.ZodType = field;
    while (core instanceof z.ZodDefault || core instanceof z.ZodOptional) core = core.unwrap() as z.ZodType;
    shape[name] = core instanceof z.ZodNever ? field : core;
  }
  return z.strictObject(shape);
}
