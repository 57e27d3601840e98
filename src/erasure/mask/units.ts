/**
 * Units: what a learned mask gates. One logit per unit j at each masked hook, and every method's
 * edit is linear in the unit activations a_j(x) along unit directions v_j:
 *
 *   x' = sum_j s_j a_j(x) v_j + rest(x)
 *
 *   SAE      a = encode(x), v_j = decoder row j, rest = b_dec + error(x)  (x' = decode(s ⊙ f) + err)
 *   neurons  a = x,         v_j = e_j,            rest = 0                (x' = s ⊙ x)
 *   DAS      a = U^T x,     v_j = column j of U,  rest = x - U U^T x      (x' = x - U diag(1 - s) U^T x)
 *
 * with s the gate (gate.ts). The edit is linear per token, so mean pooling commutes with it:
 * x̄' = sum_j s_j ā_j v_j + rest̄, which is what training and `erasePooled` compute from the
 * cached mean-pooled values at the probe hook. The method files (sae-mask.ts, neuron-mask.ts,
 * das-mask.ts) implement `UnitSpace` and supply a `MaskKind`.
 */
import type { z } from 'zod';
import type { tf } from '../../engine/engine.js';
import type { ActivationCache } from '../../cache/cache.js';
import type { RawTensor } from '../../io/safetensors.js';
import type { HookName } from '../../models/model.js';
import type { FitContext } from '../eraser.js';
import type { LoadTarget } from '../checkpoint.js';
import type { MaskConfig, MaskConfigSchema, MaskMethod } from './options.js';

export type UnitKind = 'sae_features' | 'neurons' | 'directions';

/** The per-step view of a unit space; tensors it creates belong to the caller's tidy scope. */
export interface UnitFrame {
  /** Unit activations of inputs `raw [B, rawWidth]` (pooled or per token): SAE f, neurons x, DAS x U. */
  units(raw: tf.Tensor2D): tf.Tensor2D;
  /** Unit directions `[units, d]` (rows v_j), or null for the standard basis (neurons). */
  readonly directions: tf.Tensor2D | null;
  /** Whether `directions` stays fixed during training (so head weights folded into it can be cached). */
  readonly constantDirections: boolean;
  /**
   * The part of rest(x) that depends on the units' own parameters, for inputs `raw` (DAS:
   * x - U U^T x, the complement of the learned subspace), added to the cached rest; absent when
   * rest(x) is all in `pooledInputs`.
   */
  rest?(raw: tf.Tensor2D): tf.Tensor2D;
  /** The token-level edit `x [n, seq, d] -> x'` with gate `[units]`. */
  edit(x: tf.Tensor3D, gate: tf.Tensor1D): tf.Tensor3D;
  /** Erased mean-pooled values `[rows, d]` of cache rows at the hook, with gate `[units]`. */
  erasePooled(cache: ActivationCache, rows: ArrayLike<number>, gate: tf.Tensor1D): tf.Tensor2D;
}

/** The units of one hook, with any trainable parameters besides the mask (the DAS directions). */
export interface UnitSpace {
  readonly hook: HookName;
  readonly nUnits: number;
  readonly dIn: number;
  readonly unitKind: UnitKind;
  /** Trainable tensors other than the mask logits (the DAS directions' parameter), by name. */
  readonly variables: Readonly<Record<string, tf.Variable>>;
  /** Pooled inputs of cache rows: `raw [rows, rawWidth]` and the gate-independent `rest [rows, d]` (null for 0). */
  pooledInputs(cache: ActivationCache, rows: ArrayLike<number>): { raw: tf.Tensor2D; rest: tf.Tensor2D | null };
  frame(): UnitFrame;
  /** Fixes the trained parameters so that `frame()` creates no tensors any more (for application). */
  freeze(): void;
  /** Extra fields of the hook's checkpoint entry (for example the SAE width). */
  checkpointInfo(): Record<string, unknown>;
  /** Tensors to save besides the mask logits, by name (saved as `<hook>.<name>`); tf.Tensors are the caller's. */
  savedTensors(): Record<string, tf.Tensor | RawTensor>;
  dispose(): void;
}

/** One hook's entry in a checkpoint's `hooks` list. */
export interface CheckpointHook {
  hook: HookName;
  units: number;
  dIn: number;
  [extra: string]: unknown;
}

/** Tensors of a checkpoint, read by name with clear errors. */
export interface CheckpointTensors {
  /** The tensor file (eraser.safetensors). */
  readonly path: string;
  /** The checkpoint's eraser.json, for messages about its fields. */
  readonly jsonPath: string;
  float32(name: string, shape: readonly number[]): Float32Array;
}

/** What a method supplies to the shared fitter, eraser and checkpoint. */
export interface MaskKind {
  readonly method: MaskMethod;
  /** The schema of the trainer config a checkpoint stores as `options` (options.ts `maskConfigSchema`). */
  readonly config: MaskConfigSchema;
  /** The fields of a checkpoint's hook entry besides `hook`, `units` and `dIn` (what `UnitSpace.checkpointInfo` writes). */
  readonly entryFields: Readonly<Record<string, z.ZodType>>;
  /** The units at a hook, fresh for fitting. */
  create(hook: HookName, ctx: FitContext, config: MaskConfig): UnitSpace;
  /** The units at a hook from a checkpoint. */
  restore(entry: CheckpointHook, file: CheckpointTensors, target: LoadTarget, config: MaskConfig): UnitSpace;
}

/** The width of a hook: the cache's when it holds the hook, else the model's. */
export function hookWidth(ctx: FitContext, hook: HookName): number {
  return ctx.cache.hooks.includes(hook) ? ctx.cache.dim(hook) : ctx.model.config.dModel;
}
