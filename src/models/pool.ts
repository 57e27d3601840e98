/**
 * Mean pooling over real tokens: pooled[b] = sum_t mask[b,t] x[b,t] / sum_t mask[b,t].
 * The original SHIFT-style code summed over padded positions too; we never do.
 */
import { tf } from '../engine/engine.js';
import { progress } from '../util/progress.js';
import type { Batch, Edit, HookName, Model } from './model.js';

/** `acts [n, seq, d]`, `mask [n, seq]` (0/1, any numeric dtype) -> `[n, d]`. */
export function meanPool(acts: tf.Tensor3D, mask: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const m = tf.cast(mask, 'float32');
    const summed = tf.sum(tf.mul(acts, tf.expandDims(m, 2)), 1);
    const counts = tf.maximum(tf.sum(m, 1, true), 1);
    return tf.div(summed, counts) as tf.Tensor2D;
  });
}

/**
 * Mean-pooled activations `[n, d]` at `hook` of one forward pass over `batch` with `edits`, which
 * stops at `hook`. Differentiable; intermediates belong to the caller's scope.
 */
export function pooledForward(model: Model, batch: Batch, hook: HookName, edits: Readonly<Record<HookName, Edit>> = {}): tf.Tensor2D {
  const { captures } = model.run(batch, { capture: [hook], edits, stopAfter: hook });
  const acts = captures[hook];
  if (acts === undefined) throw new Error(`the model returned no activation at hook "${hook}"`);
  return meanPool(acts, batch.attentionMask);
}

export interface PooledRunOptions {
  batchSize?: number;
  /** Progress label; default "pooled activations". */
  label?: string;
}

/**
 * Mean-pooled activations `[texts.length, d]` at `hook` of a forward pass with `edits`, in batches
 * (for representations that the cache cannot give, such as the effect of upstream edits).
 */
export function pooledWithEdits(
  model: Model,
  tokenize: (texts: string[]) => Batch,
  texts: readonly string[],
  hook: HookName,
  edits: Readonly<Record<HookName, Edit>>,
  options: PooledRunOptions = {},
): tf.Tensor2D {
  const batchSize = options.batchSize ?? 16;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`pooledWithEdits: batchSize must be a positive integer, got ${batchSize}`);
  if (texts.length === 0) throw new Error('pooledWithEdits: no texts');
  const d = model.config.dModel;
  const out = new Float32Array(texts.length * d);
  const bar = progress(options.label ?? 'pooled activations', texts.length, 'ex');
  for (let start = 0; start < texts.length; start += batchSize) {
    const chunk = texts.slice(start, start + batchSize);
    const batch = tokenize([...chunk]);
    try {
      const pooled = tf.tidy(() => pooledForward(model, batch, hook, edits));
      out.set(pooled.dataSync() as Float32Array, start * d);
      pooled.dispose();
    } finally {
      tf.dispose([batch.inputIds, batch.attentionMask]);
    }
    bar.tick(chunk.length);
  }
  bar.done();
  return tf.tensor2d(out, [texts.length, d]);
}
