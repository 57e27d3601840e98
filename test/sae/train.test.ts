import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { mulberry32, randomNormalArray, randomInt } from '../../src/data/prng.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { setQuiet } from '../../src/util/progress.js';
import { ActivationBuffer, arrayActivationSource, collectActivations } from '../../src/sae/buffer.js';
import { loadSae } from '../../src/sae/load.js';
import type { AffineSae } from '../../src/sae/sae.js';
import { evaluateSae, saveTrainedSae, trainSaeOnSource, trainStepsFrom, type TrainOptions } from '../../src/sae/train.js';
import { runPythonReference } from '../reference/python.js';
import { relErr } from './rel-err.js';

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

/**
 * A planted sparse dictionary: `atoms` random unit vectors in R^d; each sample is a sum of `active`
 * of them with coefficients in [0.5, 2], plus a mean offset and N(0, 0.01^2) noise.
 */
function planted(n: number, d: number, atoms: number, active: number, seed: number): { rows: Float32Array; dict: Float32Array } {
  const dict = randomNormalArray(atoms * d, seed);
  for (let a = 0; a < atoms; a++) {
    let s = 0;
    for (let j = 0; j < d; j++) s += dict[a * d + j]! ** 2;
    for (let j = 0; j < d; j++) dict[a * d + j]! /= Math.sqrt(s);
  }
  const rng = mulberry32(seed + 1);
  const noise = randomNormalArray(n * d, seed + 2, 0, 0.01);
  const rows = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) rows[i * d + j] = 0.3 + noise[i * d + j]!;
    for (let t = 0; t < active; t++) {
      const a = randomInt(rng, atoms);
      const c = 0.5 + 1.5 * rng();
      for (let j = 0; j < d; j++) rows[i * d + j]! += c * dict[a * d + j]!;
    }
  }
  return { rows, dict };
}

/** For each planted atom, the best cosine similarity with a learned decoder direction. */
function recovery(sae: AffineSae, dict: Float32Array, atoms: number): number[] {
  const d = sae.dIn;
  const dirs = sae.decoderDirections();
  const w = dirs.dataSync() as Float32Array;
  dirs.dispose();
  const out: number[] = [];
  for (let a = 0; a < atoms; a++) {
    let best = -1;
    for (let i = 0; i < sae.dSae; i++) {
      let dot = 0;
      let nn = 0;
      for (let j = 0; j < d; j++) {
        dot += dict[a * d + j]! * w[i * d + j]!;
        nn += w[i * d + j]! ** 2;
      }
      best = Math.max(best, dot / Math.sqrt(nn));
    }
    out.push(best);
  }
  return out;
}

describe('activation buffer', () => {
  it('hands out every row exactly once per pass, mixed across chunks, within its capacity', async () => {
    const d = 3;
    const n = 1000;
    const rows = new Float32Array(n * d);
    for (let i = 0; i < n; i++) rows.fill(i, i * d, (i + 1) * d);
    const buf = new ActivationBuffer(arrayActivationSource(rows, d, { chunkTokens: 37, seed: 1 }), { capacityTokens: 200, seed: 2 });
    const seen: number[] = [];
    for (let b = 0; b < 10; b++) {
      const batch = await buf.next(50);
      for (let r = 0; r < 50; r++) {
        expect(batch[r * d]).toBe(batch[r * d + 2]);
        seen.push(batch[r * d]!);
      }
      expect(buf.size).toBeLessThanOrEqual(200);
    }
    // 500 draws from 1000 rows: no duplicates within the first pass, and not in source order.
    expect(new Set(seen).size).toBe(500);
    expect(seen.slice(0, 20)).not.toEqual([...seen.slice(0, 20)].sort((a, b) => a - b));
  });

  it('starts a new pass when the source runs out', async () => {
    const d = 2;
    const rows = Float32Array.from({ length: 20 * d }, (_, i) => Math.floor(i / d));
    const buf = new ActivationBuffer(arrayActivationSource(rows, d, { chunkTokens: 5 }), { capacityTokens: 16 });
    for (let b = 0; b < 10; b++) await buf.next(8);
    expect(buf.epoch).toBeGreaterThanOrEqual(3);
  });
});

describe('SAE training', () => {
  it.each(['onnx', 'tfjs'] as const)('does not leak tensors across steps (ReLU and TopK, with resampling; %s executor)', async (executor) => {
    const { rows } = planted(4096, 16, 32, 3, 7);
    const before = tf.memory().numTensors;
    for (const arch of ['relu', 'topk'] as const) {
      const counts: number[] = [];
      const run = await trainSaeOnSource(arrayActivationSource(rows, 16), {
        executor,
        arch,
        k: 4,
        dSae: 64,
        tokens: 256 * 12,
        batchSize: 256,
        resampleSteps: 3,
        onStep: ({ numTensors }) => counts.push(numTensors),
      });
      run.sae.dispose();
      expect(counts.length).toBe(12);
      expect(new Set(counts.slice(1)).size, `${arch}: tensor counts per step ${counts.join(',')}`).toBe(1);
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('recovers a planted sparse dictionary (ReLU SAE): FVE >= 0.95 and >= 90% of atoms at cosine >= 0.9', async () => {
    const d = 32;
    const atoms = 48;
    const { rows, dict } = planted(40_000, d, atoms, 3, 11);
    // Same seed: the same dictionary and the same first 40k rows; rows 40k.. are fresh held-out draws.
    const test = planted(44_000, d, atoms, 3, 11).rows.subarray(40_000 * d);
    const result = await trainSaeOnSource(arrayActivationSource(rows, d), {
      arch: 'relu',
      dSae: 96,
      tokens: 600_000,
      batchSize: 512,
      l1: 0.15,
      lr: 3e-3,
      warmupSteps: 50,
      resampleSteps: 400,
    });
    const metrics = evaluateSae(result.sae, Float32Array.from(test));
    const cos = recovery(result.sae, dict, atoms);
    const recovered = cos.filter((c) => c >= 0.9).length / atoms;
    console.log(
      `planted dictionary (ReLU): FVE ${metrics.fve.toFixed(4)}, L0 ${metrics.l0.toFixed(2)}, dead ${metrics.deadFraction.toFixed(3)}, atoms recovered at cos>=0.9: ${(100 * recovered).toFixed(1)}%`,
    );
    expect(metrics.fve).toBeGreaterThanOrEqual(0.95);
    expect(recovered).toBeGreaterThanOrEqual(0.9);
    result.sae.dispose();
  });

  it('trains a TopK SAE, saves it in SAELens format, loads it back, and resumes from a checkpoint', async () => {
    const d = 24;
    const atoms = 40;
    const { rows, dict } = planted(30_000, d, atoms, 3, 21);
    const test = planted(33_000, d, atoms, 3, 21).rows.subarray(30_000 * d);
    const out = mkdtempSync(join(tmpdir(), 'sae-train-'));
    const ckpt = join(out, 'checkpoint');
    const opts = {
      arch: 'topk' as const,
      k: 3,
      dSae: 80,
      tokens: 300_000,
      batchSize: 512,
      lr: 3e-3,
      warmupSteps: 50,
      resampleSteps: 200,
      checkpointDir: ckpt,
      checkpointEvery: 100,
      hook: 'layers.0.resid_out',
      model: 'planted',
    };
    // First run stops early (fewer tokens), the second resumes from its last checkpoint.
    const first = await trainSaeOnSource(arrayActivationSource(rows, d), { ...opts, tokens: 512 * 300 });
    first.sae.dispose();
    expect(readdirSync(ckpt).filter((f) => f.endsWith('.safetensors'))).toEqual(['ckpt-300.safetensors']);
    const result = await trainSaeOnSource(arrayActivationSource(rows, d), opts);
    expect(result.resumedFrom).toBe(300);
    expect(result.steps).toBe(Math.ceil(300_000 / 512));
    const metrics = evaluateSae(result.sae, Float32Array.from(test));
    const recovered = recovery(result.sae, dict, atoms).filter((c) => c >= 0.9).length / atoms;
    console.log(
      `planted dictionary (TopK k=3): FVE ${metrics.fve.toFixed(4)}, L0 ${metrics.l0.toFixed(2)}, dead ${metrics.deadFraction.toFixed(3)}, atoms recovered: ${(100 * recovered).toFixed(1)}%`,
    );
    expect(metrics.l0).toBeLessThanOrEqual(3);
    expect(metrics.fve).toBeGreaterThanOrEqual(0.9);
    saveTrainedSae(result.sae, out, { heldOut: metrics });
    const loaded = loadSae(out);
    expect(loaded.metadata.format).toBe('saelens');
    expect(loaded.metadata.hook).toBe('layers.0.resid_out');
    expect(loaded.metadata.model).toBe('planted');
    const again = evaluateSae(loaded as AffineSae, Float32Array.from(test));
    expect(Math.abs(again.fve - metrics.fve)).toBeLessThan(1e-5);
    expect(existsSync(join(out, 'metrics.json'))).toBe(true);
    loaded.dispose();
    result.sae.dispose();
    // A checkpoint made with other settings is not silently reused.
    await expect(trainSaeOnSource(arrayActivationSource(rows, d), { ...opts, k: 4 })).rejects.toThrow(/checkpoint was made with other settings/);
  });

  it('collects a held-out set from a source', async () => {
    const rows = Float32Array.from({ length: 30 }, (_, i) => i);
    const got = await collectActivations(arrayActivationSource(rows, 3, { chunkTokens: 4 }), 7);
    expect(got.length).toBe(21);
  });
});

describe.each(['onnx', 'tfjs'] as const)("training steps match the libraries' trainers (PyTorch reference; %s executor)", (executor) => {
  // float32 through 4 Adam steps; Adam divides by sqrt(v), so gradients near 0 amplify rounding.
  const TOL = 1e-5;
  let ref: string;
  beforeAll(async () => {
    ref = await runPythonReference('sae_train_reference.py');
  });

  it.each([
    ['relu', 'dictionary_learning 0.1.0 StandardTrainer + ConstrainedAdam, with our unsquared L2 term'],
    ['topk', 'eai-sparsify 1.3.3 SparseCoder fvu + decoder-gradient projection + torch Adam'],
  ] as const)('%s: 4 steps from the same weights and batches as %s', async (arch, what) => {
    const settings = (JSON.parse(readFileSync(join(ref, 'settings.json'), 'utf8')) as Record<string, { lr: number; l1?: number; k?: number }>)[arch]!;
    const file = readSafetensors(join(ref, `${arch}.safetensors`));
    const [steps, batch, d] = file.info('x').shape as [number, number, number];
    const xs = file.float32('x');
    const batches = Array.from({ length: steps }, (_, s) => xs.slice(s * batch * d, (s + 1) * batch * d));
    const start = {
      wEnc: file.float32('start.W_enc'),
      bEnc: file.float32('start.b_enc'),
      wDec: file.float32('start.W_dec'),
      bDec: file.float32('start.b_dec'),
    };
    const before = tf.memory().numTensors;
    const ours = await trainStepsFrom(start, d, batches, { arch, ...settings, executor });
    expect(tf.memory().numTensors).toBe(before);
    const libLoss = file.float32('loss');
    const errs = {
      loss: relErr(ours.losses, libLoss),
      wEnc: relErr(ours.weights.wEnc, file.float32('after.W_enc')),
      bEnc: relErr(ours.weights.bEnc, file.float32('after.b_enc')),
      wDec: relErr(ours.weights.wDec, file.float32('after.W_dec')),
      bDec: relErr(ours.weights.bDec, file.float32('after.b_dec')),
    };
    // The steps moved the weights by far more than the tolerance, so a wrong update cannot pass.
    const moved = relErr(ours.weights.wEnc, start.wEnc);
    console.log(
      `${arch} steps (${executor}) vs ${what}: relative errors ${JSON.stringify(errs, (_, v: unknown) => (typeof v === 'number' ? Number(v.toExponential(2)) : v))}, wEnc moved ${moved.toExponential(2)}`,
    );
    expect(moved).toBeGreaterThan(100 * TOL);
    for (const [k, v] of Object.entries(errs)) expect(v, `${arch} ${k}`).toBeLessThan(TOL);
  });
});

describe('exact resumption', () => {
  /** The weights of a trained SAE as plain arrays. */
  function weightsOf(sae: AffineSae): Float32Array[] {
    return [sae.wEnc, sae.bEnc, sae.wDec, sae.bDec].map((t) => Float32Array.from(t.dataSync() as Float32Array));
  }

  it.each([
    ['relu', 'onnx'],
    ['topk', 'onnx'],
    ['relu', 'tfjs'],
    ['topk', 'tfjs'],
  ] as const)(
    '%s on %s: crashed after a checkpoint, resumed, stopped by its signal, resumed again: the same weights and losses as one run',
    async (arch, executor) => {
      const d = 16;
      const { rows } = planted(3000, d, 24, 3, 31);
      const source = () => arrayActivationSource(rows, d, { chunkTokens: 100, seed: 5 });
      // 60 steps of 64 draws: more than a pass over the 3000 rows, refills of a 512-row buffer, and
      // three rounds of dead-feature resampling, so that every part of the stream state matters.
      const opts: TrainOptions = {
        executor,
        arch,
        k: 3,
        l1: 0.6,
        dSae: 48,
        tokens: 64 * 60,
        batchSize: 64,
        bufferTokens: 512,
        warmupSteps: 5,
        resampleSteps: 15,
        lr: 3e-3,
      };
      const losses = new Map<number, number>();
      const whole = await trainSaeOnSource(source(), { ...opts, onStep: ({ step, loss }) => losses.set(step, loss) });
      const want = weightsOf(whole.sae);
      whole.sae.dispose();

      const ckpt = mkdtempSync(join(tmpdir(), 'sae-resume-'));
      const resumedLosses = new Map<number, number>();
      const withCkpt: TrainOptions = { ...opts, checkpointDir: ckpt, checkpointEvery: 10, onStep: ({ step, loss }) => resumedLosses.set(step, loss) };
      // 1. A crash (an exception) at step 23: the checkpoint of step 20 stays.
      await expect(
        trainSaeOnSource(source(), {
          ...withCkpt,
          onStep: ({ step }) => {
            if (step === 23) throw new Error('simulated crash');
          },
        }),
      ).rejects.toThrow(/simulated crash/);
      expect((JSON.parse(readFileSync(join(ckpt, 'checkpoint.json'), 'utf8')) as { step: number }).step).toBe(20);
      // 2. Resumed from step 20 and stopped by its signal after step 37: a checkpoint of step 37 is written.
      const controller = new AbortController();
      await expect(
        trainSaeOnSource(source(), {
          ...withCkpt,
          signal: controller.signal,
          onStep: ({ step, loss }) => {
            resumedLosses.set(step, loss);
            if (step === 37) controller.abort('test stop');
          },
        }),
      ).rejects.toThrow(/stopped at step 37 of 60 \(test stop\); the checkpoint in .* resumes it/);
      expect((JSON.parse(readFileSync(join(ckpt, 'checkpoint.json'), 'utf8')) as { step: number }).step).toBe(37);
      // 3. Resumed from step 37 to the end (in a fresh source, as a new process would have).
      const resumed = await trainSaeOnSource(source(), withCkpt);
      expect(resumed.resumedFrom).toBe(37);
      expect(resumed.steps).toBe(60);
      expect([...resumedLosses.keys()]).toEqual(Array.from({ length: 40 }, (_, i) => 21 + i));
      for (const [step, loss] of resumedLosses) expect(loss, `loss at step ${step}`).toBe(losses.get(step));
      const got = weightsOf(resumed.sae);
      resumed.sae.dispose();
      // Bit-identical: the same float32 operations on the same values in the same order.
      for (let p = 0; p < 4; p++) {
        let differ = 0;
        for (let i = 0; i < want[p]!.length; i++) if (got[p]![i] !== want[p]![i]) differ++;
        expect(differ, `${arch}: entries of parameter ${p} that differ`).toBe(0);
      }
      expect(resumed.train).toEqual(whole.train);
    },
  );

  it('refuses a version 1 checkpoint (saved before the stream position was) with a clear error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sae-old-ckpt-'));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'checkpoint.json'), JSON.stringify({ key: '{}', step: 100, scale: 1, adamT: 100, file: 'ckpt-100.safetensors' }));
    const rows = planted(500, 8, 8, 2, 3).rows;
    await expect(trainSaeOnSource(arrayActivationSource(rows, 8), { arch: 'relu', dSae: 16, tokens: 640, batchSize: 64, checkpointDir: dir })).rejects.toThrow(
      /checkpoint\.json: a version 1 training checkpoint; this version of sae-eraser resumes version 2 only .*Delete .* to start again/,
    );
  });
});
