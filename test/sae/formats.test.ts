import { beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { randomNormalArray } from '../../src/data/prng.js';
import { readSafetensors, writeSafetensors } from '../../src/io/safetensors.js';
import { projectRoot } from '../../src/io/shared.js';
import { setQuiet } from '../../src/util/progress.js';
import { arrayActivationSource } from '../../src/sae/buffer.js';
import { loadFeatureCircuitsSaes, type HubDownload } from '../../src/sae/feature-circuits.js';
import { checkSaeFitsModel, hookFromSparsify, hookFromTransformerLens } from '../../src/sae/hook-names.js';
import { loadSae } from '../../src/sae/load.js';
import { sparseToDense, type AffineSae, type Sae } from '../../src/sae/sae.js';
import { saveSaeLensSae } from '../../src/sae/saelens.js';
import { saveTrainedSae, trainSaeOnSource } from '../../src/sae/train.js';
import { runPythonReference } from '../reference/python.js';
import { relErr } from './rel-err.js';

let ref: string;
beforeAll(async () => {
  await initEngine();
  setQuiet(true);
  ref = await runPythonReference('sae_reference.py', ['--part', 'sae']);
});

interface Expected {
  x: tf.Tensor2D;
  f: Float32Array;
  xHat: Float32Array;
}
function expected(name: string): Expected {
  const file = readSafetensors(join(ref, 'expected', `${name}.safetensors`));
  return { x: file.tensor('x') as tf.Tensor2D, f: file.float32('f'), xHat: file.float32('x_hat') };
}

/** Checks encode, decode, error and encodeSparse of `sae` against the torch reference; returns the errors. */
function checkParity(sae: Sae, name: string): { encode: number; decode: number; roundTrip: number } {
  const e = expected(name);
  const before = tf.memory().numTensors;
  const f = sae.encode(e.x);
  const fData = f.dataSync();
  const fRef = tf.tensor2d(e.f, [e.x.shape[0], sae.dSae]);
  const xHatFromRef = sae.decode(fRef);
  const xHat = sae.decode(f);
  const err = sae.error(e.x);
  const errs = {
    encode: relErr(fData, e.f),
    decode: relErr(xHatFromRef.dataSync(), e.xHat),
    roundTrip: relErr(xHat.dataSync(), e.xHat),
  };
  const xData = e.x.dataSync();
  const errWant = Float32Array.from(xData, (v, i) => v - e.xHat[i]!);
  expect(relErr(err.dataSync(), errWant), `${name} error`).toBeLessThan(1e-5);
  const sparse = sae.encodeSparse(e.x, { chunkTokens: 3 });
  expect(sparse.offsets[sparse.tokens]).toBe(sparse.indices.length);
  expect(relErr(sparseToDense(sparse), fData), `${name} encodeSparse`).toBeLessThan(1e-7);
  tf.dispose([f, fRef, xHatFromRef, xHat, err]);
  expect(tf.memory().numTensors, `${name} leaks tensors`).toBe(before);
  for (const [k, v] of Object.entries(errs)) expect(v, `${name} ${k}`).toBeLessThan(1e-5);
  e.x.dispose();
  return errs;
}

const parity: Record<string, { encode: number; decode: number; roundTrip: number }> = {};

// Expected values come from the libraries loading the files (sae_reference.py): dictionary_learning
// 0.1.0 AutoEncoder.from_pretrained, sae-lens 6.54.12 SAE.load_from_disk, eai-sparsify 1.3.3
// SparseCoder.load_from_disk. Tolerance: 1e-5 norm-wise relative error (float32; the codes of the
// 512 x 32768 dictionary sum 512 products).
describe('SAE formats match their libraries (the libraries load the same files)', () => {
  it('dictionary_learning AutoEncoder, small, with config.json', () => {
    const sae = loadSae(join(ref, 'dl_small'));
    expect(sae.metadata.format).toBe('dictionary_learning');
    expect(sae.metadata.model).toBe('EleutherAI/pythia-70m-deduped');
    expect([sae.dIn, sae.dSae]).toEqual([16, 64]);
    parity.dl_small = checkParity(sae, 'dl_small');
    sae.dispose();
  });

  it('dictionary_learning AutoEncoder at full size 512 x 32768, in the Feature Circuits layout', () => {
    const sae = loadSae(join(ref, 'fc/resid_out_layer3/10_32768/ae.pt'));
    expect([sae.dIn, sae.dSae]).toEqual([512, 32768]);
    expect(sae.metadata.hook).toBe('layers.3.resid_out');
    parity.dl_full = checkParity(sae, 'dl_full');
    sae.dispose();
  });

  it('dictionary_learning AutoEncoder stored as float16 with a transposed view and storage offsets', () => {
    const sae = loadSae(join(ref, 'dl_view_f16'));
    parity.dl_view_f16 = checkParity(sae, 'dl_view_f16');
    sae.dispose();
  });

  it.each([
    ['saelens_relu', 'layers.3.resid_out', 'blocks.3.hook_resid_post', 'relu'],
    ['saelens_resid_pre0', 'embed', 'blocks.0.hook_resid_pre', 'relu'],
    ['saelens_topk_old', 'layers.2.mlp_out', 'blocks.2.hook_mlp_out', 'topk'],
    ['saelens_topk', 'layers.1.attn_out', 'blocks.1.hook_attn_out', 'topk'],
    ['saelens_jumprelu', 'layers.1.attn_out', 'blocks.1.hook_attn_out', 'jumprelu'],
  ])('SAELens %s (hook %s)', (name, hook, sourceHook, kind) => {
    const sae = loadSae(join(ref, name));
    expect(sae.metadata.format).toBe('saelens');
    expect(sae.metadata.hook).toBe(hook);
    expect(sae.metadata.sourceHook).toBe(sourceHook);
    expect(sae.metadata.model).toBe('pythia-70m-deduped');
    expect((sae as unknown as { activation: { kind: string } }).activation.kind).toBe(kind);
    parity[name] = checkParity(sae, name);
    sae.dispose();
  });

  it('JumpReLU and ReLU encoders are differentiable (gradient = active encoder columns)', () => {
    for (const name of ['saelens_jumprelu', 'saelens_relu']) {
      const sae = loadSae(join(ref, name)) as unknown as { encode(x: tf.Tensor): tf.Tensor; wEnc: tf.Tensor2D; dispose(): void };
      const e = expected(name);
      const grad = tf.grad((x: tf.Tensor) => tf.sum(sae.encode(x)))(e.x);
      const want = tf.tidy(() => tf.matMul(tf.cast(tf.greater(sae.encode(e.x), 0), 'float32'), tf.transpose(sae.wEnc)));
      expect(relErr(grad.dataSync(), want.dataSync()), name).toBeLessThan(1e-6);
      tf.dispose([grad, want, e.x]);
      sae.dispose();
    }
  });

  it('EleutherAI sparsify TopK', () => {
    const sae = loadSae(join(ref, 'sparsify/layers.3'));
    expect(sae.metadata.format).toBe('sparsify');
    expect(sae.metadata.hook).toBe('layers.3.resid_out');
    const e = expected('sparsify');
    const sparse = sae.encodeSparse(e.x);
    // top-k: at most k = 7 nonzeros per token
    for (let t = 0; t < sparse.tokens; t++) expect(sparse.offsets[t + 1]! - sparse.offsets[t]!).toBeLessThanOrEqual(7);
    e.x.dispose();
    parity.sparsify = checkParity(sae, 'sparsify');
    sae.dispose();
  });

  it('reports the parity errors', () => {
    console.log(
      'SAE parity (norm-wise relative error):',
      JSON.stringify(parity, (_, v: unknown) => (typeof v === 'number' ? Number(v.toExponential(2)) : v)),
    );
    expect(Object.keys(parity).length).toBeGreaterThanOrEqual(9);
  });
});

describe('SAE bad input', () => {
  it('an unknown format lists what was found', () => {
    expect(() => loadSae(join(ref, 'unknown'))).toThrow(/unknown SAE format.*found config\.yaml, weights\.bin/);
  });

  it('NaN weights are refused naming the file and tensor', () => {
    expect(() => loadSae(join(ref, 'dl_nan'))).toThrow(/dl_nan\/ae\.pt: tensor "decoder\.weight" holds a non-finite value/);
    expect(() => loadSae(join(ref, 'saelens_nan'))).toThrow(/sae_weights\.safetensors: tensor "W_enc" holds a non-finite value/);
  });

  it('unsupported SAELens settings are refused with a clear error', () => {
    expect(() => loadSae(join(ref, 'saelens_norm'))).toThrow(/cfg\.json: normalize_activations="expected_average_only_in" is not supported/);
    expect(() => loadSae(join(ref, 'saelens_gated'))).toThrow(/architecture "gated" is not supported/);
  });

  it('checkSaeFitsModel refuses an SAE whose width or hook does not match', () => {
    const sae = loadSae(join(ref, 'saelens_relu'));
    expect(() => checkSaeFitsModel(sae, 64, 'layers.3.resid_out')).not.toThrow();
    expect(() => checkSaeFitsModel(sae, 384, 'layers.3.resid_out')).toThrow(
      /reads vectors of width 64, but hook "layers\.3\.resid_out" of the model has width 384/,
    );
    expect(() => checkSaeFitsModel(sae, 64, 'layers.2.resid_out')).toThrow(/trained on hook "layers\.3\.resid_out", not "layers\.2\.resid_out"/);
    expect(() => checkSaeFitsModel(sae, 64, 'blocks.3.hook_resid_post')).toThrow(/not a hook name/);
    sae.dispose();
  });
});

describe('hook name mappings', () => {
  it('maps TransformerLens and sparsify names to our hooks', () => {
    expect(hookFromTransformerLens('blocks.5.hook_resid_post')).toBe('layers.5.resid_out');
    expect(hookFromTransformerLens('blocks.0.hook_resid_pre')).toBe('embed');
    expect(hookFromTransformerLens('blocks.4.hook_resid_pre')).toBe('layers.3.resid_out');
    expect(hookFromTransformerLens('blocks.2.hook_resid_mid')).toBeUndefined();
    expect(hookFromSparsify('layers.2.mlp')).toBe('layers.2.mlp_out');
    expect(hookFromSparsify('gpt_neox.layers.4.attention')).toBe('layers.4.attn_out');
    expect(hookFromSparsify('embed_in')).toBe('embed');
  });
});

describe('Sparse Feature Circuits dictionaries', () => {
  it('loads the local layout as a hook -> Sae map, only the hooks asked for', async () => {
    const saes = await loadFeatureCircuitsSaes(join(ref, 'fc'), { hooks: ['layers.3.resid_out'], download: false });
    expect([...saes.keys()]).toEqual(['layers.3.resid_out']);
    expect(saes.get('layers.3.resid_out')!.metadata.model).toBe('EleutherAI/pythia-70m-deduped');
    for (const s of saes.values()) s.dispose();
    await expect(loadFeatureCircuitsSaes(join(ref, 'fc'), { hooks: ['layers.0.mlp_out'], download: false })).rejects.toThrow(
      /no dictionary for mlp_out_layer0/,
    );
  });

  it('fetches the hub zip when absent, extracts it atomically, and reuses it afterwards', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-'));
    const calls: string[] = [];
    const hubDownload: HubDownload = (req) => {
      calls.push(`${req.repo}/${req.file}@${req.revision}`);
      return Promise.resolve(join(ref, 'fc_small.zip'));
    };
    const saes = await loadFeatureCircuitsSaes(dir, { hubDownload });
    expect(calls).toEqual(['saprmarks/pythia-70m-deduped-saes/dictionaries_pythia-70m-deduped_10.zip@main']);
    expect([...saes.keys()].sort()).toEqual(['embed', 'layers.0.attn_out', 'layers.1.resid_out']);
    for (const s of saes.values()) {
      expect([s.dIn, s.dSae]).toEqual([8, 32]);
      s.dispose();
    }
    const again = await loadFeatureCircuitsSaes(dir, { hubDownload, hooks: ['embed'] });
    expect(calls.length).toBe(1);
    for (const s of again.values()) s.dispose();
    await expect(loadFeatureCircuitsSaes(mkdtempSync(join(tmpdir(), 'fc-')), { download: false })).rejects.toThrow(
      /no Sparse Feature Circuits dictionaries here/,
    );
  });
});

describe('files sae-eraser writes load in the libraries', () => {
  /** A case folder `<root>/<name>` with `sae/` and `x.safetensors` (20 seeded inputs) for sae_written_reference.py. */
  function writeCase(root: string, name: string, sae: AffineSae, save: (dir: string) => void): { dir: string; x: Float32Array } {
    const dir = join(root, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(join(dir, 'sae'), { recursive: true });
    save(join(dir, 'sae'));
    const x = randomNormalArray(20 * sae.dIn, 3, 0.2, 1);
    writeSafetensors(join(dir, 'x.safetensors'), { x: { dtype: 'F32', shape: [20, sae.dIn], data: x } });
    return { dir, x };
  }

  it('train-sae output (ReLU, TopK) and a re-saved JumpReLU SAE: sae_lens reads the same SAE, to 1e-5', async () => {
    // A fixed folder (not a temp one) so that the reference is reused while what we write is unchanged.
    const root = join(projectRoot(), '.cache/sae-written');
    const d = 12;
    const rows = randomNormalArray(2000 * d, 9, 0.5, 1);
    const cases: { name: string; sae: AffineSae; arch: string; k: number | null; hook: string | null; model: string | null }[] = [];
    for (const arch of ['relu', 'topk'] as const) {
      const run = await trainSaeOnSource(arrayActivationSource(rows, d), {
        arch,
        k: 4,
        dSae: 40,
        tokens: 64 * 30,
        batchSize: 64,
        bufferTokens: 256,
        hook: 'layers.2.resid_out',
        model: 'test/model',
      });
      cases.push({
        name: `trained_${arch}`,
        sae: run.sae,
        arch: arch === 'relu' ? 'standard' : 'topk',
        k: arch === 'topk' ? 4 : null,
        hook: 'layers.2.resid_out',
        model: 'test/model',
      });
    }
    cases.push({
      name: 'resaved_jumprelu',
      sae: loadSae(join(ref, 'saelens_jumprelu')) as AffineSae,
      arch: 'jumprelu',
      k: null,
      hook: 'layers.1.attn_out',
      model: 'pythia-70m-deduped',
    });
    const written = cases.map((c) =>
      writeCase(root, c.name, c.sae, (dir) => (c.name.startsWith('trained') ? saveTrainedSae(c.sae, dir, { steps: 30 }) : saveSaeLensSae(c.sae, dir))),
    );
    const lib = await runPythonReference(
      'sae_written_reference.py',
      written.map((w) => w.dir),
    );
    const errs: Record<string, number[]> = {};
    cases.forEach((c, i) => {
      const info = JSON.parse(readFileSync(join(lib, `${c.name}.json`), 'utf8')) as Record<string, unknown>;
      expect(info).toMatchObject({ library: 'sae_lens', architecture: c.arch, d_in: c.sae.dIn, d_sae: c.sae.dSae, hook_name: c.hook, model_name: c.model });
      if (c.k !== null) expect(info.k).toBe(c.k);
      const want = readSafetensors(join(lib, `${c.name}.safetensors`));
      // Both the SAE in memory and the SAE loaded back from what we wrote.
      const reloaded = loadSae(join(written[i]!.dir, 'sae'));
      for (const sae of [c.sae, reloaded]) {
        const x = tf.tensor2d(written[i]!.x, [20, c.sae.dIn]);
        const f = sae.encode(x);
        const xHat = sae.decode(f);
        const e = [relErr(f.dataSync(), want.float32('f')), relErr(xHat.dataSync(), want.float32('x_hat'))];
        tf.dispose([x, f, xHat]);
        errs[c.name] = e;
        for (const v of e) expect(v, c.name).toBeLessThan(1e-5);
      }
      expect(
        want.float32('f').some((v) => v !== 0),
        `${c.name}: some features fire`,
      ).toBe(true);
      reloaded.dispose();
      c.sae.dispose();
    });
    console.log(
      'written SAEs read by sae_lens (relative error of f, x_hat):',
      JSON.stringify(errs, (_, v: unknown) => (typeof v === 'number' ? Number(v.toExponential(2)) : v)),
    );
  });
});
