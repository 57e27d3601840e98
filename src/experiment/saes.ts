/**
 * Makes sure each SAE an experiment names exists: an existing path is used as is; a missing one
 * with a `train` spec is trained on the experiment's training texts and saved in SAELens format
 * (with metrics.json holding its held-out FVE, L0 and dead fraction).
 *
 * The hook activations of the training texts are collected once and the SAE trains on them for as
 * many passes as its token budget needs, rather than rerunning the model every pass. A tenth of
 * the texts is held out for the metrics.
 */
import { existsSync } from 'node:fs';
import { z } from 'zod';
import { arrayActivationSource, collectActivations, modelActivationSource } from '../sae/buffer.js';
import type { HistoryLog } from '../util/history.js';
import { evaluateSae, saveTrainedSae, trainSaeOnSource, type TrainOptions } from '../sae/train.js';
import { permutation } from '../data/prng.js';
import type { OpenedModel } from '../models/open.js';
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

export const saeSpecSchema = z
  .strictObject({
    path: z.string().min(1).describe('Folder or file of the SAE (any supported format); ${shared} expands to the shared data folder.'),
    train: saeTrainSpecSchema.optional().describe('How to train the SAE when `path` is missing; omit to require the file.'),
  })
  .describe('An SAE at one hook.');

export type SaeSpec = z.output<typeof saeSpecSchema>;

/** What ensureSae needs of the experiment: where the config came from (for messages) and the model. */
export interface SaeContext {
  readonly source: string;
  readonly model: string;
}

/** The trainer's options for a parsed `train` spec (its defaults already filled in by the schema). */
function trainOptions(spec: SaeTrainSpec): Omit<TrainOptions, 'tokens'> & { epochs: number } {
  return { arch: spec.arch, dSae: spec.dSae, k: spec.k, l1: spec.l1, lr: spec.lr, batchSize: spec.batchSize, seed: spec.seed, epochs: spec.epochs };
}

/**
 * The SAE file for `hook`: `spec.path` when it exists, else an SAE trained on `texts` by the spec's
 * `train` recipe and saved there. `log` receives the training curve (loss, FVE, L0 per step).
 */
export async function ensureSae(
  hook: HookName,
  spec: SaeSpec,
  opened: OpenedModel,
  config: SaeContext,
  texts: readonly string[],
  log?: HistoryLog,
): Promise<string> {
  if (existsSync(spec.path)) return spec.path;
  if (spec.train === undefined) {
    throw new Error(
      `${config.source}: the SAE for "${hook}" is missing at ${spec.path}, and the config gives no "train" spec to make it (see sae-eraser train-sae --help)`,
    );
  }
  const { epochs, ...options } = trainOptions(spec.train);
  const order = permutation(texts.length, 42);
  const nHeld = Math.max(1, Math.floor(texts.length / 10));
  const pick = (idx: Int32Array): string[] => Array.from(idx, (i) => texts[i]!);
  const collect = (subset: string[]): Promise<Float32Array> =>
    collectActivations(modelActivationSource({ model: opened.model, tokenize: opened.tokenize, texts: subset, hook }), Number.MAX_SAFE_INTEGER);
  const trainRows = await collect(pick(order.subarray(nHeld)));
  const d = opened.model.config.dModel;
  const result = await trainSaeOnSource(arrayActivationSource(trainRows, d, { seed: options.seed }), {
    ...options,
    tokens: Math.round((trainRows.length / d) * epochs),
    hook,
    model: config.model,
    label: `training SAE at ${hook}`,
    onStep: log === undefined ? undefined : ({ step, loss, fve, l0 }) => log({ stage: `sae ${hook}`, step, values: { loss, fve, l0 } }),
  });
  const heldOut = evaluateSae(result.sae, await collect(pick(order.subarray(0, nHeld))));
  saveTrainedSae(result.sae, spec.path, { model: config.model, hook, ...options, epochs, trainTokens: trainRows.length / d, heldOut, steps: result.steps });
  process.stderr.write(
    `trained SAE at ${hook}: held-out FVE ${heldOut.fve.toFixed(3)}, L0 ${heldOut.l0.toFixed(1)}, dead ${(100 * heldOut.deadFraction).toFixed(1)}%\n`,
  );
  result.sae.dispose();
  return spec.path;
}
