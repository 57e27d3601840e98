/**
 * SAELens format: a folder with `cfg.json` + `sae_weights.safetensors`
 *   W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in], threshold [d_sae] (JumpReLU)
 *   encode(x) = act((x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc),  decode(f) = f @ W_dec + b_dec
 *
 * Config conventions handled (both the pre-6.0 flat config and the 6.x one):
 *  - `architecture`: standard (default) | topk | jumprelu; gated and others are refused;
 *  - pre-6.0 `activation_fn_str` / `activation_fn`: relu | topk (k in `activation_fn_kwargs.k`);
 *    6.x top-k: `k`;
 *  - `apply_b_dec_to_input` (default true);
 *  - `normalize_activations`: only none (also null / false) is supported: any run-time
 *    normalisation is refused with an error (fold it into the weights first);
 *  - `hook_name` / `hook_point` / `metadata.hook_name` and `model_name` / `metadata.model_name`
 *    become metadata; TransformerLens hook names map to ours (see hook-names.ts), e.g. the
 *    Pythia-70m-deduped "sm" releases' `blocks.3.hook_resid_post` -> `layers.3.resid_out`;
 *  - `finetuning_scaling_factor` and a non-unit `scaling_factor` tensor, hook_z reshaping, and
 *    `rescale_acts_by_decoder_norm` are refused.
 * Top-k: SAELens applies ReLU to the k largest pre-activations; that equals our topk(ReLU(h)).
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tf } from '../engine/engine.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { HookName } from '../models/model.js';
import type { LoadOptions } from './dictionary-learning.js';
import { hookFromTransformerLens, isOurHook } from './hook-names.js';
import { AffineSae, type SaeActivation } from './sae.js';
import { expectWeight, intField, readJsonObject, stringField } from './weights.js';

export const SAELENS_WEIGHTS = 'sae_weights.safetensors';
export const SAELENS_CONFIG = 'cfg.json';

function activationFromConfig(cfgPath: string, cfg: Record<string, unknown>): { kind: 'relu' } | { kind: 'topk'; k: number } | { kind: 'jumprelu' } {
  const architecture = stringField(cfg, 'architecture') ?? 'standard';
  const fn = stringField(cfg, 'activation_fn_str') ?? stringField(cfg, 'activation_fn') ?? 'relu';
  const kwargs = typeof cfg.activation_fn_kwargs === 'object' && cfg.activation_fn_kwargs !== null ? (cfg.activation_fn_kwargs as Record<string, unknown>) : {};
  switch (architecture) {
    case 'jumprelu':
      return { kind: 'jumprelu' };
    case 'topk': {
      const k = cfg.k ?? kwargs.k;
      if (typeof k !== 'number' || !Number.isInteger(k) || k <= 0) throw new Error(`${cfgPath}: top-k SAE without a positive integer "k"`);
      return { kind: 'topk', k };
    }
    case 'standard':
      if (fn === 'relu') return { kind: 'relu' };
      if (fn === 'topk') {
        const k = kwargs.k ?? cfg.k;
        if (typeof k !== 'number' || !Number.isInteger(k) || k <= 0) throw new Error(`${cfgPath}: activation_fn "topk" without activation_fn_kwargs.k`);
        return { kind: 'topk', k };
      }
      throw new Error(`${cfgPath}: activation function "${fn}" is not supported (relu, topk, jumprelu)`);
    default:
      throw new Error(`${cfgPath}: SAELens architecture "${architecture}" is not supported (standard, topk, jumprelu)`);
  }
}

function checkSupported(cfgPath: string, cfg: Record<string, unknown>, hookName: string | undefined): void {
  const norm = cfg.normalize_activations;
  if (!(norm === undefined || norm === null || norm === false || norm === 'none')) {
    throw new Error(`${cfgPath}: normalize_activations=${JSON.stringify(norm)} is not supported (only "none"): fold the normalisation into W_enc/W_dec first`);
  }
  if (cfg.finetuning_scaling_factor === true) throw new Error(`${cfgPath}: finetuning_scaling_factor is not supported`);
  if (cfg.reshape_activations === 'hook_z' || (hookName !== undefined && hookName.endsWith('hook_z'))) {
    throw new Error(`${cfgPath}: hook_z (per-head) SAEs are not supported: our hooks carry whole vectors`);
  }
  if (cfg.rescale_acts_by_decoder_norm === true) throw new Error(`${cfgPath}: rescale_acts_by_decoder_norm is not supported`);
}

/** Loads a SAELens folder (or its `sae_weights.safetensors`) as an AffineSae. */
export function loadSaeLensSae(path: string, options: LoadOptions = {}): AffineSae {
  const dir = existsSync(path) && statSync(path).isDirectory() ? path : dirname(path);
  const weightsPath = join(dir, SAELENS_WEIGHTS);
  const cfgPath = join(dir, SAELENS_CONFIG);
  if (!existsSync(cfgPath)) throw new Error(`${dir}: SAELens folder without ${SAELENS_CONFIG}`);
  if (!existsSync(weightsPath)) throw new Error(`${dir}: SAELens folder without ${SAELENS_WEIGHTS}`);
  const cfg = readJsonObject(cfgPath);
  const meta = typeof cfg.metadata === 'object' && cfg.metadata !== null ? (cfg.metadata as Record<string, unknown>) : undefined;
  const sourceHook = stringField(cfg, 'hook_name') ?? stringField(cfg, 'hook_point') ?? stringField(meta, 'hook_name');
  checkSupported(cfgPath, cfg, sourceHook);
  const dIn = intField(cfgPath, cfg, 'd_in');
  const dSae = intField(cfgPath, cfg, 'd_sae');
  const act = activationFromConfig(cfgPath, cfg);
  const applyBDec = cfg.apply_b_dec_to_input === undefined ? true : cfg.apply_b_dec_to_input === true;

  const file = readSafetensors(weightsPath);
  const get = (name: string, shape: number[]): Float32Array => {
    if (!file.has(name)) throw new Error(`${weightsPath}: missing tensor "${name}" (found ${file.names().join(', ')})`);
    return expectWeight(weightsPath, name, { shape: file.info(name).shape, values: file.float32(name) }, shape);
  };
  if (file.has('scaling_factor')) {
    const s = get('scaling_factor', [dSae]);
    if (s.some((v) => v !== 1)) throw new Error(`${weightsPath}: a non-unit "scaling_factor" (finetuning scaling) is not supported`);
  }
  const wEnc = get('W_enc', [dIn, dSae]);
  const bEnc = get('b_enc', [dSae]);
  const wDec = get('W_dec', [dSae, dIn]);
  const bDec = get('b_dec', [dIn]);
  let activation: SaeActivation;
  if (act.kind === 'jumprelu') {
    const threshold = get('threshold', [dSae]);
    if (threshold.some((t) => t < 0)) throw new Error(`${weightsPath}: tensor "threshold" has negative entries; JumpReLU thresholds must be >= 0`);
    activation = { kind: 'jumprelu', threshold: tf.tensor1d(threshold) };
  } else {
    activation = act;
  }
  return new AffineSae(
    {
      wEnc: tf.tensor2d(wEnc, [dIn, dSae]),
      bEnc: tf.tensor1d(bEnc),
      wDec: tf.tensor2d(wDec, [dSae, dIn]),
      bDec: tf.tensor1d(bDec),
      subtractDecoderBiasFromInput: applyBDec,
      activation,
    },
    {
      format: 'saelens',
      source: dir,
      hook: options.hook ?? (sourceHook !== undefined ? hookFromTransformerLens(sourceHook) : undefined),
      sourceHook: sourceHook !== undefined && !isOurHook(sourceHook) ? sourceHook : undefined,
      model: options.model ?? stringField(cfg, 'model_name') ?? stringField(meta, 'model_name'),
    },
  );
}

export interface SaveSaeLensOptions {
  hook?: HookName;
  model?: string;
  /** Extra fields stored in cfg.json `metadata` (e.g. training settings and metrics). */
  extraMetadata?: Record<string, unknown>;
}

/**
 * Writes an AffineSae as a SAELens 6.x folder (cfg.json + sae_weights.safetensors), atomically,
 * file by file. `hook_name` is our hook name (the models here have no TransformerLens names).
 */
export function saveSaeLensSae(sae: AffineSae, dir: string, options: SaveSaeLensOptions = {}): void {
  const act = sae.activation;
  const tensors: Record<string, tf.Tensor> = { W_enc: sae.wEnc, b_enc: sae.bEnc, W_dec: sae.wDec, b_dec: sae.bDec };
  if (act.kind === 'jumprelu') tensors.threshold = act.threshold;
  writeSafetensors(join(dir, SAELENS_WEIGHTS), tensors);
  const cfg: Record<string, unknown> = {
    architecture: act.kind === 'relu' ? 'standard' : act.kind,
    d_in: sae.dIn,
    d_sae: sae.dSae,
    dtype: 'float32',
    device: 'cpu',
    apply_b_dec_to_input: sae.subtractDecoderBiasFromInput,
    normalize_activations: 'none',
    reshape_activations: 'none',
    metadata: {
      model_name: options.model ?? sae.metadata.model ?? null,
      hook_name: options.hook ?? sae.metadata.hook ?? null,
      sae_lens_version: '6.0.0',
      sae_lens_training_version: null,
      written_by: 'sae-eraser',
      ...options.extraMetadata,
    },
  };
  if (act.kind === 'topk') cfg.k = act.k;
  writeJsonAtomic(join(dir, SAELENS_CONFIG), cfg);
}

/** Whether `dir` looks like a SAELens folder. */
export function isSaeLensDir(dir: string): boolean {
  return existsSync(join(dir, SAELENS_CONFIG)) && existsSync(join(dir, SAELENS_WEIGHTS));
}
