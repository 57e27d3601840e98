/**
 * Fuzzing SAE files (src/sae/load.ts and the format loaders): generated SAELens, sparsify and
 * dictionary_learning folders load to exactly their weights, and edited cfg.json / config.json
 * files, byte-edited weights and mutated Sparse Feature Circuits zips either load or fail with an
 * error naming the file, never with an engine error.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, rmSync } from 'node:fs';
import { zipSync } from 'fflate';
import { initEngine, tf } from '../../src/engine/engine.js';
import { writeSafetensors } from '../../src/io/safetensors.js';
import { loadSae } from '../../src/sae/load.js';
import { AffineSae, type Sae } from '../../src/sae/sae.js';
import { extractFeatureCircuitsZip } from '../../src/sae/feature-circuits.js';
import { setQuiet } from '../../src/util/progress.js';
import { breathe, FuzzTally, fuzzParams } from './budget.js';
import { applyByteEdits, applyJsonEdits, byteEdits, expectClear, fuzzDir, jsonEdits } from './mutate.js';
import { torchZip, type PickleInput, type TensorSpec } from './torch-writer.js';

const tmp = fuzzDir('sae');
const generated = new FuzzTally('sae: generated folders');
const editedConfigs = new FuzzTally('sae: edited cfg.json / config.json');
const editedWeights = new FuzzTally('sae: byte-edited weights');
const zips = new FuzzTally('sae: mutated feature-circuits zips');
beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});
afterAll(() => {
  for (const t of [generated, editedConfigs, editedWeights, zips]) t.save();
  tmp.done();
});

type Format = 'saelens' | 'sparsify' | 'dictionary_learning';

interface Spec {
  format: Format;
  dIn: number;
  dSae: number;
  k: number;
  arch: 'standard' | 'topk' | 'jumprelu';
  values: Float32Array;
}

const spec: fc.Arbitrary<Spec> = fc
  .record({
    format: fc.constantFrom<Format>('saelens', 'sparsify', 'dictionary_learning'),
    dIn: fc.integer({ min: 1, max: 5 }),
    dSae: fc.integer({ min: 1, max: 6 }),
    k: fc.integer({ min: 1, max: 6 }),
    arch: fc.constantFrom<Spec['arch']>('standard', 'topk', 'jumprelu'),
    seed: fc.integer({ min: 1, max: 1000 }),
  })
  .map(({ seed, ...s }) => {
    const n = 2 * s.dIn * s.dSae + s.dIn + 2 * s.dSae;
    // Small exact binary fractions, so every format's transposes round-trip exactly.
    const values = Float32Array.from({ length: n }, (_, i) => (((seed * 7919 + i * 104729) % 257) - 128) / 64);
    return { ...s, k: Math.min(s.k, s.dSae), values };
  });

/** The weights a spec holds, by role (W_enc [dIn, dSae], W_dec [dSae, dIn]). */
function weights(s: Spec): { wEnc: Float32Array; bEnc: Float32Array; wDec: Float32Array; bDec: Float32Array; threshold: Float32Array } {
  const { dIn, dSae, values } = s;
  let at = 0;
  const take = (n: number): Float32Array => values.slice(at, (at += n));
  const wEnc = take(dIn * dSae);
  const wDec = take(dSae * dIn);
  const bDec = take(dIn);
  const bEnc = take(dSae);
  const threshold = take(dSae).map(Math.abs);
  return { wEnc, bEnc, wDec, bDec, threshold };
}

function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c]!;
  return out;
}

const f32 = (data: Float32Array, shape: number[]): { dtype: 'F32'; shape: number[]; data: Float32Array } => ({ dtype: 'F32', shape, data });

/** Writes `s` in its format into `dir`; returns the config file's name. */
function writeSae(s: Spec, dir: string): string {
  rmSync(dir, { recursive: true, force: true });
  const w = weights(s);
  const { dIn, dSae } = s;
  if (s.format === 'saelens') {
    const tensors: Record<string, ReturnType<typeof f32>> = {
      W_enc: f32(w.wEnc, [dIn, dSae]),
      b_enc: f32(w.bEnc, [dSae]),
      W_dec: f32(w.wDec, [dSae, dIn]),
      b_dec: f32(w.bDec, [dIn]),
    };
    if (s.arch === 'jumprelu') tensors.threshold = f32(w.threshold, [dSae]);
    writeSafetensors(`${dir}/sae_weights.safetensors`, tensors);
    const cfg: Record<string, unknown> = {
      architecture: s.arch,
      d_in: dIn,
      d_sae: dSae,
      apply_b_dec_to_input: true,
      normalize_activations: 'none',
      metadata: { hook_name: 'blocks.0.hook_resid_post', model_name: 'm' },
    };
    if (s.arch === 'topk') cfg.k = s.k;
    tmp.write(`${dir.slice(tmp.dir.length + 1)}/cfg.json`, JSON.stringify(cfg));
    return 'cfg.json';
  }
  if (s.format === 'sparsify') {
    writeSafetensors(`${dir}/sae.safetensors`, {
      'encoder.weight': f32(transpose(w.wEnc, dIn, dSae), [dSae, dIn]),
      'encoder.bias': f32(w.bEnc, [dSae]),
      W_dec: f32(w.wDec, [dSae, dIn]),
      b_dec: f32(w.bDec, [dIn]),
    });
    tmp.write(
      `${dir.slice(tmp.dir.length + 1)}/cfg.json`,
      JSON.stringify({ d_in: dIn, k: s.k, num_latents: dSae, activation: 'topk', transcode: false, skip_connection: false }),
    );
    return 'cfg.json';
  }
  const tensor = (key: string, data: Float32Array, shape: number[]): TensorSpec => ({
    tensor: true,
    key,
    dtype: 'float32',
    numel: data.length,
    storageBytes: new Uint8Array(data.buffer.slice(0)),
    offset: 0,
    shape,
    stride: shape.length === 2 ? [shape[1]!, 1] : [1],
  });
  const state = new Map<string, PickleInput>([
    ['bias', tensor('0', w.bDec, [dIn])],
    ['encoder.weight', tensor('1', transpose(w.wEnc, dIn, dSae), [dSae, dIn])],
    ['encoder.bias', tensor('2', w.bEnc, [dSae])],
    ['decoder.weight', tensor('3', transpose(w.wDec, dSae, dIn), [dIn, dSae])],
  ]);
  tmp.write(`${dir.slice(tmp.dir.length + 1)}/ae.pt`, torchZip({ ordered: state }));
  tmp.write(
    `${dir.slice(tmp.dir.length + 1)}/config.json`,
    JSON.stringify({ trainer: { dict_class: 'AutoEncoder', lm_name: 'm', activation_dim: dIn, dict_size: dSae } }),
  );
  return 'config.json';
}

/** Loads, then encodes and decodes one row, disposing everything. */
function loadAndUse(dir: string): Sae {
  const sae = loadSae(dir);
  try {
    tf.tidy(() => sae.decode(sae.encode(tf.ones([1, sae.dIn]))));
  } catch (err) {
    sae.dispose();
    throw err;
  }
  return sae;
}

describe('SAE folders', () => {
  it('load every generated folder to exactly its weights', async () => {
    await fc.assert(
      fc.asyncProperty(spec, async (s) => {
        await breathe();
        const dir = tmp.path('gen');
        writeSae(s, dir);
        const got = generated.run(() => loadSae(dir));
        if (!got.ok) throw got.error;
        const sae = got.value as AffineSae;
        try {
          const w = weights(s);
          expect([sae.dIn, sae.dSae]).toEqual([s.dIn, s.dSae]);
          expect(sae.wEnc.dataSync()).toEqual(w.wEnc);
          expect(sae.wDec.dataSync()).toEqual(w.wDec);
          expect(sae.bEnc.dataSync()).toEqual(w.bEnc);
          expect(sae.bDec.dataSync()).toEqual(w.bDec);
          const kind = s.format === 'dictionary_learning' ? 'relu' : s.format === 'sparsify' ? 'topk' : s.arch === 'standard' ? 'relu' : s.arch;
          expect(sae.activation.kind).toBe(kind);
        } finally {
          sae.dispose();
        }
      }),
      fuzzParams(60),
    );
  });

  it('load edited configs, or refuse them naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(spec, jsonEdits(), async (s, edits) => {
        await breathe();
        const dir = tmp.path('edited');
        const name = writeSae(s, dir);
        const cfg = JSON.parse(readFileSync(`${dir}/${name}`, 'utf8')) as unknown;
        tmp.write(`edited/${name}`, JSON.stringify(applyJsonEdits(cfg, edits)));
        const got = editedConfigs.run(() => loadAndUse(dir));
        if (got.ok) got.value.dispose();
        else expectClear(got.error, dir);
      }),
      fuzzParams(200),
    );
  });

  it('load byte-edited weight files, or refuse them naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(spec, byteEdits(), async (s, edits) => {
        await breathe();
        const dir = tmp.path('weights');
        writeSae(s, dir);
        const file = s.format === 'saelens' ? 'sae_weights.safetensors' : s.format === 'sparsify' ? 'sae.safetensors' : 'ae.pt';
        const bytes = new Uint8Array(readFileSync(`${dir}/${file}`));
        tmp.write(`weights/${file}`, applyByteEdits(bytes, edits));
        const got = editedWeights.run(() => loadAndUse(dir));
        if (got.ok) got.value.dispose();
        else expectClear(got.error, dir);
      }),
      fuzzParams(150),
    );
  });

  it('extract mutated Sparse Feature Circuits zips, or refuse them naming the zip', async () => {
    const entryName = fc.constantFrom(
      'dictionaries/pythia-70m-deduped/resid_out_layer0/10_32768/ae.pt',
      'embed/10_32768/ae.pt',
      'attn_out_layer1/10_32768/config.json',
      '../../evil/10_1/ae.pt',
      'a/b',
    );
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(entryName, { minLength: 1, maxLength: 3 }),
        fc.uint8Array({ maxLength: 64 }),
        byteEdits(2),
        fc.boolean(),
        async (names, content, edits, mutate) => {
          await breathe();
          const zip = zipSync(Object.fromEntries(names.map((n) => [n, content])), { level: 0 });
          const path = tmp.write('fc.zip', mutate ? applyByteEdits(zip, edits) : zip);
          const dest = tmp.path('fc-out');
          rmSync(dest, { recursive: true, force: true });
          const got = zips.run(() => extractFeatureCircuitsZip(path, dest));
          if (!got.ok) expectClear(got.error, path);
        },
      ),
      fuzzParams(150),
    );
  });
});
