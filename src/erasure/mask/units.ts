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
 *
 * The same edits as ONNX nodes (`unitGraphEdit`, for evaluation passes on ONNX Runtime) follow
 * from this formula and what a frozen space exposes: the gate, `UnitFrame.directions` and, for SAE
 * features, `UnitSpace.saeUnits`.
 */
import type { z } from 'zod';
import type { tf } from '../../engine/engine.js';
import type { ActivationCache } from '../../cache/cache.js';
import type { RawTensor } from '../../io/safetensors.js';
import { valuesOf } from '../../models/graphs.js';
import type { HookName } from '../../models/model.js';
import { int, type OnnxGraph } from '../../onnx/graph.js';
import { flattenTokens, unflattenTokens } from '../../onnx/ops.js';
import { graphSae, weightedFeatureNodes } from '../ablate.js';
import type { EraserSae, FitContext } from '../eraser.js';
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

/** What the ONNX form of an SAE-feature edit needs besides the gate. */
export interface SaeUnitsSource {
  /** The SAE whose features are the units: its encoder gives a(x), its decoder rows the v_j. */
  readonly sae: EraserSae;
  /** Whether the edit keeps the SAE error (rest = b_dec + error(x), else b_dec). */
  readonly keepError: boolean;
}

/** The units of one hook, with any trainable parameters besides the mask (the DAS directions). */
export interface UnitSpace {
  readonly hook: HookName;
  readonly nUnits: number;
  readonly dIn: number;
  readonly unitKind: UnitKind;
  /**
   * sae_features: the SAE and keepError, for the edit's ONNX form (`unitGraphEdit`); SAE units
   * without it have no ONNX form (their passes run on tfjs). Unused by other kinds.
   */
  readonly saeUnits?: SaeUnitsSource;
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

/**
 * `frame.edit(x, gate)` as ONNX nodes, `x [n, seq, d]` -> x' (the header's formula per kind, with
 * s = `gate` `[units]`):
 *   neurons  x' = s ⊙ x
 *   DAS      x' = x - ((x V^T) ⊙ (1 - s)) V                       V = frame.directions `[k, d]`
 *   SAE      x' = x - sum_{j: s_j != 1} (1 - s_j) f_j(x) v_j       (keepError)
 *            x' = b_dec + sum_{j: s_j != 0} s_j f_j(x) v_j          (without)
 * The SAE forms are decode(s ⊙ f) + error(x) and decode(s ⊙ f) regrouped so that only features
 * whose gate changes the result are encoded (with a hard gate and keepError, the removed ones; see
 * `weightedFeatureNodes`). Undefined when the units have no ONNX form (SAE units without
 * `saeUnits`, or an SAE that is not an `AffineSae`).
 */
export function unitGraphEdit(space: UnitSpace, frame: UnitFrame, gate: tf.Tensor1D): ((g: OnnxGraph, x: string) => string) | undefined {
  const s = valuesOf(gate);
  const d = space.dIn;
  switch (space.unitKind) {
    case 'neurons':
      return (g, x) => g.op('Mul', [x, g.constant('neuron_gate', s, [d])]);
    case 'directions': {
      if (frame.directions === null) throw new Error(`internal: ${space.hook}: directions units without directions`);
      const rows = valuesOf(frame.directions);
      const k = rows.length / d;
      const closed = Float32Array.from(s, (sj) => 1 - sj);
      return (g, x) => {
        const flat = flattenTokens(g, x, d);
        const basis = g.constant('das_directions', rows, [k, d]);
        const removed = g.op('Mul', [g.op('Gemm', [flat, basis], { transB: int(1) }), g.constant('das_closed', closed, [k])]);
        return unflattenTokens(g, g.op('Sub', [flat, g.op('MatMul', [removed, basis])]), x, d);
      };
    }
    case 'sae_features': {
      const source = space.saeUnits;
      const sae = source === undefined ? undefined : graphSae(source.sae);
      if (source === undefined || sae === undefined) return undefined;
      const { keepError } = source;
      // keepError: the features with s_j != 1, weighted 1 - s_j (removed from x); else those with s_j != 0, weighted s_j.
      const features = Int32Array.from(Array.from(s.keys()).filter((j) => (keepError ? s[j] !== 1 : s[j] !== 0)));
      const weights = Float32Array.from(features, (j) => (keepError ? 1 - s[j]! : s[j]!));
      return (g, x) => {
        if (keepError && features.length === 0) return x;
        const flat = flattenTokens(g, x, d);
        if (keepError) return unflattenTokens(g, g.op('Sub', [flat, weightedFeatureNodes(g, sae, flat, features, weights)]), x, d);
        const bDec = g.constant('sae_b_dec', valuesOf(sae.bDec), [d]);
        const kept =
          features.length === 0 ? g.op('Expand', [bDec, g.op('Shape', [flat])]) : g.op('Add', [weightedFeatureNodes(g, sae, flat, features, weights), bDec]);
        return unflattenTokens(g, kept, x, d);
      };
    }
  }
}
