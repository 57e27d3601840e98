/**
 * `npm run bench:sae-encode`: 2048 tokens through a 512 x 32768 ReLU SAE (the Sparse Feature
 * Circuits shape), f = ReLU((x - b_dec) W_enc + b_enc), in tokens/s. Both sides produce the dense
 * codes `[2048, 32768]` in their own memory (ours: a Float32Array out of ONNX Runtime; PyTorch: a
 * tensor), and the nonzero counts of both are printed as a check that they computed the same thing.
 *
 *  - sae-eraser: the SAE encoder as an ONNX graph (`saeNodes`, src/sae/graph.ts, the nodes the
 *    activation cache runs) on ONNX Runtime, one session per thread count;
 *  - PyTorch: bench/reference/sae_torch.py --task encode, on the same weights and inputs.
 * Best of `--reps` runs after a warm-up run on each side.
 *
 * Run: npm run bench:sae-encode [-- --reps 3]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../src/engine/engine.js';
import { OnnxGraph } from '../src/onnx/graph.js';
import { OnnxSession, type HostTensor } from '../src/onnx/session.js';
import { saeNodes } from '../src/sae/graph.js';
import { minOf } from '../src/util/arrays.js';
import { intFlag } from './flags.js';
import { compare, numberField, printResultLines, runIfMain, runsDetail, timeRuns, torchScript } from './harness.js';
import { randomSae, toAffineSae, writeF32Files, type SaeArrays } from './random-sae.js';

const TOKENS = 2048;
const D = 512;
const D_SAE = 32768;

function countNonzero(values: Float32Array): number {
  let n = 0;
  for (let i = 0; i < values.length; i++) if (values[i] !== 0) n++;
  return n;
}

/** The serialized graph `x [n, d] -> codes [n, dSae]`. */
function encoderGraph(w: SaeArrays): Uint8Array {
  const sae = toAffineSae(w, 'bench/sae-encode (random)');
  try {
    const g = new OnnxGraph('bench-sae-encode');
    const x = g.input('x', 'float32', ['n', w.d]);
    g.output('codes', saeNodes(g, sae, x, false).codes, 'float32', ['n', w.dSae]);
    return g.toModel();
  } finally {
    sae.dispose();
  }
}

async function main(): Promise<void> {
  const reps = intFlag('--reps', 3);
  await initEngine();
  const w = randomSae(TOKENS, D, D_SAE, 42);
  const model = encoderGraph(w);
  const feeds: Record<string, HostTensor> = { x: { type: 'float32', data: w.x, dims: [TOKENS, D] } };
  const tmp = mkdtempSync(join(tmpdir(), 'sae-eraser-bench-sae-encode-'));
  try {
    writeF32Files(tmp, w);
    const script = 'sae_torch.py';
    let torchVersion = '';
    const lines = await compare({
      name: 'sae-encode',
      title: `SAE encode: ${TOKENS} tokens, ReLU SAE ${D} x ${D_SAE} (random), dense codes out on both sides, best of ${reps} runs after a warm-up`,
      unit: 'tokens/s',
      better: 'higher',
      oursLabel: (t) => `ONNX Runtime graph of saeNodes, ${t} thread${t === 1 ? '' : 's'}`,
      ours: async (t) => {
        const session = await OnnxSession.create(model, 'bench-sae-encode', { threads: t });
        try {
          let codes: Float32Array = new Float32Array(0);
          const seconds = await timeRuns(reps, async () => {
            codes = (await session.run(feeds)).codes!.data as Float32Array;
          });
          // Counted outside the timing, as on PyTorch's side.
          return { value: TOKENS / minOf(seconds), detail: `${runsDetail(seconds)}; ${countNonzero(codes)} nonzeros` };
        } finally {
          await session.dispose();
        }
      },
      referenceLabel: (t) => `PyTorch ${torchVersion} (${t} thread${t === 1 ? '' : 's'})`,
      reference: (t) => {
        const r = torchScript(
          script,
          ['--task', 'encode', '--dir', tmp, '--d', String(D), '--dsae', String(D_SAE), '--tokens', String(TOKENS), '--reps', String(reps)],
          t,
        );
        torchVersion = String(r.torch);
        return { value: numberField(r, 'tokens_per_s', script), detail: `${runsDetail(r.seconds as number[])}; ${String(r.nnz)} nonzeros` };
      },
    });
    printResultLines(lines);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

runIfMain(import.meta.url, main);
