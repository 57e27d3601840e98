/**
 * A random BERT small enough to run over very many rows fast, with all-MiniLM-L6-v2's tokenizer
 * (fetched by test/global-setup.ts), for tests and load benchmarks where the model's size does not
 * matter but its outputs must be real forward passes.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomNormalArray } from '../../src/data/prng.js';
import { projectRoot } from '../../src/io/shared.js';
import { writeSafetensors, type RawTensor } from '../../src/io/safetensors.js';

/** The MiniLM folder whose tokenizer the tiny model borrows. */
export const MINILM_DIR = join(projectRoot(), '.cache/models/all-MiniLM-L6-v2');

export interface TinyBertShape {
  /** hidden_size. */
  d: number;
  /** num_hidden_layers. */
  layers: number;
  /** num_attention_heads (divides d). */
  heads: number;
  /** max_position_embeddings: the longest input, special tokens included. */
  maxPositions: number;
}

/**
 * Writes a random BERT of `shape` (intermediate size 2d, weights N(0, 0.02) from `seed`, LayerNorms
 * the identity) with MiniLM's tokenizer into `dir`; returns `dir`.
 */
export function writeTinyBert(dir: string, shape: TinyBertShape, seed = 42): string {
  const { d, layers, heads, maxPositions } = shape;
  const vocab = 30522;
  const dFf = 2 * d;
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({
      model_type: 'bert',
      hidden_act: 'gelu',
      hidden_size: d,
      intermediate_size: dFf,
      layer_norm_eps: 1e-12,
      max_position_embeddings: maxPositions,
      num_attention_heads: heads,
      num_hidden_layers: layers,
      type_vocab_size: 2,
      vocab_size: vocab,
    }),
  );
  let s = seed;
  const random = (...dims: number[]): RawTensor => ({
    dtype: 'F32',
    shape: dims,
    data: randomNormalArray(
      dims.reduce((a, b) => a * b, 1),
      s++,
      0,
      0.02,
    ),
  });
  const filled = (n: number, v: number): RawTensor => ({ dtype: 'F32', shape: [n], data: new Float32Array(n).fill(v) });
  const tensors: Record<string, RawTensor> = {
    'embeddings.word_embeddings.weight': random(vocab, d),
    'embeddings.position_embeddings.weight': random(maxPositions, d),
    'embeddings.token_type_embeddings.weight': random(2, d),
    'embeddings.LayerNorm.weight': filled(d, 1),
    'embeddings.LayerNorm.bias': filled(d, 0),
  };
  const linear = (name: string, dIn: number, dOut: number): void => {
    tensors[`${name}.weight`] = random(dOut, dIn);
    tensors[`${name}.bias`] = random(dOut);
  };
  for (let i = 0; i < layers; i++) {
    const p = `encoder.layer.${i}`;
    for (const m of ['query', 'key', 'value']) linear(`${p}.attention.self.${m}`, d, d);
    linear(`${p}.attention.output.dense`, d, d);
    linear(`${p}.intermediate.dense`, d, dFf);
    linear(`${p}.output.dense`, dFf, d);
    for (const ln of [`${p}.attention.output.LayerNorm`, `${p}.output.LayerNorm`]) {
      tensors[`${ln}.weight`] = filled(d, 1);
      tensors[`${ln}.bias`] = filled(d, 0);
    }
  }
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.txt']) copyFileSync(join(MINILM_DIR, f), join(dir, f));
  return dir;
}
