/**
 * `loadModel(dir)`: reads a Hugging Face model folder (config.json + safetensors, possibly sharded)
 * and returns the Model for its `model_type`. Architectures are looked up in `ARCHITECTURES`; adding
 * one is one model file plus one line there.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BertModel } from './bert.js';
import { parseBertConfig, parseGptNeoxConfig, readConfigFile, stringField, type RawConfig } from './config.js';
import { GptNeoxModel } from './gpt-neox.js';
import type { Model, ModelConfigBase } from './model.js';

interface Architecture {
  /** Validates config.json and returns the architecture's config. */
  parseConfig(raw: RawConfig): ModelConfigBase;
  /** Loads the weights of `dir` for a config this architecture parsed. */
  load(dir: string, config: ModelConfigBase): Model;
}

function architecture<C extends ModelConfigBase>(parseConfig: (raw: RawConfig) => C, load: (dir: string, config: C) => Model): Architecture {
  return { parseConfig, load: (dir, config) => load(dir, config as C) };
}

/** model_type -> architecture. */
const ARCHITECTURES: Readonly<Record<string, Architecture>> = {
  gpt_neox: architecture(parseGptNeoxConfig, (dir, c) => GptNeoxModel.load(dir, c)),
  bert: architecture(parseBertConfig, (dir, c) => BertModel.load(dir, c)),
};

/** The model types `loadModel` supports. */
export const SUPPORTED_MODEL_TYPES: readonly string[] = Object.keys(ARCHITECTURES);

function architectureOf(raw: RawConfig): Architecture {
  const modelType = stringField(raw, 'model_type');
  const arch = Object.hasOwn(ARCHITECTURES, modelType) ? ARCHITECTURES[modelType] : undefined;
  if (arch === undefined) {
    throw new Error(`${raw.path}: field "model_type" is "${modelType}": unsupported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`);
  }
  return arch;
}

function configPath(dir: string): string {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${dir}: model folder not found`);
  return join(dir, 'config.json');
}

/** Reads and validates the config.json of a model folder without loading weights. */
export function loadModelConfig(dir: string): ModelConfigBase {
  const raw = readConfigFile(configPath(dir));
  return architectureOf(raw).parseConfig(raw);
}

/** Loads the model in a Hugging Face folder (config.json + model.safetensors or shards). */
export async function loadModel(dir: string): Promise<Model> {
  const raw = readConfigFile(configPath(dir));
  const arch = architectureOf(raw);
  return arch.load(dir, arch.parseConfig(raw));
}
