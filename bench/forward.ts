/**
 * `npm run bench:forward`: the forward pass of a random GPT-NeoX at the Pythia-70m-deduped shape
 * (6 layers, d 512, 8 heads, d_ff 2048, vocab 50304) on 32 sequences of 128 tokens, up to
 * layers.4.resid_out (the depth SAE experiments read), in tokens/s.
 *
 *  - sae-eraser: ONNX Runtime (`OnnxForward`, the executor of every inference-only pass), one
 *    session per thread count, best of `--reps` runs after a warm-up run;
 *  - PyTorch (bench/reference/forward_torch.py): the same checkpoint, ids and depth;
 *  - for context, sae-eraser's tfjs engine (the executor of passes with gradients or edits).
 *
 * Run: npm run bench:forward [-- --reps 3]
 * The checkpoint comes from test/reference/models_reference.py (--suite pythia, cached in .cache/).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engineInfo, tf } from '../src/engine/engine.js';
import { mulberry32 } from '../src/data/prng.js';
import { OnnxForward } from '../src/models/executor.js';
import { loadModel } from '../src/models/load.js';
import type { Batch, Model } from '../src/models/model.js';
import { minOf } from '../src/util/arrays.js';
import { runPythonReference } from '../test/reference/python.js';
import { intFlag } from './flags.js';
import { compare, fmt, numberField, printResultLines, runIfMain, runsDetail, timeRuns, torchScript } from './harness.js';

const N_SEQUENCES = 32;
const SEQ_LEN = 128;
const HOOK = 'layers.4.resid_out';
const TOKENS = N_SEQUENCES * SEQ_LEN;

/** Tokens/s of ONNX Runtime on `batch` with `threads` intra-op threads (session creation not timed). */
async function onnxTokensPerS(model: Model, batch: Batch, threads: number, reps: number): Promise<{ value: number; detail: string }> {
  const d = model.config.dModel;
  const forward = await OnnxForward.create(model, [HOOK], (g, hooks) => g.output('acts', hooks[HOOK]!, 'float32', ['batch', 'seq', d]), 'bench-forward', {
    threads,
  });
  try {
    const seconds = await timeRuns(reps, async () => {
      const out = await forward.run(batch);
      if (out.acts === undefined) throw new Error('bench/forward: the ONNX graph returned no activations');
    });
    return { value: TOKENS / minOf(seconds), detail: runsDetail(seconds) };
  } finally {
    await forward.dispose();
  }
}

/** Tokens/s of the tfjs engine on `batch`. */
async function tfjsTokensPerS(model: Model, batch: Batch, reps: number): Promise<{ value: number; detail: string }> {
  const seconds = await timeRuns(reps, () => {
    const { captures } = model.run(batch, { capture: [HOOK], stopAfter: HOOK });
    captures[HOOK]!.dataSync();
    tf.dispose(Object.values(captures));
  });
  return { value: TOKENS / minOf(seconds), detail: runsDetail(seconds) };
}

async function main(): Promise<void> {
  const reps = intFlag('--reps', 3);
  const engine = await engineInfo();
  const modelDir = join(await runPythonReference('models_reference.py', ['--suite', 'pythia']), 'pythia70m_shape');
  const tmp = mkdtempSync(join(tmpdir(), 'sae-eraser-bench-forward-'));
  const model = await loadModel(modelDir);
  const rng = mulberry32(42);
  const ids = Int32Array.from({ length: TOKENS }, () => Math.floor(rng() * model.config.vocabSize));
  const batch: Batch = {
    inputIds: tf.tensor2d(ids, [N_SEQUENCES, SEQ_LEN], 'int32'),
    attentionMask: tf.ones([N_SEQUENCES, SEQ_LEN], 'int32') as tf.Tensor2D,
  };
  try {
    const idsPath = join(tmp, 'ids.i32');
    writeFileSync(idsPath, Buffer.from(ids.buffer));
    const script = 'forward_torch.py';
    let torchInfo = '';
    const lines = await compare({
      name: 'forward',
      title: `forward pass, Pythia-70m-deduped shape (random weights), ${N_SEQUENCES} x ${SEQ_LEN} tokens, up to ${HOOK}, best of ${reps} runs after a warm-up`,
      unit: 'tokens/s',
      better: 'higher',
      oursLabel: (t) => `ONNX Runtime, ${t} thread${t === 1 ? '' : 's'}`,
      ours: (t) => onnxTokensPerS(model, batch, t, reps),
      referenceLabel: (t) => `PyTorch ${torchInfo} (${t} thread${t === 1 ? '' : 's'})`,
      reference: (t) => {
        const args = ['--model', modelDir, '--ids', idsPath, '--n', String(N_SEQUENCES), '--seq', String(SEQ_LEN), '--layers', '5', '--reps', String(reps)];
        const r = torchScript(script, args, t);
        torchInfo = `${String(r.torch)}, ${String(r.attn)} attention`;
        return { value: numberField(r, 'tokens_per_s', script), detail: runsDetail(r.seconds as number[]) };
      },
    });
    const tfjs = await tfjsTokensPerS(model, batch, reps);
    console.log(
      `  context: sae-eraser's tfjs engine (${engine.backend}, ${engine.threads} thread${engine.threads === 1 ? '' : 's'}): ${fmt(tfjs.value)} tokens/s  (${tfjs.detail})`,
    );
    printResultLines(lines);
  } finally {
    tf.dispose([batch.inputIds, batch.attentionMask]);
    model.dispose();
    rmSync(tmp, { recursive: true, force: true });
  }
}

runIfMain(import.meta.url, main);
