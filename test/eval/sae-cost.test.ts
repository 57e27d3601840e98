/**
 * `saeDownstreamCost` on a random tiny BERT with noisy ReLU SAEs at two upstream hooks and at the
 * probe hook: with the error term the pass reproduces the clean accuracy on both executors; without
 * it, the accuracy equals a computation written out by hand (the hook's activation captured,
 * reconstructed from the SAE weights in plain arrays, fed back as the hook's value, pooled and
 * scored).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { buildActivationCache, type ActivationCache } from '../../src/cache/cache.js';
import { mulberry32, randomNormalArray } from '../../src/data/prng.js';
import type { LabelledSplit } from '../../src/erasure/eraser.js';
import { reconstructionEdit, saeDownstreamCost, type SaeCostInput } from '../../src/eval/sae-cost.js';
import type { Batch, HookName, Model } from '../../src/models/model.js';
import { openModel } from '../../src/models/open.js';
import { meanPool } from '../../src/models/pool.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { AffineSae } from '../../src/sae/sae.js';
import { setQuiet } from '../../src/util/progress.js';
import { writeTinyBert } from '../cli/tiny-bert.js';

const PROBE_HOOK = 'layers.1.resid_out';
const SAE_HOOKS = ['embed', 'layers.0.mlp_out', PROBE_HOOK];
const D_SAE = 96;
/** Decoder noise: measured accuracies with the reconstruction 0.675 (embed), 1 (layers.0.mlp_out) and 0.9 (the probe hook), from 1 clean. */
const NOISE = 1;

/** Short bios: y = 1 for the "she" ones, so a probe on the clean activations gets most right. */
function bios(n: number): { texts: string[]; y: Int32Array } {
  const rng = mulberry32(5);
  const pick = (words: string[]): string => words[Math.floor(rng() * words.length)]!;
  const y = Int32Array.from({ length: n }, (_, i) => i % 2);
  const texts = Array.from(
    y,
    (label, i) =>
      `${label === 1 ? pick(['she', 'her']) : pick(['he', 'his'])} ${pick(['works', 'teaches', 'writes', 'paints'])} ${pick(['at the hospital', 'in a school', 'for a newspaper', 'at home'])} ${i}`,
  );
  return { texts, y };
}

/**
 * A ReLU SAE with encoder columns ±u_k (u_k random, norm about 1), so that its decoder rows ±c u_k
 * (c = 2d / dSae) reconstruct x as about U U^T x c ≈ x, plus decoder noise of std `noise` times
 * `scale` (the activations' per-coordinate RMS) / sqrt(dSae): a reconstruction wrong by a controlled
 * amount.
 */
function noisySae(d: number, seed: number, scale: number, noise: number): AffineSae {
  const half = D_SAE / 2;
  const u = randomNormalArray(d * half, seed, 0, 1 / Math.sqrt(d));
  const wEnc = new Float32Array(d * D_SAE);
  const wDec = randomNormalArray(D_SAE * d, seed + 1, 0, (noise * scale) / Math.sqrt(D_SAE));
  const c = (2 * d) / D_SAE;
  for (let k = 0; k < half; k++) {
    for (let j = 0; j < d; j++) {
      const v = u[k * d + j]!;
      wEnc[j * D_SAE + k] = v;
      wEnc[j * D_SAE + half + k] = -v;
      wDec[k * d + j]! += c * v;
      wDec[(half + k) * d + j]! -= c * v;
    }
  }
  return new AffineSae(
    {
      wEnc: tf.tensor2d(wEnc, [d, D_SAE]),
      bEnc: tf.zeros([D_SAE]) as tf.Tensor1D,
      wDec: tf.tensor2d(wDec, [D_SAE, d]),
      bDec: tf.tensor1d(randomNormalArray(d, seed + 2, 0, 0.1 * scale)),
      subtractDecoderBiasFromInput: true,
      activation: { kind: 'relu' },
    },
    { format: 'sae-eraser', source: `noisy SAE ${seed}` },
  );
}

let dir: string;
let model: Model;
let tokenize: (texts: string[]) => Batch;
let saes: Record<HookName, AffineSae>;
let probe: LinearProbe;
let cache: ActivationCache;
let split: LabelledSplit;

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
  dir = mkdtempSync(join(tmpdir(), 'sae-cost-'));
  const opened = await openModel(writeTinyBert(join(dir, 'bert'), { d: 32, layers: 2, heads: 4, maxPositions: 64 }));
  model = opened.model;
  tokenize = opened.tokenize;
  const { texts, y } = bios(40);
  split = { rows: Int32Array.from(texts.keys()), y, z: y, texts };
  // SAEs scaled to each hook's activations, so that their reconstructions are wrong by about as much as the activations.
  const scales = tf.tidy(() => {
    const batch = tokenize(texts);
    const { captures } = model.run(batch, { capture: SAE_HOOKS });
    return SAE_HOOKS.map((h) => Math.sqrt(tf.mean(tf.square(captures[h]!)).dataSync()[0]!));
  });
  saes = Object.fromEntries(SAE_HOOKS.map((h, i) => [h, noisySae(32, 40 + 10 * i, scales[i]!, NOISE)]));
  cache = await buildActivationCache(
    { modelId: 'tiny-bert', hooks: [PROBE_HOOK], tokenizerId: 'tiny-bert', texts },
    { model, tokenize, root: join(dir, 'cache'), batchSize: 16, executor: 'onnx' },
  );
  probe = new LinearProbe(32, 2, { epochs: 60, batchSize: 8, seed: 1 });
  const X = cache.pooled(PROBE_HOOK, split.rows);
  probe.fit(X, y);
  X.dispose();
});

afterAll(() => {
  for (const sae of Object.values(saes)) sae.dispose();
  probe.dispose();
  model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function input(): SaeCostInput {
  return { model, tokenize, saes, probeHook: PROBE_HOOK, probe, cache, split };
}

/** Accuracy with `hook` replaced by its reconstruction computed in plain arrays from the SAE weights. */
function manualAccuracy(hook: HookName): number {
  const sae = saes[hook]!;
  const [wEnc, bEnc, wDec, bDec] = [sae.wEnc, sae.bEnc, sae.wDec, sae.bDec].map((t) => t.dataSync() as Float32Array) as [
    Float32Array,
    Float32Array,
    Float32Array,
    Float32Array,
  ];
  const batch = tokenize([...split.texts]);
  try {
    const x = model.run(batch, { capture: [hook], stopAfter: hook }).captures[hook]!;
    const [n, seq, d] = x.shape;
    const xs = x.dataSync();
    x.dispose();
    const recon = new Float32Array(xs.length);
    for (let t = 0; t < n * seq; t++) {
      for (let j = 0; j < d; j++) recon[t * d + j] = bDec[j]!;
      for (let i = 0; i < D_SAE; i++) {
        let pre = bEnc[i]!;
        for (let j = 0; j < d; j++) pre += (xs[t * d + j]! - bDec[j]!) * wEnc[j * D_SAE + i]!;
        if (pre <= 0) continue;
        for (let j = 0; j < d; j++) recon[t * d + j]! += pre * wDec[i * d + j]!;
      }
    }
    const pred = tf.tidy(() => {
      const acts = model.run(batch, { capture: [PROBE_HOOK], stopAfter: PROBE_HOOK, edits: { [hook]: () => tf.tensor3d(recon, [n, seq, d]) } }).captures[
        PROBE_HOOK
      ]!;
      return meanPool(acts, batch.attentionMask);
    });
    const labels = probe.predict(pred);
    pred.dispose();
    return labels.reduce((a, p, i) => a + (p === split.y[i] ? 1 : 0), 0) / labels.length;
  } finally {
    tf.dispose([batch.inputIds, batch.attentionMask]);
  }
}

describe('saeDownstreamCost', () => {
  it('with the error term reproduces the clean accuracy; without it, equals the hand computation (ONNX Runtime and tfjs)', async () => {
    const onnx = await saeDownstreamCost(input(), { batchSize: 16, executor: 'onnx' });
    const tfjs = await saeDownstreamCost(input(), { batchSize: 7, executor: 'tfjs' });
    expect(Object.keys(onnx)).toEqual(SAE_HOOKS);
    const clean = onnx.embed!.acc_clean;
    // The probe learned the task on the clean activations.
    expect(clean).toBeGreaterThan(0.8);
    for (const hook of SAE_HOOKS) {
      const manual = manualAccuracy(hook);
      for (const [executor, cost] of [
        ['onnx', onnx],
        ['tfjs', tfjs],
      ] as const) {
        const c = cost[hook]!;
        expect(c.acc_clean, `${executor} ${hook}`).toBe(clean);
        expect(c.acc_reconstructed_with_error, `${executor} ${hook}`).toBe(clean);
        expect(c.acc_reconstructed, `${executor} ${hook}`).toBe(manual);
        expect(c.delta, `${executor} ${hook}`).toBeCloseTo(c.acc_reconstructed - clean, 12);
        expect(c.n).toBe(40);
      }
    }
    // The noisy reconstructions cost accuracy without reaching chance, so the hand computation's
    // agreement is not that of two constant predictions.
    for (const hook of ['embed', PROBE_HOOK]) {
      expect(onnx[hook]!.acc_reconstructed, hook).toBeGreaterThan(0.55);
      expect(onnx[hook]!.acc_reconstructed, hook).toBeLessThan(0.95);
    }
  });

  it('the reconstruction edit is decode(encode(x)), and with the error x itself', () => {
    const sae = saes.embed!;
    const x = tf.randomNormal([2, 3, 32], 0, 1, 'float32', 3) as tf.Tensor3D;
    const [recon, same, want] = tf.tidy(() => [
      reconstructionEdit('embed', sae, false)(x),
      reconstructionEdit('embed', sae, true)(x),
      sae.decode(sae.encode(x)),
    ]);
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(recon!, want!))).dataSync()[0]!)).toBe(0);
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(same!, x))).dataSync()[0]!)).toBeLessThan(1e-5);
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(recon!, x))).dataSync()[0]!)).toBeGreaterThan(0.1);
    expect(() => reconstructionEdit('embed', sae, false)(tf.zeros([1, 2, 8]) as tf.Tensor3D)).toThrow(/reads width 32, the activation has width 8/);
    tf.dispose([x, recon!, same!, want!]);
  });

  it('leaves no tensors behind and refuses an empty split', async () => {
    await saeDownstreamCost(input(), { executor: 'tfjs' });
    const before = tf.memory().numTensors;
    await saeDownstreamCost(input(), { executor: 'tfjs' });
    expect(tf.memory().numTensors).toBe(before);
    await expect(saeDownstreamCost({ ...input(), split: { rows: new Int32Array(0), y: new Int32Array(0), z: new Int32Array(0), texts: [] } })).rejects.toThrow(
      /no examples/,
    );
  });
});
