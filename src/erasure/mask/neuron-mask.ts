/**
 * `neuron_mask`: a learned mask over the neurons (coordinates) of a hook's activation.
 *
 * Edit with gate s `[d]`: x' = s ⊙ x per token. It is linear, so at the probe hook
 * x̄' = s ⊙ x̄ on the cached mean-pooled activations, which is what `erasePooled` and training use.
 */
import { z } from 'zod';
import { tf } from '../../engine/engine.js';
import type { ActivationCache } from '../../cache/cache.js';
import type { HookName } from '../../models/model.js';
import type { FitContext } from '../eraser.js';
import { MaskFitter } from './fitter.js';
import { checkObjectiveFields, MASK_OPTION_FIELDS, maskConfigSchema, NO_KEEP_ERROR_FIELD } from './options.js';
import type { MaskTrainingCallbacks } from './trainer.js';
import { hookWidth, type CheckpointHook, type MaskKind, type UnitFrame, type UnitSpace } from './units.js';
import { parseStrict } from '../../util/schema.js';

const NEURON_MASK_FIELDS = { ...MASK_OPTION_FIELDS, keepError: NO_KEEP_ERROR_FIELD };

/** Options of `neuron_mask` (fields described in options.ts). */
export const neuronMaskOptionsSchema = z.strictObject(NEURON_MASK_FIELDS).superRefine(checkObjectiveFields);

class NeuronUnits implements UnitSpace {
  readonly unitKind = 'neurons' as const;
  readonly variables = {};

  constructor(
    readonly hook: HookName,
    readonly dIn: number,
  ) {}

  get nUnits(): number {
    return this.dIn;
  }

  private pooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D {
    const width = cache.dim(this.hook);
    if (width !== this.dIn) throw new Error(`neuron_mask at ${this.hook}: the cache holds width ${width}, the mask has ${this.dIn} neurons`);
    return cache.pooled(this.hook, rows);
  }

  pooledInputs(cache: ActivationCache, rows: ArrayLike<number>): { raw: tf.Tensor2D; rest: null } {
    return { raw: this.pooled(cache, rows), rest: null };
  }

  frame(): UnitFrame {
    const pooled = (cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D => this.pooled(cache, rows);
    return {
      units: (raw) => raw,
      directions: null,
      constantDirections: true,
      edit: (x, gate) => tf.mul(x, gate) as tf.Tensor3D,
      erasePooled: (cache, rows, gate) => tf.mul(pooled(cache, rows), gate) as tf.Tensor2D,
    };
  }

  freeze(): void {}

  checkpointInfo(): Record<string, unknown> {
    return {};
  }

  savedTensors(): Record<string, tf.Tensor> {
    return {};
  }

  dispose(): void {}
}

export const NEURON_MASK: MaskKind = {
  method: 'neuron_mask',
  config: maskConfigSchema(NEURON_MASK_FIELDS),
  entryFields: {},
  create: (hook: HookName, ctx: FitContext) => new NeuronUnits(hook, hookWidth(ctx, hook)),
  restore: (entry: CheckpointHook) => new NeuronUnits(entry.hook, entry.dIn),
};

/** The `neuron_mask` fitter; `options` are validated against `neuronMaskOptionsSchema` (defaults filled in). */
export function createNeuronMaskFitter(options: z.input<typeof neuronMaskOptionsSchema> = {}, callbacks: MaskTrainingCallbacks = {}): MaskFitter {
  return new MaskFitter(NEURON_MASK, parseStrict(neuronMaskOptionsSchema, options, 'neuron_mask options'), callbacks);
}
