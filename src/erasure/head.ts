/**
 * Retraining the probe head on erased representations, for every method that does (closed-form
 * erasers, word deletion, the concept-objective masks, SHIFT + retrain): one recipe, the biased
 * probe's own training options (when it is a LinearProbe) with per-method overrides, and one way to
 * attach the head to an eraser (`withHead`), which the checkpoint saves as `head.safetensors`.
 */
import { z } from 'zod';
import type { ActivationCache } from '../cache/cache.js';
import type { tf } from '../engine/engine.js';
import type { Edit, GraphEdit, HookName } from '../models/model.js';
import { LinearProbe, type LinearProbeOptions } from '../probe/linear.js';
import type { Probe } from '../probe/probe.js';
import { erasedPooled } from './erased.js';
import { withLabels, type CheckpointContent, type Eraser, type EraserDescription, type FitContext } from './eraser.js';

/** The `retrainHead` option of the methods that retrain by default (closed-form erasers, word deletion). */
export const retrainHeadOption = z
  .boolean()
  .default(true)
  .describe(
    "Retrain the probe head on the erased ambiguous training set (word deletion: the edited texts), with the biased probe's training options; false keeps the biased probe. Default true.",
  );

/**
 * Trains a new linear probe on `eraser`'s erased representations of the training split, with the
 * biased probe's training options (LinearProbe; defaults otherwise) overridden by `overrides`.
 */
export async function retrainHead(eraser: Eraser, ctx: FitContext, overrides: LinearProbeOptions = {}): Promise<Probe> {
  const X = await erasedPooled(eraser, ctx.train, ctx);
  try {
    const inherited: LinearProbeOptions = ctx.probe instanceof LinearProbe ? { ...ctx.probe.options, progressLabel: undefined } : {};
    const probe = new LinearProbe(X.shape[1], ctx.probe.nClasses, { ...inherited, ...overrides });
    try {
      probe.fit(X, ctx.train.y);
    } catch (err) {
      probe.dispose();
      throw err;
    }
    return probe;
  } finally {
    X.dispose();
  }
}

/** `inner` with a retrained head; owns both (dispose frees both). */
class HeadedEraser implements Eraser {
  readonly method;
  readonly editTexts?: (texts: readonly string[]) => string[];

  constructor(
    readonly inner: Eraser,
    readonly head: Probe,
  ) {
    this.method = inner.method;
    if (inner.editTexts !== undefined) this.editTexts = (texts) => inner.editTexts!(texts);
  }

  edits(): Record<HookName, Edit> {
    return this.inner.edits();
  }

  graphEdits(): Record<HookName, GraphEdit> | undefined {
    return this.inner.graphEdits?.();
  }

  erasePooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D | undefined {
    return this.inner.erasePooled(cache, rows);
  }

  describe(): EraserDescription {
    const d = this.inner.describe();
    // The head is trained on the ambiguous split's task labels.
    return {
      ...d,
      supervision: withLabels(d.supervision, 'ambiguous_task'),
      summary: `${d.summary}; probe head retrained on the erased ambiguous training set`,
    };
  }

  checkpoint(): CheckpointContent {
    return this.inner.checkpoint();
  }

  dispose(): void {
    this.inner.dispose();
    this.head.dispose();
  }
}

/** Attaches `head` to `eraser` (which must have none); the result owns both. */
export function withHead(eraser: Eraser, head: Probe | undefined): Eraser {
  if (head === undefined) return eraser;
  if (eraser.head !== undefined) throw new Error(`${eraser.method}: the eraser already has a head`);
  return new HeadedEraser(eraser, head);
}

/** The eraser under a retrained head (`eraser` itself when `withHead` gave it none), for method-specific accessors. */
export function withoutHead(eraser: Eraser): Eraser {
  return eraser instanceof HeadedEraser ? eraser.inner : eraser;
}
