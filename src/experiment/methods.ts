/**
 * Method name -> Eraser factory and default options. `original` and `oracle` are probes, not
 * erasers: the runner handles them itself. Adding a method is one file in src/erasure/ and one
 * line here.
 */
import type { Eraser, MethodName } from '../erasure/eraser.js';
import { inlpEraser, leaceEraser } from '../erasure/closed-form.js';
import { createShiftEraser } from '../erasure/shift.js';
import { createRandomAblationEraser } from '../erasure/random-ablation.js';
import { createWordDeletionEraser } from '../erasure/word-deletion.js';
import { saeMaskEraser } from '../erasure/sae-mask.js';
import { neuronMaskEraser } from '../erasure/neuron-mask.js';
import { dasMaskEraser } from '../erasure/das-mask.js';

type Options = Readonly<Record<string, unknown>>;

interface MethodEntry {
  create: (options: Options) => Eraser;
  /** Defaults under the config's options. `retrainHead`: the runner retrains the probe head on erased ambiguous-train data. */
  defaults: Options;
}

const registry: Partial<Record<MethodName, MethodEntry>> = {
  // Closed-form erasers remove a subspace; a head retrained on erased data is how they are evaluated.
  leace: { create: leaceEraser, defaults: { retrainHead: true } },
  inlp: { create: inlpEraser, defaults: { retrainHead: true } },
  // Learned masks read options from the fit context; the concept objective retrains the head itself.
  sae_mask: { create: () => saeMaskEraser(), defaults: {} },
  neuron_mask: { create: () => neuronMaskEraser(), defaults: {} },
  das_mask: { create: () => dasMaskEraser(), defaults: {} },
  // SHIFT and its controls read their options from the fit context.
  shift: { create: () => createShiftEraser('shift'), defaults: {} },
  shift_retrain: { create: () => createShiftEraser('shift_retrain'), defaults: {} },
  random: { create: () => createRandomAblationEraser(), defaults: {} },
  word_deletion: { create: () => createWordDeletionEraser(), defaults: { retrainHead: true } },
};

/** The options a method runs with: its defaults overridden by the config's. */
export function methodOptions(method: MethodName, configured: Options): Options {
  return { ...(registry[method]?.defaults ?? {}), ...configured };
}

export function createEraser(method: MethodName, options: Options): Eraser {
  const entry = registry[method];
  if (entry === undefined) throw new Error(`method "${method}" is not an eraser (original and oracle are probes)`);
  return entry.create(options);
}
