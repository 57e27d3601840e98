/**
 * SAE training for models that have no released SAEs.
 *
 * Two architectures, both the AffineSae shape with b_dec subtracted from the input:
 *  - `relu` (dictionary_learning StandardTrainer conventions): f = ReLU(W_enc^T (x - b_dec) + b_enc),
 *    loss = mean_tokens ||x - xHat||_2 + l1 * mean_tokens ||f||_1; decoder rows kept at unit norm
 *    (the gradient component along each row is projected out before the step and rows are
 *    renormalised after it); linear lr warm-up over `warmupSteps`, restarted after each resampling;
 *    dead features (no activation for `resampleSteps / 2` steps) resampled every `resampleSteps`:
 *    their encoder column becomes an input drawn with probability proportional to its
 *    reconstruction loss, scaled to 0.2 x the mean alive encoder norm, their decoder row that input
 *    normalised, their encoder bias 0, and their Adam moments are reset.
 *  - `topk` (sparsify / OpenAI conventions): f = TopK_k(ReLU(...)), loss = sum ||x - xHat||^2 /
 *    sum ||x - mean(x)||^2 (fraction of variance unexplained), unit-norm decoder rows, the same
 *    warm-up and dead-feature resampling.
 * Adam (beta1 0.9, beta2 0.999). Initialisation: decoder rows random unit vectors, W_enc = c W_dec^T
 * with c = min(1, 2 dIn / dSae),
 * b_enc = 0, b_dec = the mean of the first batch.
 *
 * Two executors run the optimiser steps (`executor`): ONNX Runtime (the default; src/sae/train-graph.ts,
 * one graph per architecture with the gradients and the Adam update written out, one run per step)
 * and tfjs autograd (`tfjs`, the reference the graph is tested against). They differ only by float32
 * rounding (test/sae/train-graph.test.ts). Everything else (the buffer, resampling, checkpoints, the
 * saved SAE) works on the host copy of the state (`SaeStepper.read`/`write`) and is shared.
 *
 * Inputs are scaled by c = sqrt(dIn) / E||x|| (estimated on the first batch) so that the L1
 * coefficient means the same for every model; c is folded into the saved weights
 * (W_enc <- c W_enc, W_dec <- W_dec / c, b_dec <- b_dec / c), so the saved SAE reads raw activations.
 *
 * Checkpoints (`<out>/checkpoint/`, version 2): every `checkpointEvery` steps and when a run is
 * stopped through its `signal`, `ckpt-<step>.safetensors` (parameters, Adam moments, steps since
 * each feature fired, the rows the activation buffer holds) then `checkpoint.json` naming it (with
 * the stream position: the buffer's generator draws and the source's pass and offset; the
 * resampling generator's draws, the last resampling step and the recent batch metrics), each
 * written atomically. A run with the same settings over the same data resumes from it exactly: the
 * resumed run draws the same batches and ends with the same weights, bit for bit, as a run that was
 * never stopped on the same executor (with the same thread count: both executors' kernels are
 * deterministic for equal inputs and shapes; test/sae/train.test.ts checks it). A checkpoint written on
 * one executor resumes on the other (the state layout is the same), equal then to float32 rounding.
 * Version 1 checkpoints (which did not save the stream) are refused.
 *
 * SAEs at many hooks (`trainSaes`, `trainSaesOnModel`) train from one activation pass: the model
 * runs once over the texts capturing every hook, each hook's tokens spilled to its own file
 * (src/sae/buffer.ts `spillHookActivations`), then each SAE trains from its file in turn; an SAE
 * trained so equals the one a one-hook run trains with the same seed (the files hold the same rows).
 *
 * Where the conventions follow the libraries and where they differ (test/sae/train.test.ts compares
 * optimiser steps with dictionary_learning 0.1.0 and eai-sparsify 1.3.3):
 *  - relu: the forward pass, the L1 term, the decoder gradient projection and renormalisation, and
 *    Adam match dictionary_learning's AutoEncoder / StandardTrainer / ConstrainedAdam. The
 *    reconstruction term differs on purpose: the unsquared L2 norm of the dictionary_learning
 *    release that trained the Sparse Feature Circuits dictionaries, where 0.1.0's StandardTrainer
 *    uses the squared norm (and a sparsity warm-up). 0.1.0 warms the lr up from 0 at step 0 and
 *    restarts the warm-up every `resample_steps`; here the first step already has lr / warmupSteps
 *    and the warm-up restarts only after features were resampled. dictionary_learning puts the
 *    raw sampled input into a resampled encoder row; here it is normalised first (as in
 *    Anthropic's description).
 *  - topk: the forward pass, the FVU loss, the decoder gradient projection and renormalisation and
 *    Adam match sparsify's SparseCoder with its Adam optimiser. sparsify decays the lr linearly to 0
 *    and has no resampling (AuxK, off by default); here the lr is constant after the warm-up and
 *    dead features are resampled as for relu.
 */
import { Breather } from '../util/yield.js';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tf, initEngine, variableFrom } from '../engine/engine.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { randomNormalArray, type Rng } from '../data/prng.js';
import { pushAll } from '../util/arrays.js';
import type { HookName } from '../models/model.js';
import type { OpenedModel } from '../models/open.js';
import { progress } from '../util/progress.js';
import { ActivationBuffer, CountingRng, type ActivationSource, type BufferState, type SpilledActivations } from './buffer.js';
import { AffineSae, topkMask } from './sae.js';
import { saveSaeLensSae } from './saelens.js';
import { readJsonObject } from './weights.js';
import { expandHookPatterns } from './hook-patterns.js';
import { EXECUTORS, requestedExecutor, type ExecutorName } from '../models/executor.js';
import {
  ADAM,
  biasCorrections,
  checkTrainingState,
  L2_EPS,
  NORM_EPS,
  OnnxStepper,
  PARAM_NAMES,
  type HostTrainingState,
  type ParamName,
  type SaeArch,
  type SaeStepper,
  type SaeTrainingWeights,
  type StepGraphSpec,
  type StepResult,
} from './train-graph.js';

export type { SaeArch, SaeTrainingWeights } from './train-graph.js';

export interface TrainOptions {
  arch: SaeArch;
  dSae: number;
  /** Active features per token for `topk` (default 32). */
  k?: number;
  /**
   * L1 coefficient for `relu` (default 0.1, for inputs scaled to E||x|| = sqrt(dIn)). The L2 term is
   * the unsquared norm, whose slope along a unit decoder row is at most 1, so a feature can pay for
   * itself only when l1 < 1; a larger l1 gives sparser codes.
   */
  l1?: number;
  /** Adam learning rate (default 1e-3). */
  lr?: number;
  /** Tokens per step (default 1024). */
  batchSize?: number;
  /** Training tokens in total. */
  tokens: number;
  /** Linear lr warm-up steps, restarted after each resampling (default 200). */
  warmupSteps?: number;
  /** Resample dead features every this many steps (default 1000; 0 disables). */
  resampleSteps?: number;
  seed?: number;
  /** Rows the activation buffer holds (default 32768). */
  bufferTokens?: number;
  /** Folder for periodic checkpoints; resumes from it when it holds one with the same settings. */
  checkpointDir?: string;
  /** Steps between checkpoints (default 500). */
  checkpointEvery?: number;
  hook?: HookName;
  model?: string;
  /** Progress label (default "train-sae"). */
  label?: string;
  /**
   * What runs the optimiser steps (default: `--executor` / `SAE_ERASER_EXECUTOR`, else `onnx`): ONNX Runtime (`onnx`: each step one run of the
   * written-out forward, backward and Adam graph of src/sae/train-graph.ts) or tfjs autograd
   * (`tfjs`). Both compute the same steps up to float32 rounding and save the same checkpoints, so
   * a run checkpointed on one resumes on the other.
   */
  executor?: ExecutorName;
  /** Called after every step (monitoring, tests); `loss` is the training objective of the step's batch. */
  onStep?: (info: { step: number; loss: number; fve: number; l0: number; numTensors: number }) => void;
  /**
   * Stops the run before its next step once aborted (e.g. on Ctrl-C): a checkpoint of the current
   * step is written first when `checkpointDir` is set, then the run rejects with an error saying so.
   */
  signal?: AbortSignal;
}

export interface SaeMetrics {
  /** 1 - sum ||x - xHat||^2 / sum ||x - mean(x)||^2 over the evaluation tokens. */
  fve: number;
  /** Mean number of nonzero features per token. */
  l0: number;
  /** Fraction of features that never fire on the evaluation tokens. */
  deadFraction: number;
  tokens: number;
}

export interface TrainResult {
  sae: AffineSae;
  steps: number;
  /** The input scale c folded into the weights. */
  inputScale: number;
  /** Metrics of the last 50 training batches (running). */
  train: { fve: number; l0: number };
  /** Step the run resumed from (0 for a fresh run). */
  resumedFrom: number;
}

/** FVE, L0 and dead fraction of `sae` on rows `[n, dIn]`, chunked. */
export function evaluateSae(sae: AffineSae, rows: Float32Array, chunkTokens = 1024): SaeMetrics {
  const d = sae.dIn;
  const n = rows.length / d;
  if (!Number.isInteger(n) || n === 0) throw new Error(`evaluateSae: ${rows.length} values are not rows of width ${d}`);
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j]! += rows[i * d + j]! / n;
  let total = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) total += (rows[i * d + j]! - mean[j]!) ** 2;
  let residual = 0;
  let nonzero = 0;
  const fired = new Uint8Array(sae.dSae);
  for (let start = 0; start < n; start += chunkTokens) {
    const m = Math.min(chunkTokens, n - start);
    const [res, f] = tf.tidy(() => {
      const x = tf.tensor2d(rows.subarray(start * d, (start + m) * d), [m, d]);
      const codes = sae.encode(x);
      const r = tf.sum(tf.square(tf.sub(x, sae.decode(codes))));
      return [r, codes];
    });
    residual += (res.dataSync() as Float32Array)[0]!;
    const fv = f.dataSync() as Float32Array;
    tf.dispose([res, f]);
    for (let t = 0; t < m; t++) {
      const base = t * sae.dSae;
      for (let j = 0; j < sae.dSae; j++)
        if (fv[base + j] !== 0) {
          nonzero++;
          fired[j] = 1;
        }
    }
  }
  let dead = 0;
  for (let j = 0; j < sae.dSae; j++) if (fired[j] === 0) dead++;
  return { fve: 1 - residual / total, l0: nonzero / n, deadFraction: dead / sae.dSae, tokens: n };
}

/** The tfjs executor's parameters (variables, for `tf.variableGrads`). */
interface Params {
  wEnc: tf.Variable<tf.Rank.R2>;
  bEnc: tf.Variable<tf.Rank.R1>;
  wDec: tf.Variable<tf.Rank.R2>;
  bDec: tf.Variable<tf.Rank.R1>;
}

interface Adam {
  m: Record<ParamName, tf.Tensor>;
  v: Record<ParamName, tf.Tensor>;
  t: number;
}

function unitRows(values: Float32Array, rows: number, cols: number): Float32Array {
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += values[r * cols + c]! ** 2;
    const inv = 1 / Math.sqrt(Math.max(s, 1e-24));
    for (let c = 0; c < cols; c++) values[r * cols + c]! *= inv;
  }
  return values;
}

/** The settings a checkpoint must share with the run that resumes it (the executor is not one of them). */
function checkpointKey(o: Required<Pick<TrainOptions, 'arch' | 'dSae' | 'k' | 'l1' | 'lr' | 'batchSize' | 'seed'>>, dIn: number, bufferTokens: number): string {
  return JSON.stringify({
    arch: o.arch,
    dIn,
    dSae: o.dSae,
    k: o.arch === 'topk' ? o.k : null,
    l1: o.arch === 'relu' ? o.l1 : null,
    lr: o.lr,
    batchSize: o.batchSize,
    seed: o.seed,
    bufferTokens,
  });
}

/** Zero Adam moments shaped like `w`. */
function zerosLike(w: SaeTrainingWeights): SaeTrainingWeights {
  return {
    wEnc: new Float32Array(w.wEnc.length),
    bEnc: new Float32Array(w.bEnc.length),
    wDec: new Float32Array(w.wDec.length),
    bDec: new Float32Array(w.bDec.length),
  };
}

/** A fresh run's state: unit decoder rows, the tied encoder, b_dec at the (scaled) first batch's mean, zero moments. */
function initialState(spec: StepGraphSpec, seed: number, scaledMean: Float32Array): HostTrainingState {
  const { dIn: d, dSae } = spec;
  const dec = unitRows(randomNormalArray(dSae * d, seed), dSae, d);
  // Tied init scaled so that the initial reconstruction has about the input's scale: for random
  // unit directions, sum_i ReLU(c v_i.x) v_i ~ c (dSae / 2d) x. Computed with tfjs (float32 products).
  const enc = tf.tidy(() => tf.mul(tf.transpose(tf.tensor2d(dec, [dSae, d])), Math.min(1, (2 * d) / dSae)));
  const wEnc = Float32Array.from(enc.dataSync() as Float32Array);
  enc.dispose();
  const params = { wEnc, bEnc: new Float32Array(dSae), wDec: dec, bDec: scaledMean };
  return { params, m: zerosLike(params), v: zerosLike(params), t: 0 };
}

/** The steps' executor for `executor`, starting from `state`. */
async function createStepper(executor: ExecutorName, spec: StepGraphSpec, state: HostTrainingState): Promise<SaeStepper> {
  if (!EXECUTORS.includes(executor)) throw new Error(`trainSae: executor must be one of ${EXECUTORS.join(', ')}, got ${JSON.stringify(executor)}`);
  if (executor === 'tfjs') return TfjsStepper.create(spec, state);
  try {
    return await OnnxStepper.create(spec, state);
  } catch (err) {
    throw new Error(`trainSae: the ONNX Runtime executor could not start (${(err as Error).message}); executor 'tfjs' trains without it`, { cause: err });
  }
}

/** Trains an SAE on a stream of activations. */
export async function trainSaeOnSource(source: ActivationSource, options: TrainOptions): Promise<TrainResult> {
  await initEngine();
  const d = source.dIn;
  const o = {
    arch: options.arch,
    dSae: options.dSae,
    k: options.k ?? 32,
    l1: options.l1 ?? 0.1,
    lr: options.lr ?? 1e-3,
    batchSize: options.batchSize ?? 1024,
    seed: options.seed ?? 42,
  };
  if (!Number.isInteger(o.dSae) || o.dSae < 1) throw new Error(`trainSae: dSae must be a positive integer, got ${o.dSae}`);
  if (o.arch === 'topk' && (o.k < 1 || o.k > o.dSae)) throw new Error(`trainSae: k must be in [1, ${o.dSae}], got ${o.k}`);
  const spec: StepGraphSpec = { arch: o.arch, dIn: d, dSae: o.dSae, batchSize: o.batchSize, k: o.k, l1: o.l1 };
  const warmup = options.warmupSteps ?? 200;
  const resampleEvery = options.resampleSteps ?? 1000;
  const totalSteps = Math.max(1, Math.ceil(options.tokens / o.batchSize));
  const checkpointEvery = options.checkpointEvery ?? 500;
  const bufferTokens = bufferCapacity(o);
  const key = checkpointKey(o, d, bufferTokens);

  // ---- initial state (fresh or from a checkpoint)
  let step = 0;
  let scale: number;
  let stepsSinceActive: Float32Array = new Float32Array(o.dSae);
  let start: HostTrainingState;
  const resume = options.checkpointDir !== undefined ? readCheckpoint(options.checkpointDir, key, d) : undefined;
  const buffer = new ActivationBuffer(source, { capacityTokens: bufferTokens, seed: o.seed });
  let resampleRng = new CountingRng(o.seed + 1);
  const recent: { fve: number; l0: number }[] = [];
  let lastResample = 0;
  if (resume !== undefined) {
    step = resume.step;
    scale = resume.scale;
    stepsSinceActive = resume.stepsSinceActive;
    start = resume.state;
    try {
      buffer.restore(resume.buffer);
    } catch (err) {
      throw new Error(`${options.checkpointDir}: cannot resume this checkpoint: ${(err as Error).message}`, { cause: err });
    }
    resampleRng = new CountingRng(o.seed + 1, resume.resampleDraws);
    lastResample = resume.lastResample;
    pushAll(recent, resume.recent);
  } else {
    const first = await buffer.next(o.batchSize);
    let norm = 0;
    const mean = new Float32Array(d);
    for (let i = 0; i < o.batchSize; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) {
        s += first[i * d + j]! ** 2;
        mean[j]! += first[i * d + j]! / o.batchSize;
      }
      norm += Math.sqrt(s) / o.batchSize;
    }
    if (!(norm > 0) || !Number.isFinite(norm)) throw new Error(`trainSae: the activations have mean norm ${norm}; cannot train on them`);
    scale = Math.sqrt(d) / norm;
    start = initialState(
      spec,
      o.seed,
      mean.map((v) => v * scale),
    );
  }
  const stepper = await createStepper(options.executor ?? requestedExecutor() ?? 'onnx', spec, start);

  const bar = progress(options.label ?? 'train-sae', totalSteps, 'steps');
  if (step > 0) bar.tick(step, `resumed at step ${step}`);
  let checkpointed = resume?.step ?? -1;
  const checkpoint = (dir: string): void => {
    writeCheckpoint(dir, {
      key,
      step,
      scale,
      stepsSinceActive,
      state: stepper.read(),
      buffer: buffer.state(),
      resampleDraws: resampleRng.draws,
      lastResample,
      recent,
    });
    checkpointed = step;
  };

  const breather = new Breather();
  try {
    while (step < totalSteps) {
      await breather.maybe();
      if (options.signal?.aborted === true) {
        if (options.checkpointDir !== undefined && checkpointed !== step) checkpoint(options.checkpointDir);
        const saved = options.checkpointDir !== undefined ? `; the checkpoint in ${options.checkpointDir} resumes it` : '';
        throw new Error(`trainSae: stopped at step ${step} of ${totalSteps} (${String(options.signal.reason)})${saved}`);
      }
      const raw = await buffer.next(o.batchSize);
      const sinceResample = resampleEvery > 0 ? step - lastResample : step;
      const lr = o.lr * Math.min(1, (sinceResample + 1) / Math.max(1, warmup));
      const { loss, fve, l0, fired } = await stepper.step(raw, scale, lr);
      for (let j = 0; j < o.dSae; j++) stepsSinceActive[j] = fired[j] ? 0 : stepsSinceActive[j]! + 1;
      step++;
      recent.push({ fve, l0 });
      if (recent.length > 50) recent.shift();
      if (resampleEvery > 0 && step % resampleEvery === 0 && step < totalSteps) {
        const resampled = await resampleDeadFeatures(stepper, raw, scale, stepsSinceActive, resampleEvery / 2, spec, resampleRng.next);
        if (resampled > 0) lastResample = step;
      }
      if (options.checkpointDir !== undefined && (step % checkpointEvery === 0 || step === totalSteps)) checkpoint(options.checkpointDir);
      options.onStep?.({ step, loss, fve, l0, numTensors: tf.memory().numTensors });
      const avg = averageOf(recent);
      bar.tick(1, `fve=${avg.fve.toFixed(3)} l0=${avg.l0.toFixed(1)}`);
    }
    bar.done();
    const sae = foldToSae(stepper.read().params, scale, spec, options);
    return { sae, steps: step, inputScale: scale, train: averageOf(recent), resumedFrom: resume?.step ?? 0 };
  } finally {
    await stepper.dispose();
  }
}

function averageOf(rows: { fve: number; l0: number }[]): { fve: number; l0: number } {
  if (rows.length === 0) return { fve: NaN, l0: NaN };
  return { fve: rows.reduce((a, r) => a + r.fve, 0) / rows.length, l0: rows.reduce((a, r) => a + r.l0, 0) / rows.length };
}

// ------------------------------------------------------------------------------------------------
// The tfjs executor: autograd (the reference the ONNX step graph is checked against)
// ------------------------------------------------------------------------------------------------

function preActivations(params: Params, x: tf.Tensor2D): tf.Tensor2D {
  return tf.add(tf.matMul(tf.sub(x, params.bDec), params.wEnc), params.bEnc) as tf.Tensor2D;
}

/**
 * Codes of scaled inputs `x [B, d]`, differentiable in the parameters. For top-k the 0/1 selection
 * mask comes in precomputed (`topkSelection`), outside the gradient tape: tfjs has no TopK gradient
 * and the mask is piecewise constant, so d f / d h = mask.
 */
function codes(params: Params, x: tf.Tensor2D, o: StepGraphSpec, selection?: tf.Tensor2D): tf.Tensor2D {
  const h = preActivations(params, x);
  if (o.arch === 'relu') return tf.relu(h);
  return tf.mul(h, selection ?? topkMask(h, o.k)) as tf.Tensor2D;
}

/**
 * The training objective of scaled inputs `x` (inside a tidy and, for the step, a gradient tape);
 * with `keepStats`, also [fve, l0] and which features fired, kept out of the tidy.
 */
function objective(
  params: Params,
  x: tf.Tensor2D,
  o: StepGraphSpec,
  selection: tf.Tensor2D | undefined,
  keepStats: boolean,
): { loss: tf.Scalar; stats?: tf.Tensor; fired?: tf.Tensor } {
  const f = codes(params, x, o, selection);
  const xHat = tf.add(tf.matMul(f, params.wDec), params.bDec);
  const diff = tf.sub(x, xHat);
  const sq = tf.sum(tf.square(diff), 1);
  const total = tf.sum(tf.square(tf.sub(x, tf.mean(x, 0))));
  const stats = keepStats
    ? tf.keep(tf.stack([tf.sub(1, tf.div(tf.sum(sq), total)), tf.div(tf.sum(tf.cast(tf.greater(f, 0), 'float32')), o.batchSize)]))
    : undefined;
  const fired = keepStats ? tf.keep(tf.greater(tf.max(f, 0), 0)) : undefined;
  if (o.arch === 'relu') {
    const l2 = tf.mean(tf.sqrt(tf.add(sq, L2_EPS)));
    const l1 = tf.mean(tf.sum(f, 1));
    return { loss: tf.add(l2, tf.mul(o.l1, l1)) as tf.Scalar, stats, fired };
  }
  return { loss: tf.div(tf.sum(sq), total) as tf.Scalar, stats, fired };
}

/** One optimiser step; returns the batch's loss, FVE, L0 and which features fired. */
function trainStep(params: Params, adam: Adam, raw: Float32Array, scale: number, o: StepGraphSpec, lr: number): StepResult {
  let stats: tf.Tensor | undefined;
  let firedT: tf.Tensor | undefined;
  tf.tidy(() => {
    const x = tf.mul(tf.tensor2d(raw, [o.batchSize, o.dIn]), scale) as tf.Tensor2D;
    const vars = PARAM_NAMES.map((n) => params[n]);
    const selection = o.arch === 'topk' ? topkMask(preActivations(params, x), o.k) : undefined;
    const { value, grads } = tf.variableGrads(() => {
      const r = objective(params, x, o, selection, true);
      stats = r.stats;
      firedT = r.fired;
      return r.loss;
    }, vars);
    const withLoss = tf.keep(tf.concat([stats!, tf.reshape(value, [1])]));
    stats!.dispose();
    stats = withLoss;
    // Unit-norm decoder rows: drop the gradient component along each row.
    const w = params.wDec;
    const gDec = grads[w.name]!;
    grads[w.name] = tf.sub(gDec, tf.mul(tf.sum(tf.mul(gDec, w), 1, true), w));
    adam.t++;
    const [c1, c2] = biasCorrections(adam.t);
    for (const n of PARAM_NAMES) {
      const p = params[n];
      const g = grads[p.name]!;
      const m = tf.add(tf.mul(adam.m[n], ADAM.beta1), tf.mul(g, 1 - ADAM.beta1));
      const v = tf.add(tf.mul(adam.v[n], ADAM.beta2), tf.mul(tf.square(g), 1 - ADAM.beta2));
      (p as unknown as tf.Variable).assign(tf.sub(p, tf.mul(tf.div(tf.div(m, c1), tf.add(tf.sqrt(tf.div(v, c2)), ADAM.eps)), lr)));
      tf.dispose([adam.m[n], adam.v[n]]);
      adam.m[n] = tf.keep(m);
      adam.v[n] = tf.keep(v);
    }
    w.assign(tf.div(w, tf.add(tf.norm(w, 2, 1, true), NORM_EPS)) as tf.Tensor2D);
  });
  const [fve, l0, loss] = stats!.dataSync() as Float32Array;
  const fired = Uint8Array.from(firedT!.dataSync() as Uint8Array);
  tf.dispose([stats!, firedT!]);
  return { loss: loss!, fve: fve!, l0: l0!, fired };
}

function paramsFrom(w: SaeTrainingWeights, spec: StepGraphSpec): Params {
  const t = tensorsOf(w, spec);
  return {
    wEnc: variableFrom(t.wEnc as tf.Tensor2D, 'sae_wEnc'),
    bEnc: variableFrom(t.bEnc as tf.Tensor1D, 'sae_bEnc'),
    wDec: variableFrom(t.wDec as tf.Tensor2D, 'sae_wDec'),
    bDec: variableFrom(t.bDec as tf.Tensor1D, 'sae_bDec'),
  };
}

function tensorsOf(w: SaeTrainingWeights, spec: StepGraphSpec): Record<ParamName, tf.Tensor> {
  const { dIn: d, dSae } = spec;
  return { wEnc: tf.tensor2d(w.wEnc, [d, dSae]), bEnc: tf.tensor1d(w.bEnc), wDec: tf.tensor2d(w.wDec, [dSae, d]), bDec: tf.tensor1d(w.bDec) };
}

function hostOf(t: Record<ParamName, tf.Tensor>): SaeTrainingWeights {
  const read = (n: ParamName): Float32Array => Float32Array.from(t[n].dataSync() as Float32Array);
  return { wEnc: read('wEnc'), bEnc: read('bEnc'), wDec: read('wDec'), bDec: read('bDec') };
}

/** The tfjs executor of SAE training steps: variables, `tf.variableGrads`, Adam in tfjs ops. */
class TfjsStepper implements SaeStepper {
  readonly executor = 'tfjs';

  private constructor(
    private readonly spec: StepGraphSpec,
    private readonly params: Params,
    private readonly adam: Adam,
  ) {}

  static create(spec: StepGraphSpec, state: HostTrainingState): Promise<TfjsStepper> {
    checkTrainingState(state, spec);
    return Promise.resolve(new TfjsStepper(spec, paramsFrom(state.params, spec), { m: tensorsOf(state.m, spec), v: tensorsOf(state.v, spec), t: state.t }));
  }

  step(raw: Float32Array, scale: number, lr: number): Promise<StepResult> {
    return Promise.resolve(trainStep(this.params, this.adam, raw, scale, this.spec, lr));
  }

  rowErrors(raw: Float32Array, scale: number): Promise<Float32Array> {
    const { spec, params } = this;
    const errors = tf.tidy(() => {
      const x = tf.mul(tf.tensor2d(raw, [spec.batchSize, spec.dIn]), scale) as tf.Tensor2D;
      const xHat = tf.add(tf.matMul(codes(params, x, spec), params.wDec), params.bDec);
      return tf.norm(tf.sub(x, xHat), 2, 1);
    });
    const out = Float32Array.from(errors.dataSync() as Float32Array);
    errors.dispose();
    return Promise.resolve(out);
  }

  read(): HostTrainingState {
    return { params: hostOf(this.params), m: hostOf(this.adam.m), v: hostOf(this.adam.v), t: this.adam.t };
  }

  write(state: HostTrainingState): void {
    checkTrainingState(state, this.spec);
    const next = { params: tensorsOf(state.params, this.spec), m: tensorsOf(state.m, this.spec), v: tensorsOf(state.v, this.spec) };
    for (const n of PARAM_NAMES) {
      (this.params[n] as tf.Variable).assign(next.params[n]);
      tf.dispose([next.params[n], this.adam.m[n], this.adam.v[n]]);
      this.adam.m[n] = next.m[n];
      this.adam.v[n] = next.v[n];
    }
    this.adam.t = state.t;
  }

  dispose(): Promise<void> {
    for (const n of PARAM_NAMES) tf.dispose([this.params[n], this.adam.m[n], this.adam.v[n]]);
    return Promise.resolve();
  }
}

/**
 * The loss and its gradients under the tfjs trainer's objective (autograd, before the decoder
 * projection) at `weights`, on already scaled inputs `x [batchSize, dIn]`: what
 * test/sae/train-graph.test.ts holds the ONNX step graph's written-out gradients to.
 */
export async function tfjsLossGradients(
  weights: SaeTrainingWeights,
  x: Float32Array,
  spec: StepGraphSpec,
): Promise<{ loss: number; grads: SaeTrainingWeights }> {
  await initEngine();
  checkTrainingState({ params: weights, m: weights, v: weights, t: 0 }, spec);
  const params = paramsFrom(weights, spec);
  try {
    const { value, grads } = tf.tidy(() => {
      const xt = tf.tensor2d(x, [spec.batchSize, spec.dIn]);
      const selection = spec.arch === 'topk' ? topkMask(preActivations(params, xt), spec.k) : undefined;
      return tf.variableGrads(
        () => objective(params, xt, spec, selection, false).loss,
        PARAM_NAMES.map((n) => params[n]),
      );
    });
    const byName = Object.fromEntries(PARAM_NAMES.map((n) => [n, grads[params[n].name]!])) as Record<ParamName, tf.Tensor>;
    const loss = (value.dataSync() as Float32Array)[0]!;
    const host = hostOf(byName);
    tf.dispose([value, ...Object.values(grads)]);
    return { loss, grads: host };
  } finally {
    for (const n of PARAM_NAMES) params[n].dispose();
  }
}

/**
 * The optimiser steps of `trainSaeOnSource` from given weights, with zero Adam moments, on given
 * batches of already scaled inputs at a constant learning rate: what test/sae/train.test.ts compares
 * with dictionary_learning's and sparsify's trainers. Returns each step's loss and the weights after
 * the last step.
 * @param weights the starting weights (decoder rows of unit norm, as training keeps them)
 * @param dIn input width
 * @param batches each `[batchSize, dIn]`, all of one size
 * @param options architecture, k (topk), l1 (relu), the learning rate and the executor (default onnx)
 */
export async function trainStepsFrom(
  weights: SaeTrainingWeights,
  dIn: number,
  batches: readonly Float32Array[],
  options: { arch: SaeArch; k?: number; l1?: number; lr: number; executor?: ExecutorName },
): Promise<{ losses: number[]; weights: SaeTrainingWeights }> {
  await initEngine();
  const dSae = weights.bEnc.length;
  const batchSize = (batches[0]?.length ?? 0) / dIn;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batches.some((b) => b.length !== batchSize * dIn)) {
    throw new Error(`trainStepsFrom: batches must all be [batchSize, ${dIn}]`);
  }
  const spec: StepGraphSpec = { arch: options.arch, dIn, dSae, batchSize, k: options.k ?? 32, l1: options.l1 ?? 0.1 };
  const stepper = await createStepper(options.executor ?? requestedExecutor() ?? 'onnx', spec, {
    params: weights,
    m: zerosLike(weights),
    v: zerosLike(weights),
    t: 0,
  });
  try {
    const losses: number[] = [];
    for (const batch of batches) losses.push((await stepper.step(batch, 1, options.lr)).loss);
    const p = stepper.read().params;
    return { losses, weights: { wEnc: p.wEnc.slice(), bEnc: p.bEnc.slice(), wDec: p.wDec.slice(), bDec: p.bDec.slice() } };
  } finally {
    await stepper.dispose();
  }
}

// ------------------------------------------------------------------------------------------------
// Dead-feature resampling and the saved SAE (either executor, on the host state)
// ------------------------------------------------------------------------------------------------

/** dictionary_learning's resampling of dead features; returns how many were resampled. */
async function resampleDeadFeatures(
  stepper: SaeStepper,
  raw: Float32Array,
  scale: number,
  stepsSinceActive: Float32Array,
  deadAfter: number,
  o: StepGraphSpec,
  rng: Rng,
): Promise<number> {
  const dead: number[] = [];
  for (let j = 0; j < o.dSae; j++) if (stepsSinceActive[j]! > deadAfter) dead.push(j);
  if (dead.length === 0) return 0;
  const d = o.dIn;
  const weights = Float64Array.from(await stepper.rowErrors(raw, scale));
  // Draw without replacement with probability proportional to the loss (Efraimidis-Spirakis keys).
  const keys = Array.from(weights, (w, i) => ({ i, key: w > 0 ? Math.log(1 - rng()) / w : -Infinity }));
  keys.sort((a, b) => b.key - a.key);
  const n = Math.min(dead.length, o.batchSize);
  const chosen = dead.slice(0, n);
  const state = stepper.read();
  const { wEnc, wDec, bEnc } = state.params;
  const newEnc = Float32Array.from(wEnc);
  const newDec = Float32Array.from(wDec);
  const newBEnc = Float32Array.from(bEnc);
  const deadSet = new Set(dead);
  let aliveNorm = 0;
  let alive = 0;
  for (let j = 0; j < o.dSae; j++) {
    if (deadSet.has(j)) continue;
    let s = 0;
    for (let r = 0; r < d; r++) s += wEnc[r * o.dSae + j]! ** 2;
    aliveNorm += Math.sqrt(s);
    alive++;
  }
  aliveNorm = alive > 0 ? aliveNorm / alive : 1;
  for (let c = 0; c < n; c++) {
    const j = chosen[c]!;
    const row = keys[c]!.i;
    let s = 0;
    for (let r = 0; r < d; r++) s += (raw[row * d + r]! * scale) ** 2;
    const norm = Math.sqrt(Math.max(s, 1e-24));
    for (let r = 0; r < d; r++) {
      const v = raw[row * d + r]! * scale;
      newEnc[r * o.dSae + j] = (v / norm) * aliveNorm * 0.2;
      newDec[j * d + r] = v / norm;
    }
    newBEnc[j] = 0;
    stepsSinceActive[j] = 0;
  }
  // The resampled features' Adam moments restart from 0 (b_dec's are kept).
  const reset = (w: SaeTrainingWeights): SaeTrainingWeights => {
    const out = { wEnc: Float32Array.from(w.wEnc), bEnc: Float32Array.from(w.bEnc), wDec: Float32Array.from(w.wDec), bDec: w.bDec };
    for (const j of chosen) {
      for (let r = 0; r < d; r++) {
        out.wEnc[r * o.dSae + j] = 0;
        out.wDec[j * d + r] = 0;
      }
      out.bEnc[j] = 0;
    }
    return out;
  };
  stepper.write({ params: { wEnc: newEnc, bEnc: newBEnc, wDec: newDec, bDec: state.params.bDec }, m: reset(state.m), v: reset(state.v), t: state.t });
  return n;
}

/** The trained SAE with the input scale folded in, reading raw activations. */
function foldToSae(params: SaeTrainingWeights, scale: number, spec: StepGraphSpec, options: TrainOptions): AffineSae {
  const t = tensorsOf(params, spec);
  const sae = new AffineSae(
    {
      wEnc: tf.mul(t.wEnc, scale),
      bEnc: t.bEnc as tf.Tensor1D,
      wDec: tf.div(t.wDec, scale),
      bDec: tf.div(t.bDec, scale),
      subtractDecoderBiasFromInput: true,
      activation: spec.arch === 'relu' ? { kind: 'relu' } : { kind: 'topk', k: spec.k },
    },
    { format: 'sae-eraser', source: 'trained in memory', hook: options.hook, model: options.model },
  );
  tf.dispose([t.wEnc, t.wDec, t.bDec]);
  return sae;
}

// ------------------------------------------------------------------------------------------------
// Checkpoints
// ------------------------------------------------------------------------------------------------

const CHECKPOINT_INDEX = 'checkpoint.json';
const CHECKPOINT_FORMAT = 'sae-eraser/sae-training-checkpoint';
/** 2: the activation stream position, resampling state and recent metrics are saved (exact resumption). */
const CHECKPOINT_VERSION = 2;

/** What a checkpoint holds. */
interface TrainingState {
  key: string;
  step: number;
  scale: number;
  stepsSinceActive: Float32Array;
  /** The parameters and Adam state, whichever executor trained them. */
  state: HostTrainingState;
  buffer: BufferState;
  resampleDraws: number;
  lastResample: number;
  recent: { fve: number; l0: number }[];
}

type RawTensor = { dtype: 'F32'; shape: number[]; data: Float32Array };

function writeCheckpoint(dir: string, state: TrainingState): void {
  const { step, buffer } = state;
  const { params, m, v, t } = state.state;
  const file = `ckpt-${step}.safetensors`;
  const d = params.bDec.length;
  const dSae = params.bEnc.length;
  const shapes: Record<ParamName, number[]> = { wEnc: [d, dSae], bEnc: [dSae], wDec: [dSae, d], bDec: [d] };
  const tensors: Record<string, RawTensor> = {
    steps_since_active: { dtype: 'F32', shape: [state.stepsSinceActive.length], data: state.stepsSinceActive },
  };
  // Empty tensors are left out (the reader treats a missing one as empty).
  if (buffer.rows.length > 0) tensors.buffer_rows = { dtype: 'F32', shape: [buffer.rows.length / d, d], data: buffer.rows };
  if (buffer.pending.length > 0) tensors.buffer_pending = { dtype: 'F32', shape: [buffer.pending.length / d, d], data: buffer.pending };
  for (const n of PARAM_NAMES) {
    tensors[n] = { dtype: 'F32', shape: shapes[n], data: params[n] };
    tensors[`adam_m.${n}`] = { dtype: 'F32', shape: shapes[n], data: m[n] };
    tensors[`adam_v.${n}`] = { dtype: 'F32', shape: shapes[n], data: v[n] };
  }
  writeSafetensors(join(dir, file), tensors);
  writeJsonAtomic(join(dir, CHECKPOINT_INDEX), {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    key: state.key,
    step,
    scale: state.scale,
    adamT: t,
    file,
    buffer: { draws: buffer.draws, epoch: buffer.epoch, tokensRead: buffer.tokensRead, sourcePosition: buffer.sourcePosition },
    resampleDraws: state.resampleDraws,
    lastResample: state.lastResample,
    recent: { fve: state.recent.map((r) => r.fve), l0: state.recent.map((r) => r.l0) },
  });
  // Older checkpoint files are superseded only once the index names the new one.
  for (const old of readdirSync(dir)) if (/^ckpt-\d+\.safetensors$/.test(old) && old !== file) rmSync(join(dir, old), { force: true });
}

function readCheckpoint(dir: string, key: string, dIn: number): TrainingState | undefined {
  const index = join(dir, CHECKPOINT_INDEX);
  if (!existsSync(index)) return undefined;
  const info = readJsonObject(index);
  if (info.version !== CHECKPOINT_VERSION || info.format !== CHECKPOINT_FORMAT) {
    const found = info.version === undefined ? 'version 1' : `version ${JSON.stringify(info.version)}`;
    throw new Error(
      `${index}: a ${found} training checkpoint; this version of sae-eraser resumes version ${CHECKPOINT_VERSION} only ` +
        `(which also saves the activation stream, so that a resumed run equals an uninterrupted one). Delete ${dir} to start again`,
    );
  }
  if (info.key !== key) {
    throw new Error(
      `${index}: this checkpoint was made with other settings (${String(info.key)}) than this run (${key}); use another output folder or delete it`,
    );
  }
  const num = (v: unknown, what: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${index}: field "${what}" must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const nums = (v: unknown, what: string): number[] => {
    if (!Array.isArray(v)) throw new Error(`${index}: field "${what}" must be an array of numbers`);
    return v.map((x, i) => num(x, `${what}[${i}]`));
  };
  const buf = (typeof info.buffer === 'object' && info.buffer !== null ? info.buffer : {}) as Record<string, unknown>;
  const recentInfo = (typeof info.recent === 'object' && info.recent !== null ? info.recent : {}) as Record<string, unknown>;
  const recentFve = nums(recentInfo.fve, 'recent.fve');
  const recentL0 = nums(recentInfo.l0, 'recent.l0');
  if (recentFve.length !== recentL0.length) throw new Error(`${index}: recent.fve and recent.l0 differ in length`);
  const meta = {
    step: num(info.step, 'step'),
    scale: num(info.scale, 'scale'),
    adamT: num(info.adamT, 'adamT'),
    draws: num(buf.draws, 'buffer.draws'),
    epoch: num(buf.epoch, 'buffer.epoch'),
    tokensRead: num(buf.tokensRead, 'buffer.tokensRead'),
    sourcePosition: num(buf.sourcePosition, 'buffer.sourcePosition'),
    resampleDraws: num(info.resampleDraws, 'resampleDraws'),
    lastResample: num(info.lastResample, 'lastResample'),
  };
  const file = readSafetensors(join(dir, String(info.file)));
  const rowsOf = (name: string): Float32Array => {
    if (!file.has(name)) return new Float32Array(0);
    const shape = file.info(name).shape;
    if (shape.length !== 2 || shape[1] !== dIn)
      throw new Error(`${join(dir, String(info.file))}: tensor "${name}" has shape [${shape}], expected [rows, ${dIn}]`);
    return file.float32(name).slice();
  };
  const buffer: BufferState = {
    rows: rowsOf('buffer_rows'),
    pending: rowsOf('buffer_pending'),
    draws: meta.draws,
    epoch: meta.epoch,
    tokensRead: meta.tokensRead,
    sourcePosition: meta.sourcePosition,
  };
  const weights = (prefix: string): SaeTrainingWeights =>
    Object.fromEntries(PARAM_NAMES.map((p) => [p, file.float32(`${prefix}${p}`).slice()])) as unknown as SaeTrainingWeights;
  const state: HostTrainingState = { params: weights(''), m: weights('adam_m.'), v: weights('adam_v.'), t: meta.adamT };
  return {
    key,
    step: meta.step,
    scale: meta.scale,
    stepsSinceActive: file.float32('steps_since_active').slice(),
    state,
    buffer,
    resampleDraws: meta.resampleDraws,
    lastResample: meta.lastResample,
    recent: recentFve.map((fve, i) => ({ fve, l0: recentL0[i]! })),
  };
}

/** Saves a trained SAE in SAELens format with its metrics in cfg.json metadata and metrics.json. */
export function saveTrainedSae(sae: AffineSae, dir: string, info: Record<string, unknown>): void {
  saveSaeLensSae(sae, dir, { extraMetadata: { training: info } });
  writeJsonAtomic(join(dir, 'metrics.json'), info);
}

// ------------------------------------------------------------------------------------------------
// Training on a model's activations (the `train-sae` subcommand)
// ------------------------------------------------------------------------------------------------

/** Held-out tokens an SAE's quality is measured on, at most (memory stays bounded by it). */
export const HELD_OUT_TOKENS = 100_000;

/** The rows the activation buffer of a run with these options holds (at least two batches). */
export function bufferCapacity(options: Pick<TrainOptions, 'bufferTokens' | 'batchSize'>): number {
  return Math.max(options.bufferTokens ?? 32768, 2 * (options.batchSize ?? 1024));
}

export interface TrainSaesOptions extends Omit<TrainOptions, 'hook' | 'model' | 'checkpointDir' | 'label' | 'onStep'> {
  /** Model folder or hub id (`owner/name[@revision]`). */
  model: string;
  /**
   * Hook names or patterns (`*` stands for any characters, src/sae/hook-patterns.ts), expanded
   * against the model's hooks; one SAE is trained at each hook, in forward order.
   */
  hooks: readonly string[];
  /** Training texts: a JSONL/CSV/Parquet file with a text field. */
  input: string;
  /** Held-out texts for the final metrics (default: none). */
  heldOut?: string;
  textField?: string;
  /** Output folder: each hook's SAE (SAELens format), metrics.json and checkpoint/ go to `out/<hook>/`. */
  out: string;
  /** Tokens per text (default 128). */
  maxLength?: number;
  /** Held-out tokens evaluated at most (default 100k). */
  heldOutTokens?: number;
  /**
   * Training tokens collected at most (the first tokens of the shuffled texts). Default: as many as
   * training reads (`tokens` plus the buffer), so a budget shorter than the texts runs the model over
   * no more of them than it uses.
   */
  cacheTokens?: number;
  /** Called after every step of every SAE (monitoring, tests). */
  onStep?: (info: Parameters<NonNullable<TrainOptions['onStep']>>[0] & { hook: HookName }) => void;
}

export interface TrainSaeOptions extends Omit<TrainSaesOptions, 'hooks' | 'out' | 'onStep'> {
  hook: HookName;
  /** Output folder: the SAE in SAELens format, metrics.json, and checkpoint/ while training. */
  out: string;
  onStep?: TrainOptions['onStep'];
}

/** One hook's trained SAE, where it was saved, and its held-out metrics. */
export interface TrainedSae {
  sae: AffineSae;
  out: string;
  heldOut?: SaeMetrics;
  result: TrainResult;
}

/**
 * Receives each SAE of a many-hook run right after it is saved, and owns it from then on (disposes
 * it, or keeps it): the run never holds more than the SAE it is training.
 */
export type OnTrainedSae = (hook: HookName, trained: TrainedSae) => void | Promise<void>;

async function readTexts(path: string, field: string): Promise<string[]> {
  const { readTable } = await import('../io/tabular.js');
  const table = await readTable(path);
  if (table.rows.length === 0) throw new Error(`${path}: no rows`);
  return table.rows.map((row, i) => {
    const t = row[field];
    if (typeof t !== 'string') throw new Error(`${table.where(i)}: field "${field}" is ${t === undefined ? 'missing' : 'not a string'}`);
    return t;
  });
}

/**
 * Trains one SAE at each of several hooks of a model over texts from one activation pass, evaluates
 * each on held-out texts and saves it in SAELens format in `out/<hook>/` (loadable with
 * `loadSae`), in forward order. Each SAE goes to `onTrained` as soon as it is saved, which owns it
 * (disposes it or keeps it).
 */
export async function trainSaes(options: TrainSaesOptions, onTrained: OnTrainedSae): Promise<void> {
  const { hooks, out, ...rest } = options;
  await trainSaesOnTextFiles(
    rest,
    (hookNames) => Object.fromEntries(expandHookPatterns(hooks, hookNames, '--hook').map(({ hook }) => [hook, join(out, hook)])),
    onTrained,
  );
}

/** Trains an SAE at one hook (`trainSaes` at one hook, saved in `out` itself). The caller disposes the SAE. */
export async function trainSae(options: TrainSaeOptions): Promise<TrainedSae> {
  const { hook, out, onStep, ...rest } = options;
  let trained: TrainedSae | undefined;
  await trainSaesOnTextFiles(
    { ...rest, onStep: onStep === undefined ? undefined : ({ hook: _hook, ...info }) => onStep(info) },
    () => ({ [hook]: out }),
    (_hook, t) => {
      trained = t;
    },
  );
  return trained!;
}

/**
 * `trainSaesOnModel` over the texts of the text files of `options`, each hook's SAE (and
 * checkpoint/, and its activations while it trains) in the folder `outsFor` gives it.
 */
async function trainSaesOnTextFiles(
  options: Omit<TrainSaesOptions, 'hooks' | 'out'>,
  outsFor: (hookNames: readonly HookName[]) => Record<HookName, string>,
  onTrained: OnTrainedSae,
): Promise<void> {
  await initEngine();
  const { openModel } = await import('../models/open.js');
  const field = options.textField ?? 'text';
  const texts = await readTexts(options.input, field);
  const heldOut = options.heldOut !== undefined ? await readTexts(options.heldOut, field) : undefined;
  const opened = await openModel(options.model, { maxLength: options.maxLength ?? 128 });
  try {
    const outs = outsFor(opened.model.hookNames);
    const { onStep, ...train } = options;
    const jobs = Object.fromEntries(
      Object.entries(outs).map(([hook, out]): [HookName, SaeJob] => {
        mkdirSync(out, { recursive: true });
        const job: SaeJob = {
          out,
          spillDir: out,
          train: {
            ...train,
            checkpointDir: join(out, 'checkpoint'),
            label: Object.keys(outs).length > 1 ? `train-sae ${hook}` : undefined,
            onStep: onStep === undefined ? undefined : (info) => onStep({ ...info, hook }),
          },
          tokens: () => options.tokens,
          info: { input: options.input, heldOutInput: options.heldOut },
        };
        return [hook, job];
      }),
    );
    await trainSaesOnModel(
      opened,
      jobs,
      {
        model: options.model,
        texts,
        heldOut,
        seed: options.seed,
        maxTokens: options.cacheTokens ?? options.tokens + bufferCapacity(options),
        heldOutTokens: options.heldOutTokens,
      },
      onTrained,
    );
  } finally {
    opened.model.dispose();
  }
}

/** One SAE for `trainSaesOnModel` to train. */
export interface SaeJob {
  /** Folder the SAE is saved to (SAELens format and metrics.json). */
  out: string;
  /** Folder (existing) its activations are spilled to, in a temporary subfolder, while it waits and trains. */
  spillDir: string;
  /** The trainer's options (its seed also orders the spilled chunks); `hook` and `model` are filled in. */
  train: Omit<TrainOptions, 'tokens' | 'hook' | 'model'>;
  /** Training tokens, given the number of tokens collected. */
  tokens: (collected: number) => number;
  /** Recorded in metrics.json beside what training measured. */
  info: Readonly<Record<string, unknown>>;
}

/**
 * Trains the SAEs of `jobs` (by hook) from one activation pass: `opened.model` runs once over
 * `data.texts` capturing every hook (at most `maxTokens` tokens), each hook's tokens spilled to its
 * own file, and once over `data.heldOut` likewise (at most `heldOutTokens`, default 100k); then, in
 * forward order, each SAE trains from its own file, is evaluated on its held-out file, is saved
 * (SAELens format, metrics.json with the held-out FVE, L0 and dead fraction), and goes to
 * `onTrained`, which owns it from then on; its files are deleted. Memory stays bounded by a chunk
 * of the pass and one SAE's buffer (as long as `onTrained` does not keep the SAEs); disk holds
 * 4 x dIn bytes per token and hook until a hook's SAE is trained. A job with the same seed and
 * options trains the same SAE whichever other hooks share the pass.
 */
export async function trainSaesOnModel(
  opened: OpenedModel,
  jobs: Readonly<Record<HookName, SaeJob>>,
  data: { model: string; texts: readonly string[]; heldOut?: readonly string[]; seed?: number; maxTokens?: number; heldOutTokens?: number },
  onTrained: OnTrainedSae,
): Promise<void> {
  const { modelHookSource, spillHookActivations, collectActivations } = await import('./buffer.js');
  const hooks = opened.model.hookNames.filter((h) => jobs[h] !== undefined);
  for (const hook of Object.keys(jobs)) if (!hooks.includes(hook)) throw new Error(`trainSaes: unknown hook "${hook}" for this model`);
  const spills: SpilledActivations[] = [];
  const spill = async (texts: readonly string[], maxTokens: number | undefined): Promise<Record<HookName, SpilledActivations>> => {
    const source = modelHookSource({ model: opened.model, tokenize: opened.tokenize, texts, hooks, seed: data.seed });
    const places = Object.fromEntries(hooks.map((h) => [h, { dir: jobs[h]!.spillDir, seed: jobs[h]!.train.seed }]));
    const files = await spillHookActivations(source, places, { maxTokens });
    pushAll(spills, Object.values(files));
    return files;
  };
  try {
    const train = await spill(data.texts, data.maxTokens);
    const held = data.heldOut === undefined ? undefined : await spill(data.heldOut, data.heldOutTokens ?? HELD_OUT_TOKENS);
    for (const hook of hooks) {
      const job = jobs[hook]!;
      const collected = train[hook]!.tokens;
      const result = await trainSaeOnSource(train[hook]!, { ...job.train, tokens: job.tokens(collected), hook, model: data.model });
      let heldOut: SaeMetrics | undefined;
      try {
        await train[hook]!.dispose();
        heldOut = held === undefined ? undefined : evaluateSae(result.sae, await collectActivations(held[hook]!, Infinity));
        const o = job.train;
        saveTrainedSae(result.sae, job.out, {
          model: data.model,
          hook,
          arch: o.arch,
          dSae: o.dSae,
          k: o.arch === 'topk' ? (o.k ?? 32) : undefined,
          l1: o.arch === 'relu' ? (o.l1 ?? 0.1) : undefined,
          lr: o.lr ?? 1e-3,
          batchSize: o.batchSize ?? 1024,
          seed: o.seed ?? 42,
          ...job.info,
          tokens: result.steps * (o.batchSize ?? 1024),
          trainTokens: collected,
          steps: result.steps,
          inputScale: result.inputScale,
          train: result.train,
          heldOut,
        });
      } catch (err) {
        result.sae.dispose();
        throw err;
      }
      // From here the SAE is onTrained's.
      await onTrained(hook, { sae: result.sae, out: job.out, heldOut, result });
    }
  } finally {
    // Whatever is left of the spilled activations (a run stopped before it read them all).
    for (const s of spills) await s.dispose();
  }
}
