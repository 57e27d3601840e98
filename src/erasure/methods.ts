/**
 * The method registry: each method's option schema (validated when a config is read) and the
 * factory of its fitter. `original` and `oracle` are probes, not erasers: the runner trains them
 * itself and they take no options. Adding a method is one file in src/erasure/ and one line here.
 */
import { z } from 'zod';
import { parseStrict } from '../util/schema.js';
import type { HookName } from '../models/model.js';
import type { EraserFitter, MethodName } from './eraser.js';
import { createSaeMaskFitter, saeMaskOptionsSchema } from './mask/sae-mask.js';
import { createNeuronMaskFitter, neuronMaskOptionsSchema } from './mask/neuron-mask.js';
import { createDasMaskFitter, dasMaskOptionsSchema } from './mask/das-mask.js';
import { createShiftFitter, shiftOptionsSchema, shiftRetrainOptionsSchema } from './shift.js';
import { createRandomFitter, randomOptionsSchema } from './random-ablation.js';
import { createInlpFitter, createLeaceFitter, inlpOptionsSchema, leaceOptionsSchema } from './closed-form.js';
import { createWordDeletionFitter, wordDeletionOptionsSchema } from './word-deletion.js';

/** Hooks a method's options name, so a run can check them against the model before any work. */
export interface NamedHooks {
  hooks: HookName[];
  /** Whether each of them needs an SAE (SAE-feature methods) or edits raw activations. */
  needSae: boolean;
}

interface MethodEntry {
  /** Strict schema of a config's options block (defaults filled in by parsing, except for fields only some settings read: the fitter's). */
  readonly options: z.ZodType;
  /** Makes the fitter from parsed options; absent for the probe-only methods. */
  readonly createFitter?: (options: never) => EraserFitter;
  /** The hooks the parsed options name (none when absent). */
  readonly namedHooks?: (options: never) => NamedHooks;
}

function method<S extends z.ZodType>(
  options: S,
  createFitter?: (options: z.output<S>) => EraserFitter,
  namedHooks?: (options: z.output<S>) => NamedHooks,
): MethodEntry {
  return { options, createFitter, namedHooks };
}

/** Hook lists and hook-keyed maps of SAE-feature options (`hooks`, `features`, `perHook`). */
function saeHooks(o: { hooks?: HookName[]; features?: Record<HookName, unknown>; perHook?: Record<HookName, unknown> }): NamedHooks {
  return { hooks: [...(o.hooks ?? []), ...Object.keys(o.features ?? {}), ...Object.keys(o.perHook ?? {})], needSae: true };
}

const noOptions = z.strictObject({});

export const METHODS: Readonly<Record<MethodName, MethodEntry>> = {
  original: method(noOptions),
  oracle: method(noOptions),
  sae_mask: method(saeMaskOptionsSchema, createSaeMaskFitter, saeHooks),
  neuron_mask: method(neuronMaskOptionsSchema, createNeuronMaskFitter, (o) => ({ hooks: o.hooks ?? [], needSae: false })),
  das_mask: method(dasMaskOptionsSchema, createDasMaskFitter, (o) => ({ hooks: o.hooks ?? [], needSae: false })),
  shift: method(shiftOptionsSchema, (o) => createShiftFitter('shift', o), saeHooks),
  shift_retrain: method(shiftRetrainOptionsSchema, (o) => createShiftFitter('shift_retrain', o), saeHooks),
  leace: method(leaceOptionsSchema, createLeaceFitter),
  inlp: method(inlpOptionsSchema, createInlpFitter),
  random: method(randomOptionsSchema, createRandomFitter, saeHooks),
  word_deletion: method(wordDeletionOptionsSchema, createWordDeletionFitter),
};

/** A method's options after validation: only `parseMethodOptions` makes these. */
export interface MethodOptions {
  readonly method: MethodName;
  /** The parsed options (schema defaults filled in), as JSON for records. */
  readonly options: Readonly<Record<string, unknown>>;
}

/** Validates a config's options block for `method`; `where` names it in errors. */
export function parseMethodOptions(method: MethodName, raw: unknown, where: string): MethodOptions {
  return { method, options: parseStrict(METHODS[method].options, raw ?? {}, where) as Record<string, unknown> };
}

/** The fitter of a method with validated options; throws for the probe-only methods. */
export function createFitter(parsed: MethodOptions): EraserFitter {
  const create = METHODS[parsed.method].createFitter;
  if (create === undefined) throw new Error(`method "${parsed.method}" is not an eraser (original and oracle are probes)`);
  return create(parsed.options as never);
}

/** The hooks a method's parsed options name (for checks against the model before a run starts). */
export function namedHooks(parsed: MethodOptions): NamedHooks {
  return METHODS[parsed.method].namedHooks?.(parsed.options as never) ?? { hooks: [], needSae: false };
}
