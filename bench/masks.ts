/**
 * Learned SAE-mask benchmark: 25 epochs of `sae_mask` training (the original task objective:
 * frozen probe, BCE against y, batch 16, Adam 1e-3, SAE error dropped) on a problem the size of the
 * real balanced train split of ../shared surgeon/nurse (4 x 150 = 600 examples, ~80 tokens each),
 * with a random GPT-NeoX at the Pythia-70m-deduped shape (d 512) and a random ReLU SAE of
 * 512 x 32768 at layers.3.resid_out, calibrated to ~60 active features per token.
 *
 *  - sae-eraser (tfjs, one thread): one pass of the model and the SAE over the data into the
 *    activation cache (pooled SAE codes and errors), then training on the cached pooled codes
 *    only (mean pooling commutes with decoding; the frozen probe folds into the decoder).
 *  - PyTorch (one thread), bench/reference/masks_torch.py: the original implementation, which
 *    reruns the whole model and the SAE on every batch of every step. A full run takes hours on
 *    one thread, so it is timed over a few steps after a warm-up step and extrapolated per epoch
 *    (the output says so).
 * Both sides use the same weights, token ids, labels and probe, in the same invocation. Also
 * printed: sae-eraser's time for the default `concept` objective (cross-fitted adversary).
 *
 * Run: npm run build && node dist/bench/masks.js [--examples 600] [--epochs 25] [--torch-steps 4]
 * The checkpoint comes from test/reference/models_reference.py (--suite pythia, cached in .cache/).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initEngine, matMulT, tf } from '../src/engine/engine.js';
import { buildActivationCache } from '../src/cache/cache.js';
import { mulberry32, randomNormalArray } from '../src/data/prng.js';
import type { FitContext, LabelledSplit } from '../src/erasure/eraser.js';
import { createSaeMaskFitter } from '../src/erasure/mask/sae-mask.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { projectRoot } from '../src/io/shared.js';
import { loadModel } from '../src/models/load.js';
import type { Batch, Model } from '../src/models/model.js';
import { LinearProbe } from '../src/probe/linear.js';
import { setQuiet } from '../src/util/progress.js';
import { AffineSae } from '../src/sae/sae.js';
import { pythonBin, runPythonReference } from '../test/reference/python.js';
import { intFlag } from './flags.js';
import { maxOf } from '../src/util/arrays.js';

const LAYER = 3;
const HOOK = `layers.${LAYER}.resid_out`;
const D_SAE = 32768;
const BATCH = 16;
/** Pre-activation threshold in standard deviations: P(N(0,1) > 2.9) ~ 0.19%, ~60 of 32768 features. */
const THRESHOLD_SD = 2.9;

interface Inputs {
  n: number;
  maxLen: number;
  /** `[n, maxLen]`, right-padded with 0. */
  ids: Int32Array;
  lengths: Int32Array;
  y: Int32Array;
  z: Int32Array;
  texts: string[];
}

/** Token ids (uniform over the vocabulary), lengths uniform in [60, 100], balanced y, random z. */
function makeInputs(n: number, vocab: number, seed: number): Inputs {
  const rng = mulberry32(seed);
  const maxLen = 100;
  const lengths = Int32Array.from({ length: n }, () => 60 + Math.floor(rng() * 41));
  const ids = new Int32Array(n * maxLen);
  for (let i = 0; i < n; i++) for (let t = 0; t < lengths[i]!; t++) ids[i * maxLen + t] = Math.floor(rng() * vocab);
  const y = Int32Array.from({ length: n }, (_, i) => i % 2);
  const z = Int32Array.from({ length: n }, () => (rng() < 0.5 ? 0 : 1));
  // Text length tracks token count, so the cache's length bucketing works as on real text.
  const texts = Array.from({ length: n }, (_, i) => `${i}:${'x'.repeat(lengths[i]!)}`);
  return { n, maxLen, ids, lengths, y, z, texts };
}

function tokenizer(inputs: Inputs): (texts: string[]) => Batch {
  return (texts) => {
    const rows = texts.map((t) => Number(t.slice(0, t.indexOf(':'))));
    const len = maxOf(rows.map((r) => inputs.lengths[r]!));
    const ids = new Int32Array(rows.length * len);
    const mask = new Int32Array(rows.length * len);
    rows.forEach((r, i) => {
      for (let t = 0; t < inputs.lengths[r]!; t++) {
        ids[i * len + t] = inputs.ids[r * inputs.maxLen + t]!;
        mask[i * len + t] = 1;
      }
    });
    return { inputIds: tf.tensor2d(ids, [rows.length, len], 'int32'), attentionMask: tf.tensor2d(mask, [rows.length, len], 'int32') };
  };
}

interface SaeWeights {
  wEnc: Float32Array;
  bEnc: Float32Array;
  wDec: Float32Array;
  bDec: Float32Array;
  /** Mean active features per token on the calibration tokens. */
  l0: number;
}

/**
 * A random ReLU SAE for the hook's activations: W_enc Gaussian, decoder rows the unit-normalised
 * encoder columns, b_dec the mean activation, and b_enc = -THRESHOLD_SD x the standard deviation
 * of each feature's pre-activation over calibration tokens (so each fires on ~0.2% of tokens).
 */
function calibratedSae(model: Model, tokenize: (texts: string[]) => Batch, texts: string[], d: number, seed: number): SaeWeights {
  const x = tf.tidy(() => {
    const batch = tokenize(texts);
    const acts = model.run(batch, { capture: [HOOK] }).captures[HOOK]!;
    const mask = batch.attentionMask.dataSync();
    const keep = Array.from(mask.keys()).filter((i) => mask[i] === 1);
    return tf.gather(tf.reshape(acts, [-1, d]), tf.tensor1d(keep, 'int32')) as tf.Tensor2D;
  });
  const wEnc = randomNormalArray(d * D_SAE, seed, 0, 1 / Math.sqrt(d));
  // (tf.tidy walks returned typed arrays element by element: return tensors, read them outside.)
  const [bDec, bEnc, wDec, active] = tf.tidy(() => {
    const mean = tf.mean(x, 0);
    const w = tf.tensor2d(wEnc, [d, D_SAE]);
    const h = matMulT(tf.sub(x, mean), w);
    const sd = tf.sqrt(tf.mean(tf.square(tf.sub(h, tf.mean(h, 0))), 0));
    const threshold = tf.mul(sd, -THRESHOLD_SD);
    return [mean, threshold, tf.transpose(tf.div(w, tf.norm(w, 'euclidean', 0))), tf.sum(tf.cast(tf.greater(tf.add(h, threshold), 0), 'float32'))];
  });
  const stats = {
    bDec: bDec.dataSync() as Float32Array,
    bEnc: bEnc.dataSync() as Float32Array,
    wDec: wDec.dataSync() as Float32Array,
    active: active.dataSync()[0]!,
  };
  tf.dispose([bDec, bEnc, wDec, active]);
  const l0 = stats.active / x.shape[0];
  x.dispose();
  return { wEnc, bEnc: Float32Array.from(stats.bEnc), wDec: Float32Array.from(stats.wDec), bDec: Float32Array.from(stats.bDec), l0 };
}

interface TorchResult {
  step_seconds: number[];
  mean_step_seconds: number;
  steps_per_epoch: number;
  threads: number;
  torch: string;
}

export interface MaskBenchResult {
  backend: string;
  n: number;
  meanTokens: number;
  epochs: number;
  steps: number;
  l0: number;
  cacheSeconds: number;
  taskFitSeconds: number;
  conceptFitSeconds: number;
  removedTask: number;
  torch: TorchResult;
  torchEpochSeconds: number;
  torchTotalSeconds: number;
}

export async function benchMasks(n = 600, epochs = 25, torchSteps = 4): Promise<MaskBenchResult> {
  const backend = await initEngine();
  setQuiet(true);
  const modelDir = join(await runPythonReference('models_reference.py', ['--suite', 'pythia']), 'pythia70m_shape');
  const model = await loadModel(modelDir);
  const d = model.config.dModel;
  const tmp = mkdtempSync(join(tmpdir(), 'sae-eraser-bench-masks-'));
  try {
    const inputs = makeInputs(n, model.config.vocabSize, 42);
    const tokenize = tokenizer(inputs);
    const w = calibratedSae(model, tokenize, inputs.texts.slice(0, 16), d, 7);
    const sae = new AffineSae(
      {
        wEnc: tf.tensor2d(w.wEnc, [d, D_SAE]),
        bEnc: tf.tensor1d(w.bEnc),
        wDec: tf.tensor2d(w.wDec, [D_SAE, d]),
        bDec: tf.tensor1d(w.bDec),
        subtractDecoderBiasFromInput: true,
        activation: { kind: 'relu' },
      },
      { format: 'sae-eraser', source: 'bench/masks' },
    );
    const probeWeight = randomNormalArray(d, 11, 0, 1 / Math.sqrt(d));
    const probe = new LinearProbe(d, 2);
    probe.setParameters(probeWeight, new Float32Array(1));
    const inputsFile = join(tmp, 'inputs.safetensors');
    writeSafetensors(inputsFile, {
      input_ids: { dtype: 'I32', shape: [n, inputs.maxLen], data: inputs.ids },
      lengths: { dtype: 'I32', shape: [n], data: inputs.lengths },
      y: { dtype: 'F32', shape: [n], data: Float32Array.from(inputs.y) },
      W_enc: { dtype: 'F32', shape: [d, D_SAE], data: w.wEnc },
      b_enc: { dtype: 'F32', shape: [D_SAE], data: w.bEnc },
      W_dec: { dtype: 'F32', shape: [D_SAE, d], data: w.wDec },
      b_dec: { dtype: 'F32', shape: [d], data: w.bDec },
      probe_weight: { dtype: 'F32', shape: [1, d], data: probeWeight },
      probe_bias: { dtype: 'F32', shape: [1], data: new Float32Array(1) },
    });

    // sae-eraser: one pass into the cache, then training on pooled codes.
    let t0 = performance.now();
    const cache = await buildActivationCache(
      { modelId: 'bench-pythia70m-shape', hooks: [HOOK], saes: { [HOOK]: { sae, id: 'bench-sae' } }, tokenizerId: 'bench', texts: inputs.texts },
      { model, tokenize, root: join(tmp, 'cache'), batchSize: 8, shardSize: n },
    );
    const cacheSeconds = (performance.now() - t0) / 1000;
    const rows = Int32Array.from({ length: n }, (_, i) => i);
    const all: LabelledSplit = { rows, y: inputs.y, z: inputs.z, texts: inputs.texts };
    const half = Int32Array.from({ length: Math.floor(n / 2) }, (_, i) => 2 * i + 1);
    const concept: LabelledSplit = {
      rows: half,
      y: half.map((r) => inputs.y[r]!),
      z: half.map((r) => inputs.z[r]!),
      texts: Array.from(half, (r) => inputs.texts[r]!),
    };
    const ctx: FitContext = {
      model,
      tokenize,
      cache,
      recache: () => Promise.reject(new Error('bench/masks: the masks at the probe hook never re-cache')),
      batchSize: 8,
      saes: { [HOOK]: sae },
      probeHook: HOOK,
      probe,
      train: all,
      concept,
      seed: 42,
    };
    t0 = performance.now();
    const original = await createSaeMaskFitter({ objective: 'task', keepError: false, retrainHead: false, epochs }).fit(ctx);
    const taskFitSeconds = (performance.now() - t0) / 1000;
    const removedTask = original.describe().unitsRemoved;
    original.dispose();
    t0 = performance.now();
    const fixed = await createSaeMaskFitter({ epochs, retrainHead: false }).fit(ctx);
    const conceptFitSeconds = (performance.now() - t0) / 1000;
    fixed.dispose();
    probe.dispose();
    sae.dispose();

    const stdout = execFileSync(
      pythonBin(),
      [
        join(projectRoot(), 'bench/reference/masks_torch.py'),
        '--model',
        modelDir,
        '--inputs',
        inputsFile,
        '--layer',
        String(LAYER),
        '--batch',
        String(BATCH),
        '--epochs',
        String(epochs),
        '--steps',
        String(torchSteps),
        '--threads',
        '1',
      ],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' } },
    );
    const torch = JSON.parse(stdout.trim().split('\n').at(-1)!) as TorchResult;
    const torchEpochSeconds = torch.mean_step_seconds * torch.steps_per_epoch;
    return {
      backend,
      n,
      meanTokens: inputs.lengths.reduce((a, v) => a + v, 0) / n,
      epochs,
      steps: epochs * Math.ceil(n / BATCH),
      l0: w.l0,
      cacheSeconds,
      taskFitSeconds,
      conceptFitSeconds,
      removedTask,
      torch,
      torchEpochSeconds,
      torchTotalSeconds: torchEpochSeconds * epochs,
    };
  } finally {
    model.dispose();
    rmSync(tmp, { recursive: true, force: true });
  }
}

function main(): void {
  const n = intFlag('--examples', 600);
  const epochs = intFlag('--epochs', 25);
  const torchSteps = intFlag('--torch-steps', 4);
  benchMasks(n, epochs, torchSteps).then(
    (r) => {
      const ours = r.cacheSeconds + r.taskFitSeconds;
      console.log(
        `Learned SAE mask, original task objective: ${r.n} examples (mean ${r.meanTokens.toFixed(0)} tokens), Pythia-70m-shaped random GPT-NeoX, ` +
          `ReLU SAE 512 x ${D_SAE} at ${HOOK} (L0 ${r.l0.toFixed(0)} per token), ${r.epochs} epochs of batch ${BATCH} (${r.steps} steps)`,
      );
      console.log(
        `  sae-eraser (tfjs ${r.backend}, 1 thread): cache ${r.cacheSeconds.toFixed(1)} s (one pass of model + SAE) + training ${r.taskFitSeconds.toFixed(2)} s (pooled codes, no model) = ${ours.toFixed(1)} s; ${r.removedTask} features removed`,
      );
      console.log(
        `  PyTorch original (1 thread, reruns model + SAE every step): ${r.torch.mean_step_seconds.toFixed(2)} s/step, MEASURED OVER ${r.torch.step_seconds.length} STEPS ` +
          `after a warm-up step and EXTRAPOLATED: ${r.torchEpochSeconds.toFixed(0)} s/epoch (${r.torch.steps_per_epoch} steps) -> ${r.torchTotalSeconds.toFixed(0)} s for ${r.epochs} epochs`,
      );
      console.log(
        `  speed-up (PyTorch time / sae-eraser time; above 1: sae-eraser is faster): end to end ${(r.torchTotalSeconds / ours).toFixed(1)}x, training only ${(r.torchTotalSeconds / r.taskFitSeconds).toFixed(0)}x`,
      );
      console.log(
        `  sae-eraser, default concept objective (cross-fitted adversary, ${r.n / 2} concept examples): training ${r.conceptFitSeconds.toFixed(2)} s on the same cache`,
      );
    },
    (err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();
