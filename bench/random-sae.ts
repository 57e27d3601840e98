/**
 * Seeded random SAE weights and inputs for the benchmarks, as flat arrays that both sides read:
 * sae-eraser through `toAffineSae`, PyTorch through raw float32 files (`writeF32Files`) or a
 * safetensors file (`writeSaeSafetensors`).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from '../src/engine/engine.js';
import { randomNormalArray } from '../src/data/prng.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { AffineSae } from '../src/sae/sae.js';

/** A ReLU SAE `f = ReLU((x - b_dec) W_enc + b_enc)`, `x_hat = f W_dec + b_dec`, with inputs `x`. */
export interface SaeArrays {
  d: number;
  dSae: number;
  /** `[tokens, d]` (empty when no inputs were asked for). */
  x: Float32Array;
  /** `[d, dSae]` */
  wEnc: Float32Array;
  /** `[dSae]` */
  bEnc: Float32Array;
  /** `[dSae, d]` */
  wDec: Float32Array;
  /** `[d]` */
  bDec: Float32Array;
}

/**
 * Gaussian weights scaled by 1/sqrt(fan-in) and `tokens` standard normal inputs; the encoder bias
 * is about -2, so with inputs of unit scale each feature fires on ~2-3% of tokens (a realistic
 * sparsity, which matters wherever codes are stored sparse).
 */
export function randomSae(tokens: number, d: number, dSae: number, seed: number): SaeArrays {
  const scaled = (n: number, s: number, k: number): Float32Array => randomNormalArray(n, seed + k).map((v) => v * s);
  return {
    d,
    dSae,
    x: scaled(tokens * d, 1, 0),
    wEnc: scaled(d * dSae, 1 / Math.sqrt(d), 1),
    bEnc: scaled(dSae, 0.05, 2).map((v) => v - 2),
    wDec: scaled(dSae * d, 1 / Math.sqrt(d), 3),
    bDec: scaled(d, 0.1, 4),
  };
}

/** The arrays as an `AffineSae` (ReLU, b_dec subtracted from the input); `source` names it. */
export function toAffineSae(w: SaeArrays, source: string): AffineSae {
  return new AffineSae(
    {
      wEnc: tf.tensor2d(w.wEnc, [w.d, w.dSae]),
      bEnc: tf.tensor1d(w.bEnc),
      wDec: tf.tensor2d(w.wDec, [w.dSae, w.d]),
      bDec: tf.tensor1d(w.bDec),
      subtractDecoderBiasFromInput: true,
      activation: { kind: 'relu' },
    },
    { format: 'sae-eraser', source },
  );
}

/** Writes `x`, `W_enc`, `b_enc`, `W_dec`, `b_dec` as raw little-endian `<name>.f32` files in `dir`. */
export function writeF32Files(dir: string, w: SaeArrays): void {
  for (const [name, arr] of [
    ['x', w.x],
    ['W_enc', w.wEnc],
    ['b_enc', w.bEnc],
    ['W_dec', w.wDec],
    ['b_dec', w.bDec],
  ] as const) {
    writeFileSync(join(dir, `${name}.f32`), Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength));
  }
}

/**
 * Writes a ReLU `AffineSae` for the PyTorch scripts: `W_enc [d, dSae]`, `b_enc`, `W_dec [dSae, d]`,
 * `b_dec`, and `subtract_b_dec` (1 or 0). Other activations have no PyTorch twin here.
 */
export function writeSaeSafetensors(path: string, sae: AffineSae): void {
  if (sae.activation.kind !== 'relu') throw new Error(`${sae.metadata.source}: the PyTorch side of the benchmarks runs ReLU SAEs, not ${sae.activation.kind}`);
  writeSafetensors(path, {
    W_enc: sae.wEnc,
    b_enc: sae.bEnc,
    W_dec: sae.wDec,
    b_dec: sae.bDec,
    subtract_b_dec: { dtype: 'F32', shape: [1], data: Float32Array.of(sae.subtractDecoderBiasFromInput ? 1 : 0) },
  });
}
