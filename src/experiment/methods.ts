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
  /** Defaults under the config's options. */
  defaults: Options;
  /**
   * The runner owns the option `retrainHead` (default true) for this method: it strips it from the
   * eraser's options and retrains the probe head on erased ambiguous-train data itself.
   */
  runnerRetrains?: boolean;
}

const registry: Partial<Record<MethodName, MethodEntry>> = {
  // Closed-form erasers remove a subspace; a head retrained on erased data is how they are evaluated.
  leace: { create: leaceEraser, defaults: {}, runnerRetrains: true },
  inlp: { create: inlpEraser, defaults: {}, runnerRetrains: true },
  // Learned masks read options from the fit context; the concept objective retrains the head itself.
  sae_mask: { create: () => saeMaskEraser(), defaults: {} },
  neuron_mask: { create: () => neuronMaskEraser(), defaults: {} },
  das_mask: { create: () => dasMaskEraser(), defaults: {} },
  // SHIFT and its controls read their options from the fit context.
  shift: { create: () => createShiftEraser('shift'), defaults: {} },
  shift_retrain: { create: () => createShiftEraser('shift_retrain'), defaults: {} },
  random: { create: () => createRandomAblationEraser(), defaults: {} },
  word_deletion: { create: () => createWordDeletionEraser(), defaults: {}, runnerRetrains: true },
};

/**
 * The options a method's eraser runs with (its defaults overridden by the config's), and whether
 * the runner retrains the probe head for it.
 */
export function methodOptions(method: MethodName, configured: Options): { eraser: Options; runnerRetrainsHead: boolean } {
  const entry = registry[method];
  const { retrainHead, ...rest } = { ...(entry?.defaults ?? {}), ...configured };
  if (entry?.runnerRetrains === true) {
    if (retrainHead !== undefined && typeof retrainHead !== 'boolean') throw new Error(`${method}: option "retrainHead" must be true or false`);
    return { eraser: rest, runnerRetrainsHead: retrainHead !== false };
  }
  return { eraser: retrainHead === undefined ? rest : { ...rest, retrainHead }, runnerRetrainsHead: false };
}

export function createEraser(method: MethodName, options: Options): Eraser {
  const entry = registry[method];
  if (entry === undefined) throw new Error(`method "${method}" is not an eraser (original and oracle are probes)`);
  return entry.create(options);
}
