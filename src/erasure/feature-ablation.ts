/**
 * The eraser of the feature-ablation family (`shift`, `shift_retrain` and the `random` control):
 * zero ablation of chosen SAE features at one or more hooks, x' = x - sum_{i in S} f_i(x) v_i with
 * the SAE error kept (the math, and why the pooled path is exact at the probe hook, is in
 * ablate.ts), plus a record of how the features were chosen.
 *
 * Checkpoint (layout in checkpoint.ts), format `sae-eraser/feature-ablation`:
 *   eraser.json         { ..., probeHook, hooks: { [hook]: { dIn, dSae, features: number[] } },
 *                         selectedBy, supervision, errorAttribution?, selection?, examplesUsed?, and
 *                         the method's own field: SHIFT's `options` (shift-options.ts), the random
 *                         control's `plan` }
 *   eraser.safetensors  `directions.{hook}` [k, dIn]: the ablated decoder rows, to detect at load
 *                       that a different SAE is passed; `attribution.{hook}` [dSae] (SHIFT).
 */
import { join } from 'node:path';
import { z } from 'zod';
import { tf } from '../engine/engine.js';
import type { ActivationCache } from '../cache/cache.js';
import type { RawTensor } from '../io/safetensors.js';
import type { Edit, GraphEdit, HookName } from '../models/model.js';
import { checkFeatures, csrColumns, decoderRows, zeroAblatePooled, zeroAblationEdit, zeroAblationGraphEdit, type FeatureSets } from './ablate.js';
import type { HookAttribution, RankedFeature } from './attribution.js';
import { CHECKPOINT_VERSION, checkpointFields, earlierLayoutError, ERASER_TENSORS, type LoadTarget, type StoredCheckpoint } from './checkpoint.js';
import {
  checkWidth,
  supervisionSchema,
  type CheckpointContent,
  type Eraser,
  type EraserDescription,
  type EraserSae,
  type MethodName,
  type SelectionDescription,
  type Supervision,
} from './eraser.js';
import { ASSOCIATION_RULES, type SelectionRecord } from './feature-selection.js';
import { positiveInt, parseStrict } from '../util/schema.js';
import { shiftOptionsSchema, shiftRetrainOptionsSchema, type ShiftOptions, type ShiftRetrainOptions } from './shift-options.js';

export const FEATURE_ABLATION_FORMAT = 'sae-eraser/feature-ablation';

/** Methods whose erasers are feature ablations (and may be saved in this format). */
const FEATURE_ABLATION_METHODS: readonly MethodName[] = ['shift', 'shift_retrain', 'random'];

/** What the random control drew, saved in its checkpoint as `plan`. */
const randomPlanSchema = z
  .strictObject({
    seed: z.number().int().describe('Seed of the draws.'),
    source: z.enum(['perHook', 'k', 'shift']).describe("Where the counts came from: the perHook option, the k option, or SHIFT's selection."),
    perHook: z.record(z.string(), z.number().int().min(0)).optional().describe('Features drawn per hook (perHook and shift).'),
    k: z.number().int().min(0).optional().describe('Features drawn from the union of `hooks` (k).'),
    hooks: z.array(z.string()).describe('The hooks drawn from.'),
  })
  .describe("The random control's draws.");

export type RandomPlan = z.output<typeof randomPlanSchema>;

/** The method's own JSON field: SHIFT's options (defaults included) or the random control's plan. */
export interface FeatureAblationFields {
  readonly options?: ShiftOptions | ShiftRetrainOptions;
  readonly plan?: RandomPlan;
}

/** How a method chose the features it ablates; saved in the checkpoint and restored from it. */
export interface FeatureAblationRecord {
  /** How the features were chosen, in words: the end of the description's summary. */
  readonly selectedBy: string;
  /** SHIFT: attributions per attributed hook (none with manual selection). */
  readonly attributions?: Readonly<Record<HookName, HookAttribution>>;
  /** SHIFT: the candidates of the selection step, with concept scores and verdicts ("auto") or as ranked ("top"). */
  readonly selection?: readonly (SelectionRecord | RankedFeature)[];
  /** The method's own field, saved and restored (checked against its schema). */
  readonly fields?: FeatureAblationFields;
  /** The labels the fit read (from the fitter; saved, since the random control's plan does not hold SHIFT's options). */
  readonly supervision: Supervision;
  /** SHIFT: the examples its attribution and its concept test read (the options cap them; a split may hold fewer). */
  readonly examplesUsed?: ExamplesUsed;
}

/** How many examples SHIFT's attribution (ambiguous training split) and concept test (concept-labelled set) read. */
export interface ExamplesUsed {
  readonly attribution?: number;
  readonly concept?: number;
}

const rankedFeatureFields = {
  hook: z.string().describe('Hook of the feature.'),
  feature: z.number().int().min(0).describe('Feature index in the SAE at the hook.'),
  attribution: z.number().describe('Its attribution score.'),
};

/** The JSON of this format, by method (the method's own field differs). */
function checkpointSchema(method: MethodName): z.ZodType {
  const own =
    method === 'random'
      ? { plan: randomPlanSchema }
      : { options: (method === 'shift' ? shiftOptionsSchema : shiftRetrainOptionsSchema).describe("SHIFT's options, defaults included.") };
  return z.strictObject({
    ...checkpointFields,
    probeHook: z.string().describe('The hook the probe reads.'),
    hooks: z
      .record(
        z.string(),
        z.strictObject({
          dIn: positiveInt().describe("Input width of the hook's SAE."),
          dSae: positiveInt().describe("Width of the hook's SAE."),
          features: z.array(z.number().int().min(0)).describe('The ablated features.'),
        }),
      )
      .describe('The ablated features per hook, with the widths of the SAE they belong to.'),
    selectedBy: z.string().describe('How the features were chosen, in words.'),
    supervision: supervisionSchema,
    errorAttribution: z.record(z.string(), z.number()).optional().describe("SHIFT: the SAE error term's attribution per attributed hook."),
    selection: z
      .array(
        z.union([
          z.strictObject({
            ...rankedFeatureFields,
            conceptScore: z.number().describe('Concept score of the concept test.'),
            taskScore: z.number().optional().describe('Task score of the concept test (absent for the concept-only rule).'),
            rule: z.enum(ASSOCIATION_RULES).describe('How the scores were computed.'),
            selected: z.boolean().describe('Whether the concept test kept the feature.'),
          }),
          z.strictObject(rankedFeatureFields),
        ]),
      )
      .optional()
      .describe('SHIFT: the candidates of the selection step.'),
    examplesUsed: z
      .strictObject({
        attribution: positiveInt().optional().describe('Ambiguous training examples the attribution read.'),
        concept: positiveInt().optional().describe('Concept-labelled examples the concept test read.'),
      })
      .optional()
      .describe('SHIFT: the examples its attribution and concept test read.'),
    ...own,
  });
}

interface StoredFeatureAblation {
  probeHook: HookName;
  hooks: Record<HookName, { dIn: number; dSae: number; features: number[] }>;
  selectedBy: string;
  supervision: Supervision;
  errorAttribution?: Record<HookName, number>;
  selection?: (SelectionRecord | RankedFeature)[];
  examplesUsed?: ExamplesUsed;
  options?: ShiftOptions | ShiftRetrainOptions;
  plan?: RandomPlan;
}

/** The ablation at one hook: the SAE, its ablated features (sorted) and their decoder rows `[k, dIn]`. */
interface HookAblation {
  sae: EraserSae;
  features: Int32Array;
  directions: tf.Tensor2D;
}

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

  /** `edits()` as ONNX nodes (`zeroAblationGraphEdit`); undefined when an SAE has no ONNX form. */
  graphEdits(): Record<HookName, GraphEdit> | undefined {
    const out: Record<HookName, GraphEdit> = {};
    for (const hook of this.hookList) {
      const a = this.ablations[hook]!;
      const edit = zeroAblationGraphEdit(this.method, hook, a.sae, a.features);
      if (edit === undefined) return undefined;
      out[hook] = edit;
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
      supervision: this.record.supervision,
      selection: this.selectionDescription(),
    };
  }

  /**
   * How the features were chosen, from the record. Per hook: SHIFT's attributed hooks with their
   * candidates (the top features by attribution that went to selection) or, with manual selection,
   * the listed hooks; the random control's hooks where it drew features, all of whose features were
   * candidates.
   */
  private selectionDescription(): SelectionDescription {
    const { selectedBy, attributions, selection, fields, examplesUsed } = this.record;
    const selected = (h: HookName): number => this.ablations[h]?.features.length ?? 0;
    const perHook: SelectionDescription['perHook'] = {};
    if (fields?.plan !== undefined) {
      for (const h of this.hookList) perHook[h] = { candidates: this.ablations[h]!.sae.dSae, selected: selected(h) };
      return { rule: selectedBy, parameters: { ...fields.plan }, perHook };
    }
    const candidates = new Map<HookName, number>();
    for (const r of selection ?? []) candidates.set(r.hook, (candidates.get(r.hook) ?? 0) + 1);
    const hooks = attributions === undefined || Object.keys(attributions).length === 0 ? this.hookList : Object.keys(attributions);
    // Manual selection has no candidates but the listed features themselves.
    for (const h of hooks)
      perHook[h] = { candidates: selection === undefined || selection.length === 0 ? selected(h) : (candidates.get(h) ?? 0), selected: selected(h) };
    const rules = [...new Set((selection ?? []).flatMap((r) => ('rule' in r ? [r.rule] : [])))];
    const parameters: Record<string, unknown> = { ...fields?.options };
    if (examplesUsed !== undefined) parameters.examplesUsed = { ...examplesUsed };
    if (rules.length > 0) parameters.conceptRules = rules;
    return { rule: selectedBy, parameters, perHook };
  }

  checkpoint(): CheckpointContent {
    const tensors: Record<string, RawTensor> = {};
    const hooks: Record<HookName, { dIn: number; dSae: number; features: number[] }> = {};
    for (const h of this.hookList) {
      const { sae, features, directions } = this.ablations[h]!;
      hooks[h] = { dIn: sae.dIn, dSae: sae.dSae, features: Array.from(features) };
      tensors[`directions.${h}`] = { dtype: 'F32', shape: [features.length, sae.dIn], data: directions.dataSync() as Float32Array };
    }
    const { selectedBy, attributions, selection, fields, supervision, examplesUsed } = this.record;
    const json: Record<string, unknown> = { ...fields, probeHook: this.probeHook, hooks, selectedBy, supervision };
    if (examplesUsed !== undefined) json.examplesUsed = examplesUsed;
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
    const { jsonPath, tensors, method } = stored;
    const tensorPath = join(stored.dir, ERASER_TENSORS);
    if (!FEATURE_ABLATION_METHODS.includes(method)) {
      throw new Error(`${jsonPath}: field "method" is "${method}"; the ${FEATURE_ABLATION_FORMAT} format holds ${FEATURE_ABLATION_METHODS.join(', ')}`);
    }
    if (method === 'shift_retrain' && stored.json.head === null)
      throw new Error(`${jsonPath}: a shift_retrain checkpoint needs its retrained head (field "head" is null)`);
    // Version 2 files lack `supervision`, which a random control's plan cannot restore.
    if (stored.json.version !== CHECKPOINT_VERSION)
      throw earlierLayoutError(jsonPath, stored.json.version as number, 'of this format, without the labels the fit read (field "supervision")');
    const json = parseStrict(checkpointSchema(method), stored.json, jsonPath) as StoredFeatureAblation;
    const { probeHook, hooks, selectedBy } = json;
    if (target.probeHook !== undefined && target.probeHook !== probeHook) {
      throw new Error(`${jsonPath}: the eraser was fitted for a probe at "${probeHook}", not at "${target.probeHook}"`);
    }
    const saes = target.saes ?? {};
    const ablations: Record<HookName, HookAblation> = {};
    try {
      for (const [hook, entry] of Object.entries(hooks)) {
        const where = `${jsonPath}: hooks["${hook}"]`;
        const sae = saes[hook];
        if (sae === undefined) throw new Error(`${where}: the eraser ablates features at "${hook}" but no SAE is given for that hook`);
        if (entry.dSae !== sae.dSae) {
          throw new Error(
            `${where}: the eraser was fitted with an SAE of width ${entry.dSae} (dSae), but the SAE given for "${hook}" has width ${sae.dSae}; load it with the SAE it was fitted with`,
          );
        }
        if (entry.dIn !== sae.dIn)
          throw new Error(`${where}: the eraser was fitted with an SAE reading width ${entry.dIn} (dIn), but the SAE given reads width ${sae.dIn}`);
        const features = checkFeatures(where, entry.features, sae.dSae);
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
    const fields: FeatureAblationFields = json.plan !== undefined ? { plan: json.plan } : { options: json.options };
    const record: FeatureAblationRecord = {
      selectedBy,
      attributions: json.errorAttribution === undefined ? undefined : readAttributions(stored, json.errorAttribution),
      selection: json.selection,
      fields,
      supervision: json.supervision,
      examplesUsed: json.examplesUsed,
    };
    return new FeatureAblationEraser(method, probeHook, ablations, record);
  }
}

/** SHIFT's attributions: tensors `attribution.{hook}`, with the error terms of JSON `errorAttribution` (one per tensor). */
function readAttributions(stored: StoredCheckpoint, errors: Readonly<Record<HookName, number>>): Record<HookName, HookAttribution> {
  const attributions: Record<HookName, HookAttribution> = {};
  const tensorPath = join(stored.dir, ERASER_TENSORS);
  for (const name of stored.tensors.names()) {
    if (!name.startsWith('attribution.')) continue;
    const hook = name.slice('attribution.'.length);
    const error = errors[hook];
    if (error === undefined)
      throw new Error(`${stored.jsonPath}: field "errorAttribution" has no entry for hook "${hook}" (tensor "${name}" of ${tensorPath})`);
    attributions[hook] = { hook, features: stored.tensors.float32(name), error };
  }
  for (const hook of Object.keys(errors)) {
    if (attributions[hook] === undefined)
      throw new Error(`${stored.jsonPath}: field "errorAttribution.${hook}" has no tensor "attribution.${hook}" in ${tensorPath}`);
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
