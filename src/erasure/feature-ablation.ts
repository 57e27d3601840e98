/**
 * The eraser of the feature-ablation family (`shift`, `shift_retrain` and the `random` control):
 * zero ablation of chosen SAE features at one or more hooks, x' = x - sum_{i in S} f_i(x) v_i with
 * the SAE error kept (the math, and why the pooled path is exact at the probe hook, is in
 * ablate.ts), plus a record of how the features were chosen.
 *
 * Checkpoint (layout in checkpoint.ts), format `sae-eraser/feature-ablation`:
 *   eraser.json         { ..., probeHook, hooks: { [hook]: { dIn, dSae, features: number[] } },
 *                         selectedBy, errorAttribution?, selection?, ...method fields
 *                         (SHIFT: options; random: plan) }
 *   eraser.safetensors  `directions.{hook}` [k, dIn]: the ablated decoder rows, to detect at load
 *                       that a different SAE is passed; `attribution.{hook}` [dSae] (SHIFT).
 */
import { join } from 'node:path';
import { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import type { RawTensor } from '../io/safetensors.js';
import type { Edit, HookName } from '../models/model.js';
import { checkFeatures, csrColumns, decoderRows, zeroAblatePooled, zeroAblationEdit, type FeatureSets } from './ablate.js';
import type { HookAttribution, RankedFeature } from './attribution.js';
import { ERASER_TENSORS, type LoadTarget, type StoredCheckpoint } from './checkpoint.js';
import { checkWidth, type CheckpointContent, type Eraser, type EraserDescription, type EraserSae, type MethodName } from './eraser.js';
import type { SelectionRecord } from './feature-selection.js';

export const FEATURE_ABLATION_FORMAT = 'sae-eraser/feature-ablation';

/** Methods whose erasers are feature ablations (and may be saved in this format). */
const FEATURE_ABLATION_METHODS: readonly MethodName[] = ['shift', 'shift_retrain', 'random'];

/** How a method chose the features it ablates; saved in the checkpoint and restored from it. */
export interface FeatureAblationRecord {
  /** How the features were chosen, in words: the end of the description's summary. */
  readonly selectedBy: string;
  /** SHIFT: attributions per attributed hook (none with manual selection). */
  readonly attributions?: Readonly<Record<HookName, HookAttribution>>;
  /** SHIFT: the candidates of the selection step, with concept scores and verdicts ("auto") or as ranked ("top"). */
  readonly selection?: readonly (SelectionRecord | RankedFeature)[];
  /** Further JSON fields of the method, saved and restored as they are (SHIFT: `options`; random: `plan`). */
  readonly fields?: Readonly<Record<string, unknown>>;
}

/** The ablation at one hook: the SAE, its ablated features (sorted) and their decoder rows `[k, dIn]`. */
interface HookAblation {
  sae: EraserSae;
  features: Int32Array;
  directions: tf.Tensor2D;
}

/** JSON keys of this format that are not the method's own `fields`. */
const FORMAT_KEYS = new Set(['format', 'version', 'method', 'head', 'probeHook', 'hooks', 'selectedBy', 'errorAttribution', 'selection']);

/** Zero ablation of SAE features, immutable; owns the decoder-row tensors (not the SAEs). */
export class FeatureAblationEraser implements Eraser {
  readonly head = undefined;
  /** Hooks with ablated features, sorted by name (the checkpoint's order). */
  private readonly hookList: HookName[];

  private constructor(
    readonly method: MethodName,
    /** The hook the probe reads; the pooled fast path exists when every ablated feature is there. */
    readonly probeHook: HookName,
    private readonly ablations: Readonly<Record<HookName, HookAblation>>,
    readonly record: FeatureAblationRecord,
  ) {
    this.hookList = Object.keys(ablations).sort();
  }

  /**
   * The eraser zero-ablating `features` (per hook, any order; hooks with none are dropped) of the
   * SAEs `saes`, which must hold every listed hook. Feature indices are checked against the SAE width.
   */
  static create(
    method: MethodName,
    saes: Readonly<Record<HookName, EraserSae>>,
    probeHook: HookName,
    features: Readonly<Record<HookName, ArrayLike<number>>>,
    record: FeatureAblationRecord,
  ): FeatureAblationEraser {
    const ablations: Record<HookName, HookAblation> = {};
    try {
      for (const [hook, list] of Object.entries(features)) {
        const sae = saes[hook];
        if (sae === undefined) throw new Error(`${method} eraser: no SAE at hook "${hook}"`);
        const sorted = checkFeatures(`${method} eraser at ${hook}`, list, sae.dSae);
        if (sorted.length === 0) continue;
        ablations[hook] = { sae, features: sorted, directions: decoderRows(sae, sorted) };
      }
    } catch (err) {
      tf.dispose(Object.values(ablations).map((a) => a.directions));
      throw err;
    }
    return new FeatureAblationEraser(method, probeHook, ablations, record);
  }

  /** Ablated features per hook (hooks with none are absent). */
  ablatedFeatures(): Readonly<FeatureSets> {
    return Object.fromEntries(this.hookList.map((h) => [h, this.ablations[h]!.features]));
  }

  /** Hooks with ablated features, sorted by name. */
  hooks(): HookName[] {
    return [...this.hookList];
  }

  unitsRemoved(): number {
    return this.hookList.reduce((a, h) => a + this.ablations[h]!.features.length, 0);
  }

  edits(): Record<HookName, Edit> {
    const out: Record<HookName, Edit> = {};
    for (const hook of this.hookList) {
      const a = this.ablations[hook]!;
      out[hook] = zeroAblationEdit(this.method, hook, a.sae, a.features, a.directions);
    }
    return out;
  }

  erasePooled(cache: ActivationCache, rows: ArrayLike<number>): tf.Tensor2D | undefined {
    const probeHook = this.probeHook;
    if (this.hookList.some((h) => h !== probeHook)) return undefined;
    const pooled = cache.pooled(probeHook, rows);
    const a = this.ablations[probeHook];
    if (a === undefined) return pooled;
    try {
      const cachedWidth = cache.dSae(probeHook);
      if (cachedWidth !== a.sae.dSae) {
        throw new Error(
          `${this.method} eraser: the cache ${cache.dir} holds SAE codes of width ${cachedWidth} at "${probeHook}", but the eraser's SAE has width ${a.sae.dSae}`,
        );
      }
      checkWidth(this.method, probeHook, a.sae.dIn, cache.dim(probeHook));
      const codes = csrColumns(cache.saePooledCsr(probeHook), rows, a.features);
      return zeroAblatePooled(pooled, codes, a.directions);
    } finally {
      pooled.dispose();
    }
  }

  describe(): EraserDescription {
    const removed: EraserDescription['removed'] = {};
    for (const h of this.hookList) removed[h] = { kind: 'sae_features', indices: Array.from(this.ablations[h]!.features) };
    const perHook = this.hookList.map((h) => `${this.ablations[h]!.features.length} at ${h}`).join(', ');
    const n = this.unitsRemoved();
    return {
      method: this.method,
      hooks: this.hooks(),
      unitsRemoved: n,
      summary: `zero-ablates ${n} SAE features${perHook === '' ? '' : ` (${perHook})`}, keeping the SAE error; ${this.record.selectedBy}`,
      removed,
    };
  }

  checkpoint(): CheckpointContent {
    const tensors: Record<string, RawTensor> = {};
    const hooks: Record<HookName, { dIn: number; dSae: number; features: number[] }> = {};
    for (const h of this.hookList) {
      const { sae, features, directions } = this.ablations[h]!;
      hooks[h] = { dIn: sae.dIn, dSae: sae.dSae, features: Array.from(features) };
      tensors[`directions.${h}`] = { dtype: 'F32', shape: [features.length, sae.dIn], data: directions.dataSync() as Float32Array };
    }
    const { selectedBy, attributions, selection, fields } = this.record;
    const json: Record<string, unknown> = { ...fields, probeHook: this.probeHook, hooks, selectedBy };
    if (attributions !== undefined) {
      for (const [hook, a] of Object.entries(attributions)) tensors[`attribution.${hook}`] = { dtype: 'F32', shape: [a.features.length], data: a.features };
      json.errorAttribution = Object.fromEntries(Object.entries(attributions).map(([h, a]) => [h, a.error]));
    }
    if (selection !== undefined) json.selection = selection;
    return { format: FEATURE_ABLATION_FORMAT, fields: json, tensors };
  }

  dispose(): void {
    tf.dispose(Object.values(this.ablations).map((a) => a.directions));
  }

  /**
   * Restores a checkpoint against the SAEs it will run with: every hook needs an SAE of the same
   * width and input width, and the SAE's decoder rows of the ablated features must equal the saved
   * ones (else the SAE is not the one the eraser was fitted with).
   */
  static restore(stored: StoredCheckpoint, target: LoadTarget): FeatureAblationEraser {
    const { json, jsonPath, tensors, method } = stored;
    const tensorPath = join(stored.dir, ERASER_TENSORS);
    if (!FEATURE_ABLATION_METHODS.includes(method)) {
      throw new Error(`${jsonPath}: field "method" is "${method}"; the ${FEATURE_ABLATION_FORMAT} format holds ${FEATURE_ABLATION_METHODS.join(', ')}`);
    }
    if (method === 'shift_retrain' && json.head === null)
      throw new Error(`${jsonPath}: a shift_retrain checkpoint needs its retrained head (field "head" is null)`);
    const { probeHook, hooks, selectedBy } = json;
    if (typeof probeHook !== 'string') throw new Error(`${jsonPath}: field "probeHook" must be a hook name`);
    if (target.probeHook !== undefined && target.probeHook !== probeHook) {
      throw new Error(`${jsonPath}: the eraser was fitted for a probe at "${probeHook}", not at "${target.probeHook}"`);
    }
    if (typeof hooks !== 'object' || hooks === null || Array.isArray(hooks)) throw new Error(`${jsonPath}: field "hooks" must be an object`);
    if (typeof selectedBy !== 'string') throw new Error(`${jsonPath}: field "selectedBy" must be a string`);
    const saes = target.saes ?? {};
    const ablations: Record<HookName, HookAblation> = {};
    try {
      for (const [hook, entry] of Object.entries(hooks as Record<HookName, { dIn?: unknown; dSae?: unknown; features?: unknown }>)) {
        const where = `${jsonPath}: hooks["${hook}"]`;
        const sae = saes[hook];
        if (sae === undefined) throw new Error(`${where}: the eraser ablates features at "${hook}" but no SAE is given for that hook`);
        if (entry.dSae !== sae.dSae) {
          throw new Error(
            `${where}: the eraser was fitted with an SAE of width ${String(entry.dSae)} (dSae), but the SAE given for "${hook}" has width ${sae.dSae}; load it with the SAE it was fitted with`,
          );
        }
        if (entry.dIn !== sae.dIn)
          throw new Error(`${where}: the eraser was fitted with an SAE reading width ${String(entry.dIn)} (dIn), but the SAE given reads width ${sae.dIn}`);
        if (!Array.isArray(entry.features)) throw new Error(`${where}.features must be an array of feature indices`);
        const features = checkFeatures(where, entry.features as number[], sae.dSae);
        const name = `directions.${hook}`;
        const info = tensors.info(name);
        if (info.shape.length !== 2 || info.shape[0] !== features.length || info.shape[1] !== sae.dIn) {
          throw new Error(`${tensorPath}: tensor "${name}" has shape [${info.shape.join(', ')}], expected [${features.length}, ${sae.dIn}]`);
        }
        const directions = decoderRows(sae, features);
        ablations[hook] = { sae, features, directions };
        const { diff, scale } = maxAbsDiff(tensors.float32(name), directions.dataSync() as Float32Array);
        if (diff > 1e-5 * Math.max(1, scale)) {
          throw new Error(
            `${tensorPath}: the decoder rows of the ablated features at "${hook}" differ from the given SAE's (max abs diff ${diff.toExponential(2)}): this is not the SAE the eraser was fitted with`,
          );
        }
      }
    } catch (err) {
      tf.dispose(Object.values(ablations).map((a) => a.directions));
      throw err;
    }
    const record: FeatureAblationRecord = {
      selectedBy,
      attributions: json.errorAttribution === undefined ? undefined : readAttributions(stored),
      selection: Array.isArray(json.selection) ? (json.selection as (SelectionRecord | RankedFeature)[]) : undefined,
      fields: Object.fromEntries(Object.entries(json).filter(([k]) => !FORMAT_KEYS.has(k))),
    };
    return new FeatureAblationEraser(method, probeHook, ablations, record);
  }
}

/** SHIFT's attributions: tensors `attribution.{hook}` with the error terms of JSON `errorAttribution`. */
function readAttributions(stored: StoredCheckpoint): Record<HookName, HookAttribution> {
  const errors = stored.json.errorAttribution;
  if (typeof errors !== 'object' || errors === null) throw new Error(`${stored.jsonPath}: field "errorAttribution" must map hooks to numbers`);
  const attributions: Record<HookName, HookAttribution> = {};
  for (const name of stored.tensors.names()) {
    if (!name.startsWith('attribution.')) continue;
    const hook = name.slice('attribution.'.length);
    const error = (errors as Record<HookName, unknown>)[hook];
    attributions[hook] = { hook, features: stored.tensors.float32(name), error: typeof error === 'number' ? error : NaN };
  }
  return attributions;
}

/** Max |a_i - b_i|, and max |a_i| (the scale the difference is judged against). */
function maxAbsDiff(a: Float32Array, b: Float32Array): { diff: number; scale: number } {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return { diff, scale };
}

/** `loadEraser`'s restorer for the feature-ablation format; `target.saes` must be the SAEs the eraser was fitted with. */
export function restoreFeatureAblationEraser(stored: StoredCheckpoint, target: LoadTarget): Eraser {
  return FeatureAblationEraser.restore(stored, target);
}
