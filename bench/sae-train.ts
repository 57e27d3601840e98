/**
 * `npm run bench:sae-train`: ReLU SAE training steps (loss mean ||x - x_hat||_2 + l1 mean ||f||_1,
 * Adam, decoder rows kept at unit norm) at the MiniLM width, 384 -> 4096, batch 1024, in tokens/s
 * over `--steps` steps after a warm-up step, on the same random inputs (each side starts from its own
 * initial weights, which do not change the work of a step).
 *
 *  - sae-eraser: `trainSaeOnSource` (src/sae/train.ts) on its default executor, ONNX Runtime (each
 *    step one run of the written-out forward, backward and Adam graph of src/sae/train-graph.ts);
 *    for context, the same on the tfjs executor (autograd), which computes on one thread in Node;
 *  - PyTorch: bench/reference/sae_torch.py --task train (the dictionary_learning StandardTrainer step).
 *
 * Run: npm run bench:sae-train [-- --steps 5]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engineInfo } from '../src/engine/engine.js';
import type { ExecutorName } from '../src/models/executor.js';
import { arrayActivationSource } from '../src/sae/buffer.js';
import { trainSaeOnSource } from '../src/sae/train.js';
import { setQuiet } from '../src/util/progress.js';
import { intFlag } from './flags.js';
import { compare, fmt, numberField, printResultLines, runIfMain, torchScript } from './harness.js';
import { randomSae, writeF32Files, type SaeArrays } from './random-sae.js';

const D = 384;
const D_SAE = 4096;
const BATCH = 1024;
/** Rows of the input pool the steps cycle through. */
const POOL_TOKENS = 16 * BATCH;

/** Tokens/s of `steps` training steps on `executor` after a warm-up step (threads: `setThreads`'s). */
async function oursTokensPerS(w: SaeArrays, steps: number, executor: ExecutorName): Promise<number> {
  const stamps: number[] = [];
  const run = await trainSaeOnSource(arrayActivationSource(w.x, D), {
    arch: 'relu',
    dSae: D_SAE,
    batchSize: BATCH,
    tokens: (steps + 1) * BATCH,
    resampleSteps: 0,
    bufferTokens: 4 * BATCH,
    executor,
    onStep: () => stamps.push(performance.now()),
  });
  run.sae.dispose();
  // From the end of the warm-up step to the end of the last one.
  return (steps * BATCH) / ((stamps.at(-1)! - stamps[0]!) / 1000);
}

async function main(): Promise<void> {
  const steps = intFlag('--steps', 5);
  const engine = await engineInfo();
  setQuiet(true);
  const w = randomSae(POOL_TOKENS, D, D_SAE, 7);
  const tmp = mkdtempSync(join(tmpdir(), 'sae-eraser-bench-sae-train-'));
  try {
    writeF32Files(tmp, w);
    const script = 'sae_torch.py';
    let torchVersion = '';
    const lines = await compare({
      name: 'sae-train',
      title: `SAE training: ReLU SAE ${D} -> ${D_SAE}, batch ${BATCH}, ${steps} steps after a warm-up step`,
      unit: 'tokens/s',
      better: 'higher',
      oursLabel: (t) => `trainSaeOnSource, ONNX Runtime, ${t} thread${t === 1 ? '' : 's'}`,
      ours: async () => ({ value: await oursTokensPerS(w, steps, 'onnx') }),
      referenceLabel: (t) => `PyTorch ${torchVersion} (${t} thread${t === 1 ? '' : 's'})`,
      reference: (t) => {
        const args = ['--task', 'train', '--dir', tmp, '--d', String(D), '--dsae', String(D_SAE), '--tokens', String(POOL_TOKENS), '--batch', String(BATCH)];
        const r = torchScript(script, [...args, '--steps', String(steps)], t);
        torchVersion = String(r.torch);
        return { value: numberField(r, 'tokens_per_s', script) };
      },
    });
    const tfjs = await oursTokensPerS(w, steps, 'tfjs');
    console.log(`  context: sae-eraser's tfjs executor (${engine.backend}, ${engine.threads} thread${engine.threads === 1 ? '' : 's'}): ${fmt(tfjs)} tokens/s`);
    printResultLines(lines);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

runIfMain(import.meta.url, main);
