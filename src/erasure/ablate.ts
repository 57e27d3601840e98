/**
 * Zero ablation of SAE features with the SAE error preserved: the intervention of SHIFT (Sparse
 * Feature Circuits, Marks et al. 2024), shared by `shift`, `shift_retrain` and the `random` control.
 *
 * ## Math
 * An SAE at a hook writes x = decode(f(x)) + e(x) with decode(f) = sum_i f_i v_i + b_dec (v_i the
 * decoder rows) and e(x) the SAE error. Zeroing the features of a set S while keeping the error:
 *   x' = decode(f with f_S = 0) + e(x) = x - sum_{i in S} f_i(x) v_i .
 * At token level this is applied at every token of the hook (`zeroAblationEdit`); with edits at
 * several hooks, each downstream hook encodes the activation that the upstream edits produced, as
 * in the SFC notebook (one trace, all submodules edited in forward order).
 * Mean pooling over real tokens is linear, so at the probe's own hook
 *   mean_t x'_t = x̄ - sum_{i in S} f̄_i v_i ,    f̄_i = mean_t f_i(x_t) ,
 * exactly: the erased pooled representation follows from the cached pooled activations and pooled
 * SAE codes, with no forward pass (`zeroAblatePooled`). Features at hooks upstream of the probe hook
 * change what later layers compute, so their effect needs a forward pass with `edits()`.
 *
 * `FeatureAblationEraser` is the common eraser: it holds the ablated features per hook, their
 * decoder rows, and writes/reads the checkpoint format
 *   eraser.json         { format: "sae-eraser/feature-ablation", version: 1, method, probeHook,
 *                         hooks: { [hook]: { dIn, dSae, features: number[] } }, ... }
 *   eraser.safetensors  `directions.{hook}` [k, dIn] (the ablated decoder rows, to detect that a
 *                       different SAE is passed at load) plus method-specific tensors.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { matMulT, tf } from '../engine/engine.js';
import type { ActivationCache, CsrRows } from '../cache/cache.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors, type RawTensor, type SafetensorsFile } from '../io/safetensors.js';
import type { Batch, Edit, HookName, Model } from '../models/model.js';
import { meanPool } from '../models/pool.js';
import { progress } from '../util/progress.js';
import { checkWidth, type Eraser, type EraserDescription, type EraserSae, type FitContext, type MethodName } from './eraser.js';

/** Ablated SAE features per hook: sorted, distinct indices into the hook's SAE. */
export type FeatureSets = Record<HookName, Int32Array>;

/** Dense SAE codes per chunk stay under this many floats (16 MB), whatever the SAE width. */
const CHUNK_FLOATS = 1 << 22;

/** Token rows per chunk for an SAE of width dSae. */
export function chunkRows(dSae: number): number {
  return Math.max(1, Math.floor(CHUNK_FLOATS / dSae));
}

/** Checks that `features` are distinct integers in [0, dSae) and returns them sorted. */
export function checkFeatures(what: string, features: ArrayLike<number>, dSae: number): Int32Array {
  for (let i = 0; i < features.length; i++) {
    if (!Number.isInteger(features[i])) throw new Error(`${what}: feature index ${features[i]} is not an integer`);
  }
  const out = Int32Array.from(features).sort();
  for (let i = 0; i < out.length; i++) {
    if (out[i]! < 0 || out[i]! >= dSae) throw new Error(`${what}: feature index ${out[i]} is outside [0, ${dSae})`);
    if (i > 0 && out[i] === out[i - 1]) throw new Error(`${what}: feature index ${out[i]} is listed twice`);
  }
  return out;
}

/**
 * The decoder rows v_i of `features`, `[k, dIn]`. `decoderDirections()` returns a new tensor that
 * the caller owns (the Sae contract), which this disposes.
 */
export function decoderRows(sae: EraserSae, features: Int32Array): tf.Tensor2D {
  return tf.tidy(() => {
    const all = sae.decoderDirections();
    if (all.shape[0] !== sae.dSae || all.shape[1] !== sae.dIn) {
      throw new Error(`SAE decoderDirections() has shape [${all.shape.join(', ')}], expected [${sae.dSae}, ${sae.dIn}]`);
    }
    return tf.gather(all, tf.tensor1d(features, 'int32')) as tf.Tensor2D;
  });
}

/**
 * sum_{i in S} f_i(x) v_i for token rows `x [T, dIn]` -> `[T, dIn]`, encoding `chunkRows(dSae)`
 * rows at a time so that no more than a bounded block of dense codes exists at once.
 */
export function ablatedComponent(sae: EraserSae, features: Int32Array, directions: tf.Tensor2D, x2d: tf.Tensor2D): tf.Tensor2D {
  const [tokens, dIn] = x2d.shape;
  const rows = chunkRows(sae.dSae);
  return tf.tidy(() => {
    const idx = tf.tensor1d(features, 'int32');
    const parts: tf.Tensor2D[] = [];
    for (let start = 0; start < tokens; start += rows) {
      const size = Math.min(rows, tokens - start);
      const xc = tokens <= rows ? x2d : tf.slice(x2d, [start, 0], [size, dIn]);
      const codes = tf.gather(sae.encode(xc), idx, 1) as tf.Tensor2D;
      parts.push(matMulT(codes, directions) as tf.Tensor2D);
    }
    return parts.length === 1 ? parts[0]! : tf.concat(parts, 0);
  });
}

/** x' = x - sum_{i in S} f_i(x) v_i for `x [..., dIn]` (any leading shape). Differentiable. */
export function zeroAblate(sae: EraserSae, features: Int32Array, directions: tf.Tensor2D, x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    if (features.length === 0) return tf.clone(x);
    const d = x.shape[x.rank - 1]!;
    const flat = tf.reshape(x, [-1, d]) as tf.Tensor2D;
    return tf.reshape(tf.sub(flat, ablatedComponent(sae, features, directions, flat)), x.shape);
  });
}

/** The token-level hook edit of a zero ablation; checks the activation width. */
export function zeroAblationEdit(method: MethodName, hook: HookName, sae: EraserSae, features: Int32Array, directions: tf.Tensor2D): Edit {
  return (activation) => {
    checkWidth(method, hook, sae.dIn, activation.shape[2]);
    return zeroAblate(sae, features, directions, activation) as tf.Tensor3D;
  };
}

/** Values of columns `features` of CSR rows `rows`, dense `[rows.length, features.length]`. */
export function csrColumns(csr: CsrRows, rows: ArrayLike<number>, features: Int32Array): Float32Array {
  const k = features.length;
  const column = new Map<number, number>();
  features.forEach((f, j) => column.set(f, j));
  const out = new Float32Array(rows.length * k);
  const nRows = csr.offsets.length - 1;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    if (!Number.isInteger(r) || r < 0 || r >= nRows) throw new Error(`cache row ${r} is outside [0, ${nRows})`);
    for (let p = csr.offsets[r]!; p < csr.offsets[r + 1]!; p++) {
      const j = column.get(csr.indices[p]!);
      if (j !== undefined) out[i * k + j] = csr.values[p]!;
    }
  }
  return out;
}

/** x̄' = x̄ - F̄_S V_S for pooled rows `x̄ [n, d]`, pooled codes `F̄_S [n, k]` and rows `V_S [k, d]`. */
export function zeroAblatePooled(pooled: tf.Tensor2D, pooledCodes: Float32Array, directions: tf.Tensor2D): tf.Tensor2D {
  const [n] = pooled.shape;
  const k = directions.shape[0];
  if (pooledCodes.length !== n * k) throw new Error(`zeroAblatePooled: ${pooledCodes.length} pooled codes for ${n} rows x ${k} features`);
  if (k === 0) return tf.clone(pooled);
  return tf.tidy(() => tf.sub(pooled, matMulT(tf.tensor2d(pooledCodes, [n, k]), directions)) as tf.Tensor2D);
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
      const pooled = tf.tidy(() => {
        const { captures } = model.run(batch, { capture: [hook], edits });
        const acts = captures[hook];
        if (acts === undefined) throw new Error(`pooledWithEdits: the model returned no activation for hook "${hook}"`);
        return meanPool(acts, batch.attentionMask);
      });
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

/** Hooks that have an SAE and come at or before `probeHook` in the model's forward order. */
export function hooksUpToProbe(model: Model, saes: Readonly<Record<HookName, EraserSae>>, probeHook: HookName, only?: readonly HookName[]): HookName[] {
  const probeIndex = model.hookNames.indexOf(probeHook);
  if (probeIndex < 0) throw new Error(`probe hook "${probeHook}" is not a hook of this model`);
  if (only !== undefined) {
    for (const h of only) {
      const i = model.hookNames.indexOf(h);
      if (i < 0) throw new Error(`hook "${h}" is not a hook of this model`);
      if (i > probeIndex) throw new Error(`hook "${h}" comes after the probe hook "${probeHook}"; only hooks up to it can change the probe's input`);
      if (saes[h] === undefined) throw new Error(`hook "${h}" has no SAE (SAEs at: ${Object.keys(saes).join(', ') || 'none'})`);
    }
  }
  return model.hookNames.filter((h, i) => i <= probeIndex && saes[h] !== undefined && (only === undefined || only.includes(h)));
}

/** The JSON part of a feature-ablation checkpoint. */
export interface FeatureAblationJson {
  format: 'sae-eraser/feature-ablation';
  version: 1;
  method: MethodName;
  probeHook: HookName;
  hooks: Record<HookName, { dIn: number; dSae: number; features: number[] }>;
  /** Method-specific fields. */
  [extra: string]: unknown;
}

export const FEATURE_ABLATION_FORMAT = 'sae-eraser/feature-ablation';

/**
 * A zero-ablation eraser over SAE features: edits, pooled fast path, description and checkpoint.
 * Subclasses choose the features (`fit`) and may add to the checkpoint and description.
 */
export abstract class FeatureAblationEraser implements Eraser {
  protected saes: Record<HookName, EraserSae> = {};
  protected features: FeatureSets = {};
  protected directions: Record<HookName, tf.Tensor2D> = {};
  protected probeHookName: HookName | undefined;

  constructor(readonly method: MethodName) {}

  abstract fit(ctx: FitContext): Promise<void>;

  /** One line for the report: how the features were chosen. */
  protected abstract how(): string;

  /** Extra tensors and JSON fields for the checkpoint. */
  protected extraTensors(): Record<string, RawTensor> {
    return {};
  }

  protected extraJson(): Record<string, unknown> {
    return {};
  }

  /** Sets the ablated features; `saes` must hold every hook of `features`. */
  protected setAblation(saes: Readonly<Record<HookName, EraserSae>>, probeHook: HookName, features: Readonly<Record<HookName, ArrayLike<number>>>): void {
    this.disposeDirections();
    this.probeHookName = probeHook;
    this.saes = {};
    this.features = {};
    for (const [hook, list] of Object.entries(features)) {
      const sae = saes[hook];
      if (sae === undefined) throw new Error(`${this.method} eraser: no SAE at hook "${hook}"`);
      const sorted = checkFeatures(`${this.method} eraser at ${hook}`, list, sae.dSae);
      if (sorted.length === 0) continue;
      this.saes[hook] = sae;
      this.features[hook] = sorted;
      this.directions[hook] = decoderRows(sae, sorted);
    }
  }

  protected get probeHook(): HookName {
    if (this.probeHookName === undefined) throw new Error(`${this.method} eraser: used before fit() or load()`);
    return this.probeHookName;
  }

  /** Ablated features per hook (hooks with none are absent). */
  ablatedFeatures(): Readonly<FeatureSets> {
    return this.features;
  }

  /** Hooks with ablated features, in the order of the checkpoint (sorted by name). */
  hooks(): HookName[] {
    return Object.keys(this.features).sort();
  }

  unitsRemoved(): number {
    return Object.values(this.features).reduce((a, f) => a + f.length, 0);
  }

  edits(): Record<HookName, Edit> {
    if (this.probeHookName === undefined) throw new Error(`${this.method} eraser: used before fit() or load()`);
    const out: Record<HookName, Edit> = {};
    for (const hook of this.hooks()) {
      out[hook] = zeroAblationEdit(this.method, hook, this.saes[hook]!, this.features[hook]!, this.directions[hook]!);
    }
    return out;
  }

  erasePooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D | undefined {
    const probeHook = this.probeHook;
    const hooks = this.hooks();
    if (hooks.some((h) => h !== probeHook)) return undefined;
    const pooled = cache.pooled(probeHook, rows);
    if (hooks.length === 0) return pooled;
    try {
      const sae = this.saes[probeHook]!;
      const cachedWidth = cache.dSae(probeHook);
      if (cachedWidth !== sae.dSae) {
        throw new Error(`${this.method} eraser: the cache ${cache.dir} holds SAE codes of width ${cachedWidth} at "${probeHook}", but the eraser's SAE has width ${sae.dSae}`);
      }
      checkWidth(this.method, probeHook, sae.dIn, cache.dim(probeHook));
      const codes = csrColumns(cache.saePooledCsr(probeHook), rows, this.features[probeHook]!);
      return zeroAblatePooled(pooled, codes, this.directions[probeHook]!);
    } finally {
      pooled.dispose();
    }
  }

  describe(): EraserDescription {
    const hooks = this.hooks();
    const removed: EraserDescription['removed'] = {};
    for (const h of hooks) removed[h] = { kind: 'sae_features', indices: Array.from(this.features[h]!) };
    const perHook = hooks.map((h) => `${this.features[h]!.length} at ${h}`).join(', ');
    return {
      method: this.method,
      hooks,
      unitsRemoved: this.unitsRemoved(),
      summary: `zero-ablates ${this.unitsRemoved()} SAE features${perHook === '' ? '' : ` (${perHook})`}, keeping the SAE error; ${this.how()}`,
      removed,
    };
  }

  save(dir: string): void {
    const probeHook = this.probeHook;
    const tensors: Record<string, RawTensor> = {};
    const hooks: FeatureAblationJson['hooks'] = {};
    for (const h of this.hooks()) {
      const sae = this.saes[h]!;
      hooks[h] = { dIn: sae.dIn, dSae: sae.dSae, features: Array.from(this.features[h]!) };
      tensors[`directions.${h}`] = { dtype: 'F32', shape: [this.features[h]!.length, sae.dIn], data: this.directions[h]!.dataSync() as Float32Array };
    }
    Object.assign(tensors, this.extraTensors());
    const json: FeatureAblationJson = { ...this.extraJson(), format: FEATURE_ABLATION_FORMAT, version: 1, method: this.method, probeHook, hooks };
    // The tensors first: eraser.json marks a complete checkpoint.
    writeSafetensors(join(dir, 'eraser.safetensors'), tensors, { format: FEATURE_ABLATION_FORMAT, method: this.method });
    writeJsonAtomic(join(dir, 'eraser.json'), json);
  }

  /** Restores the ablation from a checkpoint read by `readFeatureAblationCheckpoint`. */
  protected restore(checkpoint: FeatureAblationCheckpoint, saes: Readonly<Record<HookName, EraserSae>>): void {
    this.setAblation(saes, checkpoint.json.probeHook, checkpoint.features);
  }

  protected disposeDirections(): void {
    tf.dispose(Object.values(this.directions));
    this.directions = {};
  }

  dispose(): void {
    this.disposeDirections();
  }
}

export interface FeatureAblationCheckpoint {
  json: FeatureAblationJson;
  tensors: SafetensorsFile;
  features: FeatureSets;
}

/**
 * Reads and checks a feature-ablation checkpoint against the SAEs it will run with: every hook
 * needs an SAE of the same width and input width, and the SAE's decoder rows of the ablated
 * features must equal the saved ones (else the SAE is not the one the eraser was fitted with).
 */
export function readFeatureAblationCheckpoint(dir: string, saes: Readonly<Record<HookName, EraserSae>>, methods: readonly MethodName[]): FeatureAblationCheckpoint {
  const jsonPath = join(dir, 'eraser.json');
  const tensorPath = join(dir, 'eraser.safetensors');
  if (!existsSync(jsonPath)) throw new Error(`${dir}: no eraser checkpoint (eraser.json is missing)`);
  let json: FeatureAblationJson;
  try {
    json = JSON.parse(readFileSync(jsonPath, 'utf8')) as FeatureAblationJson;
  } catch (err) {
    throw new Error(`${jsonPath}: not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (json.format !== FEATURE_ABLATION_FORMAT) throw new Error(`${jsonPath}: field "format" is ${JSON.stringify(json.format)}, expected "${FEATURE_ABLATION_FORMAT}"`);
  if (json.version !== 1) throw new Error(`${jsonPath}: field "version" is ${JSON.stringify(json.version)}; this build reads version 1`);
  if (!methods.includes(json.method)) throw new Error(`${jsonPath}: field "method" is ${JSON.stringify(json.method)}, expected one of ${methods.join(', ')}`);
  if (typeof json.probeHook !== 'string') throw new Error(`${jsonPath}: field "probeHook" must be a hook name`);
  if (typeof json.hooks !== 'object' || json.hooks === null) throw new Error(`${jsonPath}: field "hooks" must be an object`);
  const tensors = readSafetensors(tensorPath);
  const features: FeatureSets = {};
  for (const [hook, entry] of Object.entries(json.hooks)) {
    const where = `${jsonPath}: hooks["${hook}"]`;
    const sae = saes[hook];
    if (sae === undefined) throw new Error(`${where}: the eraser ablates features at "${hook}" but no SAE is given for that hook`);
    if (entry.dSae !== sae.dSae) {
      throw new Error(`${where}: the eraser was fitted with an SAE of width ${entry.dSae} (dSae), but the SAE given for "${hook}" has width ${sae.dSae}; load it with the SAE it was fitted with`);
    }
    if (entry.dIn !== sae.dIn) throw new Error(`${where}: the eraser was fitted with an SAE reading width ${entry.dIn} (dIn), but the SAE given reads width ${sae.dIn}`);
    if (!Array.isArray(entry.features)) throw new Error(`${where}.features must be an array of feature indices`);
    const list = checkFeatures(where, entry.features, sae.dSae);
    const name = `directions.${hook}`;
    const info = tensors.info(name);
    if (info.shape.length !== 2 || info.shape[0] !== list.length || info.shape[1] !== sae.dIn) {
      throw new Error(`${tensorPath}: tensor "${name}" has shape [${info.shape.join(', ')}], expected [${list.length}, ${sae.dIn}]`);
    }
    const saved = tensors.float32(name);
    const current = decoderRows(sae, list);
    const now = current.dataSync() as Float32Array;
    current.dispose();
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < saved.length; i++) {
      worst = Math.max(worst, Math.abs(saved[i]! - now[i]!));
      scale = Math.max(scale, Math.abs(saved[i]!));
    }
    if (worst > 1e-5 * Math.max(1, scale)) {
      throw new Error(`${tensorPath}: the decoder rows of the ablated features at "${hook}" differ from the given SAE's (max abs diff ${worst.toExponential(2)}): this is not the SAE the eraser was fitted with`);
    }
    features[hook] = list;
  }
  return { json, tensors, features };
}
