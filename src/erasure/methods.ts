/**
 * The method registry: each method's option schema (validated when a config is read) and the
 * factory of its fitter. `original` and `oracle` are probes, not erasers: the runner trains them
 * itself and they take no options. Adding a method is one file in src/erasure/ and one line here.
 *
 * A run names each method it runs: the family name itself (`shift`), or `family@variant`
 * (`shift_retrain@gender_only`) to run a family again with other options; the family's schema
 * validates the options, and results and saved erasers go under the full name (`methodKey`).
 */
import { z } from 'zod';
import { parseStrict } from '../util/schema.js';
import type { HookName } from '../models/model.js';
import { isMethodName, METHOD_NAMES, supervision, type EraserFitter, type MethodName, type Supervision } from './eraser.js';
import { maskSupervision, resolveMaskConfig, type MaskOptions } from './mask/options.js';
import { createSaeMaskFitter, saeMaskOptionsSchema } from './mask/sae-mask.js';
import { createNeuronMaskFitter, neuronMaskOptionsSchema } from './mask/neuron-mask.js';
import { createDasMaskFitter, dasMaskOptionsSchema } from './mask/das-mask.js';
import { createShiftFitter, shiftOptionsSchema, shiftRetrainOptionsSchema, shiftSupervision } from './shift.js';
import { resolveShiftOptions } from './shift-options.js';
import { createRandomFitter, randomOptionsSchema, randomSupervision } from './random-ablation.js';
import { affineSupervision, createInlpFitter, createLeaceFitter, inlpOptionsSchema, leaceOptionsSchema } from './closed-form.js';
import { createWordDeletionFitter, wordDeletionOptionsSchema, wordDeletionSupervision } from './word-deletion.js';

/** Hooks a method's options name, so a run can check them against the model before any work. */
export interface NamedHooks {
  hooks: HookName[];
  /** Whether each of them needs an SAE (SAE-feature methods) or edits raw activations. */
  needSae: boolean;
}

interface MethodEntry {
  /** Strict schema of a config's options block (defaults filled in by parsing, except for fields only some settings read: the fitter's). */
  readonly options: z.ZodType;
  /**
   * The labels a fit with the parsed options reads: the same function the fitted eraser's
   * `describe().supervision` comes from, so a run can tell before fitting which methods read the
   * concept set.
   */
  readonly supervision: (options: never) => Supervision;
  /** Makes the fitter from parsed options; absent for the probe-only methods. */
  readonly createFitter?: (options: never) => EraserFitter;
  /** The hooks the parsed options name (none when absent). */
  readonly namedHooks?: (options: never) => NamedHooks;
}

function method<S extends z.ZodType>(
  options: S,
  supervision: (options: z.output<S>) => Supervision,
  createFitter?: (options: z.output<S>) => EraserFitter,
  namedHooks?: (options: z.output<S>) => NamedHooks,
): MethodEntry {
  return { options, supervision, createFitter, namedHooks };
}

/** A mask fit's supervision: that of its resolved config (the hooks and seed it resolves do not change what it reads). */
function maskOptionsSupervision(o: MaskOptions): Supervision {
  return maskSupervision(resolveMaskConfig(o, { probeHook: '', seed: 0 }));
}

/** Hook lists and hook-keyed maps of SAE-feature options (`hooks`, `features`, `perHook`). */
function saeHooks(o: { hooks?: HookName[]; features?: Record<HookName, unknown>; perHook?: Record<HookName, unknown> }): NamedHooks {
  return { hooks: [...(o.hooks ?? []), ...Object.keys(o.features ?? {}), ...Object.keys(o.perHook ?? {})], needSae: true };
}

const noOptions = z.strictObject({});

export const METHODS: Readonly<Record<MethodName, MethodEntry>> = {
  // The biased probe is trained on the ambiguous split's task labels, the oracle on the balanced split's.
  original: method(noOptions, () => supervision(['ambiguous_task'])),
  oracle: method(noOptions, () => supervision(['balanced_task'])),
  sae_mask: method(saeMaskOptionsSchema, maskOptionsSupervision, createSaeMaskFitter, saeHooks),
  neuron_mask: method(neuronMaskOptionsSchema, maskOptionsSupervision, createNeuronMaskFitter, (o) => ({ hooks: o.hooks ?? [], needSae: false })),
  das_mask: method(dasMaskOptionsSchema, maskOptionsSupervision, createDasMaskFitter, (o) => ({ hooks: o.hooks ?? [], needSae: false })),
  shift: method(
    shiftOptionsSchema,
    (o) => shiftSupervision(resolveShiftOptions(o)),
    (o) => createShiftFitter('shift', o),
    saeHooks,
  ),
  shift_retrain: method(
    shiftRetrainOptionsSchema,
    (o) => shiftSupervision(resolveShiftOptions(o)),
    (o) => createShiftFitter('shift_retrain', o),
    saeHooks,
  ),
  leace: method(leaceOptionsSchema, affineSupervision, createLeaceFitter),
  inlp: method(inlpOptionsSchema, affineSupervision, createInlpFitter),
  random: method(randomOptionsSchema, randomSupervision, createRandomFitter, saeHooks),
  word_deletion: method(wordDeletionOptionsSchema, wordDeletionSupervision, createWordDeletionFitter, (o) =>
    o.sae === undefined ? { hooks: [], needSae: false } : { hooks: [o.sae.hook], needSae: true },
  ),
};

/** What a variant name may hold: lower-case letters, digits and underscores. */
export const VARIANT_NAME = /^[a-z0-9_]+$/;

/**
 * The family and variant of a run's method name (`family` or `family@variant`), or why it is not
 * one. The probes `original` and `oracle` take no options, so they have no variants.
 */
export function methodKey(name: string): { family: MethodName; variant: string | undefined } | { error: string } {
  const at = name.indexOf('@');
  if (at < 0) return isMethodName(name) ? { family: name, variant: undefined } : { error: `unknown method "${name}" (known: ${METHOD_NAMES.join(', ')})` };
  const family = name.slice(0, at);
  const variant = name.slice(at + 1);
  if (!isMethodName(family)) {
    return { error: `unknown method family "${family}" in "${name}" (a variant is family@variant; families: ${METHOD_NAMES.join(', ')})` };
  }
  if (family === 'original' || family === 'oracle') {
    return { error: `"${name}": ${family} is a probe the runner trains, with no options, so it has no variants` };
  }
  if (!VARIANT_NAME.test(variant)) {
    return { error: `variant name "${variant}" in "${name}" must be lower-case letters, digits and underscores (e.g. ${family}@gender_only)` };
  }
  return { family, variant };
}

/** A method's options after validation: only `parseMethodOptions` makes these. */
export interface MethodOptions {
  /** The method family, whose schema validated the options and whose fitter runs. */
  readonly method: MethodName;
  /** The run's name for it: the family, or `family@variant`; results and saved erasers go under it. */
  readonly name: string;
  /** The parsed options (schema defaults filled in), as JSON for records. */
  readonly options: Readonly<Record<string, unknown>>;
}

/** Validates a config's options block for `method`, run under `name` (default the family); `where` names it in errors. */
export function parseMethodOptions(method: MethodName, raw: unknown, where: string, name: string = method): MethodOptions {
  const key = methodKey(name);
  if ('error' in key || key.family !== method) throw new Error(`${where}: "${name}" is not a name of method ${method} (${method} or ${method}@variant)`);
  return { method, name, options: parseStrict(METHODS[method].options, raw ?? {}, where) as Record<string, unknown> };
}

/** The fitter of a method with validated options; throws for the probe-only methods. */
export function createFitter(parsed: MethodOptions): EraserFitter {
  const create = METHODS[parsed.method].createFitter;
  if (create === undefined) throw new Error(`method "${parsed.method}" is not an eraser (original and oracle are probes)`);
  return create(parsed.options as never);
}

/** The labels a method with these parsed options reads (what its fitted eraser's `describe()` will say; for original and oracle, their probes'). */
export function methodSupervision(parsed: MethodOptions): Supervision {
  return METHODS[parsed.method].supervision(parsed.options as never);
}

/** Whether a method with these parsed options reads no label of the concept set (so its result does not depend on the set). */
export function isConceptFree(parsed: MethodOptions): boolean {
  return !methodSupervision(parsed).labels.some((l) => l === 'concept_gender' || l === 'concept_task');
}

/** The hooks a method's parsed options name (for checks against the model before a run starts). */
export function namedHooks(parsed: MethodOptions): NamedHooks {
  return METHODS[parsed.method].namedHooks?.(parsed.options as never) ?? { hooks: [], needSae: false };
}
