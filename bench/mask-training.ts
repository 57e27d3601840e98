/**
 * `npm run bench:mask-training`: 25 epochs of learned SAE-mask training with the original method's
 * objective (frozen probe, BCE against y, batch 16, Adam 1e-3, SAE error dropped), in seconds end
 * to end, on a problem the size of the real balanced train split of ../shared surgeon/nurse
 * (4 x 150 = 600 examples, ~80 tokens each), with a random GPT-NeoX at the Pythia-70m-deduped shape
 * (d 512) and a random ReLU SAE of 512 x 32768 at layers.3.resid_out, calibrated to ~60 active
 * features per token.
 *
 *  - sae-eraser: one pass of the model and the SAE over the data into the activation cache (ONNX
 *    Runtime at the asked thread count, a fresh cache folder each time), then training on the cached
 *    pooled codes only (mean pooling commutes with decoding; the frozen probe folds into the decoder).
 *  - PyTorch, bench/reference/masks_torch.py: the original implementation, which reruns the whole
 *    model and the SAE on every batch of every step. A full run takes hours on one thread, so it is
 *    timed over `--torch-steps` steps after a warm-up step and EXTRAPOLATED to the 25 epochs (the
 *    output says so).
 * Both sides use the same weights, token ids, labels and probe. With `--concept`, sae-eraser's time
 * for the default `concept` objective (cross-fitted adversary) on the last cache is printed too.
 *
 * Run: npm run bench:mask-training [-- --examples 600 --epochs 25 --torch-steps 4 --concept]
 * The checkpoint comes from test/reference/models_reference.py (--suite pythia, cached in .cache/).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engineInfo, matMulT, tf } from '../src/engine/engine.js';
import { buildActivationCache, type ActivationCache } from '../src/cache/cache.js';
import { mulberry32, randomNormalArray } from '../src/data/prng.js';
import type { FitContext, LabelledSplit } from '../src/erasure/eraser.js';
import { createSaeMaskFitter } from '../src/erasure/mask/sae-mask.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { loadModel } from '../src/models/load.js';
import type { Batch, Model } from '../src/models/model.js';
import { LinearProbe } from '../src/probe/linear.js';
import { setQuiet } from '../src/util/progress.js';
import { runPythonReference } from '../test/reference/python.js';
import { intFlag } from './flags.js';
import { compare, fmt, numberField, printResultLines, runIfMain, torchScript } from './harness.js';
import { toAffineSae, type SaeArrays } from './random-sae.js';
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

/**
 * A random ReLU SAE for the hook's activations: W_enc Gaussian, decoder rows the unit-normalised
 * encoder columns, b_dec the mean activation, and b_enc = -THRESHOLD_SD x the standard deviation
 * of each feature's pre-activation over calibration tokens (so each fires on ~0.2% of tokens);
 * `l0` is the mean number of active features per calibration token.
 */
function calibratedSae(model: Model, tokenize: (texts: string[]) => Batch, texts: string[], d: number, seed: number): SaeArrays & { l0: number } {
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
  return {
    d,
    dSae: D_SAE,
    x: new Float32Array(0),
    wEnc,
    bEnc: Float32Array.from(stats.bEnc),
    wDec: Float32Array.from(stats.wDec),
    bDec: Float32Array.from(stats.bDec),
    l0,
  };
}

/** The labelled splits of the fit: all rows train, every other row the concept set. */
function splits(inputs: Inputs): { train: LabelledSplit; concept: LabelledSplit } {
  const rows = Int32Array.from({ length: inputs.n }, (_, i) => i);
  const half = Int32Array.from({ length: Math.floor(inputs.n / 2) }, (_, i) => 2 * i + 1);
  return {
    train: { rows, y: inputs.y, z: inputs.z, texts: inputs.texts },
    concept: { rows: half, y: half.map((r) => inputs.y[r]!), z: half.map((r) => inputs.z[r]!), texts: Array.from(half, (r) => inputs.texts[r]!) },
  };
}

async function main(): Promise<void> {
  const n = intFlag('--examples', 600);
  const epochs = intFlag('--epochs', 25);
  const torchSteps = intFlag('--torch-steps', 4);
  const engine = await engineInfo();
  setQuiet(true);
  const modelDir = join(await runPythonReference('models_reference.py', ['--suite', 'pythia']), 'pythia70m_shape');
  const model = await loadModel(modelDir);
  const d = model.config.dModel;
  const tmp = mkdtempSync(join(tmpdir(), 'sae-eraser-bench-mask-training-'));
  const inputs = makeInputs(n, model.config.vocabSize, 42);
  const tokenize = tokenizer(inputs);
  const w = calibratedSae(model, tokenize, inputs.texts.slice(0, 16), d, 7);
  const sae = toAffineSae(w, 'bench/mask-training (random, calibrated)');
  const probeWeight = randomNormalArray(d, 11, 0, 1 / Math.sqrt(d));
  const probe = new LinearProbe(d, 2);
  probe.setParameters(probeWeight, new Float32Array(1));
  let cache: ActivationCache | undefined;
  try {
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
    const { train, concept } = splits(inputs);
    const context = (c: ActivationCache): FitContext => ({
      model,
      tokenize,
      cache: c,
      recache: () => Promise.reject(new Error('bench/mask-training: the masks at the probe hook never re-cache')),
      batchSize: 8,
      saes: { [HOOK]: sae },
      probeHook: HOOK,
      probe,
      train,
      concept,
      seed: 42,
    });
    const steps = epochs * Math.ceil(n / BATCH);
    const meanTokens = inputs.lengths.reduce((a, v) => a + v, 0) / n;
    const script = 'masks_torch.py';
    let torchVersion = '';
    const lines = await compare({
      name: 'mask-training',
      title:
        `learned SAE mask, original task objective: ${n} examples (mean ${meanTokens.toFixed(0)} tokens), Pythia-70m-shaped random GPT-NeoX, ` +
        `ReLU SAE ${d} x ${D_SAE} at ${HOOK} (L0 ${w.l0.toFixed(0)} per token), ${epochs} epochs of batch ${BATCH} (${steps} steps)`,
      unit: 's',
      better: 'lower',
      oursLabel: (t) =>
        `cache on ONNX Runtime with ${t} thread${t === 1 ? '' : 's'}, then training on pooled codes with tfjs ${engine.backend} (${engine.threads} thread${engine.threads === 1 ? '' : 's'})`,
      ours: async (t) => {
        const t0 = performance.now();
        cache = await buildActivationCache(
          { modelId: 'bench-pythia70m-shape', hooks: [HOOK], saes: { [HOOK]: { sae, id: 'bench-sae' } }, tokenizerId: 'bench', texts: inputs.texts },
          { model, tokenize, root: join(tmp, `cache-${t}-threads`), batchSize: 8, shardSize: n, executor: 'onnx' },
        );
        const cacheSeconds = (performance.now() - t0) / 1000;
        const t1 = performance.now();
        const eraser = await createSaeMaskFitter({ objective: 'task', keepError: false, retrainHead: false, epochs }).fit(context(cache));
        const fitSeconds = (performance.now() - t1) / 1000;
        const removed = eraser.describe().unitsRemoved;
        eraser.dispose();
        return {
          value: cacheSeconds + fitSeconds,
          detail: `cache ${fmt(cacheSeconds)} s (one pass of model + SAE) + training ${fmt(fitSeconds)} s (pooled codes, no model); ${removed} features removed`,
        };
      },
      referenceLabel: (t) => `PyTorch ${torchVersion} original loop (${t} thread${t === 1 ? '' : 's'}, reruns model + SAE every step)`,
      reference: (t) => {
        const args = ['--model', modelDir, '--inputs', inputsFile, '--layer', String(LAYER), '--batch', String(BATCH), '--epochs', String(epochs)];
        const r = torchScript(script, [...args, '--steps', String(torchSteps)], t);
        torchVersion = String(r.torch);
        const perStep = numberField(r, 'mean_step_seconds', script);
        const total = perStep * numberField(r, 'steps_per_epoch', script) * epochs;
        return { value: total, detail: `${fmt(perStep)} s/step MEASURED OVER ${torchSteps} STEPS after a warm-up step, EXTRAPOLATED to ${steps} steps` };
      },
    });
    if (process.argv.includes('--concept') && cache !== undefined) {
      const t0 = performance.now();
      (await createSaeMaskFitter({ epochs, retrainHead: false }).fit(context(cache))).dispose();
      console.log(
        `  context: sae-eraser, default concept objective (cross-fitted adversary, ${concept.rows.length} concept examples): training ${fmt((performance.now() - t0) / 1000)} s on the same cache`,
      );
    }
    printResultLines(lines);
  } finally {
    probe.dispose();
    sae.dispose();
    model.dispose();
    rmSync(tmp, { recursive: true, force: true });
  }
}

runIfMain(import.meta.url, main);
