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
import { arrayActivationSource, collectActivations, modelActivationSource } from '../sae/buffer.js';
import { evaluateSae, saveTrainedSae, trainSaeOnSource, type SaeArch, type TrainOptions } from '../sae/train.js';
import { permutation } from '../data/prng.js';
import type { OpenedModel } from '../models/open.js';
import type { HookName } from '../models/model.js';
import type { ExperimentConfig, SaeSpec } from './config.js';

/** Reads the `train` spec of an SAE with defaults: ReLU, 4096 features, 8 passes over the tokens. */
function trainOptions(spec: Record<string, unknown>, source: string, hook: HookName): Omit<TrainOptions, 'tokens'> & { epochs: number } {
  const num = (key: string, fallback: number): number => {
    const v = spec[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new Error(`${source}: saes["${hook}"].train.${key} must be a positive number`);
    return v;
  };
  const arch = (spec.arch ?? 'relu') as SaeArch;
  if (arch !== 'relu' && arch !== 'topk') throw new Error(`${source}: saes["${hook}"].train.arch must be relu or topk`);
  return {
    arch,
    dSae: num('dSae', 4096),
    k: spec.k === undefined ? undefined : num('k', 32),
    l1: spec.l1 === undefined ? undefined : num('l1', 1.5),
    lr: spec.lr === undefined ? undefined : num('lr', 1e-3),
    batchSize: spec.batchSize === undefined ? undefined : num('batchSize', 1024),
    seed: spec.seed === undefined ? 42 : num('seed', 42),
    epochs: num('epochs', 8),
  };
}

export async function ensureSae(hook: HookName, spec: SaeSpec, opened: OpenedModel, config: ExperimentConfig, texts: readonly string[]): Promise<string> {
  if (existsSync(spec.path)) return spec.path;
  if (spec.train === undefined) {
    throw new Error(`${config.source}: the SAE for "${hook}" is missing at ${spec.path}, and the config gives no "train" spec to make it (see sae-eraser train-sae --help)`);
  }
  const { epochs, ...options } = trainOptions(spec.train, config.source, hook);
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
  });
  const heldOut = evaluateSae(result.sae, await collect(pick(order.subarray(0, nHeld))));
  saveTrainedSae(result.sae, spec.path, { model: config.model, hook, ...options, epochs, trainTokens: trainRows.length / d, heldOut, steps: result.steps });
  process.stderr.write(`trained SAE at ${hook}: held-out FVE ${heldOut.fve.toFixed(3)}, L0 ${heldOut.l0.toFixed(1)}, dead ${(100 * heldOut.deadFraction).toFixed(1)}%\n`);
  result.sae.dispose();
  return spec.path;
}
