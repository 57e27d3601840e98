/**
 * Row sources: where the masked representations x' of a split's rows come from during training.
 *
 *  - `PooledSource` (the only masked hook is the probe hook): the cache's mean-pooled values at
 *    the probe hook; the edit commutes with mean pooling, so x̄' = sum_j s_j ā_j v_j + rest̄ and
 *    the model never runs.
 *  - `ModelSource` (a masked hook upstream of the probe hook): the model runs on the batch with the
 *    masks as edits, under autograd, and the probe hook is mean-pooled over real tokens.
 */
import { tf } from '../../engine/engine.js';
import type { ActivationCache } from '../../cache/cache.js';
import type { Edit, HookName } from '../../models/model.js';
import { pooledForward } from '../../models/pool.js';
import type { FitContext } from '../eraser.js';
import { ExplicitRep, FactoredRep, type Represented } from './representation.js';
import type { UnitFrame, UnitSpace } from './units.js';

/** Gates and frames of every masked hook for one step. */
export interface StepView {
  gates: Map<HookName, tf.Tensor1D>;
  frames: Map<HookName, UnitFrame>;
}

/** Makes masked representations of rows of one split. */
export interface RowSource {
  readonly n: number;
  /** Unit directions shared by every representation this source makes (fixed during training), or null. */
  fixedDirections(view: StepView): tf.Tensor2D | null;
  represent(positions: ArrayLike<number>, view: StepView): Represented;
}

/** Pooled path: rows of the activation cache at the probe hook. */
export class PooledSource implements RowSource {
  constructor(
    private readonly cache: ActivationCache,
    private readonly space: UnitSpace,
    private readonly cacheRows: Int32Array,
  ) {}

  get n(): number {
    return this.cacheRows.length;
  }

  fixedDirections(view: StepView): tf.Tensor2D | null {
    const frame = view.frames.get(this.space.hook)!;
    return frame.constantDirections ? frame.directions : null;
  }

  represent(positions: ArrayLike<number>, view: StepView): Represented {
    const rows = Array.from(positions, (p) => this.cacheRows[p]!);
    const { raw, rest } = this.space.pooledInputs(this.cache, rows);
    const frame = view.frames.get(this.space.hook)!;
    const sa = tf.mul(frame.units(raw), view.gates.get(this.space.hook)!) as tf.Tensor2D;
    const own = frame.rest?.(raw);
    const allRest = own === undefined ? rest : rest === null ? own : (tf.add(rest, own) as tf.Tensor2D);
    return new FactoredRep(sa, allRest, frame.directions, frame.constantDirections);
  }
}

/** Model path: run the model with the masks as edits and mean-pool the probe hook. */
export class ModelSource implements RowSource {
  constructor(
    private readonly ctx: Pick<FitContext, 'model' | 'tokenize' | 'probeHook'>,
    private readonly texts: readonly string[],
    private readonly spaces: readonly UnitSpace[],
  ) {}

  get n(): number {
    return this.texts.length;
  }

  fixedDirections(): null {
    return null;
  }

  represent(positions: ArrayLike<number>, view: StepView): Represented {
    const batch = this.ctx.tokenize(Array.from(positions, (p) => this.texts[p]!));
    const edits: Record<HookName, Edit> = {};
    for (const s of this.spaces) {
      const frame = view.frames.get(s.hook)!;
      const gate = view.gates.get(s.hook)!;
      edits[s.hook] = (x) => frame.edit(x, gate);
    }
    return new ExplicitRep(pooledForward(this.ctx.model, batch, this.ctx.probeHook, edits));
  }
}
