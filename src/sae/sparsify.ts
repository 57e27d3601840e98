/**
 * EleutherAI sparsify top-k SAEs: a folder (named for its hookpoint, e.g. `layers.3`) with
 * `cfg.json` ({d_in, k, num_latents | expansion_factor, activation, transcode, skip_connection, ...})
 * and `sae.safetensors`:
 *   encoder.weight [M, d], encoder.bias [M], W_dec [M, d], b_dec [d]
 *   encode(x) = TopK_k(ReLU(encoder(x - b_dec))),  decode(f) = f @ W_dec + b_dec
 * i.e. an AffineSae with W_enc = encoder.weight^T and b_dec subtracted from the input. Transcoders,
 * skip connections and the groupmax activation are refused with a clear error.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { tf } from '../engine/engine.js';
import { readSafetensors } from '../io/safetensors.js';
import type { LoadOptions } from './dictionary-learning.js';
import { hookFromSparsify } from './hook-names.js';
import { AffineSae } from './sae.js';
import { expectWeight, intField, matrix, readJsonObject, stringField } from './weights.js';

export const SPARSIFY_WEIGHTS = 'sae.safetensors';

/** Loads a sparsify folder (or its `sae.safetensors`) as an AffineSae. */
export function loadSparsifySae(path: string, options: LoadOptions = {}): AffineSae {
  const dir = existsSync(path) && statSync(path).isDirectory() ? path : dirname(path);
  const cfgPath = join(dir, 'cfg.json');
  const weightsPath = join(dir, SPARSIFY_WEIGHTS);
  if (!existsSync(cfgPath)) throw new Error(`${dir}: sparsify folder without cfg.json`);
  if (!existsSync(weightsPath)) throw new Error(`${dir}: sparsify folder without ${SPARSIFY_WEIGHTS}`);
  const cfg = readJsonObject(cfgPath);
  const activation = stringField(cfg, 'activation') ?? 'topk';
  if (activation !== 'topk') throw new Error(`${cfgPath}: activation "${activation}" is not supported (only topk)`);
  if (cfg.transcode === true) throw new Error(`${cfgPath}: this is a transcoder (transcode: true), not an SAE`);
  if (cfg.skip_connection === true) throw new Error(`${cfgPath}: skip connections (W_skip) are not supported`);
  const dIn = intField(cfgPath, cfg, 'd_in');
  const k = intField(cfgPath, cfg, 'k');

  const file = readSafetensors(weightsPath);
  if (file.has('W_skip')) throw new Error(`${weightsPath}: skip connections (W_skip) are not supported`);
  if (!file.has('encoder.weight')) throw new Error(`${weightsPath}: missing tensor "encoder.weight" (found ${file.names().join(', ')})`);
  const encShape = file.info('encoder.weight').shape;
  const dSae = encShape[0]!;
  const numLatents =
    typeof cfg.num_latents === 'number' && cfg.num_latents > 0 ? cfg.num_latents : typeof cfg.expansion_factor === 'number' ? cfg.expansion_factor * dIn : dSae;
  if (numLatents !== dSae) throw new Error(`${cfgPath}: num_latents/expansion_factor say ${numLatents} latents but encoder.weight has ${dSae}`);
  const get = (name: string, shape: number[]): Float32Array => {
    if (!file.has(name)) throw new Error(`${weightsPath}: missing tensor "${name}" (found ${file.names().join(', ')})`);
    return expectWeight(weightsPath, name, { shape: file.info(name).shape, values: file.float32(name) }, shape);
  };
  const encW = get('encoder.weight', [dSae, dIn]);
  const encB = get('encoder.bias', [dSae]);
  const wDec = get('W_dec', [dSae, dIn]);
  const bDec = get('b_dec', [dIn]);
  return new AffineSae(
    {
      wEnc: matrix(encW, dSae, dIn, true),
      bEnc: tf.tensor1d(encB),
      wDec: tf.tensor2d(wDec, [dSae, dIn]),
      bDec: tf.tensor1d(bDec),
      subtractDecoderBiasFromInput: true,
      activation: { kind: 'topk', k },
    },
    {
      format: 'sparsify',
      source: dir,
      hook: options.hook ?? hookFromSparsify(basename(dir)),
      sourceHook: basename(dir),
      model: options.model,
    },
  );
}

/** Whether `dir` looks like a sparsify folder. */
export function isSparsifyDir(dir: string): boolean {
  return existsSync(join(dir, 'cfg.json')) && existsSync(join(dir, SPARSIFY_WEIGHTS));
}
