/**
 * Attribution (src/erasure/attribution.ts) against brute force on small real models: a random BERT
 * and a random GPT-NeoX, random ReLU SAEs at four upstream hooks and at the probe hook, a random
 * binary linear probe. For every feature i at every hook h the true effect of SHIFT's intervention
 * on that feature alone is computed by running the model with the ablation edit of
 * `FeatureAblationEraser` (x_h' = x_h - f_i(x_h) v_i at every token, SAE error kept):
 *   true_i = mean_n [ m_n(clean) - m_n(ablated i) ]
 * (m the probe metric of `probeMetric`, signed toward the labelled class), and compared with
 *  (a) attribution patching, which must equal the first-order estimate grad m . (f_i v_i) summed
 *      over tokens: checked against autodiff along each feature's direction and a central finite
 *      difference;
 *  (b) integrated gradients with many steps and attribution patching as estimates of that effect:
 *      rankings by |attribution| against the ranking by |true effect| (Spearman, top-5 overlap) and
 *      max relative errors. Finding: ATP tracks single-feature ablation closely; SFC's IG, whose
 *      path scales all of a hook's features and its error to zero together, ranks worse;
 *  (c) the sign convention: a feature with positive attribution lowers the metric when ablated.
 * At the probe hook the metric is affine in the activation, so there both estimates equal the true
 * effect up to rounding.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { randomNormalArray } from '../../src/data/prng.js';
import { attributionPatching, integratedGradients, probeMetric, type AttributionInput, type HookAttribution } from '../../src/erasure/attribution.js';
import { supervision } from '../../src/erasure/eraser.js';
import { FeatureAblationEraser } from '../../src/erasure/feature-ablation.js';
import { loadModel } from '../../src/models/load.js';
import type { Batch, Edit, HookName, Model } from '../../src/models/model.js';
import { openModel } from '../../src/models/open.js';
import { pooledForward } from '../../src/models/pool.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { AffineSae } from '../../src/sae/sae.js';
import { setQuiet } from '../../src/util/progress.js';
import { writeTinyBert } from '../cli/tiny-bert.js';
import { referenceSuite, wordTokenizer } from '../models/helpers.js';

const PROBE_HOOK = 'layers.1.resid_out';
const UPSTREAM = ['embed', 'layers.0.mlp_out', 'layers.0.resid_out', 'layers.1.attn_out'];
const HOOKS = [...UPSTREAM, PROBE_HOOK];
const D_SAE = 32;
/** Decoder row norm over a typical activation's: small features, whose single ablation is close to linear. */
const ROW_FRAC = 0.05;
const TEXTS = [
  'The nurse said hello to everyone.',
  'He performs cardiac surgery at the hospital every single weekday.',
  'She is a nurse and a pilot.',
  'A software engineer who writes compilers and teaches on weekends.',
  'They paint landscapes.',
  'The professor of law published three books about contracts.',
  'He teaches piano to children in the evenings.',
  'Her research is on protein folding.',
];
const LABELS = Int32Array.from(TEXTS, (_, i) => i % 2);

interface Fixture {
  name: string;
  model: Model;
  tokenize: (texts: string[]) => Batch;
  saes: Record<HookName, AffineSae>;
  probe: LinearProbe;
  /** Hooks where the probe metric is affine in the activation: the probe hook, and in GPT-NeoX with parallel residual the last layer's attn_out, which adds straight into resid_out. */
  affine: HookName[];
}

/**
 * A random ReLU SAE for activations whose coordinates have RMS `scale`: pre-activations about
 * N(-0.2, 1), so about 40% of the features fire on a token, and decoder rows of norm `rowFrac`
 * times a typical activation's norm (one feature's ablation moves a token by a few percent).
 */
function randomSae(d: number, seed: number, scale: number, rowFrac: number): AffineSae {
  return new AffineSae(
    {
      wEnc: tf.tensor2d(randomNormalArray(d * D_SAE, seed, 0, 1 / (Math.sqrt(d) * scale)), [d, D_SAE]),
      bEnc: tf.tensor1d(randomNormalArray(D_SAE, seed + 1, -0.2, 0.1)),
      wDec: tf.tensor2d(randomNormalArray(D_SAE * d, seed + 2, 0, rowFrac * scale), [D_SAE, d]),
      bDec: tf.tensor1d(randomNormalArray(d, seed + 3, 0, 0.1 * scale)),
      subtractDecoderBiasFromInput: true,
      activation: { kind: 'relu' },
    },
    { format: 'sae-eraser', source: `random SAE ${seed}` },
  );
}

function randomProbe(d: number, seed: number): LinearProbe {
  const probe = new LinearProbe(d, 2);
  probe.setParameters(randomNormalArray(d, seed, 0, 1 / Math.sqrt(d)), Float32Array.of(0.1));
  return probe;
}

/** Per-coordinate RMS of the activations at each hook over the real tokens of TEXTS. */
function coordinateRms(model: Model, tokenize: (texts: string[]) => Batch): Record<HookName, number> {
  const batch = tokenize(TEXTS);
  try {
    return tf.tidy(() => {
      const { captures } = model.run(batch, { capture: HOOKS });
      const mask = tf.expandDims(tf.cast(batch.attentionMask, 'float32'), 2);
      const count = tf.sum(mask).dataSync()[0]! * model.config.dModel;
      return Object.fromEntries(HOOKS.map((h) => [h, Math.sqrt(tf.sum(tf.mul(tf.square(captures[h]!), mask)).dataSync()[0]! / count)]));
    });
  } finally {
    tf.dispose([batch.inputIds, batch.attentionMask]);
  }
}

let dir: string;
const fixtures: Fixture[] = [];

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
  dir = mkdtempSync(join(tmpdir(), 'attribution-ablation-'));
  const bert = await openModel(writeTinyBert(join(dir, 'bert'), { d: 32, layers: 2, heads: 4, maxPositions: 64 }));
  const neox = (await referenceSuite('tiny')).find((c) => c.name === 'neox_rot25_parallel')!;
  const neoxModel = await loadModel(neox.dir);
  for (const [name, model, tokenize, seed, affine] of [
    ['tiny BERT', bert.model, bert.tokenize, 100, [PROBE_HOOK]],
    ['tiny GPT-NeoX', neoxModel, wordTokenizer(neoxModel.config.vocabSize), 200, [PROBE_HOOK, 'layers.1.attn_out']],
  ] as const) {
    const d = model.config.dModel;
    const scales = coordinateRms(model, tokenize);
    const saes = Object.fromEntries(HOOKS.map((h, i) => [h, randomSae(d, seed + 10 * i, scales[h]!, ROW_FRAC)]));
    fixtures.push({ name, model, tokenize, saes, probe: randomProbe(d, seed + 99), affine: [...affine] });
  }
});

afterAll(() => {
  for (const f of fixtures) {
    for (const sae of Object.values(f.saes)) sae.dispose();
    f.probe.dispose();
    f.model.dispose();
  }
  rmSync(dir, { recursive: true, force: true });
});

/** Mean probe metric over TEXTS with `edits`. */
function meanMetric(f: Fixture, edits: Readonly<Record<HookName, Edit>>): number {
  const batch = f.tokenize(TEXTS);
  try {
    return tf.tidy(() => {
      const pooled = pooledForward(f.model, batch, PROBE_HOOK, edits);
      return tf.mean(probeMetric(f.probe, pooled, tf.tensor1d(LABELS, 'int32'))).dataSync()[0]!;
    });
  } finally {
    tf.dispose([batch.inputIds, batch.attentionMask]);
  }
}

/** m(clean) - m(feature i ablated alone at `hook`, error kept), with SHIFT's own eraser. */
function trueEffects(f: Fixture, hook: HookName, clean: number): Float64Array {
  return Float64Array.from({ length: D_SAE }, (_, i) => {
    const eraser = FeatureAblationEraser.create(
      'shift',
      f.saes,
      PROBE_HOOK,
      { [hook]: [i] },
      { selectedBy: 'test', supervision: supervision(['ambiguous_task']) },
    );
    try {
      return clean - meanMetric(f, eraser.edits());
    } finally {
      eraser.dispose();
    }
  });
}

/** d/dε at ε = 0 of the mean metric with `hook` edited to x + ε f_i(x) v_i, by autodiff: the exact first-order effect. */
function directionalDerivative(f: Fixture, hook: HookName, i: number): number {
  const sae = f.saes[hook]!;
  const batch = f.tokenize(TEXTS);
  try {
    return tf.tidy(() => {
      const metric = (eps: tf.Tensor): tf.Scalar => {
        const edit: Edit = (x) => tf.add(x, tf.mul(eps, featureComponent(sae, i, x))) as tf.Tensor3D;
        const pooled = pooledForward(f.model, batch, PROBE_HOOK, { [hook]: edit });
        return tf.mean(probeMetric(f.probe, pooled, tf.tensor1d(LABELS, 'int32')));
      };
      return tf.grad(metric)(tf.scalar(0)).dataSync()[0]!;
    });
  } finally {
    tf.dispose([batch.inputIds, batch.attentionMask]);
  }
}

/** f_i(x) v_i at every token of `x [n, seq, d]`. */
function featureComponent(sae: AffineSae, i: number, x: tf.Tensor3D): tf.Tensor3D {
  return tf.tidy(() => {
    const codes = tf.slice(sae.encode(x), [0, 0, i], [-1, -1, 1]);
    return tf.mul(codes, tf.reshape(tf.slice(sae.wDec, [i, 0], [1, -1]), [1, 1, -1])) as tf.Tensor3D;
  });
}

/** (m(x + δ c_i) - m(x - δ c_i)) / 2δ with c_i = f_i(x) v_i at every token of `hook`: the same derivative by finite difference. */
function finiteDifference(f: Fixture, hook: HookName, i: number, delta: number): number {
  const along =
    (eps: number): Edit =>
    (x) =>
      tf.tidy(() => tf.add(x, tf.mul(eps, featureComponent(f.saes[hook]!, i, x))) as tf.Tensor3D);
  return (meanMetric(f, { [hook]: along(delta) }) - meanMetric(f, { [hook]: along(-delta) })) / (2 * delta);
}

function input(f: Fixture, hooks: readonly HookName[]): AttributionInput {
  return { model: f.model, tokenize: f.tokenize, saes: f.saes, hooks, probeHook: PROBE_HOOK, probe: f.probe, texts: TEXTS, labels: LABELS };
}

/** Ranks with ties at their mean rank. */
function ranks(v: ArrayLike<number>): Float64Array {
  const idx = Array.from({ length: v.length }, (_, i) => i).sort((a, b) => v[a]! - v[b]!);
  const r = new Float64Array(v.length);
  for (let s = 0; s < idx.length;) {
    let e = s;
    while (e + 1 < idx.length && v[idx[e + 1]!] === v[idx[s]!]) e++;
    for (let k = s; k <= e; k++) r[idx[k]!] = (s + e) / 2;
    s = e + 1;
  }
  return r;
}

/** Spearman rank correlation of |a| and |b|. */
function spearmanAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const ra = ranks(Array.from(a, Math.abs));
  const rb = ranks(Array.from(b, Math.abs));
  const n = ra.length;
  const ma = ra.reduce((s, v) => s + v, 0) / n;
  const mb = rb.reduce((s, v) => s + v, 0) / n;
  let num = 0;
  let va = 0;
  let vb = 0;
  for (let i = 0; i < n; i++) {
    num += (ra[i]! - ma) * (rb[i]! - mb);
    va += (ra[i]! - ma) ** 2;
    vb += (rb[i]! - mb) ** 2;
  }
  return num / Math.sqrt(va * vb);
}

/** Indices of the k largest |v|. */
function topK(v: ArrayLike<number>, k: number): number[] {
  return Array.from({ length: v.length }, (_, i) => i)
    .sort((a, b) => Math.abs(v[b]!) - Math.abs(v[a]!))
    .slice(0, k);
}

/** How many of the top 5 by |a| are in the top 5 by |b|. */
function top5Overlap(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const want = new Set(topK(b, 5));
  return topK(a, 5).filter((i) => want.has(i)).length;
}

/** max_i |a_i - b_i| / max_i |b_i|. */
function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 1e-12;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / scale;
}

const table: string[] = [];
afterAll(() => {
  console.log(
    [
      'attribution vs single-feature ablation (error kept), per hook: max|true|, max rel error and Spearman(|.|, |true|) of ATP and IG(100 steps), top-5 overlap',
      ...table,
    ].join('\n'),
  );
});

describe.each([0, 1])('attribution against brute-force ablation (fixture %i)', (which) => {
  let f: Fixture;
  const truth: Record<HookName, Float64Array> = {};
  let atp: Record<HookName, HookAttribution>;
  let ig: Record<HookName, HookAttribution>;
  beforeAll(() => {
    f = fixtures[which]!;
    const clean = meanMetric(f, {});
    for (const h of HOOKS) truth[h] = trueEffects(f, h, clean);
    atp = attributionPatching(input(f, HOOKS), { batchSize: TEXTS.length });
    ig = integratedGradients(input(f, HOOKS), { steps: 100, stepsPerPass: 10, batchSize: TEXTS.length });
    for (const h of HOOKS) {
      const t = truth[h]!;
      const [a, g] = [atp[h]!.features, ig[h]!.features];
      const maxTrue = Math.max(...Array.from(t, Math.abs));
      table.push(
        `${f.name.padEnd(14)} ${h.padEnd(18)} max|true| ${maxTrue.toExponential(2)}  relErr ATP ${relError(a, t).toPrecision(2)} IG ${relError(g, t).toPrecision(2)}` +
          `  Spearman ATP ${spearmanAbs(a, t).toFixed(3)} IG ${spearmanAbs(g, t).toFixed(3)}  top-5 ATP ${top5Overlap(a, t)} IG ${top5Overlap(g, t)}`,
      );
    }
  });

  it('(a) attribution patching is exactly the first-order effect grad m . (f_i v_i), summed over tokens', () => {
    for (const h of HOOKS) {
      const a = atp[h]!.features;
      // Autodiff along each feature's own direction, one feature at a time: a different graph from
      // ATP's one gradient per hook projected onto all decoder rows. Measured: at most 1.1e-5.
      const exact = Float64Array.from({ length: D_SAE }, (_, i) => directionalDerivative(f, h, i));
      expect(relError(a, exact), `${f.name} ${h}`).toBeLessThan(1e-4);
      table.push(`${f.name} ${h}: ATP vs autodiff ${relError(a, exact).toExponential(2)}`);
      // And a central finite difference (δ = 0.01), which checks the model's gradient itself; its
      // float32 rounding error is about 1e-7 / (δ max|effect|), so only hooks with effects above
      // 1e-3 are compared. Measured: at most 1.6e-3.
      if (Math.max(...Array.from(truth[h]!, Math.abs)) > 1e-3) {
        const fd = Float64Array.from({ length: D_SAE }, (_, i) => finiteDifference(f, h, i, 1e-2));
        expect(relError(a, fd), `${f.name} ${h}`).toBeLessThan(5e-3);
        table.push(`${f.name} ${h}: ATP vs finite difference ${relError(a, fd).toExponential(2)}`);
      }
    }
  });

  it('both equal the true ablation effect where the metric is affine in the activation (the probe hook)', () => {
    // m = (2y - 1)(w . mean_t x_t + b) there: removing f_i v_i changes it by exactly the first-order
    // term, and the IG path gradient is constant. Measured: at most 1.5e-5.
    for (const h of f.affine) {
      expect(relError(atp[h]!.features, truth[h]!), `${f.name} ${h}`).toBeLessThan(1e-4);
      expect(relError(ig[h]!.features, truth[h]!), `${f.name} ${h}`).toBeLessThan(1e-4);
    }
  });

  it('(b) upstream: ATP ranks features as single-feature ablation does; IG (zero baseline) ranks them worse', () => {
    // Measured (ROW_FRAC 0.05), Spearman ATP / IG, max rel error ATP / IG:
    //   tiny BERT      embed 0.991 / 0.948, 0.08 / 1.4;  layers.0.resid_out 0.988 / 0.956, 0.07 / 1.8
    //   tiny GPT-NeoX  embed 0.872 / 0.569, 0.24 / 1.5;  layers.0.mlp_out 0.992 / 0.754, 0.15 / 0.31;
    //                  layers.0.resid_out 0.974 / 0.805, 0.10 / 1.1
    // Top-5 overlap: ATP 5 everywhere, IG 3 to 5. With features 4x larger (ROW_FRAC 0.2) ATP's error
    // at embed grows to 0.31 (BERT) and 0.55 (NeoX), IG's stays 1.3 and 2.1: IG integrates the
    // gradient along the path that scales every feature and the error of the hook to zero together,
    // so it answers "how much of m(clean) - m(x_h = b_dec) is feature i's", not "what does removing
    // feature i alone do"; ATP is the gradient at the clean point, off by a term second order in the
    // single feature's edit.
    let compared = 0;
    for (const h of UPSTREAM) {
      const t = truth[h]!;
      // Skipped: affine hooks (the test above) and tiny BERT's attn_out and mlp_out, whose
      // outputs (weights of std 0.02) barely move the LayerNormed residual stream.
      if (f.affine.includes(h) || Math.max(...Array.from(t, Math.abs)) < 1e-3) continue;
      compared++;
      const [a, g] = [atp[h]!.features, ig[h]!.features];
      expect(spearmanAbs(a, t), `${f.name} ${h}`).toBeGreaterThan(0.85);
      expect(top5Overlap(a, t), `${f.name} ${h}`).toBeGreaterThanOrEqual(4);
      expect(relError(a, t), `${f.name} ${h}`).toBeLessThan(0.4);
      expect(spearmanAbs(g, t), `${f.name} ${h}`).toBeGreaterThan(0.5);
      expect(top5Overlap(g, t), `${f.name} ${h}`).toBeGreaterThanOrEqual(3);
      expect(relError(g, t), `${f.name} ${h}`).toBeGreaterThan(relError(a, t));
    }
    expect(compared).toBeGreaterThanOrEqual(2);
  });

  it('(c) sign: a feature with positive attribution lowers the metric when ablated, a negative one raises it', () => {
    for (const h of HOOKS) {
      const t = truth[h]!;
      // Among the ten features with the largest true effect, both attributions have its sign
      // (true = m(clean) - m(ablated): positive when ablating lowers the metric). Measured: 10 of 10 everywhere.
      for (const i of topK(t, 10)) {
        expect(Math.sign(atp[h]!.features[i]!), `${f.name} ${h} feature ${i}`).toBe(Math.sign(t[i]!));
        expect(Math.sign(ig[h]!.features[i]!), `${f.name} ${h} feature ${i}`).toBe(Math.sign(t[i]!));
      }
      const a = Array.from(atp[h]!.features);
      const up = a.indexOf(Math.max(...a));
      const down = a.indexOf(Math.min(...a));
      expect(a[up]!).toBeGreaterThan(0);
      expect(t[up]!, `${f.name} ${h}`).toBeGreaterThan(0);
      expect(a[down]!).toBeLessThan(0);
      expect(t[down]!, `${f.name} ${h}`).toBeLessThan(0);
    }
  });
});
