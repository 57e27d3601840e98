/**
 * SAE benchmark, sae-eraser (tfjs, one thread) against PyTorch (one thread) on the same weights and
 * inputs in the same invocation:
 *  1. encode: 2048 tokens through a 512 x 32768 ReLU SAE (the Sparse Feature Circuits shape), as
 *     `encodeSparse` (chunked, CSR output) vs torch ReLU((x - b) @ W_enc + b_enc) + nonzero();
 *  2. training: ReLU SAE steps (L2 + L1, Adam, unit-norm decoder rows) at the MiniLM width,
 *     384 -> 4096, batch 1024, in tokens/s.
 * Prints each side and the ratio sae-eraser / PyTorch (above 1: sae-eraser is faster).
 *
 * Run: npm run build && node dist/bench/sae.js [--reps 3] [--steps 5]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initEngine, tf } from '../src/engine/engine.js';
import { randomNormalArray } from '../src/data/prng.js';
import { projectRoot } from '../src/io/shared.js';
import { setQuiet } from '../src/util/progress.js';
import { arrayActivationSource } from '../src/sae/buffer.js';
import { AffineSae } from '../src/sae/sae.js';
import { trainSaeOnSource } from '../src/sae/train.js';
import { pythonBin } from '../test/reference/python.js';
import { intFlag } from './flags.js';
import { minOf } from '../src/util/arrays.js';

interface Weights {
  x: Float32Array;
  wEnc: Float32Array;
  bEnc: Float32Array;
  wDec: Float32Array;
  bDec: Float32Array;
}

function randomWeights(tokens: number, d: number, dSae: number, seed: number): Weights {
  const scaled = (n: number, s: number, k: number): Float32Array => randomNormalArray(n, seed + k).map((v) => v * s);
  return {
    x: scaled(tokens * d, 1, 0),
    wEnc: scaled(d * dSae, 1 / Math.sqrt(d), 1),
    // A negative encoder bias gives a realistic sparsity (about 2-3% of features active).
    bEnc: scaled(dSae, 0.05, 2).map((v) => v - 2),
    wDec: scaled(dSae * d, 1 / Math.sqrt(d), 3),
    bDec: scaled(d, 0.1, 4),
  };
}

function writeWeights(dir: string, w: Weights): void {
  for (const [name, arr] of [
    ['x', w.x],
    ['W_enc', w.wEnc],
    ['b_enc', w.bEnc],
    ['W_dec', w.wDec],
    ['b_dec', w.bDec],
  ] as const) {
    writeFileSync(join(dir, `${name}.f32`), Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength));
  }
}

function torchRun(args: string[]): Record<string, number | string> {
  const stdout = execFileSync(pythonBin(), [join(projectRoot(), 'bench/reference/sae_torch.py'), ...args, '--threads', '1'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' },
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, number | string>;
}

export interface SaeBenchResult {
  backend: string;
  encode: { tokens: number; oursSeconds: number[]; oursTokensPerS: number; torchTokensPerS: number; nnz: number; ratio: number };
  train: { steps: number; batch: number; oursTokensPerS: number; torchTokensPerS: number; ratio: number };
}

export async function benchSae(reps = 3, steps = 5): Promise<SaeBenchResult> {
  const backend = await initEngine();
  setQuiet(true);
  const tmp = mkdtempSync(join(tmpdir(), 'sae-eraser-bench-'));
  try {
    // ---- encode
    const tokens = 2048;
    const d = 512;
    const dSae = 32768;
    const w = randomWeights(tokens, d, dSae, 42);
    const encDir = join(tmp, 'encode');
    mkdirSync(encDir);
    writeWeights(encDir, w);
    const sae = new AffineSae(
      {
        wEnc: tf.tensor2d(w.wEnc, [d, dSae]),
        bEnc: tf.tensor1d(w.bEnc),
        wDec: tf.tensor2d(w.wDec, [dSae, d]),
        bDec: tf.tensor1d(w.bDec),
        subtractDecoderBiasFromInput: true,
        activation: { kind: 'relu' },
      },
      { format: 'sae-eraser', source: 'bench' },
    );
    const x = tf.tensor2d(w.x, [tokens, d]);
    let nnz = 0;
    const once = (): number => {
      const t0 = performance.now();
      const codes = sae.encodeSparse(x);
      nnz = codes.indices.length;
      return (performance.now() - t0) / 1000;
    };
    once();
    const oursSeconds = Array.from({ length: reps }, once);
    tf.dispose(x);
    sae.dispose();
    const torchEnc = torchRun([
      '--task',
      'encode',
      '--dir',
      encDir,
      '--d',
      String(d),
      '--dsae',
      String(dSae),
      '--tokens',
      String(tokens),
      '--reps',
      String(reps),
    ]);
    const oursEncTps = tokens / minOf(oursSeconds);
    const torchEncTps = Number(torchEnc.tokens_per_s);

    // ---- training
    const td = 384;
    const tSae = 4096;
    const batch = 1024;
    const trainTokens = 16 * batch;
    const tw = randomWeights(trainTokens, td, tSae, 7);
    const trainDir = join(tmp, 'train');
    mkdirSync(trainDir);
    writeWeights(trainDir, tw);
    const stamps: number[] = [];
    const run = await trainSaeOnSource(arrayActivationSource(tw.x, td), {
      arch: 'relu',
      dSae: tSae,
      batchSize: batch,
      tokens: (steps + 1) * batch,
      resampleSteps: 0,
      bufferTokens: 4 * batch,
      onStep: () => stamps.push(performance.now()),
    });
    run.sae.dispose();
    // Time from the end of the warm-up step to the end of the last one.
    const oursTrainTps = (steps * batch) / ((stamps.at(-1)! - stamps[0]!) / 1000);
    const torchTrain = torchRun([
      '--task',
      'train',
      '--dir',
      trainDir,
      '--d',
      String(td),
      '--dsae',
      String(tSae),
      '--tokens',
      String(trainTokens),
      '--batch',
      String(batch),
      '--steps',
      String(steps),
    ]);
    const torchTrainTps = Number(torchTrain.tokens_per_s);
    return {
      backend,
      encode: { tokens, oursSeconds, oursTokensPerS: oursEncTps, torchTokensPerS: torchEncTps, nnz, ratio: oursEncTps / torchEncTps },
      train: { steps, batch, oursTokensPerS: oursTrainTps, torchTokensPerS: torchTrainTps, ratio: oursTrainTps / torchTrainTps },
    };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function main(): void {
  const reps = intFlag('--reps', 3);
  const steps = intFlag('--steps', 5);
  benchSae(reps, steps).then(
    (r) => {
      console.log(`SAE encode: 2048 tokens, 512 x 32768 ReLU SAE, encodeSparse (CSR, ${r.encode.nnz} nonzeros), best of ${reps}`);
      console.log(
        `  sae-eraser (tfjs ${r.backend}, 1 thread): ${r.encode.oursTokensPerS.toFixed(0)} tokens/s  (runs: ${r.encode.oursSeconds.map((s) => s.toFixed(2)).join(', ')} s)`,
      );
      console.log(`  PyTorch (1 thread): ${r.encode.torchTokensPerS.toFixed(0)} tokens/s`);
      console.log(`  ratio sae-eraser / PyTorch: ${r.encode.ratio.toFixed(2)}`);
      console.log(`SAE training: ReLU SAE 384 -> 4096, batch ${r.train.batch}, ${r.train.steps} steps after a warm-up step`);
      console.log(`  sae-eraser (tfjs ${r.backend}, 1 thread): ${r.train.oursTokensPerS.toFixed(0)} tokens/s`);
      console.log(`  PyTorch (1 thread): ${r.train.torchTokensPerS.toFixed(0)} tokens/s`);
      console.log(`  ratio sae-eraser / PyTorch: ${r.train.ratio.toFixed(2)}`);
    },
    (err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();
