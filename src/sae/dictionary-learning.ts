/**
 * saprmarks/dictionary_learning `AutoEncoder` (the Sparse Feature Circuits dictionaries):
 * `ae.pt` = torch.save(state_dict) with
 *   bias [d], encoder.weight [dSae, d], encoder.bias [dSae], decoder.weight [d, dSae]
 * and encode(x) = ReLU(encoder(x - bias)), decode(f) = decoder(f) + bias; i.e. an AffineSae with
 * W_enc = encoder.weight^T, W_dec = decoder.weight^T, b_dec = bias subtracted from the input.
 * An optional `config.json` beside it (`{trainer: {dict_class, lm_name, ...}}`) supplies metadata.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { tf } from '../engine/engine.js';
import { loadTorchStateDict } from '../io/pickle.js';
import type { HookName } from '../models/model.js';
import { hookFromFeatureCircuits } from './hook-names.js';
import { AffineSae } from './sae.js';
import { expectWeight, matrix, readJsonObject, stringField, type NamedArray } from './weights.js';

export interface LoadOptions {
  /** Our hook point; overrides what the files say. */
  hook?: HookName;
  /** The model it was trained on; overrides what the files say. */
  model?: string;
}

/** Infers the hook from a Sparse Feature Circuits path `.../<site>/<id>_<size>/ae.pt`. */
function hookFromPath(aePath: string): HookName | undefined {
  const dictDir = dirname(aePath);
  return hookFromFeatureCircuits(basename(dictDir)) ?? hookFromFeatureCircuits(basename(dirname(dictDir)));
}

/** Loads `ae.pt` (a file, or a folder holding it) as an AffineSae. */
export function loadDictionaryLearningSae(path: string, options: LoadOptions = {}): AffineSae {
  const aePath = existsSync(path) && statSync(path).isDirectory() ? join(path, 'ae.pt') : path;
  if (!existsSync(aePath)) throw new Error(`${aePath}: dictionary_learning checkpoint not found`);
  const configPath = join(dirname(aePath), 'config.json');
  let trainer: Record<string, unknown> | undefined;
  if (existsSync(configPath)) {
    const cfg = readJsonObject(configPath);
    trainer = typeof cfg.trainer === 'object' && cfg.trainer !== null ? (cfg.trainer as Record<string, unknown>) : undefined;
    const dictClass = stringField(trainer, 'dict_class');
    if (dictClass !== undefined && dictClass !== 'AutoEncoder') {
      throw new Error(
        `${configPath}: dict_class "${dictClass}" is not supported (only dictionary_learning's AutoEncoder; SAELens and sparsify formats load through loadSae)`,
      );
    }
  }

  const state = loadTorchStateDict(aePath);
  const arrays = new Map<string, NamedArray>();
  for (const [name, t] of state) {
    if (t.dtype === 'float32' || t.dtype === 'float16' || t.dtype === 'bfloat16' || t.dtype === 'float64')
      arrays.set(name, { shape: t.shape, values: t.float32() });
  }
  const encW = arrays.get('encoder.weight');
  if (encW === undefined || !arrays.has('bias') || !arrays.has('decoder.weight')) {
    throw new Error(
      `${aePath}: not a dictionary_learning AutoEncoder state_dict (needs bias, encoder.weight, encoder.bias, decoder.weight; found ${[...state.keys()].join(', ') || 'nothing'})`,
    );
  }
  if (encW.shape.length !== 2) throw new Error(`${aePath}: tensor "encoder.weight" has shape [${encW.shape}], expected [dSae, d]`);
  const [dSae, dIn] = encW.shape as [number, number];
  const extra = [...state.keys()].filter((k) => !['bias', 'encoder.weight', 'encoder.bias', 'decoder.weight'].includes(k));
  if (extra.length > 0)
    throw new Error(
      `${aePath}: unexpected tensors ${extra.join(', ')}: this is not a plain AutoEncoder (gated, JumpReLU and TopK dictionaries are not supported in this format)`,
    );

  const wEncRaw = expectWeight(aePath, 'encoder.weight', encW, [dSae, dIn]);
  const bEnc = expectWeight(aePath, 'encoder.bias', arrays.get('encoder.bias'), [dSae]);
  const wDecRaw = expectWeight(aePath, 'decoder.weight', arrays.get('decoder.weight'), [dIn, dSae]);
  const bias = expectWeight(aePath, 'bias', arrays.get('bias'), [dIn]);

  return new AffineSae(
    {
      wEnc: matrix(wEncRaw, dSae, dIn, true),
      bEnc: tf.tensor1d(bEnc),
      wDec: matrix(wDecRaw, dIn, dSae, true),
      bDec: tf.tensor1d(bias),
      subtractDecoderBiasFromInput: true,
      activation: { kind: 'relu' },
    },
    {
      format: 'dictionary_learning',
      source: aePath,
      hook: options.hook ?? hookFromPath(aePath),
      model: options.model ?? stringField(trainer, 'lm_name'),
    },
  );
}
