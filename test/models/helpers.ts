/**
 * Shared helpers for the model tests: reference cases written by test/reference/models_reference.py,
 * masked comparisons, and the table of max abs diffs the tests print.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tf } from '../../src/engine/engine.js';
import { openCheckpoint, readSafetensors, writeSafetensors, type RawTensor, type SafetensorsFile } from '../../src/io/safetensors.js';
import { projectRoot, sharedPath } from '../../src/io/shared.js';
import type { Batch } from '../../src/models/model.js';
import type { OpenedModel } from '../../src/models/open.js';
import { runPythonReference } from '../reference/python.js';

export interface ReferenceCase {
  name: string;
  kind: 'gpt_neox' | 'bert';
  nLayers: number;
  edits: boolean;
  /** The case folder: checkpoint + expected.safetensors. */
  dir: string;
  expected: SafetensorsFile;
}

/** Generates (or reuses) a reference suite and returns its cases. */
export async function referenceSuite(suite: 'tiny' | 'pythia' | 'minilm', extraArgs: string[] = []): Promise<ReferenceCase[]> {
  const args = ['--suite', suite, ...extraArgs];
  let out: string;
  try {
    out = await runPythonReference('models_reference.py', args);
  } catch (err) {
    // Test files run in parallel workers: when two generate the same suite at once, the second
    // one's final rename fails because the first already put the folder in place. Reuse it.
    out = await runPythonReference('models_reference.py', args);
    console.warn(`models_reference.py ${args.join(' ')}: reused the output of a concurrent run (${(err as Error).message.split('\n')[0]})`);
  }
  const index = JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as Omit<ReferenceCase, 'dir' | 'expected'>[];
  return index.map((c) => ({ ...c, dir: join(out, c.name), expected: readSafetensors(join(out, c.name, 'expected.safetensors')) }));
}

/** all-MiniLM-L6-v2's folder (scripts/fetch-minilm.sh puts it there). */
export const MINILM_DIR = join(projectRoot(), '.cache/models/all-MiniLM-L6-v2');
const MINILM_BIOS = sharedPath('data', 'bias_in_bios', 'validate.jsonl');

/** Why the all-MiniLM-L6-v2 reference cannot be generated here, or undefined when it can. */
export const MINILM_SKIP_REASON: string | undefined =
  MINILM_BIOS === undefined
    ? 'shared data folder (../shared or SAE_ERASER_SHARED) with data/bias_in_bios/validate.jsonl is absent'
    : !existsSync(join(MINILM_DIR, 'model.safetensors'))
      ? `${MINILM_DIR} is absent (run: bash scripts/fetch-minilm.sh)`
      : undefined;

/**
 * The all-MiniLM-L6-v2 reference (needs MINILM_SKIP_REASON undefined): transformers' tokenization
 * of the first 16 Bias in Bios validation bios, and PyTorch's hidden states at every hook in fp32
 * (`<hook>`) and float64 (`f64.<hook>`).
 */
export async function minilmReference(): Promise<ReferenceCase> {
  if (MINILM_BIOS === undefined || MINILM_SKIP_REASON !== undefined) throw new Error(`the all-MiniLM-L6-v2 reference is unavailable: ${MINILM_SKIP_REASON}`);
  const [c] = await referenceSuite('minilm', ['--model', MINILM_DIR, '--bios', MINILM_BIOS, '--n', '16']);
  return c!;
}

/** One hook of an fp32 implementation against PyTorch fp32 and float64 (max abs diffs at real tokens). */
export interface Float64Check {
  hook: string;
  /** |ours - PyTorch fp32|. */
  ours: number;
  /** |ours - PyTorch float64|. */
  oursExact: number;
  /** |PyTorch fp32 - PyTorch float64|: PyTorch's own fp32 error. */
  torchExact: number;
}

/**
 * Compares `actual` at `hook` with a reference holding fp32 and `f64.` expectations (see
 * `minilmReference`). Tests require ours < tolerance + torchExact and oursExact <
 * max(tolerance, torchExact): no fp32 implementation can be closer to PyTorch's fp32 result than
 * that result's own error allows.
 */
export function float64Check(hook: string, actual: tf.Tensor, expected: SafetensorsFile, mask: Int32Array): Float64Check {
  const exact = expected.float32(`f64.${hook}`);
  const torch32 = expected.tensor(hook);
  try {
    return {
      hook,
      ours: maskedMaxAbsDiff(actual, expected.float32(hook), mask),
      oursExact: maskedMaxAbsDiff(actual, exact, mask),
      torchExact: maskedMaxAbsDiff(torch32, exact, mask),
    };
  } finally {
    torch32.dispose();
  }
}

/** The reference batch of a case (ids and mask as int32). */
export function referenceBatch(expected: SafetensorsFile): Batch {
  return {
    inputIds: expected.tensor('input_ids') as tf.Tensor2D,
    attentionMask: expected.tensor('attention_mask') as tf.Tensor2D,
  };
}

export function disposeBatch(batch: Batch): void {
  tf.dispose([batch.inputIds, batch.attentionMask]);
}

/**
 * Max |a - b| over the real (mask 1) positions of `[n, seq, d]` activations; NaN if either side
 * has a NaN there.
 */
export function maskedMaxAbsDiff(actual: tf.Tensor, expected: Float32Array, mask: Int32Array | Float32Array | Uint8Array): number {
  const [n, seq, d] = actual.shape as [number, number, number];
  if (expected.length !== n * seq * d) throw new Error(`size mismatch: actual [${actual.shape.join(', ')}] vs expected ${expected.length} values`);
  const a = actual.dataSync();
  let m = 0;
  for (let t = 0; t < n * seq; t++) {
    if (mask[t] === 0) continue;
    for (let j = t * d; j < (t + 1) * d; j++) {
      const diff = Math.abs(a[j]! - expected[j]!);
      if (Number.isNaN(diff)) return NaN;
      if (diff > m) m = diff;
    }
  }
  return m;
}

/** Max |a - b| over whole tensors. */
export function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

export function hasNaN(t: tf.Tensor): boolean {
  return tf.tidy(() => tf.any(tf.isNaN(t)).dataSync()[0] === 1);
}

/** Rows of the "config, hook, max abs diff" table the parity tests print. */
export interface DiffRow {
  config: string;
  hook: string;
  maxAbsDiff: number;
}

/**
 * Prints one line per config with the max abs diff per hook kind (max over layers), e.g.
 * `layers.3.mlp_out` counts as `mlp_out`, then the overall worst hook.
 */
export function printDiffTable(title: string, rows: readonly DiffRow[]): void {
  if (rows.length === 0) return;
  const kindOf = (hook: string): string => hook.replace(/layers\.\d+\./, '');
  const kinds = [...new Set(rows.map((r) => kindOf(r.hook)))];
  const configs = [...new Set(rows.map((r) => r.config))];
  const w = Math.max(6, ...configs.map((c) => c.length));
  const cw = Math.max(9, ...kinds.map((k) => k.length));
  const lines = [title, `${'config'.padEnd(w)}  ${kinds.map((k) => k.padStart(cw)).join('  ')}`];
  for (const c of configs) {
    const cells = kinds.map((k) => {
      const vals = rows.filter((r) => r.config === c && kindOf(r.hook) === k).map((r) => r.maxAbsDiff);
      if (vals.length === 0) return '-'.padStart(cw);
      const m = vals.some(Number.isNaN) ? NaN : Math.max(...vals);
      return m.toExponential(2).padStart(cw);
    });
    lines.push(`${c.padEnd(w)}  ${cells.join('  ')}`);
  }
  const worst = rows.reduce((a, b) => (b.maxAbsDiff > a.maxAbsDiff || Number.isNaN(b.maxAbsDiff) ? b : a));
  lines.push(`worst: ${worst.config} ${worst.hook} ${worst.maxAbsDiff.toExponential(2)} (over ${rows.length} hook comparisons)`);
  console.log(lines.join('\n'));
}

/**
 * Copies a model folder into a fresh temp folder, letting the caller change tensors (name -> raw
 * tensor, or undefined to drop it), rename them, and change config fields (undefined deletes one).
 */
export function cloneModelDir(
  src: string,
  options: {
    tensors?: (name: string, data: Float32Array, shape: number[]) => RawTensor | undefined;
    rename?: (name: string) => string;
    config?: Record<string, unknown>;
  } = {},
): string {
  const dst = mkdtempSync(join(tmpdir(), 'sae-eraser-model-'));
  const config = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  for (const [k, v] of Object.entries(options.config ?? {})) {
    if (v === undefined) delete config[k];
    else config[k] = v;
  }
  writeFileSync(join(dst, 'config.json'), JSON.stringify(config, null, 1));
  const out: Record<string, RawTensor> = {};
  for (const [name, file] of openCheckpoint(src)) {
    const { shape } = file.info(name);
    const data = Float32Array.from(file.float32(name));
    const t = options.tensors ? options.tensors(name, data, shape) : { dtype: 'F32' as const, shape, data };
    if (t !== undefined) out[options.rename ? options.rename(name) : name] = t;
  }
  writeSafetensors(join(dst, 'model.safetensors'), out);
  return dst;
}

/** Whitespace words as ids in [1, vocab) (a stable hash), right-padded with 0: a tokenizer for a model without one. */
export function wordTokenizer(vocab: number): (texts: string[]) => Batch {
  return (texts) => {
    const ids = texts.map((t) => t.split(/\s+/).map((w) => 1 + (Array.from(w).reduce((h, ch) => (h * 31 + ch.charCodeAt(0)) % 65521, 7) % (vocab - 1))));
    const seq = Math.max(...ids.map((r) => r.length));
    const pad = (r: number[], fill: (i: number) => number): number[] => Array.from({ length: seq }, (_, i) => (i < r.length ? fill(i) : 0));
    return {
      inputIds: tf.tensor2d(
        ids.map((r) => pad(r, (i) => r[i]!)),
        [texts.length, seq],
        'int32',
      ),
      attentionMask: tf.tensor2d(
        ids.map((r) => pad(r, () => 1)),
        [texts.length, seq],
        'int32',
      ),
    };
  };
}

/**
 * `opened` with its tokenizer counting calls: each tokenized batch is one forward pass, so
 * `passes` counts the model's passes over texts (reset it by assigning 0).
 */
export function countingPasses(opened: OpenedModel): { model: OpenedModel; passes: number } {
  const counter = {
    passes: 0,
    model: {
      ...opened,
      tokenize: (texts: string[]): Batch => {
        counter.passes++;
        return opened.tokenize(texts);
      },
    },
  };
  return counter;
}
