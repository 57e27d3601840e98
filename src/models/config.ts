/**
 * Hugging Face `config.json` parsing and validation for the supported architectures.
 *
 * Every field the forward pass depends on is read here, checked for type and range, and renamed to
 * the project's vocabulary (`dModel`, `nLayers`, ...). A missing, mistyped or unsupported field is
 * an error that names the file and the field, so a bad checkpoint fails at load time rather than
 * producing wrong activations. Fields that do not change the inference math (dropout rates,
 * initializer range, `torch_dtype`, ...) are ignored.
 *
 * Adding an architecture: write its parser next to its model file using the field readers exported
 * here, and register it in load.ts.
 */
import type { ModelConfigBase } from './model.js';
import { readUtf8 } from '../io/text.js';

/** A parsed `config.json`: its path (for error messages) and its JSON object. */
export interface RawConfig {
  path: string;
  json: Readonly<Record<string, unknown>>;
}

/** The activation functions the models implement. `gelu` is the exact erf GELU, as in PyTorch. */
export type HiddenAct = 'gelu';
const SUPPORTED_ACTS: readonly HiddenAct[] = ['gelu'];

export interface GptNeoxConfig extends ModelConfigBase {
  modelType: 'gpt_neox';
  nHeads: number;
  /** `dModel / nHeads`. */
  headDim: number;
  dFf: number;
  /** Fraction of each head's dimensions that get rotary position embedding. */
  rotaryPct: number;
  /** `floor(headDim * rotaryPct)`: the first `rotaryDims` dims of each query/key head are rotated. */
  rotaryDims: number;
  rotaryBase: number;
  layerNormEps: number;
  /** x + attn(ln1(x)) + mlp(ln2(x)) when true; x' = x + attn(ln1(x)), x' + mlp(ln2(x')) when false. */
  parallelResidual: boolean;
  hiddenAct: HiddenAct;
  tieWordEmbeddings: boolean;
  /** Whether the attention projections (query_key_value, dense) have biases (HF default true). */
  attentionBias: boolean;
}

export interface BertConfig extends ModelConfigBase {
  modelType: 'bert';
  nHeads: number;
  headDim: number;
  dFf: number;
  hiddenAct: HiddenAct;
  layerNormEps: number;
  typeVocabSize: number;
}

/** Reads and JSON-parses a config.json; errors name the file. */
export function readConfigFile(path: string): RawConfig {
  let text: string;
  try {
    text = readUtf8(path);
  } catch (err) {
    throw new Error(`${path}: cannot read the model config (${(err as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new Error(`${path}: the model config must be a JSON object`);
  }
  return { path, json: json as Record<string, unknown> };
}

function fieldError(cfg: RawConfig, field: string, problem: string): Error {
  return new Error(`${cfg.path}: field "${field}" ${problem}`);
}

function describe(value: unknown): string {
  return value === undefined ? 'is missing' : `is ${JSON.stringify(value)}`;
}

/** A required string field. */
export function stringField(cfg: RawConfig, field: string): string {
  const v = cfg.json[field];
  if (typeof v !== 'string') throw fieldError(cfg, field, `${describe(v)}, expected a string`);
  return v;
}

/** A required integer field >= 1. */
export function positiveIntField(cfg: RawConfig, field: string): number {
  const v = cfg.json[field];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw fieldError(cfg, field, `${describe(v)}, expected a positive integer`);
  }
  return v;
}

/** A required finite number > 0. */
export function positiveNumberField(cfg: RawConfig, field: string): number {
  const v = cfg.json[field];
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw fieldError(cfg, field, `${describe(v)}, expected a positive number`);
  }
  return v;
}

/** A boolean field; `fallback` (the Hugging Face default) when absent, required when undefined. */
export function boolField(cfg: RawConfig, field: string, fallback?: boolean): boolean {
  const v = cfg.json[field];
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'boolean') throw fieldError(cfg, field, `${describe(v)}, expected true or false`);
  return v;
}

/** A string field restricted to `allowed`; `fallback` when absent (if given). */
export function enumField<T extends string>(cfg: RawConfig, field: string, allowed: readonly T[], fallback?: T): T {
  const v = cfg.json[field];
  if (v === undefined && fallback !== undefined) return fallback;
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw fieldError(cfg, field, `${describe(v)}: unsupported (supported: ${allowed.map((a) => JSON.stringify(a)).join(', ')})`);
  }
  return v as T;
}

/** Rejects a field whose presence would change the math in a way the implementation does not do. */
export function rejectUnlessDefault(cfg: RawConfig, field: string, isDefault: (v: unknown) => boolean, why: string): void {
  const v = cfg.json[field];
  if (v !== undefined && !isDefault(v)) throw fieldError(cfg, field, `${describe(v)}: unsupported (${why})`);
}

/** The checks every architecture shares: sizes positive, hidden size divisible by the head count. */
function baseFields(cfg: RawConfig, modelType: string): ModelConfigBase & { nHeads: number; headDim: number; dFf: number } {
  const dModel = positiveIntField(cfg, 'hidden_size');
  const nHeads = positiveIntField(cfg, 'num_attention_heads');
  if (dModel % nHeads !== 0) {
    throw fieldError(cfg, 'num_attention_heads', `is ${nHeads}, which does not divide hidden_size ${dModel}`);
  }
  return {
    modelType,
    dModel,
    nHeads,
    headDim: dModel / nHeads,
    nLayers: positiveIntField(cfg, 'num_hidden_layers'),
    dFf: positiveIntField(cfg, 'intermediate_size'),
    vocabSize: positiveIntField(cfg, 'vocab_size'),
    maxPositions: positiveIntField(cfg, 'max_position_embeddings'),
  };
}

function expectModelType(cfg: RawConfig, want: string): void {
  const got = stringField(cfg, 'model_type');
  if (got !== want) throw fieldError(cfg, 'model_type', `is "${got}", expected "${want}"`);
}

/** Parses a GPT-NeoX (Pythia) config.json. */
export function parseGptNeoxConfig(cfg: RawConfig): GptNeoxConfig {
  expectModelType(cfg, 'gpt_neox');
  const base = baseFields(cfg, 'gpt_neox');
  const rotaryPct = positiveNumberField(cfg, 'rotary_pct');
  if (rotaryPct > 1) throw fieldError(cfg, 'rotary_pct', `is ${rotaryPct}, expected a fraction in (0, 1]`);
  // Same arithmetic as transformers: int(head_size * rotary_pct).
  const rotaryDims = Math.floor(base.headDim * rotaryPct);
  if (rotaryDims < 2 || rotaryDims % 2 !== 0) {
    throw fieldError(
      cfg,
      'rotary_pct',
      `is ${rotaryPct}: head size ${base.headDim} x rotary_pct gives ${rotaryDims} rotary dims; an even number >= 2 is needed`,
    );
  }
  rejectUnlessDefault(cfg, 'rope_scaling', (v) => v === null, 'only plain rotary embeddings are implemented');
  return {
    ...base,
    modelType: 'gpt_neox',
    rotaryPct,
    rotaryDims,
    rotaryBase: positiveNumberField(cfg, 'rotary_emb_base'),
    layerNormEps: positiveNumberField(cfg, 'layer_norm_eps'),
    parallelResidual: boolField(cfg, 'use_parallel_residual'),
    hiddenAct: enumField(cfg, 'hidden_act', SUPPORTED_ACTS),
    tieWordEmbeddings: boolField(cfg, 'tie_word_embeddings'),
    attentionBias: boolField(cfg, 'attention_bias', true),
  };
}

/** Parses a BERT config.json (encoder only; absolute positions). */
export function parseBertConfig(cfg: RawConfig): BertConfig {
  expectModelType(cfg, 'bert');
  const base = baseFields(cfg, 'bert');
  enumField(cfg, 'position_embedding_type', ['absolute'], 'absolute');
  rejectUnlessDefault(cfg, 'is_decoder', (v) => v === false, 'only the bidirectional encoder is implemented');
  rejectUnlessDefault(cfg, 'add_cross_attention', (v) => v === false, 'only the bidirectional encoder is implemented');
  return {
    ...base,
    modelType: 'bert',
    hiddenAct: enumField(cfg, 'hidden_act', SUPPORTED_ACTS),
    layerNormEps: positiveNumberField(cfg, 'layer_norm_eps'),
    typeVocabSize: positiveIntField(cfg, 'type_vocab_size'),
  };
}
