/**
 * Erased mean-pooled representations at the probe hook, the one place that decides how: texts
 * edited before tokenisation are re-cached, erasers at the probe hook map cached pooled values
 * directly (`erasePooled`), and anything upstream runs the model with the eraser's edits (on ONNX
 * Runtime through `graphEdits()` when the executor choice allows, else on tfjs through `edits()`).
 */
import type { ActivationCache } from '../cache/cache.js';
import type { tf } from '../engine/engine.js';
import { pooledWithEditsOnExecutor } from '../models/pool.js';
import type { Eraser, FitContext, LabelledSplit } from './eraser.js';

/** What computing erased representations needs of a fit context. */
export type ErasedInputs = Pick<FitContext, 'cache' | 'recache' | 'model' | 'tokenize' | 'probeHook' | 'batchSize'>;

/** Pooled representations `[split size, d]` at the probe hook after `eraser` (none: the cache's). */
export async function erasedPooled(eraser: Eraser | undefined, split: LabelledSplit, ctx: ErasedInputs): Promise<tf.Tensor2D> {
  if (eraser === undefined) return ctx.cache.pooled(ctx.probeHook, split.rows);
  if (eraser.editTexts !== undefined) {
    const edited = eraser.editTexts(split.texts);
    const cache: ActivationCache = await ctx.recache(edited);
    const rowOf = new Map(edited.map((t, i) => [t, i]));
    return cache.pooled(
      ctx.probeHook,
      Int32Array.from(edited, (t) => rowOf.get(t)!),
    );
  }
  const fast = eraser.erasePooled(ctx.cache, split.rows);
  if (fast !== undefined) return fast;
  // The eraser acts upstream of the probe hook: run the model with its edits (on ONNX Runtime where
  // the model and the edits have an ONNX form, as chooseExecutor decides).
  return pooledWithEditsOnExecutor(ctx.model, ctx.tokenize, split.texts, ctx.probeHook, eraser.edits(), eraser.graphEdits?.(), {
    batchSize: ctx.batchSize,
    label: `${eraser.method}: erased activations`,
  });
}
