/**
 * `neuron_mask`: a learned mask over the neurons (coordinates) of a hook's activation (the gate,
 * objectives and training are in mask.ts).
 *
 * Edit with gate s `[d]`: x' = s ⊙ x per token. It is linear, so at the probe hook
 * x̄' = s ⊙ x̄ on the cached mean-pooled activations, which is what `erasePooled` and training use.
 */
import { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import type { HookName } from '../models/model.js';
import type { FitContext } from './eraser.js';
import {
  MaskEraser,
  type CheckpointHook,
  type CheckpointTensors,
  type MaskEraserHooks,
  type MaskKind,
  type MaskLoadTarget,
  type UnitFrame,
  type UnitSpace,
} from './mask.js';

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

/** The width of a hook: the cache's when it holds the hook, else the model's. */
export function hookWidth(ctx: FitContext, hook: HookName): number {
  return ctx.cache.hooks.includes(hook) ? ctx.cache.dim(hook) : ctx.model.config.dModel;
}

const NEURON_MASK: MaskKind = {
  method: 'neuron_mask',
  create: (hook: HookName, ctx: FitContext) => new NeuronUnits(hook, hookWidth(ctx, hook)),
  restore: (entry: CheckpointHook, _file: CheckpointTensors, _target: MaskLoadTarget) => new NeuronUnits(entry.hook, entry.dIn),
};

/** The `neuron_mask` eraser; `defaults` are option defaults under the config's (see mask.ts). */
export function neuronMaskEraser(defaults: Readonly<Record<string, unknown>> = {}, hooks: MaskEraserHooks = {}): MaskEraser {
  return new MaskEraser(NEURON_MASK, defaults, hooks);
}

/** Loads a `neuron_mask` checkpoint; `target.hooks` / `target.probeHook`, when given, must match. */
export function loadNeuronMaskEraser(dir: string, target: MaskLoadTarget = {}): MaskEraser {
  return new MaskEraser(NEURON_MASK).loadFrom(dir, target);
}
