/**
 * Forward-pass benchmark: a random GPT-NeoX at the Pythia-70m-deduped shape (6 layers, d 512,
 * 8 heads, d_ff 2048, vocab 50304), 32 sequences of 128 tokens, run up to layers.4.resid_out (the
 * depth SAE experiments read), in sae-eraser (tfjs-wasm, one thread) and in PyTorch with one
 * thread, on the same weights and token ids in the same invocation. Prints tokens/s and the ratio.
 * PyTorch runs before and after sae-eraser and the best of both is kept, so load from other
 * processes on a shared machine does not favour one side.
 *
 * Run: npm run build && node dist/bench/forward.js [--reps 3]
 * The checkpoint comes from test/reference/models_reference.py (--suite pythia, cached in .cache/).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initEngine, tf } from '../src/engine/engine.js';
import { mulberry32 } from '../src/data/prng.js';
import { projectRoot } from '../src/io/shared.js';
import { loadModel } from '../src/models/load.js';
import { progress } from '../src/util/progress.js';
import { pythonBin, runPythonReference } from '../test/reference/python.js';
import { minOf } from '../src/util/arrays.js';

const N_SEQUENCES = 32;
const SEQ_LEN = 128;
const STOP_AFTER_LAYER = 4;

interface TorchResult {
  best_seconds: number;
  tokens_per_s: number;
  threads: number;
  attn: string;
  torch: string;
}

export interface ForwardBenchResult {
  backend: string;
  tokens: number;
  oursSeconds: number[];
  oursTokensPerS: number;
  torch: TorchResult;
  ratio: number;
}

function seededIds(vocab: number, seed = 42): Int32Array {
  const rng = mulberry32(seed);
  return Int32Array.from({ length: N_SEQUENCES * SEQ_LEN }, () => Math.floor(rng() * vocab));
}

/** Times the PyTorch pass (same checkpoint, ids, depth and thread count) in a child process. */
function torchForward(modelDir: string, idsPath: string, reps: number): TorchResult {
  const stdout = execFileSync(
    pythonBin(),
    [
      join(projectRoot(), 'bench/reference/forward_torch.py'),
      '--model',
      modelDir,
      '--ids',
      idsPath,
      '--n',
      String(N_SEQUENCES),
      '--seq',
      String(SEQ_LEN),
      '--layers',
      String(STOP_AFTER_LAYER + 1),
      '--threads',
      '1',
      '--reps',
      String(reps),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, HF_HUB_OFFLINE: '1', OMP_NUM_THREADS: '1' } },
  );
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as TorchResult;
}

export async function benchForward(reps = 3): Promise<ForwardBenchResult> {
  const backend = await initEngine();
  const out = await runPythonReference('models_reference.py', ['--suite', 'pythia']);
  const modelDir = join(out, 'pythia70m_shape');
  const tmp = mkdtempSync(join(tmpdir(), 'sae-eraser-bench-'));
  try {
    const model = await loadModel(modelDir);
    const ids = seededIds(model.config.vocabSize);
    const idsPath = join(tmp, 'ids.i32');
    writeFileSync(idsPath, Buffer.from(ids.buffer));
    const torchBefore = torchForward(modelDir, idsPath, reps);

    const stopAfter = `layers.${STOP_AFTER_LAYER}.resid_out`;
    const batch = {
      inputIds: tf.tensor2d(ids, [N_SEQUENCES, SEQ_LEN], 'int32'),
      attentionMask: tf.ones([N_SEQUENCES, SEQ_LEN], 'int32') as tf.Tensor2D,
    };
    const once = (): number => {
      const t0 = performance.now();
      const { captures } = model.run(batch, { capture: [stopAfter], stopAfter });
      captures[stopAfter]!.dataSync();
      const seconds = (performance.now() - t0) / 1000;
      tf.dispose(Object.values(captures));
      return seconds;
    };
    once(); // warm-up (kernel set-up, weight packing)
    const bar = progress('sae-eraser forward', reps, 'rep');
    const oursSeconds: number[] = [];
    for (let r = 0; r < reps; r++) {
      oursSeconds.push(once());
      bar.tick(1, `${oursSeconds.at(-1)!.toFixed(2)}s`);
    }
    bar.done();
    tf.dispose([batch.inputIds, batch.attentionMask]);
    model.dispose();

    const torchAfter = torchForward(modelDir, idsPath, reps);
    const torch = torchAfter.tokens_per_s > torchBefore.tokens_per_s ? torchAfter : torchBefore;
    const tokens = N_SEQUENCES * SEQ_LEN;
    const oursTokensPerS = tokens / minOf(oursSeconds);
    return { backend, tokens, oursSeconds, oursTokensPerS, torch, ratio: oursTokensPerS / torch.tokens_per_s };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function main(): void {
  const i = process.argv.indexOf('--reps');
  const reps = i >= 0 ? Number(process.argv[i + 1]) : 3;
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps must be a positive integer, got ${process.argv[i + 1]}`);
  benchForward(reps).then(
    (r) => {
      console.log(
        `forward pass, Pythia-70m-deduped shape (random weights), ${N_SEQUENCES} x ${SEQ_LEN} tokens, up to layers.${STOP_AFTER_LAYER}.resid_out, best of ${reps}`,
      );
      console.log(
        `  sae-eraser (tfjs ${r.backend}, 1 thread): ${r.oursTokensPerS.toFixed(0)} tokens/s  (runs: ${r.oursSeconds.map((s) => s.toFixed(2)).join(', ')} s)`,
      );
      console.log(
        `  PyTorch ${r.torch.torch} (${r.torch.threads} thread, ${r.torch.attn} attention): ${r.torch.tokens_per_s.toFixed(0)} tokens/s (best of runs before and after)`,
      );
      console.log(`  ratio sae-eraser / PyTorch: ${r.ratio.toFixed(2)}`);
    },
    (err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) main();
