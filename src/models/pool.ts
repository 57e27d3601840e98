/**
 * Mean pooling over real tokens: pooled[b] = sum_t mask[b,t] x[b,t] / sum_t mask[b,t].
 * The original SHIFT-style code summed over padded positions too; we never do.
 *
 * Pooled values of a forward pass with edits run on tfjs (`pooledWithEdits`) or, where the edits
 * have an ONNX form, on ONNX Runtime (`pooledWithEditsOnExecutor`, mean pooling by `meanPoolNodes`).
 */
import { tf } from '../engine/engine.js';
import { meanPoolNodes } from '../onnx/ops.js';
import { progress } from '../util/progress.js';
import { chooseExecutor, OnnxForward, type ExecutorName } from './executor.js';
import type { Batch, Edit, GraphEdit, HookName, Model } from './model.js';

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
 * The batches of a pooled run over `texts`, with the options checked: each batch's texts and their
 * rows in `texts`. Texts are batched by length (a cheap proxy for token count, as the activation
 * cache does) so that little work goes to padding; each row is independent of its neighbours.
 */
function batchesOf(texts: readonly string[], options: PooledRunOptions, what: string): { rows: number[]; texts: string[] }[] {
  const batchSize = options.batchSize ?? 16;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`${what}: batchSize must be a positive integer, got ${batchSize}`);
  if (texts.length === 0) throw new Error(`${what}: no texts`);
  const order = lengthOrder(texts);
  return Array.from({ length: Math.ceil(texts.length / batchSize) }, (_, i) => {
    const rows = order.slice(i * batchSize, (i + 1) * batchSize);
    return { rows, texts: rows.map((r) => texts[r]!) };
  });
}

/** Indices of `texts` shortest first (text length: a cheap proxy for token count), for batches with little padding. */
export function lengthOrder(texts: readonly string[]): number[] {
  return Array.from(texts.keys()).sort((a, b) => texts[a]!.length - texts[b]!.length);
}

/** Writes a batch's pooled values `[rows.length, d]` to their rows of `out`. */
export function scatterRows(out: Float32Array, values: Float32Array, rows: readonly number[], d: number): void {
  rows.forEach((r, i) => out.set(values.subarray(i * d, (i + 1) * d), r * d));
}

/**
 * Mean-pooled activations `[texts.length, d]` at `hook` of a forward pass with `edits`, in batches
 * (for representations that the cache cannot give, such as the effect of upstream edits), on tfjs.
 */
export function pooledWithEdits(
  model: Model,
  tokenize: (texts: string[]) => Batch,
  texts: readonly string[],
  hook: HookName,
  edits: Readonly<Record<HookName, Edit>>,
  options: PooledRunOptions = {},
): tf.Tensor2D {
  const d = model.config.dModel;
  const batches = batchesOf(texts, options, 'pooledWithEdits');
  const out = new Float32Array(texts.length * d);
  const bar = progress(options.label ?? 'pooled activations', texts.length, 'ex');
  for (const chunk of batches) {
    const batch = tokenize(chunk.texts);
    try {
      const pooled = tf.tidy(() => pooledForward(model, batch, hook, edits));
      scatterRows(out, pooled.dataSync() as Float32Array, chunk.rows, d);
      pooled.dispose();
    } finally {
      tf.dispose([batch.inputIds, batch.attentionMask]);
    }
    bar.tick(chunk.texts.length);
  }
  bar.done();
  return tf.tensor2d(out, [texts.length, d]);
}

export interface EditedPassOptions extends PooledRunOptions {
  /** The executor to run on (default: `chooseExecutor`'s choice, and tfjs when the edits have no ONNX form). */
  executor?: ExecutorName;
}

/** The graph output of `pooledWithEditsOnExecutor`'s graph. */
const POOLED = 'pooled';

/**
 * `pooledWithEdits` on either executor: on ONNX Runtime, one graph (the forward pass with
 * `graphEdits`, the ONNX form of `edits`, then mean pooling at `hook`) is built and loaded once for
 * all batches, so only pooled values leave the runtime, and its session is released at the end.
 * Runs on ONNX Runtime when `chooseExecutor` picks it and the edits have an ONNX form
 * (`graphEdits` given); asking for ONNX (`options.executor`) when they have none is an error, as
 * it is for a model without one. As `pooledForward`, the pass stops at `hook`: an edit after it is
 * refused.
 */
export async function pooledWithEditsOnExecutor(
  model: Model,
  tokenize: (texts: string[]) => Batch,
  texts: readonly string[],
  hook: HookName,
  edits: Readonly<Record<HookName, Edit>>,
  graphEdits: Readonly<Record<HookName, GraphEdit>> | undefined,
  options: EditedPassOptions = {},
): Promise<tf.Tensor2D> {
  const executor = chooseExecutor(model, options.executor, graphEdits === undefined ? 'these edits have no ONNX form' : undefined);
  if (executor === 'tfjs' || graphEdits === undefined) return pooledWithEdits(model, tokenize, texts, hook, edits, options);
  checkEditsUpTo(model, hook, Object.keys(graphEdits));
  const d = model.config.dModel;
  const batches = batchesOf(texts, options, 'pooledWithEditsOnExecutor');
  const out = new Float32Array(texts.length * d);
  const forward = await OnnxForward.create(
    model,
    [hook],
    (g, values, inputs) => g.output(POOLED, meanPoolNodes(g, values[hook]!, inputs.attentionMask), 'float32', ['batch', d]),
    `pooled-with-edits:${hook}`,
    { edits: graphEdits },
  );
  const bar = progress(options.label ?? 'pooled activations', texts.length, 'ex');
  try {
    for (const chunk of batches) {
      const batch = tokenize(chunk.texts);
      try {
        scatterRows(out, (await forward.run(batch))[POOLED]!.data as Float32Array, chunk.rows, d);
      } finally {
        tf.dispose([batch.inputIds, batch.attentionMask]);
      }
      bar.tick(chunk.texts.length);
    }
  } finally {
    await forward.dispose();
  }
  bar.done();
  return tf.tensor2d(out, [texts.length, d]);
}

/** Refuses edits after `hook`, as `Model.run` with `stopAfter: hook` does (such an edit could not change the pooled values). */
function checkEditsUpTo(model: Model, hook: HookName, edited: readonly HookName[]): void {
  const at = model.hookNames.indexOf(hook);
  if (at < 0) throw new Error(`unknown hook "${hook}": the model's hooks are ${model.hookNames.join(', ')}`);
  const late = edited.filter((h) => model.hookNames.indexOf(h) > at);
  if (late.length > 0) throw new Error(`hooks ${late.map((h) => `"${h}"`).join(', ')} come after stopAfter "${hook}" and would never run`);
}
