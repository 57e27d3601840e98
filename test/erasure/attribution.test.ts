import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import {
  attributionPatching,
  integratedGradients,
  pooledProbeHookAttribution,
  probeMetric,
  rankFeatures,
  type HookAttribution,
} from '../../src/erasure/attribution.js';
import type { Batch, HookName } from '../../src/models/model.js';
import { meanPool } from '../../src/models/pool.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { mulberry32 } from '../../src/data/prng.js';
import { D, ToyModel, randomSae, sentence, toyTokenize, type ToySae } from './sae-toy.js';

beforeAll(async () => {
  await initEngine();
});

function textsAndLabels(n: number, seed: number): { texts: string[]; labels: Int32Array } {
  const rng = mulberry32(seed);
  const labels = Int32Array.from({ length: n }, (_, i) => i % 2);
  const texts = Array.from(labels, (y) => sentence(rng, y, rng() < 0.5 ? 0 : 1));
  return { texts, labels };
}

function probeWith(seed: number, nClasses = 2): LinearProbe {
  const rng = mulberry32(seed);
  const nOut = nClasses === 2 ? 1 : nClasses;
  const probe = new LinearProbe(D, nClasses);
  probe.setParameters(
    Float32Array.from({ length: nOut * D }, () => 2 * rng() - 1),
    Float32Array.from({ length: nOut }, () => 0.3 * (2 * rng() - 1)),
  );
  return probe;
}

/** Relative max difference between two attribution vectors (scaled by the larger magnitude). */
function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 1e-12;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!), Math.abs(b[i]!));
  }
  return diff / scale;
}

/** SAE weights as plain arrays. */
function saeArrays(sae: ToySae): { wEnc: Float32Array; bEnc: Float32Array; wDec: Float32Array; bDec: Float32Array } {
  return {
    wEnc: sae.wEnc.dataSync() as Float32Array,
    bEnc: sae.bEnc.dataSync() as Float32Array,
    wDec: sae.wDec.dataSync() as Float32Array,
    bDec: sae.bDec.dataSync() as Float32Array,
  };
}

describe('integrated gradients', () => {
  let model: ToyModel;
  let sae: ToySae;
  beforeAll(() => {
    model = new ToyModel({ nLayers: 2, seed: 3, layerScale: 0.6 });
    sae = randomSae(12, 11);
  });
  afterAll(() => {
    model.dispose();
    sae.dispose();
  });

  it('equals the closed form f_i (w . v_i) on a linear metric (the hook is the probe hook)', () => {
    // metric = (2y - 1)(w . mean_t x_t + b) is linear in x, so IG = input x gradient exactly:
    //   A_f[i] = mean_n (2y-1) sum_t f_ti (w . v_i) / L_n,  A_e = mean_n (2y-1) sum_t (w . e_t) / L_n.
    const { texts, labels } = textsAndLabels(7, 1);
    const probe = probeWith(2);
    const got = integratedGradients(
      { model, tokenize: toyTokenize, saes: { embed: sae }, hooks: ['embed'], probeHook: 'embed', probe, texts, labels },
      { batchSize: 3 },
    );
    const w = probe.parameters().weight;
    const { wEnc, bEnc, wDec, bDec } = saeArrays(sae);
    const m = sae.dSae;
    const wDotV = Float64Array.from({ length: m }, (_, i) => wDec.subarray(i * D, (i + 1) * D).reduce((a, v, j) => a + v * w[j]!, 0));
    const expF = new Float64Array(m);
    let expE = 0;
    texts.forEach((text, n) => {
      const batch = toyTokenize([text]);
      const x = model.run(batch, { capture: ['embed'] }).captures.embed!;
      const xs = x.dataSync();
      const L = x.shape[1];
      const sign = 2 * labels[n]! - 1;
      for (let t = 0; t < L; t++) {
        const xt = Array.from(xs.subarray(t * D, (t + 1) * D));
        const f = Array.from({ length: m }, (_, i) => Math.max(0, bEnc[i]! + xt.reduce((a, v, j) => a + (v - bDec[j]!) * wEnc[j * m + i]!, 0)));
        const recon = Array.from({ length: D }, (_, j) => bDec[j]! + f.reduce((a, fi, i) => a + fi * wDec[i * D + j]!, 0));
        for (let i = 0; i < m; i++) expF[i]! += (sign * f[i]! * wDotV[i]!) / L / texts.length;
        expE += (sign * xt.reduce((a, v, j) => a + (v - recon[j]!) * w[j]!, 0)) / L / texts.length;
      }
      tf.dispose([x, batch.inputIds, batch.attentionMask]);
    });
    expect(relDiff(got.embed!.features, expF)).toBeLessThan(1e-4);
    expect(Math.abs(got.embed!.error - expE)).toBeLessThan(1e-4 * Math.max(1, Math.abs(expE)));
    probe.dispose();
  });

  it('matches the literal SFC computation (gradients with respect to f and e) on a nonlinear model', () => {
    const { texts, labels } = textsAndLabels(5, 4);
    const probe = probeWith(5);
    const probeHook = 'layers.1.resid_out';
    const hooks = ['embed', 'layers.0.mlp_out', 'layers.1.attn_out'];
    const saes = { embed: sae, 'layers.0.mlp_out': sae, 'layers.1.attn_out': sae };
    const steps = 4;
    const got = integratedGradients({ model, tokenize: toyTokenize, saes, hooks, probeHook, probe, texts, labels }, { steps, batchSize: 2, stepsPerPass: 3 });
    for (const hook of hooks) {
      const want = literalIg(model, sae, hook, probeHook, probe, texts, labels, steps);
      expect(relDiff(got[hook]!.features, want.features), hook).toBeLessThan(1e-3);
      expect(Math.abs(got[hook]!.error - want.error), hook).toBeLessThan(1e-3 * Math.max(1, Math.abs(want.error)));
    }
    probe.dispose();
  });

  it('is complete: attributions sum to metric(clean) - metric(baseline), with O(1/steps) error', () => {
    const { texts, labels } = textsAndLabels(6, 8);
    const probeHook = 'layers.1.resid_out';
    for (const nClasses of [2, 3]) {
      const probe = probeWith(9, nClasses);
      const y = Int32Array.from(labels, (v, i) => (nClasses === 2 ? v : (v + i) % 3));
      const total = (steps: number): number => {
        const a = integratedGradients(
          { model, tokenize: toyTokenize, saes: { embed: sae }, hooks: ['embed'], probeHook, probe, texts, labels: y },
          { steps, stepsPerPass: 50, batchSize: 3 },
        );
        return a.embed!.features.reduce((acc, v) => acc + v, 0) + a.embed!.error;
      };
      const bias = tf.tidy(() => tf.reshape(sae.decode(tf.zeros([1, sae.dSae])), [1, 1, D]));
      const clean = meanMetric(model, probe, probeHook, texts, y, {});
      const baseline = meanMetric(model, probe, probeHook, texts, y, { embed: (x) => tf.add(tf.zerosLike(x), bias) as tf.Tensor3D });
      bias.dispose();
      const delta = clean - baseline;
      expect(Math.abs(delta)).toBeGreaterThan(0.05);
      const [t100, t200] = [total(100), total(200)];
      // The right Riemann sum's error shrinks like 1/steps: it halves when the steps double, and
      // the Richardson extrapolation 2 t200 - t100 cancels it.
      expect(Math.abs(t200 - delta), `${nClasses} classes`).toBeLessThan(0.05 * Math.abs(delta));
      expect(Math.abs(t200 - delta), `${nClasses} classes`).toBeLessThan(0.6 * Math.abs(t100 - delta) + 1e-5);
      expect(Math.abs(2 * t200 - t100 - delta), `${nClasses} classes`).toBeLessThan(2e-3 * Math.abs(delta));
      probe.dispose();
    }
  });

  it('attribution patching (one pass for all hooks) equals IG with one step, hook by hook', () => {
    const { texts, labels } = textsAndLabels(5, 12);
    const probe = probeWith(13);
    const hooks = ['embed', 'layers.0.attn_out', 'layers.0.resid_out', 'layers.1.mlp_out'];
    const saes = Object.fromEntries(hooks.map((h) => [h, sae]));
    const input = { model, tokenize: toyTokenize, saes, hooks, probeHook: 'layers.1.resid_out', probe, texts, labels };
    const calls = model.calls;
    const atp = attributionPatching(input, { batchSize: 5 });
    expect(model.calls - calls).toBe(1);
    const ig1 = integratedGradients(input, { steps: 1, batchSize: 2 });
    for (const h of hooks) {
      expect(relDiff(atp[h]!.features, ig1[h]!.features), h).toBeLessThan(1e-4);
      expect(Math.abs(atp[h]!.error - ig1[h]!.error), h).toBeLessThan(1e-4 * Math.max(1, Math.abs(ig1[h]!.error)));
    }
    // And differs from 10-step IG on this nonlinear model (the test above would pass vacuously otherwise).
    const ig10 = integratedGradients(input, { batchSize: 5 });
    expect(relDiff(atp.embed!.features, ig10.embed!.features)).toBeGreaterThan(1e-2);
    const before = tf.memory().numTensors;
    attributionPatching(input, { batchSize: 2 });
    expect(tf.memory().numTensors).toBe(before);
    probe.dispose();
  });

  it('leaves no tensors behind', () => {
    const { texts, labels } = textsAndLabels(4, 2);
    const probe = probeWith(3);
    const run = (): void => {
      integratedGradients(
        {
          model,
          tokenize: toyTokenize,
          saes: { embed: sae, 'layers.0.resid_out': sae },
          hooks: ['embed', 'layers.0.resid_out'],
          probeHook: 'layers.1.resid_out',
          probe,
          texts,
          labels,
        },
        { steps: 3, batchSize: 2 },
      );
    };
    run();
    const before = tf.memory().numTensors;
    run();
    expect(tf.memory().numTensors).toBe(before);
    probe.dispose();
  });

  it('rejects hooks after the probe hook, hooks without an SAE and bad labels', () => {
    const probe = probeWith(3);
    const base = {
      model,
      tokenize: toyTokenize,
      saes: { embed: sae, 'layers.1.mlp_out': sae },
      probeHook: 'layers.0.resid_out',
      probe,
      texts: ['he works'],
      labels: [1],
    };
    expect(() => integratedGradients({ ...base, hooks: ['layers.1.mlp_out'] })).toThrow(/comes after the probe hook/);
    expect(() => integratedGradients({ ...base, hooks: ['layers.0.attn_out'] })).toThrow(/no SAE at hook "layers.0.attn_out"/);
    expect(() => integratedGradients({ ...base, hooks: ['embed'], labels: [2] })).toThrow(/label 0 is 2/);
    probe.dispose();
  });
});

/** Mean over texts of the probe metric, with optional edits. */
function meanMetric(
  model: ToyModel,
  probe: LinearProbe,
  probeHook: HookName,
  texts: string[],
  labels: Int32Array,
  edits: Record<HookName, (x: tf.Tensor3D) => tf.Tensor3D>,
): number {
  return tf.tidy(() => {
    const batch = toyTokenize(texts);
    const acts = model.run(batch, { capture: [probeHook], edits }).captures[probeHook]!;
    return tf.mean(probeMetric(probe, meanPool(acts, batch.attentionMask), tf.tensor1d(labels, 'int32'))).dataSync()[0]!;
  });
}

/**
 * SFC's `_pe_ig_sparseact` with patch = None, written out directly: for s = 1 - k/S the hook is
 * replaced by decode(s f) + s e, and gradients are taken with respect to (s f, s e) themselves.
 */
function literalIg(
  model: ToyModel,
  sae: ToySae,
  hook: HookName,
  probeHook: HookName,
  probe: LinearProbe,
  texts: string[],
  labels: Int32Array,
  steps: number,
): HookAttribution {
  const featureSum = new Float64Array(sae.dSae);
  let errorSum = 0;
  for (let n = 0; n < texts.length; n++) {
    tf.tidy(() => {
      const batch: Batch = toyTokenize([texts[n]!]);
      const x = model.run(batch, { capture: [hook] }).captures[hook]!;
      const f = sae.encode(x);
      const e = tf.sub(x, sae.decode(f));
      const y = tf.tensor1d([labels[n]!], 'int32');
      let gf = tf.zerosLike(f);
      let ge = tf.zerosLike(e);
      for (let k = 0; k < steps; k++) {
        const s = 1 - k / steps;
        const metric = (fl: tf.Tensor, el: tf.Tensor): tf.Scalar => {
          const acts = model.run(batch, { capture: [probeHook], edits: { [hook]: () => tf.add(sae.decode(fl), el) as tf.Tensor3D } }).captures[probeHook]!;
          return tf.sum(probeMetric(probe, meanPool(acts, batch.attentionMask), y));
        };
        const [df, de] = tf.grads(metric)([tf.mul(f, s), tf.mul(e, s)]);
        gf = tf.add(gf, df!);
        ge = tf.add(ge, de!);
      }
      const fa = tf.sum(tf.mul(f, tf.div(gf, steps)), [0, 1]).dataSync();
      for (let i = 0; i < fa.length; i++) featureSum[i]! += fa[i]!;
      errorSum += tf.sum(tf.mul(e, tf.div(ge, steps))).dataSync()[0]!;
    });
  }
  return { hook, features: Float32Array.from(featureSum, (v) => v / texts.length), error: errorSum / texts.length };
}

describe('rankFeatures', () => {
  const attributions: Record<HookName, HookAttribution> = {
    embed: { hook: 'embed', features: Float32Array.from([0.5, -0.9, 0, 0.05]), error: 0.1 },
    'layers.0.resid_out': { hook: 'layers.0.resid_out', features: Float32Array.from([0.9, 0.2, -0.3]), error: -0.2 },
  };

  it('ranks by |attribution| over all hooks, ties by hook order then index, skipping zeros', () => {
    const ranked = rankFeatures(attributions);
    expect(ranked.map((r) => `${r.hook}:${r.feature}`)).toEqual([
      'embed:1',
      'layers.0.resid_out:0',
      'embed:0',
      'layers.0.resid_out:2',
      'layers.0.resid_out:1',
      'embed:3',
    ]);
    expect(ranked[0]!.attribution).toBeCloseTo(-0.9, 6);
  });

  it('applies topK, threshold and the positive score', () => {
    expect(rankFeatures(attributions, { topK: 2 }).map((r) => r.feature)).toEqual([1, 0]);
    expect(rankFeatures(attributions, { threshold: 0.25 })).toHaveLength(4);
    expect(rankFeatures(attributions, { score: 'positive', threshold: 0.1 }).map((r) => `${r.hook}:${r.feature}`)).toEqual([
      'layers.0.resid_out:0',
      'embed:0',
      'layers.0.resid_out:1',
    ]);
    expect(() => rankFeatures(attributions, { threshold: -1 })).toThrow(/threshold/);
  });
});

describe('pooled attribution at the probe hook', () => {
  it('equals IG through the model, from pooled codes alone', () => {
    const model = new ToyModel({ nLayers: 2, seed: 3, layerScale: 0.6 });
    const sae = randomSae(12, 11);
    const hook: HookName = 'layers.1.resid_out';
    const probe = probeWith(4);
    const { texts, labels } = textsAndLabels(10, 9);
    const viaModel = integratedGradients(
      { model, tokenize: toyTokenize, saes: { [hook]: sae }, hooks: [hook], probeHook: hook, probe, texts, labels },
      { steps: 3, batchSize: 5 },
    )[hook]!;
    // Per-example token means of the SAE codes and errors at the hook.
    const [codes, errors] = tf.tidy(() => {
      const batch = toyTokenize(texts);
      const x = model.run(batch, { capture: [hook] }).captures[hook]!;
      const [n, seq] = x.shape;
      const flat = tf.reshape(x, [n * seq, D]);
      const f = sae.encode(flat);
      const e = tf.sub(flat, sae.decode(f));
      return [
        meanPool(tf.reshape(f, [n, seq, sae.dSae]) as tf.Tensor3D, batch.attentionMask),
        meanPool(tf.reshape(e, [n, seq, D]) as tf.Tensor3D, batch.attentionMask),
      ];
    });
    const pooled = pooledProbeHookAttribution(hook, sae, probe, codes!, errors!, labels);
    expect(relDiff(pooled.features, viaModel.features)).toBeLessThan(1e-4);
    expect(pooled.error).toBeCloseTo(viaModel.error, 4);
    expect(() => pooledProbeHookAttribution(hook, sae, probeWith(4, 3), codes!, errors!, labels)).toThrow(/needs a binary linear probe/);
    tf.dispose([codes!, errors!]);
    probe.dispose();
    model.dispose();
    sae.dispose();
  });
});
