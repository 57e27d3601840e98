/**
 * Makes sure each SAE an experiment names exists: an existing path is used as is; a missing one
 * with a `train` spec is trained on the experiment's training texts and saved in SAELens format.
 */
import { existsSync } from 'node:fs';
import type { OpenedModel } from '../models/open.js';
import type { HookName } from '../models/model.js';
import type { ExperimentConfig, SaeSpec } from './config.js';

export async function ensureSae(hook: HookName, spec: SaeSpec, _opened: OpenedModel, config: ExperimentConfig, _texts: readonly string[]): Promise<string> {
  if (existsSync(spec.path)) return spec.path;
  if (spec.train === undefined) {
    throw new Error(`${config.source}: the SAE for "${hook}" is missing at ${spec.path}, and the config gives no "train" spec to make it (see sae-eraser train-sae --help)`);
  }
  throw new Error(`${config.source}: training the SAE for "${hook}" is not wired yet`);
}
