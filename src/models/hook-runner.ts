/**
 * The hook machinery a model's forward pass runs through: it validates the run options once,
 * decides where the pass may stop, and at each hook point applies the edit (if any) and records the
 * capture (if asked). Architectures call `needs(hook)` before computing a hook's inputs and
 * `at(hook, value)` after, so a pass never computes more than the options require.
 */
import { tf } from '../engine/engine.js';
import { parseHook, type Edit, type HookName, type ForwardOptions } from './model.js';
import { maxOf } from '../util/arrays.js';

export class HookRunner {
  readonly captures: Record<HookName, tf.Tensor3D> = {};
  /** Index in `hookNames` of the last hook the pass computes (-1: nothing). */
  readonly stopIndex: number;
  readonly wantLogits: boolean;
  private readonly index: ReadonlyMap<HookName, number>;
  private readonly capture: ReadonlySet<HookName>;
  private readonly edits: Readonly<Record<HookName, Edit>>;

  constructor(hookNames: readonly HookName[], nLayers: number, options: ForwardOptions = {}) {
    this.index = new Map(hookNames.map((h, i) => [h, i]));
    const position = (name: HookName, role: string): number => {
      parseHook(name, nLayers);
      const i = this.index.get(name);
      if (i === undefined) throw new Error(`${role}: unknown hook "${name}"`);
      return i;
    };
    const capture = options.capture ?? [];
    const edits = options.edits ?? {};
    const requested = [...capture.map((h) => position(h, 'capture')), ...Object.keys(edits).map((h) => position(h, 'edits'))];
    this.wantLogits = options.logits ?? false;
    const last = hookNames.length - 1;
    if (options.stopAfter !== undefined) {
      const stop = position(options.stopAfter, 'stopAfter');
      const late = [...capture, ...Object.keys(edits)].filter((h) => this.index.get(h)! > stop);
      if (late.length > 0) {
        throw new Error(`hooks ${late.map((h) => `"${h}"`).join(', ')} come after stopAfter "${options.stopAfter}" and would never run`);
      }
      if (this.wantLogits && stop !== last) {
        throw new Error(`logits need the full pass, but stopAfter is "${options.stopAfter}" (the last hook is "${hookNames[last]}")`);
      }
      this.stopIndex = stop;
    } else {
      this.stopIndex = this.wantLogits ? last : Math.max(-1, maxOf(requested));
    }
    this.capture = new Set(capture);
    this.edits = edits;
  }

  /** Whether the pass must compute hook `name` (it is at or before the stop point). */
  needs(name: HookName): boolean {
    const i = this.index.get(name);
    if (i === undefined) throw new Error(`internal: the model computed unknown hook "${name}"`);
    return i <= this.stopIndex;
  }

  /** Applies the edit at `name`, records the capture, and returns the value that flows on. */
  at(name: HookName, value: tf.Tensor3D): tf.Tensor3D {
    let out = value;
    const edit = this.edits[name];
    if (edit !== undefined) {
      out = edit(value);
      if (!(out instanceof tf.Tensor) || out.shape.length !== 3 || out.shape.some((d, i) => d !== value.shape[i])) {
        const got = out instanceof tf.Tensor ? `[${out.shape.join(', ')}]` : typeof out;
        throw new Error(`the edit at hook "${name}" returned ${got}; it must return the activation's shape [${value.shape.join(', ')}]`);
      }
      if (out.dtype !== 'float32') throw new Error(`the edit at hook "${name}" returned dtype ${out.dtype}; it must return float32`);
    }
    // A variable returned by an edit must not be handed to the caller, who disposes captures.
    if (this.capture.has(name)) this.captures[name] = out instanceof tf.Variable ? (tf.clone(out) as tf.Tensor3D) : out;
    return out;
  }
}

/**
 * Runs `forward` inside `tf.tidy`, keeping only the returned captures and logits, so a run leaves
 * no intermediate tensor behind (under autograd, the tape keeps what the backward pass needs).
 */
export function tidyRun(forward: () => { captures: Record<HookName, tf.Tensor3D>; logits?: tf.Tensor3D }): {
  captures: Record<HookName, tf.Tensor3D>;
  logits?: tf.Tensor3D;
} {
  const kept = tf.tidy(() => {
    const r = forward();
    const container: tf.TensorContainerObject = { captures: r.captures };
    if (r.logits !== undefined) container.logits = r.logits;
    return container;
  });
  const result: { captures: Record<HookName, tf.Tensor3D>; logits?: tf.Tensor3D } = {
    captures: kept.captures as Record<HookName, tf.Tensor3D>,
  };
  if (kept.logits !== undefined) result.logits = kept.logits as tf.Tensor3D;
  return result;
}

/**
 * Checks a batch against a model: ids and mask `[n, seq]` int32 of the same shape, seq within the
 * position limit, ids inside the vocabulary (out-of-range ids would otherwise gather garbage rows
 * silently), mask values 0 or 1.
 */
export function checkBatch(batch: { inputIds: tf.Tensor2D; attentionMask: tf.Tensor2D }, vocabSize: number, maxPositions: number): void {
  const { inputIds, attentionMask } = batch;
  if (inputIds.rank !== 2 || inputIds.dtype !== 'int32') {
    throw new Error(`batch.inputIds must be an int32 [n, seq] tensor, got ${inputIds.dtype} [${inputIds.shape.join(', ')}]`);
  }
  if (attentionMask.rank !== 2 || attentionMask.dtype !== 'int32') {
    throw new Error(`batch.attentionMask must be an int32 [n, seq] tensor, got ${attentionMask.dtype} [${attentionMask.shape.join(', ')}]`);
  }
  if (inputIds.shape[0] !== attentionMask.shape[0] || inputIds.shape[1] !== attentionMask.shape[1]) {
    throw new Error(`batch.inputIds [${inputIds.shape.join(', ')}] and batch.attentionMask [${attentionMask.shape.join(', ')}] differ in shape`);
  }
  if (inputIds.shape[1] > maxPositions) {
    throw new Error(`batch has sequences of ${inputIds.shape[1]} tokens; this model takes at most max_position_embeddings = ${maxPositions}`);
  }
  const ids = inputIds.dataSync();
  for (let i = 0; i < ids.length; i++) {
    if (ids[i]! < 0 || ids[i]! >= vocabSize)
      throw new Error(`batch.inputIds holds token id ${ids[i]} at flat index ${i}, outside the vocabulary [0, ${vocabSize})`);
  }
  const mask = attentionMask.dataSync();
  for (let i = 0; i < mask.length; i++) {
    if (mask[i] !== 0 && mask[i] !== 1) throw new Error(`batch.attentionMask holds ${mask[i]} at flat index ${i}; it must be 0 or 1`);
  }
}
