/**
 * The method registry: each method's option schema (validated when a config is read) and the
 * factory of its fitter. `original` and `oracle` are probes, not erasers: the runner trains them
 * itself and they take no options. Adding a method is one file in src/erasure/ and one line here.
 */
import { z } from 'zod';
import { parseStrict } from '../util/schema.js';
import type { EraserFitter, MethodName } from './eraser.js';
import { createSaeMaskFitter, saeMaskOptionsSchema } from './mask/sae-mask.js';
import { createNeuronMaskFitter, neuronMaskOptionsSchema } from './mask/neuron-mask.js';
import { createDasMaskFitter, dasMaskOptionsSchema } from './mask/das-mask.js';
import { createShiftFitter, shiftOptionsSchema, shiftRetrainOptionsSchema } from './shift.js';
import { createRandomFitter, randomOptionsSchema } from './random-ablation.js';
import { createInlpFitter, createLeaceFitter, inlpOptionsSchema, leaceOptionsSchema } from './closed-form.js';
import { createWordDeletionFitter, wordDeletionOptionsSchema } from './word-deletion.js';

interface MethodEntry {
  /** Strict schema of a config's options block (defaults filled in by parsing, except for fields only some settings read: the fitter's). */
  readonly options: z.ZodType;
  /** Makes the fitter from parsed options; absent for the probe-only methods. */
  readonly createFitter?: (options: never) => EraserFitter;
}

function method<S extends z.ZodType>(options: S, createFitter?: (options: z.output<S>) => EraserFitter): MethodEntry {
  return { options, createFitter };
}

const noOptions = z.strictObject({});

export const METHODS: Readonly<Record<MethodName, MethodEntry>> = {
  original: method(noOptions),
  oracle: method(noOptions),
  sae_mask: method(saeMaskOptionsSchema, createSaeMaskFitter),
  neuron_mask: method(neuronMaskOptionsSchema, createNeuronMaskFitter),
  das_mask: method(dasMaskOptionsSchema, createDasMaskFitter),
  shift: method(shiftOptionsSchema, (o) => createShiftFitter('shift', o)),
  shift_retrain: method(shiftRetrainOptionsSchema, (o) => createShiftFitter('shift_retrain', o)),
  leace: method(leaceOptionsSchema, createLeaceFitter),
  inlp: method(inlpOptionsSchema, createInlpFitter),
  random: method(randomOptionsSchema, createRandomFitter),
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
