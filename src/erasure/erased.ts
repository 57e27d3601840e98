/**
 * Erased mean-pooled representations at the probe hook, the one place that decides how: texts
 * edited before tokenisation are re-cached, erasers at the probe hook map cached pooled values
 * directly (`erasePooled`), and anything upstream runs the model with the eraser's edits (on ONNX
 * Runtime through `graphEdits()` when the executor choice allows, else on tfjs through `edits()`).
 */
import type { ActivationCache } from '../cache/cache.js';
import { tf } from '../engine/engine.js';
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

/**
 * `erasedPooled` for several splits at once: one call over their distinct texts (the splits may
 * share bios), so an eraser that runs the model or re-caches edited texts does so once, with one
 * ONNX session, rather than once per split. Returns one tensor per split, in order.
 */
export async function erasedPooledSplits(eraser: Eraser | undefined, splits: readonly LabelledSplit[], ctx: ErasedInputs): Promise<tf.Tensor2D[]> {
  const index = new Map<string, number>();
  const rows: number[] = [];
  const texts: string[] = [];
  const positions = splits.map((split) =>
    Int32Array.from(split.texts, (text, i) => {
      let at = index.get(text);
      if (at === undefined) {
        at = texts.length;
        index.set(text, at);
        texts.push(text);
        rows.push(split.rows[i]!);
      }
      return at;
    }),
  );
  // Labels play no part in erasing; the union carries none.
  const union: LabelledSplit = { rows: Int32Array.from(rows), texts, y: new Int32Array(texts.length), z: new Int32Array(texts.length) };
  const all = await erasedPooled(eraser, union, ctx);
  try {
    return positions.map((at) => tf.gather(all, at));
  } finally {
    all.dispose();
  }
}
