/**
 * Which executor runs inference-only forward passes (activation caching, SAE training data,
 * `activations`): ONNX Runtime (`onnx`, the default wherever the model has an ONNX form) or the
 * tfjs engine (`tfjs`, which also runs everything that needs gradients or edits). Both compute the
 * same function from the same weights; the parity tests hold them to 1e-4.
 *
 * `OnnxForward` is one ONNX Runtime session for a model's forward pass up to chosen hooks, plus
 * whatever the caller appends to the graph (SAE codes, mean pooling): `build` receives the hook
 * values and declares the outputs. Batches of any size and length reuse the session.
 */
import { tf } from '../engine/engine.js';
import { OnnxGraph } from '../onnx/graph.js';
import { OnnxSession, type HostTensor } from '../onnx/session.js';
import { checkBatch } from './hook-runner.js';
import type { Batch, GraphEdit, GraphInputs, HookName, Model } from './model.js';

export type ExecutorName = 'onnx' | 'tfjs';

export const EXECUTORS: readonly ExecutorName[] = ['onnx', 'tfjs'];

let processDefault: ExecutorName | undefined;

/** Sets the executor for every later pass that does not ask for one (the CLI's `--executor`). */
export function setExecutor(name: ExecutorName | undefined): void {
  processDefault = name;
}

/**
 * The executor asked for process-wide: `setExecutor`'s, else `SAE_ERASER_EXECUTOR`'s, else none
 * (each user then takes its own default).
 */
export function requestedExecutor(): ExecutorName | undefined {
  if (processDefault !== undefined) return processDefault;
  const env = process.env.SAE_ERASER_EXECUTOR;
  if (env === undefined || env === '') return undefined;
  if (!EXECUTORS.includes(env as ExecutorName)) throw new Error(`SAE_ERASER_EXECUTOR must be one of ${EXECUTORS.join(', ')}, got "${env}"`);
  return env as ExecutorName;
}

/**
 * The executor to use for `model`: `requested`, else `requestedExecutor()`'s, else ONNX Runtime
 * when the model (and whatever else the pass needs: `lacking` names what has no ONNX form, such as
 * an SAE or an eraser's edits) has an ONNX form, else tfjs. Asking for `onnx` where something has
 * none is an error, not a silent fallback.
 * @param lacking A clause saying what else has no ONNX form (e.g. "these edits have no ONNX
 *   form"), or undefined when everything does.
 */
export function chooseExecutor(model: Model, requested?: ExecutorName, lacking?: string): ExecutorName {
  const want = requested ?? requestedExecutor();
  const missing = model.forwardGraph === undefined ? `${model.config.modelType} models have no ONNX form here` : lacking;
  if (want === 'onnx' && missing !== undefined) throw new Error(`the ONNX executor was asked for, but ${missing}; use the tfjs executor`);
  return want ?? (missing === undefined ? 'onnx' : 'tfjs');
}

/** The int64 graph inputs of a batch (`input_ids`, `attention_mask`). */
export function batchFeeds(batch: Batch): Record<string, HostTensor> {
  const dims = batch.inputIds.shape;
  const toInt64 = (t: tf.Tensor2D): BigInt64Array => BigInt64Array.from(t.dataSync() as Int32Array, (v) => BigInt(v));
  return {
    input_ids: { type: 'int64', data: toInt64(batch.inputIds), dims },
    attention_mask: { type: 'int64', data: toInt64(batch.attentionMask), dims },
  };
}

/** Declares a graph's outputs from the hook values; returns nothing. */
export type GraphOutputs = (g: OnnxGraph, hooks: Readonly<Record<HookName, string>>, inputs: GraphInputs) => void;

export class OnnxForward {
  private constructor(
    private readonly session: OnnxSession,
    private readonly config: Model['config'],
  ) {}

  /**
   * Builds and loads the graph of `model`'s forward pass to `hooks` (with `edits` applied at their
   * hooks) and the outputs `build` adds.
   * @param name Names the graph in errors and profiles.
   * @param options `threads`: intra-op threads (default: src/util/threads.ts); `edits`: graph
   *   edits, as `Model.forwardGraph` takes them.
   */
  static async create(
    model: Model,
    hooks: readonly HookName[],
    build: GraphOutputs,
    name: string,
    options: { threads?: number; edits?: Readonly<Record<HookName, GraphEdit>> } = {},
  ): Promise<OnnxForward> {
    if (model.forwardGraph === undefined) throw new Error(`${model.config.modelType} models have no ONNX form here`);
    const g = new OnnxGraph(name);
    const inputs: GraphInputs = {
      inputIds: g.input('input_ids', 'int64', ['batch', 'seq']),
      attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']),
    };
    const values = model.forwardGraph(g, inputs, hooks, options.edits);
    build(g, values, inputs);
    return new OnnxForward(await OnnxSession.create(g.toModel(), name, options.threads === undefined ? {} : { threads: options.threads }), model.config);
  }

  /** Runs one batch; returns the outputs `build` declared. The batch is checked as `Model.run` checks it. */
  async run(batch: Batch): Promise<Record<string, HostTensor>> {
    // ONNX Gather would read a negative id from the end of the vocabulary: refuse it here.
    checkBatch(batch, this.config.vocabSize, this.config.maxPositions);
    return await this.session.run(batchFeeds(batch));
  }

  dispose(): Promise<void> {
    return this.session.dispose();
  }
}
