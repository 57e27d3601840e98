/**
 * What the activation cache computes for one batch, on either executor (src/models/executor.ts):
 * per cached hook the mean-pooled activation, and per hook with an SAE the mean-pooled SAE codes
 * and SAE error (and, with `perToken`, the codes and errors of every position). On ONNX Runtime the
 * model, the SAEs and the pooling are one graph, so only pooled values leave the runtime unless
 * per-token values are asked for.
 */
import { tf } from '../engine/engine.js';
import type { OnnxGraph } from '../onnx/graph.js';
import { flattenTokens, meanPoolNodes, unflattenTokens } from '../onnx/ops.js';
import { chooseExecutor, OnnxForward, type ExecutorName } from '../models/executor.js';
import type { Batch, HookName, Model } from '../models/model.js';
import { meanPool } from '../models/pool.js';
import { hasGraph, saeNodes } from '../sae/graph.js';
import type { Sae } from '../sae/sae.js';

/** What the cache needs of an SAE: its widths and encoder/decoder. */
export interface CacheSae {
  readonly dIn: number;
  readonly dSae: number;
  encode(x: tf.Tensor): tf.Tensor;
  decode(f: tf.Tensor): tf.Tensor;
}

/** One batch's values, row-major, rows in batch order. */
export interface BatchValues {
  /** Real tokens per row. */
  lengths: number[];
  /** Padded length of the batch. */
  seq: number;
  /** `[n, d]` per hook. */
  pooled: Map<HookName, Float32Array>;
  /** `[n, dSae]` per hook with an SAE. */
  codesPooled: Map<HookName, Float32Array>;
  /** `[n, d]` per hook with an SAE. */
  errorPooled: Map<HookName, Float32Array>;
  /** `[n, seq, d]` per hook, with `perToken` (pad positions hold whatever the model computed there). */
  tokenActs: Map<HookName, Float32Array>;
  /** `[n, seq, dSae]` per hook with an SAE, with `perToken`. */
  tokenCodes: Map<HookName, Float32Array>;
  /** `[n, seq, d]` per hook with an SAE, with `perToken`. */
  tokenErrors: Map<HookName, Float32Array>;
}

export interface CollectSpec {
  hooks: readonly HookName[];
  saes: Readonly<Record<HookName, CacheSae>>;
  /** Also return every position's activations, SAE codes and SAE errors. */
  perToken: boolean;
}

export interface Collector {
  readonly executor: ExecutorName;
  values(batch: Batch): Promise<BatchValues>;
  dispose(): Promise<void>;
}

function emptyValues(batch: Batch): BatchValues {
  const mask = batch.attentionMask.arraySync();
  return {
    lengths: mask.map((m) => m.reduce((a, v) => a + v, 0)),
    seq: batch.inputIds.shape[1],
    pooled: new Map(),
    codesPooled: new Map(),
    errorPooled: new Map(),
    tokenActs: new Map(),
    tokenCodes: new Map(),
    tokenErrors: new Map(),
  };
}

/**
 * A collector for `spec` on `executor` (default: the process-wide request, else ONNX Runtime where
 * the model and every SAE have an ONNX form, else tfjs); ONNX asked for where an SAE has none is an
 * error.
 */
export async function createCollector(model: Model, spec: CollectSpec, executor?: ExecutorName): Promise<Collector> {
  const saesHaveGraphs = Object.values(spec.saes).every((s) => hasGraph(s as Sae));
  const chosen = chooseExecutor(model, executor, saesHaveGraphs ? undefined : 'an SAE of this cache has no ONNX form');
  return chosen === 'onnx' ? onnxCollector(model, spec) : tfjsCollector(model, spec);
}

function tfjsCollector(model: Model, spec: CollectSpec): Collector {
  return {
    executor: 'tfjs',
    values: (batch) => {
      const out = emptyValues(batch);
      const { captures } = model.run(batch, { capture: spec.hooks });
      try {
        for (const hook of spec.hooks) {
          const acts = captures[hook];
          if (acts === undefined) throw new Error(`activation cache: the model returned no activation for hook "${hook}"`);
          out.pooled.set(
            hook,
            tf.tidy(() => meanPool(acts, batch.attentionMask).dataSync() as Float32Array),
          );
          if (spec.perToken) out.tokenActs.set(hook, acts.dataSync() as Float32Array);
          const sae = spec.saes[hook];
          if (sae === undefined) continue;
          const [n, seq, d] = acts.shape;
          const parts = tf.tidy(() => {
            const flat = tf.reshape(acts, [n * seq, d]);
            const f = sae.encode(flat);
            const err = tf.sub(flat, sae.decode(f));
            const pooled = [
              meanPool(tf.reshape(f, [n, seq, sae.dSae]) as tf.Tensor3D, batch.attentionMask),
              meanPool(tf.reshape(err, [n, seq, d]) as tf.Tensor3D, batch.attentionMask),
            ];
            return spec.perToken ? [...pooled, f, err] : pooled;
          });
          const [codes, errors, tokenCodes, tokenErrors] = parts.map((t) => t.dataSync() as Float32Array);
          tf.dispose(parts);
          out.codesPooled.set(hook, codes!);
          out.errorPooled.set(hook, errors!);
          if (spec.perToken) {
            out.tokenCodes.set(hook, tokenCodes!);
            out.tokenErrors.set(hook, tokenErrors!);
          }
        }
      } finally {
        tf.dispose(Object.values(captures));
      }
      return Promise.resolve(out);
    },
    dispose: () => Promise.resolve(),
  };
}

/** Output names of the collector graph. */
const OUT = {
  pooled: (hook: HookName) => `pooled:${hook}`,
  tokenActs: (hook: HookName) => `acts:${hook}`,
  codesPooled: (hook: HookName) => `sae_codes_pooled:${hook}`,
  errorPooled: (hook: HookName) => `sae_error_pooled:${hook}`,
  tokenCodes: (hook: HookName) => `sae_codes:${hook}`,
  tokenErrors: (hook: HookName) => `sae_error:${hook}`,
};

async function onnxCollector(model: Model, spec: CollectSpec): Promise<Collector> {
  const d = model.config.dModel;
  const build = (g: OnnxGraph, values: Readonly<Record<HookName, string>>, inputs: { attentionMask: string }): void => {
    for (const hook of spec.hooks) {
      const acts = values[hook]!;
      const pooled = meanPoolNodes(g, acts, inputs.attentionMask);
      g.output(OUT.pooled(hook), pooled, 'float32', ['batch', d]);
      if (spec.perToken) g.output(OUT.tokenActs(hook), acts, 'float32', ['batch', 'seq', d]);
      const sae = spec.saes[hook];
      if (sae === undefined) continue;
      const { codes, decodeNodes, error } = saeNodes(g, sae as Sae, flattenTokens(g, acts, d), spec.perToken);
      const codes3 = unflattenTokens(g, codes, acts, sae.dSae);
      const codesPooled = meanPoolNodes(g, codes3, inputs.attentionMask);
      g.output(OUT.codesPooled(hook), codesPooled, 'float32', ['batch', sae.dSae]);
      // Decoding is affine, so the mean error is the mean activation minus the decoded mean code:
      // one decoder product per text instead of one per token.
      g.output(OUT.errorPooled(hook), g.op('Sub', [pooled, decodeNodes(codesPooled)]), 'float32', ['batch', d]);
      if (spec.perToken) {
        g.output(OUT.tokenCodes(hook), codes3, 'float32', ['batch', 'seq', sae.dSae]);
        g.output(OUT.tokenErrors(hook), unflattenTokens(g, error!, acts, d), 'float32', ['batch', 'seq', d]);
      }
    }
  };
  const forward = await OnnxForward.create(model, spec.hooks, build, 'activation-cache');
  return {
    executor: 'onnx',
    values: async (batch) => {
      const out = emptyValues(batch);
      const results = await forward.run(batch);
      const get = (name: string): Float32Array => {
        const t = results[name];
        if (t === undefined) throw new Error(`activation cache: the ONNX graph returned no "${name}"`);
        return t.data as Float32Array;
      };
      for (const hook of spec.hooks) {
        out.pooled.set(hook, get(OUT.pooled(hook)));
        if (spec.perToken) out.tokenActs.set(hook, get(OUT.tokenActs(hook)));
        if (spec.saes[hook] === undefined) continue;
        out.codesPooled.set(hook, get(OUT.codesPooled(hook)));
        out.errorPooled.set(hook, get(OUT.errorPooled(hook)));
        if (spec.perToken) {
          out.tokenCodes.set(hook, get(OUT.tokenCodes(hook)));
          out.tokenErrors.set(hook, get(OUT.tokenErrors(hook)));
        }
      }
      return out;
    },
    dispose: () => forward.dispose(),
  };
}
