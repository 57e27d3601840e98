/**
 * Stand-ins the cache tests share: a tiny model whose hook activations are an embedding of each
 * token, a char-code tokenizer, a ReLU SAE, and on-disk versions of the model and SAE (a folder
 * with a config and a safetensors file) so tests can overwrite their weights in place.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from '../../src/engine/engine.js';
import type { ActivationCache, CacheSae } from '../../src/cache/cache.js';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { standardHookNames, type Batch, type Model, type ForwardOptions, type ForwardResult } from '../../src/models/model.js';

export const D = 4;
export const VOCAB = 50;
export const D_SAE = 6;

/** A stand-in model: hook activations are a fixed embedding of each token, scaled per hook. */
export function fakeModel(table: tf.Tensor2D = tf.randomNormal([VOCAB, D], 0, 1, 'float32', 7)): Model & { calls: number } {
  const hookNames = standardHookNames(2);
  const model = {
    calls: 0,
    config: { modelType: 'fake', nLayers: 2, dModel: D, vocabSize: VOCAB, maxPositions: 64 },
    hookNames,
    run(batch: Batch, options: ForwardOptions = {}): ForwardResult {
      model.calls++;
      const captures: Record<string, tf.Tensor3D> = {};
      for (const h of options.capture ?? []) {
        captures[h] = tf.tidy(() => tf.mul(tf.gather(table, batch.inputIds), hookNames.indexOf(h) + 1) as tf.Tensor3D);
      }
      return { captures };
    },
    dispose() {
      table.dispose();
    },
  };
  return model;
}

/** Tokens are char codes mod VOCAB; right padded with 0 and mask 0. */
export function tokenize(texts: string[]): Batch {
  const len = Math.max(...texts.map((t) => t.length));
  const ids = texts.map((t) => Array.from({ length: len }, (_, i) => (i < t.length ? t.charCodeAt(i) % VOCAB : 0)));
  const mask = texts.map((t) => Array.from({ length: len }, (_, i) => (i < t.length ? 1 : 0)));
  return { inputIds: tf.tensor2d(ids, undefined, 'int32'), attentionMask: tf.tensor2d(mask, undefined, 'int32') };
}

function relu(wEnc: tf.Tensor2D, wDec: tf.Tensor2D): CacheSae {
  return {
    dIn: D,
    dSae: D_SAE,
    encode: (x) => tf.relu(tf.matMul(x as tf.Tensor2D, wEnc)),
    decode: (f) => tf.matMul(f as tf.Tensor2D, wDec),
  };
}

/** A ReLU SAE with fixed random weights. */
export function fakeSae(): CacheSae {
  return relu(tf.randomNormal([D, D_SAE], 0, 1, 'float32', 8), tf.randomNormal([D_SAE, D], 0, 1, 'float32', 9));
}

export const texts = Array.from({ length: 23 }, (_, i) => 'abcdefghijklmnopqrstuvwxyz'.slice(0, 3 + ((i * 7) % 19)) + String(i));

/** `n` deterministic values in [-1, 1) that depend on `seed`. */
function values(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 1000 + i * 12.9898) % 1);
}

/**
 * Writes `path` in place (same path, same inode, like torch.save or a plain copy over the old
 * file), not through a temp name: the case a size-and-mtime id must still notice.
 */
function overwriteInPlace(path: string, write: (tmp: string) => void): void {
  const tmp = `${path}.new`;
  write(tmp);
  writeFileSync(path, readFileSync(tmp));
  rmSync(tmp);
}

/** A model folder: `config.json` and `model.safetensors` holding the embedding table drawn from `seed`. */
export function writeFakeModel(dir: string, seed: number): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'fake', d_model: D, vocab_size: VOCAB }));
  overwriteInPlace(join(dir, 'model.safetensors'), (tmp) =>
    writeSafetensors(tmp, { 'embed.weight': { dtype: 'F32', shape: [VOCAB, D], data: values(VOCAB * D, seed) } }),
  );
}

export function loadFakeModel(dir: string): Model & { calls: number } {
  return fakeModel(tf.tensor2d(readSafetensors(join(dir, 'model.safetensors')).float32('embed.weight'), [VOCAB, D]));
}

/** An SAELens-style SAE folder: `cfg.json` and `sae_weights.safetensors` drawn from `seed`. */
export function writeFakeSae(dir: string, seed: number): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'cfg.json'), JSON.stringify({ d_in: D, d_sae: D_SAE }));
  overwriteInPlace(join(dir, 'sae_weights.safetensors'), (tmp) =>
    writeSafetensors(tmp, {
      W_enc: { dtype: 'F32', shape: [D, D_SAE], data: values(D * D_SAE, seed) },
      W_dec: { dtype: 'F32', shape: [D_SAE, D], data: values(D_SAE * D, seed + 0.5) },
    }),
  );
}

export function loadFakeSae(dir: string): CacheSae {
  const f = readSafetensors(join(dir, 'sae_weights.safetensors'));
  return relu(tf.tensor2d(f.float32('W_enc'), [D, D_SAE]), tf.tensor2d(f.float32('W_dec'), [D_SAE, D]));
}

/** Waits long enough for a file's modification time to move even on coarse-clock file systems. */
export function tick(): Promise<void> {
  return new Promise((r) => setTimeout(r, 30));
}

/** A tensor's values, the tensor disposed. */
export function valuesOf(t: tf.Tensor): Float32Array {
  const v = t.dataSync() as Float32Array;
  t.dispose();
  return v;
}

/** Every value a cache holds for `hooks` (the last one with an SAE), as bytes, for byte-identity checks. */
export function cacheBytes(cache: ActivationCache, hooks: readonly string[], saeHook: string): Buffer {
  const csr = cache.saePooledCsr(saeHook);
  return Buffer.concat(
    [cache.tokenCounts, ...hooks.map((h) => valuesOf(cache.pooled(h))), valuesOf(cache.saeErrorPooled(saeHook)), csr.offsets, csr.indices, csr.values].map(
      (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength),
    ),
  );
}
