/**
 * Runs ONNX models built by `graph.ts` on ONNX Runtime (`onnxruntime-node`, CPU), for every pass
 * that needs no gradient. The runtime is imported on first use, so code that never runs a graph
 * (or runs where the native package is absent) does not load it.
 */
import type { InferenceSession, Tensor as OrtTensor } from 'onnxruntime-node';
import { threads } from '../util/threads.js';
import type { ElementType } from './graph.js';

type Ort = typeof import('onnxruntime-node');

let ort: Promise<Ort> | undefined;

function runtime(): Promise<Ort> {
  ort ??= import('onnxruntime-node').catch((err: unknown) => {
    ort = undefined;
    throw new Error(`ONNX Runtime (the npm package onnxruntime-node) could not be loaded: ${err instanceof Error ? err.message : String(err)}`);
  });
  return ort;
}

/** A tensor crossing into or out of a session: row-major data and its shape. */
export interface HostTensor {
  type: ElementType;
  data: Float32Array | Int32Array | BigInt64Array | Uint8Array;
  dims: readonly number[];
}

export interface SessionOptions {
  /** Intra-op threads; defaults to `threads()` (src/util/threads.ts). */
  threads?: number;
}

const ORT_TYPE: Readonly<Record<ElementType, OrtTensor.Type>> = { float32: 'float32', int32: 'int32', int64: 'int64', bool: 'bool' };

/** One loaded model. Runs may overlap; each returns its own output arrays. */
export class OnnxSession {
  private constructor(
    private readonly ort: Ort,
    private readonly session: InferenceSession,
    /** The graph's name, for errors. */
    readonly name: string,
  ) {}

  /**
   * Loads a serialized model (`OnnxGraph.toModel()`).
   * @param name Names the model in errors.
   */
  static async create(model: Uint8Array, name: string, options: SessionOptions = {}): Promise<OnnxSession> {
    const ort = await runtime();
    const session = await ort.InferenceSession.create(model, {
      intraOpNumThreads: options.threads ?? threads(),
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
    return new OnnxSession(ort, session, name);
  }

  /** Runs the model on `feeds`; returns every output (or the ones named in `fetch`). */
  async run(feeds: Readonly<Record<string, HostTensor>>, fetch?: readonly string[]): Promise<Record<string, HostTensor>> {
    const inputs: Record<string, OrtTensor> = {};
    for (const [name, t] of Object.entries(feeds)) inputs[name] = new this.ort.Tensor(ORT_TYPE[t.type], t.data, [...t.dims]);
    let results: InferenceSession.OnnxValueMapType;
    try {
      results = fetch === undefined ? await this.session.run(inputs) : await this.session.run(inputs, [...fetch]);
    } catch (err) {
      throw new Error(`ONNX model ${this.name}: ${err instanceof Error ? err.message : String(err)}`);
    }
    const out: Record<string, HostTensor> = {};
    for (const [name, value] of Object.entries(results)) {
      const t = value as OrtTensor;
      out[name] = { type: t.type as ElementType, data: t.data as HostTensor['data'], dims: t.dims };
      t.dispose();
    }
    return out;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
