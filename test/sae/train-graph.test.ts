/**
 * The ONNX SAE training step (src/sae/train-graph.ts) against the tfjs trainer (src/sae/train.ts):
 * its written-out gradients against tfjs autograd of the same objective and against central finite
 * differences of a float64 re-implementation of the objective; whole optimiser steps and whole
 * training runs (with resampling) against the tfjs executor; checkpoints resumed across executors.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { randomNormalArray } from '../../src/data/prng.js';
import { OnnxSession, type HostTensor } from '../../src/onnx/session.js';
import { setQuiet } from '../../src/util/progress.js';
import { arrayActivationSource } from '../../src/sae/buffer.js';
import { adamScalars, OnnxStepper, PARAM_NAMES, stepGraph, STEP_IO, type SaeTrainingWeights, type StepGraphSpec } from '../../src/sae/train-graph.js';
import { tfjsLossGradients, trainSaeOnSource, trainStepsFrom, type TrainOptions } from '../../src/sae/train.js';
import type { AffineSae } from '../../src/sae/sae.js';
import { relErr } from './rel-err.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

/** Random weights with unit decoder rows (as training keeps them) and a batch of inputs. */
function problem(spec: StepGraphSpec, seed: number): { w: SaeTrainingWeights; x: Float32Array } {
  const { dIn: d, dSae: n, batchSize: B } = spec;
  const wDec = randomNormalArray(n * d, seed);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let c = 0; c < d; c++) s += wDec[j * d + c]! ** 2;
    for (let c = 0; c < d; c++) wDec[j * d + c]! /= Math.sqrt(s);
  }
  return {
    w: {
      wEnc: randomNormalArray(d * n, seed + 1, 0, 1 / Math.sqrt(d)),
      bEnc: randomNormalArray(n, seed + 2, -0.1, 0.2),
      wDec,
      bDec: randomNormalArray(d, seed + 3, 0, 0.3),
    },
    x: randomNormalArray(B * d, seed + 4, 0.2, 1),
  };
}

const dimsOf = (spec: StepGraphSpec): Record<(typeof PARAM_NAMES)[number], number[]> => ({
  wEnc: [spec.dIn, spec.dSae],
  bEnc: [spec.dSae],
  wDec: [spec.dSae, spec.dIn],
  bDec: [spec.dIn],
});

/** The step graph's loss and raw gradients at `w` (scale 1, zero moments). */
async function graphGradients(spec: StepGraphSpec, w: SaeTrainingWeights, x: Float32Array): Promise<{ loss: number; grads: SaeTrainingWeights }> {
  const { graph, outputs } = stepGraph(spec, true);
  const session = await OnnxSession.create(graph.toModel(), 'sae-train-test', { threads: 1 });
  try {
    const dims = dimsOf(spec);
    const scalar = (v: number): HostTensor => ({ type: 'float32', data: Float32Array.of(v), dims: [] });
    const { alpha, epsHat } = adamScalars(1, 1e-3);
    const feeds: Record<string, HostTensor> = {
      x: { type: 'float32', data: x, dims: [spec.batchSize, spec.dIn] },
      scale: scalar(1),
      alpha: scalar(alpha),
      epsHat: scalar(epsHat),
    };
    for (const n of PARAM_NAMES) {
      feeds[STEP_IO.param(n)] = { type: 'float32', data: w[n], dims: dims[n] };
      feeds[STEP_IO.m(n)] = { type: 'float32', data: new Float32Array(w[n].length), dims: dims[n] };
      feeds[STEP_IO.v(n)] = { type: 'float32', data: new Float32Array(w[n].length), dims: dims[n] };
    }
    const out = await session.run(feeds);
    const get = (name: string): Float32Array => out[outputs[name]!]!.data as Float32Array;
    const grads = Object.fromEntries(PARAM_NAMES.map((n) => [n, get(STEP_IO.grad(n))])) as unknown as SaeTrainingWeights;
    return { loss: get(STEP_IO.stats)[2]!, grads };
  } finally {
    await session.dispose();
  }
}

type W64 = Record<(typeof PARAM_NAMES)[number], Float64Array>;

/**
 * The training objective in float64, written independently of both executors (see the file
 * comment of src/sae/train-graph.ts), and the smallest distance of a pre-activation from a point
 * where the objective is not smooth (0 for relu, the k-th/k+1-th boundary for topk).
 */
function objective64(spec: StepGraphSpec, w: W64, x: Float64Array): { loss: number; margin: number } {
  const { dIn: d, dSae: n, batchSize: B, k, l1 } = spec;
  let l2 = 0;
  let l1Sum = 0;
  let sumQ = 0;
  let margin = Infinity;
  const mean = new Float64Array(d);
  for (let i = 0; i < B; i++) for (let c = 0; c < d; c++) mean[c]! += x[i * d + c]! / B;
  let total = 0;
  for (let i = 0; i < B; i++) for (let c = 0; c < d; c++) total += (x[i * d + c]! - mean[c]!) ** 2;
  for (let i = 0; i < B; i++) {
    const h = new Float64Array(n);
    for (let j = 0; j < n; j++) {
      let s = w.bEnc[j]!;
      for (let c = 0; c < d; c++) s += (x[i * d + c]! - w.bDec[c]!) * w.wEnc[c * n + j]!;
      h[j] = s;
      margin = Math.min(margin, Math.abs(s));
    }
    let kth = -Infinity;
    if (spec.arch === 'topk') {
      const sorted = Array.from(h).sort((a, b) => b - a);
      kth = sorted[k - 1]!;
      margin = Math.min(margin, kth - sorted[k]!);
    }
    const f = h.map((v) => (v > 0 && v >= kth ? v : 0));
    let q = 0;
    for (let c = 0; c < d; c++) {
      let xHat = w.bDec[c]!;
      for (let j = 0; j < n; j++) xHat += f[j]! * w.wDec[j * d + c]!;
      q += (x[i * d + c]! - xHat) ** 2;
    }
    sumQ += q;
    l2 += Math.sqrt(q + 1e-12) / B;
    l1Sum += f.reduce((a, b) => a + b, 0) / B;
  }
  return { loss: spec.arch === 'relu' ? l2 + l1 * l1Sum : sumQ / total, margin };
}

/** Central differences of `objective64` in every parameter entry. */
function finiteDifferences(spec: StepGraphSpec, w: SaeTrainingWeights, x: Float32Array, eps: number): SaeTrainingWeights {
  const w64 = Object.fromEntries(PARAM_NAMES.map((n) => [n, Float64Array.from(w[n])])) as W64;
  const x64 = Float64Array.from(x);
  const out = {} as Record<(typeof PARAM_NAMES)[number], Float32Array>;
  for (const n of PARAM_NAMES) {
    const g = new Float32Array(w64[n].length);
    for (let i = 0; i < g.length; i++) {
      const keep = w64[n][i]!;
      w64[n][i] = keep + eps;
      const up = objective64(spec, w64, x64).loss;
      w64[n][i] = keep - eps;
      const down = objective64(spec, w64, x64).loss;
      w64[n][i] = keep;
      g[i] = (up - down) / (2 * eps);
    }
    out[n] = g;
  }
  return out;
}

describe('the step graph computes the gradients of the objective', () => {
  const specs: StepGraphSpec[] = [
    { arch: 'relu', dIn: 6, dSae: 10, batchSize: 8, k: 0, l1: 0.3 },
    { arch: 'topk', dIn: 6, dSae: 10, batchSize: 8, k: 3, l1: 0 },
  ];

  it.each(specs)('$arch: against tfjs autograd (float32) and float64 central differences', async (spec) => {
    const { w, x } = problem(spec, spec.arch === 'relu' ? 3 : 4);
    const w64 = Object.fromEntries(PARAM_NAMES.map((n) => [n, Float64Array.from(w[n])])) as W64;
    const { loss: loss64, margin } = objective64(spec, w64, Float64Array.from(x));
    // Central differences of step eps are exact to O(eps^2) only away from the kinks: no
    // pre-activation (nor top-k boundary) may lie within a few eps of one.
    const eps = 1e-6;
    expect(margin).toBeGreaterThan(1e3 * eps);

    const before = tf.memory().numTensors;
    const tfjs = await tfjsLossGradients(w, x, spec);
    expect(tf.memory().numTensors).toBe(before);
    const graph = await graphGradients(spec, w, x);
    const fd = finiteDifferences(spec, w, x, eps);

    expect(Math.abs(graph.loss - loss64) / loss64).toBeLessThan(1e-6);
    expect(Math.abs(tfjs.loss - loss64) / loss64).toBeLessThan(1e-6);
    const errs: Record<string, { tfjs: number; fd: number; tfjsVsFd: number }> = {};
    for (const n of PARAM_NAMES) {
      errs[n] = { tfjs: relErr(graph.grads[n], tfjs.grads[n]), fd: relErr(graph.grads[n], fd[n]), tfjsVsFd: relErr(tfjs.grads[n], fd[n]) };
      // The gradients are not trivially 0 (a wrong sign or a missing term would show).
      expect(Math.max(...Array.from(fd[n], Math.abs)), `${n}: |dL/d${n}|`).toBeGreaterThan(1e-3);
    }
    console.log(
      `${spec.arch} gradients, relative errors (graph vs tfjs, graph vs FD, tfjs vs FD): ${JSON.stringify(errs, (_, v: unknown) => (typeof v === 'number' ? Number(v.toExponential(2)) : v))}`,
    );
    for (const n of PARAM_NAMES) {
      // float32 rounding (measured: about 1e-7); the differences' own error is ~1e-16 / eps + eps^2.
      expect(errs[n]!.tfjs, `${spec.arch} ${n}: graph vs tfjs`).toBeLessThan(1e-6);
      expect(errs[n]!.fd, `${spec.arch} ${n}: graph vs finite differences`).toBeLessThan(1e-6);
    }
  });
});

describe('optimiser steps: ONNX Runtime against the tfjs executor', () => {
  it.each([
    ['relu', { l1: 0.2, lr: 3e-3 }],
    ['topk', { k: 5, lr: 3e-3 }],
  ] as const)('%s: 6 steps from the same weights give the same weights', async (arch, settings) => {
    const spec: StepGraphSpec = { arch, dIn: 16, dSae: 64, batchSize: 128, k: 5, l1: 0.2 };
    const { w } = problem(spec, 11);
    const batches = Array.from({ length: 6 }, (_, s) => randomNormalArray(spec.batchSize * spec.dIn, 100 + s, 0.1, 1));
    const before = tf.memory().numTensors;
    const onnx = await trainStepsFrom(w, spec.dIn, batches, { arch, ...settings, executor: 'onnx' });
    expect(tf.memory().numTensors).toBe(before);
    const tfjs = await trainStepsFrom(w, spec.dIn, batches, { arch, ...settings, executor: 'tfjs' });
    expect(tf.memory().numTensors).toBe(before);
    const errs = Object.fromEntries(PARAM_NAMES.map((n) => [n, relErr(onnx.weights[n], tfjs.weights[n])]));
    const moved = relErr(tfjs.weights.wEnc, w.wEnc);
    console.log(
      `${arch}: 6 steps, ONNX vs tfjs relative errors ${JSON.stringify(errs)}, losses ${relErr(onnx.losses, tfjs.losses).toExponential(2)}; wEnc moved ${moved.toExponential(2)}`,
    );
    // Both are float32 with kernels that sum in different orders (measured: 1e-8 to 1e-7).
    const TOL = 1e-6;
    expect(moved).toBeGreaterThan(100 * TOL);
    expect(relErr(onnx.losses, tfjs.losses)).toBeLessThan(TOL);
    for (const n of PARAM_NAMES) expect(errs[n], `${arch} ${n}`).toBeLessThan(TOL);
  });

  it('refuses a state of the wrong size and an unknown executor with clear errors', async () => {
    const spec: StepGraphSpec = { arch: 'relu', dIn: 4, dSae: 8, batchSize: 2, k: 1, l1: 0.1 };
    const { w } = problem(spec, 1);
    const bad = { ...w, bEnc: new Float32Array(7) };
    await expect(OnnxStepper.create(spec, { params: bad, m: w, v: w, t: 0 })).rejects.toThrow(/parameter bEnc has 7 values, expected 8/);
    const rows = randomNormalArray(64 * 4, 2);
    await expect(
      trainSaeOnSource(arrayActivationSource(rows, 4), { arch: 'relu', dSae: 8, tokens: 64, batchSize: 16, executor: 'cuda' as 'onnx' }),
    ).rejects.toThrow(/executor must be one of onnx, tfjs, got "cuda"/);
  });
});

/** A planted sparse code: each row a sum of 3 of `atoms` random directions plus an offset and noise. */
function planted(n: number, d: number, atoms: number, seed: number): Float32Array {
  const dict = randomNormalArray(atoms * d, seed);
  const coef = randomNormalArray(n * 3, seed + 1);
  const noise = randomNormalArray(n * d, seed + 2, 0, 0.05);
  const rows = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < d; c++) rows[i * d + c] = 0.3 + noise[i * d + c]!;
    for (let t = 0; t < 3; t++) {
      const a = Math.floor(Math.abs(coef[i * 3 + t]!) * 997) % atoms;
      for (let c = 0; c < d; c++) rows[i * d + c]! += (1 + Math.abs(coef[i * 3 + t]!)) * dict[a * d + c]!;
    }
  }
  return rows;
}

function weightsOf(sae: AffineSae): Float32Array[] {
  return [sae.wEnc, sae.bEnc, sae.wDec, sae.bDec].map((t) => Float32Array.from(t.dataSync() as Float32Array));
}

describe('whole training runs: ONNX Runtime against the tfjs executor', () => {
  const d = 16;
  const rows = planted(3000, d, 24, 41);
  const source = () => arrayActivationSource(rows, d, { chunkTokens: 100, seed: 5 });
  // 40 steps with dead-feature resampling at steps 15 and 30, which reads and rewrites the state:
  // these settings resample 20 features (relu, at step 15) and 7 then 17 (topk).
  const base: TrainOptions = {
    arch: 'relu',
    k: 2,
    l1: 1,
    dSae: 96,
    tokens: 64 * 40,
    batchSize: 64,
    bufferTokens: 512,
    warmupSteps: 5,
    resampleSteps: 15,
    lr: 0.03,
  };
  const lrOf = { relu: 0.03, topk: 3e-3 };

  it.each(['relu', 'topk'] as const)('%s: the same losses and final weights, and no tfjs tensors left', async (arch) => {
    const opts = { ...base, arch, lr: lrOf[arch] };
    const run = async (executor: 'onnx' | 'tfjs'): Promise<{ losses: number[]; weights: Float32Array[] }> => {
      const losses: number[] = [];
      const before = tf.memory().numTensors;
      const result = await trainSaeOnSource(source(), { ...opts, executor, onStep: ({ loss }) => losses.push(loss) });
      const weights = weightsOf(result.sae);
      result.sae.dispose();
      expect(tf.memory().numTensors, `${executor}: tfjs tensors after the run`).toBe(before);
      return { losses, weights };
    };
    const onnx = await run('onnx');
    const tfjs = await run('tfjs');
    const errs = ['wEnc', 'bEnc', 'wDec', 'bDec'].map((n, p) => [n, relErr(onnx.weights[p]!, tfjs.weights[p]!)] as const);
    const lossErr = relErr(onnx.losses, tfjs.losses);
    console.log(
      `${arch}: 40 steps with resampling, ONNX vs tfjs relative errors ${JSON.stringify(Object.fromEntries(errs))}, losses ${lossErr.toExponential(2)}`,
    );
    // Rounding differences compound over 40 steps (a top-k selection could even flip on a near
    // tie), so this is looser than the per-step check above; a wrong step or resampling is O(1) off.
    expect(lossErr).toBeLessThan(1e-5);
    for (const [n, e] of errs) expect(e, `${arch} ${n}`).toBeLessThan(1e-5);
  });

  it.each([
    ['relu', 'tfjs', 'onnx'],
    ['topk', 'onnx', 'tfjs'],
  ] as const)('%s: a checkpoint written on %s resumes on %s, and ends where a run on the latter alone does', async (arch, first, second) => {
    const ckpt = mkdtempSync(join(tmpdir(), 'sae-xresume-'));
    const opts: TrainOptions = { ...base, arch, lr: lrOf[arch], checkpointDir: ckpt, checkpointEvery: 10 };
    const stopped = await trainSaeOnSource(source(), { ...opts, tokens: 64 * 20, executor: first });
    stopped.sae.dispose();
    expect((JSON.parse(readFileSync(join(ckpt, 'checkpoint.json'), 'utf8')) as { step: number }).step).toBe(20);
    const resumed = await trainSaeOnSource(source(), { ...opts, executor: second });
    expect(resumed.resumedFrom).toBe(20);
    const got = weightsOf(resumed.sae);
    resumed.sae.dispose();
    const whole = await trainSaeOnSource(source(), { ...base, arch, lr: lrOf[arch], executor: second });
    const want = weightsOf(whole.sae);
    whole.sae.dispose();
    for (let p = 0; p < 4; p++) expect(relErr(got[p]!, want[p]!), `parameter ${p}`).toBeLessThan(1e-5);
  });
});
