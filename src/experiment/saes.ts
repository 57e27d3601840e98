/**
 * Makes sure each SAE an experiment names exists: an existing path is used as is; a missing one
 * with a `train` spec is trained on the experiment's training texts and saved in SAELens format
 * (with metrics.json holding its held-out FVE, L0 and dead fraction); a missing one with
 * `download: "feature-circuits"` is one of the Sparse Feature Circuits dictionaries of
 * Pythia-70m-deduped, fetched from the hub (src/sae/feature-circuits.ts) into the folder its path
 * names.
 *
 * Every SAE to train is trained from one activation pass (`ensureSaes`): the model runs once over
 * the training texts capturing every hook that needs an SAE, each hook's activations spilled to its
 * own file, and each SAE trains on its file for as many passes as its token budget needs, rather
 * than rerunning the model per hook or per pass. A tenth of the texts is held out for the metrics.
 * A config's `saes` may key specs by hook pattern (`layers.*.resid_out`, with `{hook}` in the path),
 * checked when the config is read (`checkSaeSpecs`) and expanded once the model is open
 * (`expandSaeSpecs`).
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { basename, dirname, join, normalize } from 'node:path';
import { z } from 'zod';
import { ensureFeatureCircuitsSaes } from '../sae/feature-circuits.js';
import { featureCircuitsFolder } from '../sae/hook-names.js';
import { checkHookPattern, expandHookPatterns, isHookPattern } from '../sae/hook-patterns.js';
import { AffineSae, type Sae } from '../sae/sae.js';
import type { HistoryLog } from '../util/history.js';
import { trainSaesOnModel, type SaeJob, type TrainOptions } from '../sae/train.js';
import { permutation } from '../data/prng.js';
import { readJson } from '../io/text.js';
import type { OpenedModel } from '../models/open.js';
import type { SaeQuality } from './results.js';
import type { HookName } from '../models/model.js';

/**
 * How to train an SAE that is missing (an SAE spec's `train`). The options the trainer defaults
 * itself (k, l1, lr, batchSize) stay unset when absent, so its defaults apply.
 */
export const saeTrainSpecSchema = z
  .strictObject({
    arch: z.enum(['relu', 'topk']).default('relu').describe('SAE architecture: relu (L1 penalty, dictionary_learning StandardTrainer conventions) or topk.'),
    dSae: z.number().int().min(1).default(4096).describe('Number of SAE features.'),
    epochs: z
      .number()
      .positive()
      .default(8)
      .describe('Passes over the training tokens (the token budget is the collected tokens times this; may be fractional).'),
    k: z.number().int().min(1).optional().describe('Active features per token; arch topk only. Default 32.'),
    l1: z.number().positive().optional().describe('L1 coefficient; arch relu only. Default 0.1 (inputs are scaled to E||x|| = sqrt(dIn)).'),
    lr: z.number().positive().optional().describe('Adam learning rate. Default 1e-3.'),
    batchSize: z.number().int().min(1).optional().describe('Tokens per optimiser step. Default 1024.'),
    seed: z.number().int().min(0).default(42).describe('Seed of the initialisation and the token order.'),
  })
  .superRefine((o, ctx) => {
    // The trainer reads k only for topk and l1 only for relu (src/sae/train.ts).
    if (o.k !== undefined && o.arch !== 'topk') ctx.addIssue({ code: 'custom', path: ['k'], message: `applies only to arch "topk" (arch is "${o.arch}")` });
    if (o.l1 !== undefined && o.arch !== 'relu') ctx.addIssue({ code: 'custom', path: ['l1'], message: `applies only to arch "relu" (arch is "${o.arch}")` });
  })
  .describe('Training recipe used when the SAE file is missing (see sae-eraser train-sae).');

export type SaeTrainSpec = z.output<typeof saeTrainSpecSchema>;

/** The folder the Feature Circuits zip extracts to (src/sae/feature-circuits.ts); a downloaded SAE's path lies inside it. */
const FEATURE_CIRCUITS_ROOT = 'pythia-70m-deduped';

export const saeSpecSchema = z
  .strictObject({
    path: z.string().min(1).describe('Folder or file of the SAE (any supported format); ${shared} expands to the shared data folder.'),
    train: saeTrainSpecSchema.optional().describe('How to train the SAE when `path` is missing; omit to require the file.'),
    download: z
      .enum(['feature-circuits'])
      .optional()
      .describe(
        `Where to fetch the SAE when \`path\` is missing. "feature-circuits": the Sparse Feature Circuits dictionaries of Pythia-70m-deduped (the zip in saprmarks/pythia-70m-deduped-saes, about 2.4 GB, through the hub cache), extracted once for every hook; \`path\` must then be <folder>/${FEATURE_CIRCUITS_ROOT}/<site>/<id>_<size> with the site of this hook (embed, attn_out_layer{i}, mlp_out_layer{i}, resid_out_layer{i}), e.g. .cache/saes/${FEATURE_CIRCUITS_ROOT}/resid_out_layer4/10_32768. Not with \`train\`.`,
      ),
  })
  .superRefine((spec, ctx) => {
    if (spec.train !== undefined && spec.download !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['download'], message: 'give either "train" or "download" for a missing SAE, not both' });
    }
  })
  .describe('An SAE at one hook.');

export type SaeSpec = z.output<typeof saeSpecSchema>;

/**
 * Where a `download: "feature-circuits"` SAE goes: `path` is `<dir>/pythia-70m-deduped/<site>/<dict>`
 * with `<site>` the Feature Circuits folder of `hook`. Returns `dir` (what ensureFeatureCircuitsSaes
 * extracts into) and `dict`; throws, naming `where`, when the path does not have that shape.
 */
export function featureCircuitsTarget(hook: string, path: string, where: string): { dir: string; dict: string } {
  const dictDir = normalize(path).replace(/[\\/]+$/, '');
  const siteDir = dirname(dictDir);
  const root = dirname(siteDir);
  const dict = basename(dictDir);
  const site = basename(siteDir);
  let expected: string;
  try {
    expected = featureCircuitsFolder(hook);
  } catch (err) {
    throw new Error(`${where}: download "feature-circuits" needs a hook name as the SAE's key: ${(err as Error).message}`, { cause: err });
  }
  if (basename(root) !== FEATURE_CIRCUITS_ROOT || site !== expected || !/^\d+_\d+$/.test(dict)) {
    throw new Error(
      `${where}: with download "feature-circuits" the path must be <folder>/${FEATURE_CIRCUITS_ROOT}/${expected}/<id>_<size> ` +
        `(the Sparse Feature Circuits layout, e.g. .cache/saes/${FEATURE_CIRCUITS_ROOT}/${expected}/10_32768), got "${path}"`,
    );
  }
  return { dir: dirname(root), dict };
}

/** Checks what can be checked of an SAE spec before anything loads (the Feature Circuits layout of a download). */
export function checkSaeSpec(hook: string, spec: SaeSpec, where: string): void {
  if (spec.download === 'feature-circuits') featureCircuitsTarget(hook, spec.path, where);
}

/** What ensureSae needs of the experiment: where the config came from (for messages) and the model. */
export interface SaeContext {
  readonly source: string;
  readonly model: string;
}

/** The trainer's options for a parsed `train` spec (its defaults already filled in by the schema). */
function trainOptions(spec: SaeTrainSpec): Omit<TrainOptions, 'tokens'> & { epochs: number } {
  return { arch: spec.arch, dSae: spec.dSae, k: spec.k, l1: spec.l1, lr: spec.lr, batchSize: spec.batchSize, seed: spec.seed, epochs: spec.epochs };
}

/** What `{hook}` in an SAE spec's path stands for. */
export const HOOK_PLACEHOLDER = '{hook}';

/**
 * Checks the keys of a config's `saes` when it is read: a key with `*` is a hook pattern
 * (src/sae/hook-patterns.ts), whose path must hold `{hook}` (else every hook it matches would share
 * one file). Returns the specs with `{hook}` in an explicit key's path already replaced.
 */
export function checkSaeSpecs(saes: Readonly<Record<string, SaeSpec>>, where: string): Record<string, SaeSpec> {
  const out: Record<string, SaeSpec> = {};
  for (const [key, spec] of Object.entries(saes)) {
    const at = `${where}["${key}"]`;
    if (isHookPattern(key)) {
      checkHookPattern(key, at);
      if (!spec.path.includes(HOOK_PLACEHOLDER)) {
        throw new Error(
          `${at}: the path of a hook pattern must contain ${HOOK_PLACEHOLDER} (else every hook it matches would share one SAE), got "${spec.path}"`,
        );
      }
      out[key] = spec;
    } else {
      out[key] = { ...spec, path: spec.path.replaceAll(HOOK_PLACEHOLDER, key) };
      checkSaeSpec(key, out[key], at);
    }
  }
  return out;
}

/**
 * A config's `saes` (checked by `checkSaeSpecs`) for the model's hooks: patterns expanded in forward
 * order with `{hook}` in their paths replaced, an explicit key overriding a pattern for its hook.
 * An unknown hook, a pattern that matches nothing and two patterns that match one hook are errors
 * naming `where`.
 */
export function expandSaeSpecs(saes: Readonly<Record<string, SaeSpec>>, hookNames: readonly HookName[], where: string): Record<HookName, SaeSpec> {
  const out: Record<HookName, SaeSpec> = {};
  for (const { hook, from } of expandHookPatterns(Object.keys(saes), hookNames, where, 'SAE hook')) {
    const spec = saes[from]!;
    out[hook] = { ...spec, path: spec.path.replaceAll(HOOK_PLACEHOLDER, hook) };
    checkSaeSpec(hook, out[hook], `${where}: saes["${from}"]`);
  }
  return out;
}

/**
 * The SAE file for `hook`: `spec.path` when it exists, else the Feature Circuits dictionaries fetched
 * and extracted so that it does (`download`), else an SAE trained on `texts` by the spec's `train`
 * recipe and saved there (`ensureSaes` at one hook). `log` receives the training curve.
 */
export async function ensureSae(
  hook: HookName,
  spec: SaeSpec,
  opened: OpenedModel,
  config: SaeContext,
  texts: readonly string[],
  log?: HistoryLog,
): Promise<string> {
  return (await ensureSaes({ [hook]: spec }, opened, config, texts, log))[hook]!;
}

/**
 * The SAE file of each hook of `specs`: `spec.path` when it exists, else the Feature Circuits
 * dictionaries fetched and extracted so that it does (`download`), else an SAE trained on `texts` by
 * the spec's `train` recipe and saved there. Every SAE to train is trained from one activation pass
 * (src/sae/train.ts `trainSaesOnModel`): the model runs once over the training texts and once over
 * the held-out tenth, capturing every hook, each hook's tokens spilled to a file beside its SAE's
 * folder. Every spec is checked before anything is fetched or trained. `log` receives the training
 * curves (loss, FVE, L0 per step, stage `sae <hook>`). Returns the paths by hook.
 */
export async function ensureSaes(
  specs: Readonly<Record<HookName, SaeSpec>>,
  opened: OpenedModel,
  config: SaeContext,
  texts: readonly string[],
  log?: HistoryLog,
): Promise<Record<HookName, string>> {
  const paths: Record<HookName, string> = {};
  const toTrain: Record<HookName, SaeTrainSpec> = {};
  for (const [hook, spec] of Object.entries(specs)) {
    paths[hook] = spec.path;
    if (existsSync(spec.path)) continue;
    if (spec.download === 'feature-circuits') {
      featureCircuitsTarget(hook, spec.path, `${config.source}: saes["${hook}"]`);
    } else if (spec.train === undefined) {
      throw new Error(
        `${config.source}: the SAE for "${hook}" is missing at ${spec.path}, and the config gives no "train" spec to make it (see sae-eraser train-sae --help)`,
      );
    } else {
      toTrain[hook] = spec.train;
    }
  }
  for (const [hook, spec] of Object.entries(specs)) {
    if (existsSync(spec.path) || spec.download !== 'feature-circuits') continue;
    const { dir, dict } = featureCircuitsTarget(hook, spec.path, `${config.source}: saes["${hook}"]`);
    const root = await ensureFeatureCircuitsSaes(dir, { dict });
    if (!existsSync(spec.path)) {
      throw new Error(
        `${config.source}: the SAE for "${hook}" is missing at ${spec.path}, and the Sparse Feature Circuits dictionaries at ${root} do not include it (delete ${root} to fetch them again)`,
      );
    }
  }
  if (Object.keys(toTrain).length === 0) return paths;
  // A tenth of the texts is held out for the metrics, the same tenth for every hook.
  const order = permutation(texts.length, 42);
  const nHeld = Math.max(1, Math.floor(texts.length / 10));
  const pick = (idx: Int32Array): string[] => Array.from(idx, (i) => texts[i]!);
  const jobs: Record<HookName, SaeJob> = {};
  for (const [hook, train] of Object.entries(toTrain)) {
    const { epochs, ...options } = trainOptions(train);
    // The activations are spilled beside the SAE's folder: the folder itself exists only once the SAE is saved.
    const parent = dirname(specs[hook]!.path);
    mkdirSync(parent, { recursive: true });
    jobs[hook] = {
      out: specs[hook]!.path,
      spillDir: parent,
      train: {
        ...options,
        label: `training SAE at ${hook}`,
        onStep: log === undefined ? undefined : ({ step, loss, fve, l0 }) => log({ stage: `sae ${hook}`, step, values: { loss, fve, l0 } }),
      },
      tokens: (collected) => Math.round(collected * epochs),
      info: { epochs },
    };
  }
  await trainSaesOnModel(
    opened,
    jobs,
    { model: config.model, texts: pick(order.subarray(nHeld)), heldOut: pick(order.subarray(0, nHeld)) },
    (hook, { sae, heldOut }) => {
      // Only the path is needed: each SAE is freed as soon as it is saved.
      sae.dispose();
      process.stderr.write(
        `trained SAE at ${hook}: held-out FVE ${heldOut!.fve.toFixed(3)}, L0 ${heldOut!.l0.toFixed(1)}, dead ${(100 * heldOut!.deadFraction).toFixed(1)}%\n`,
      );
    },
  );
  return paths;
}

/**
 * An SAE's quality as the experiment reports it: its size and architecture, and, when its folder
 * holds the metrics.json that training writes (src/sae/train.ts `saveTrainedSae`), the held-out FVE,
 * L0 and dead-feature fraction measured there (null otherwise, e.g. for a downloaded SAE).
 */
export function saeQuality(path: string, sae: Sae): SaeQuality {
  const file = join(path, 'metrics.json');
  const metrics = existsSync(file) && statSync(path).isDirectory() ? (readJson(file) as Record<string, unknown>) : {};
  const held = (typeof metrics.heldOut === 'object' && metrics.heldOut !== null ? metrics.heldOut : {}) as Record<string, unknown>;
  const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const kind = sae instanceof AffineSae ? sae.activation.kind : undefined;
  return {
    path,
    fve: num(held.fve),
    l0: num(held.l0),
    dead_fraction: num(held.deadFraction),
    d_sae: sae.dSae,
    arch: typeof metrics.arch === 'string' ? metrics.arch : (kind ?? null),
  };
}
