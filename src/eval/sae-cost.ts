/**
 * What an SAE costs the task downstream: the biased probe's accuracy when one hook's activation is
 * replaced by its SAE reconstruction, x -> decode(encode(x)) at every token, and the rest of the
 * model runs on from there (SFC's "downstream" reconstruction check, scored on the probe instead of
 * the language-model loss).
 *
 * For each SAE hook at or before the probe hook, on a labelled split (the runner uses the balanced
 * split of the test file's tuning half, or of the whole test file when there is no tuning half):
 *   acc_clean                     the probe on the unedited pooled activations (the cache's);
 *   acc_reconstructed             with x_h -> decode(encode(x_h));
 *   acc_reconstructed_with_error  with x_h -> decode(encode(x_h)) + (x_h - decode(encode(x_h))),
 *                                 which is x_h up to float rounding: a check that the edited pass
 *                                 itself changes nothing (it should equal acc_clean);
 *   delta                         acc_reconstructed - acc_clean.
 * Every SAE-based method that drops the error (sae_mask with keepError false) starts from the
 * reconstruction, so `delta` is the accuracy it gives up before removing anything. SHIFT keeps the
 * error and pays none of it.
 *
 * Each hook's passes run the model with that single edit through `pooledWithEditsOnExecutor` (ONNX
 * Runtime where the model and the SAE have an ONNX form, else tfjs): two forward passes over the
 * split per hook.
 */
import { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import { chunkRows, graphSae, hooksUpToProbe } from '../erasure/ablate.js';
import type { EraserSae, LabelledSplit } from '../erasure/eraser.js';
import type { ExecutorName } from '../models/executor.js';
import type { Batch, Edit, GraphEdit, HookName, Model } from '../models/model.js';
import { pooledWithEditsOnExecutor } from '../models/pool.js';
import { flattenTokens, unflattenTokens } from '../onnx/ops.js';
import type { Probe } from '../probe/probe.js';
import { saeNodes } from '../sae/graph.js';
import { accuracy } from './metrics.js';

/** The probe's accuracy with one hook's activation replaced by its SAE reconstruction (see the module docstring). */
export interface SaeDownstreamCost {
  acc_clean: number;
  acc_reconstructed: number;
  acc_reconstructed_with_error: number;
  /** acc_reconstructed - acc_clean. */
  delta: number;
  /** Examples scored. */
  n: number;
}

export interface SaeCostInput {
  model: Model;
  tokenize: (texts: string[]) => Batch;
  /** SAEs by hook; those at or before `probeHook` are measured. */
  saes: Readonly<Record<HookName, EraserSae>>;
  probeHook: HookName;
  probe: Probe;
  /** Pooled activations at `probeHook` for `split.rows` (the unedited accuracy). */
  cache: ActivationCache;
  /** The examples scored, with their task labels `y`. */
  split: LabelledSplit;
}

export interface SaeCostOptions {
  /** Texts per forward pass; default 16. */
  batchSize?: number;
  /** The executor (default: `chooseExecutor`'s choice). */
  executor?: ExecutorName;
}

function checkWidth(hook: HookName, sae: EraserSae, d: number): void {
  if (d !== sae.dIn) throw new Error(`SAE downstream cost at ${hook}: the SAE reads width ${sae.dIn}, the activation has width ${d}`);
}

/** The hook edit x -> decode(encode(x)) (+ the error x - decode(encode(x)) when `keepError`), in chunks of tokens. */
export function reconstructionEdit(hook: HookName, sae: EraserSae, keepError: boolean): Edit {
  return (x) => {
    const [n, seq, d] = x.shape;
    checkWidth(hook, sae, d);
    return tf.tidy(() => {
      const flat = tf.reshape(x, [n * seq, d]) as tf.Tensor2D;
      const rows = chunkRows(sae.dSae);
      const parts: tf.Tensor2D[] = [];
      for (let start = 0; start < n * seq; start += rows) {
        const xc = tf.slice(flat, [start, 0], [Math.min(rows, n * seq - start), d]);
        const recon = sae.decode(sae.encode(xc)) as tf.Tensor2D;
        parts.push(keepError ? (tf.add(recon, tf.sub(xc, recon)) as tf.Tensor2D) : recon);
      }
      return tf.reshape(parts.length === 1 ? parts[0]! : tf.concat(parts, 0), [n, seq, d]) as tf.Tensor3D;
    });
  };
}

/** `reconstructionEdit` as ONNX nodes, or undefined when the SAE has no ONNX form. */
export function reconstructionGraphEdit(hook: HookName, sae: EraserSae, keepError: boolean): GraphEdit | undefined {
  const affine = graphSae(sae);
  if (affine === undefined) return undefined;
  return (g, x, d) => {
    checkWidth(hook, sae, d);
    const { reconstruction, error } = saeNodes(g, affine, flattenTokens(g, x, d));
    return unflattenTokens(g, keepError ? g.op('Add', [reconstruction!, error!]) : reconstruction!, x, d);
  };
}

/** The downstream cost of each SAE at or before the probe hook, in forward order (see the module docstring). */
export async function saeDownstreamCost(input: SaeCostInput, options: SaeCostOptions = {}): Promise<Record<HookName, SaeDownstreamCost>> {
  const { model, tokenize, saes, probeHook, probe, cache, split } = input;
  if (split.rows.length === 0) throw new Error('SAE downstream cost: the split has no examples');
  const hooks = hooksUpToProbe(model, saes, probeHook);
  const accuracyOf = (X: tf.Tensor2D): number => {
    try {
      return accuracy(probe.predict(X), split.y).value;
    } finally {
      X.dispose();
    }
  };
  const clean = accuracyOf(cache.pooled(probeHook, split.rows));
  const out: Record<HookName, SaeDownstreamCost> = {};
  for (const hook of hooks) {
    const sae = saes[hook]!;
    const run = async (keepError: boolean): Promise<number> => {
      const graphEdit = reconstructionGraphEdit(hook, sae, keepError);
      const X = await pooledWithEditsOnExecutor(
        model,
        tokenize,
        split.texts,
        probeHook,
        { [hook]: reconstructionEdit(hook, sae, keepError) },
        graphEdit === undefined ? undefined : { [hook]: graphEdit },
        { batchSize: options.batchSize, executor: options.executor, label: `SAE cost at ${hook}${keepError ? ' (with error)' : ''}` },
      );
      return accuracyOf(X);
    };
    const reconstructed = await run(false);
    const withError = await run(true);
    out[hook] = {
      acc_clean: clean,
      acc_reconstructed: reconstructed,
      acc_reconstructed_with_error: withError,
      delta: reconstructed - clean,
      n: split.rows.length,
    };
  }
  return out;
}
