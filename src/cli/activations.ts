/**
 * `sae-eraser activations`: hook activations of a model over a JSONL file, as one safetensors file.
 */
import { existsSync } from 'node:fs';
import { tf, initEngine } from '../engine/engine.js';
import { writeSafetensors, type RawTensor } from '../io/safetensors.js';
import { readTable } from '../io/tabular.js';
import { openModel, type OpenedModel } from '../models/open.js';
import { meanPool } from '../models/pool.js';
import { loadSae } from '../sae/load.js';
import { checkSaeFitsModel } from '../sae/hook-names.js';
import type { Sae } from '../sae/sae.js';
import { progress } from '../util/progress.js';
import type { Subcommand } from './subcommand.js';
import { UsageError, outputPath, oneOf, optionalInt, optionalString, parse, requireString, stringList } from './args.js';
import { maxOf } from '../util/arrays.js';
import { totalmem } from 'node:os';

const usage = `usage: sae-eraser activations --model DIR_OR_REPO --input FILE.jsonl --hooks H1,H2 --out FILE.safetensors
       [--text-field text] [--max-length N] [--pool none|mean] [--batch-size N] [--sae HOOK=PATH ...] [--quiet]

Runs the model over the texts of FILE.jsonl (one JSON object per line) and writes one F32 tensor per
hook, named by the hook: [n, seq, d] right-padded plus "attention_mask" [n, seq] for --pool none
(default), or [n, d] (mean over non-pad tokens) for --pool mean. Each --sae HOOK=PATH adds
HOOK.sae_features ([n, seq, dSae] or [n, dSae]) and HOOK.sae_error ([n, seq, d] or [n, d]).
Hooks: embed, layers.{i}.attn_out, layers.{i}.mlp_out, layers.{i}.resid_out.`;

/** Parses `HOOK=PATH` pairs. */
export function parseSaeFlags(values: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq <= 0 || eq === v.length - 1) throw new UsageError(`--sae takes HOOK=PATH, got "${v}"`);
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}

async function main(argv: string[]): Promise<void> {
  const p = parse(argv, {
    model: { type: 'string' },
    input: { type: 'string' },
    hooks: { type: 'string' },
    out: { type: 'string' },
    'text-field': { type: 'string' },
    'max-length': { type: 'string' },
    pool: { type: 'string' },
    'batch-size': { type: 'string' },
    sae: { type: 'string', multiple: true },
  });
  const input = requireString(p, 'input');
  const hooks = stringList(p, 'hooks');
  if (hooks.length === 0) throw new UsageError('--hooks is required');
  const pool = oneOf(p, 'pool', ['none', 'mean'] as const, 'none');
  const textField = optionalString(p, 'text-field') ?? 'text';
  const batchSize = optionalInt(p, 'batch-size') ?? 16;
  const saePaths = parseSaeFlags(stringList(p, 'sae'));
  for (const hook of Object.keys(saePaths)) {
    if (!hooks.includes(hook)) throw new UsageError(`--sae names hook "${hook}", which is not in --hooks`);
  }
  if (!existsSync(input)) throw new Error(`${input}: input file not found`);
  const out = outputPath(p, 'file', [input, optionalString(p, 'model'), ...Object.values(saePaths)]);

  await initEngine();
  const opened = await openModel(requireString(p, 'model'), { maxLength: optionalInt(p, 'max-length') });
  const { model } = opened;
  for (const h of hooks)
    if (!model.hookNames.includes(h))
      throw new Error(`unknown hook "${h}": this model has hooks ${model.hookNames[0]}, ..., ${model.hookNames[model.hookNames.length - 1]}`);
  const saes: Record<string, Sae> = {};
  for (const [hook, path] of Object.entries(saePaths)) {
    const sae = await loadSae(path, { hook });
    checkSaeFitsModel(sae, model, hook);
    saes[hook] = sae;
  }

  const table = await readTable(input);
  if (table.rows.length === 0) throw new Error(`${input}: the input file has no rows`);
  const texts = table.rows.map((row, i) => {
    const t = row[textField];
    if (typeof t !== 'string') throw new Error(`${table.where(i)}: field "${textField}" is ${t === undefined ? 'missing' : `not a string`}`);
    return t;
  });

  const written = computeActivations(texts, hooks, saes, opened, pool, batchSize);
  writeSafetensors(out, written, { model: opened.dir, pool, input });
  process.stderr.write(`wrote ${Object.keys(written).length} tensors for ${texts.length} texts to ${out}\n`);
  model.dispose();
}

/** Elements one output tensor may hold: it is gathered in one Float32Array. */
export const MAX_TENSOR_ELEMENTS = 2 ** 32 - 1;

/**
 * Refuses, before the model runs, an output whose tensors `[n, perText, width]` could not be held:
 * one over `MAX_TENSOR_ELEMENTS`, or all together over `memoryBytes` (default: this machine's
 * memory), naming the sizes and what makes them smaller.
 */
export function checkOutputSize(
  n: number,
  perText: number,
  outputs: readonly { name: string; width: number }[],
  pool: 'none' | 'mean',
  memoryBytes = totalmem(),
): void {
  const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  const hint = pool === 'none' ? '--pool mean (one row per text) or fewer input rows' : 'fewer input rows or hooks';
  let total = 0;
  for (const { name, width } of outputs) {
    const elements = n * perText * width;
    total += 4 * elements;
    if (elements > MAX_TENSOR_ELEMENTS) {
      throw new Error(
        `output tensor "${name}" would hold ${elements} values [${n}, ${perText}, ${width}] (${gib(4 * elements)}), over the ${MAX_TENSOR_ELEMENTS} one tensor can hold here; use ${hint}`,
      );
    }
  }
  if (total > memoryBytes) throw new Error(`the output would take ${gib(total)}, more than this machine's ${gib(memoryBytes)} of memory; use ${hint}`);
}

/** Runs the model batch by batch and gathers each requested output into one F32 array. */
function computeActivations(
  texts: string[],
  hooks: string[],
  saes: Record<string, Sae>,
  opened: OpenedModel,
  pool: 'none' | 'mean',
  batchSize: number,
): Record<string, RawTensor> {
  const { model, tokenizer, maxLength } = opened;
  const n = texts.length;
  // The padded width of the output is the longest tokenised text.
  const seq = maxOf(tokenizer.encodeBatch(texts, { maxLength, truncation: true }).lengths);
  const d = model.config.dModel;
  checkOutputSize(
    n,
    pool === 'none' ? seq : 1,
    hooks.flatMap((h) => {
      const sae = saes[h];
      return sae === undefined
        ? [{ name: h, width: d }]
        : [
            { name: h, width: d },
            { name: `${h}.sae_features`, width: sae.dSae },
            { name: `${h}.sae_error`, width: d },
          ];
    }),
    pool,
  );
  const outputs = new Map<string, { width: number; data: Float32Array }>();
  const output = (name: string, width: number): Float32Array => {
    let o = outputs.get(name);
    if (o === undefined) {
      o = { width, data: new Float32Array(n * (pool === 'none' ? seq : 1) * width) };
      outputs.set(name, o);
    }
    return o.data;
  };
  const mask = pool === 'none' ? new BigInt64Array(n * seq) : undefined;
  const bar = progress('activations', n, 'ex');
  for (let start = 0; start < n; start += batchSize) {
    const batch = opened.tokenize(texts.slice(start, start + batchSize));
    const [rows, len] = batch.inputIds.shape;
    const result = model.run(batch, { capture: hooks });
    tf.tidy(() => {
      const write = (name: string, x: tf.Tensor3D): void => {
        const width = x.shape[2];
        const target = output(name, width);
        if (pool === 'mean') {
          target.set(meanPool(x, batch.attentionMask).dataSync(), start * width);
        } else {
          // Pad positions are zeroed so the output does not depend on how texts were batched.
          const v = tf.mul(x, tf.expandDims(tf.cast(batch.attentionMask, 'float32'), 2)).dataSync();
          // Each row is right-padded to this batch's length; place it in the global width.
          for (let r = 0; r < rows; r++) target.set(v.subarray(r * len * width, (r + 1) * len * width), (start + r) * seq * width);
        }
      };
      for (const hook of hooks) {
        const x = result.captures[hook]!;
        write(hook, x);
        const sae = saes[hook];
        if (sae !== undefined) {
          const flat = tf.reshape(x, [rows * len, d]);
          const f = sae.encode(flat);
          write(`${hook}.sae_features`, tf.reshape(f, [rows, len, sae.dSae]) as tf.Tensor3D);
          write(`${hook}.sae_error`, tf.reshape(tf.sub(flat, sae.decode(f)), [rows, len, d]) as tf.Tensor3D);
        }
      }
      if (mask !== undefined) {
        const m = batch.attentionMask.dataSync();
        for (let r = 0; r < rows; r++) for (let t = 0; t < len; t++) mask[(start + r) * seq + t] = BigInt(m[r * len + t]!);
      }
    });
    tf.dispose([...Object.values(result.captures), batch.inputIds, batch.attentionMask]);
    bar.tick(rows);
  }
  bar.done();
  const tensors: Record<string, RawTensor> = {};
  for (const [name, { width, data }] of outputs) {
    tensors[name] = { dtype: 'F32', shape: pool === 'none' ? [n, seq, width] : [n, width], data };
  }
  if (mask !== undefined) tensors.attention_mask = { dtype: 'I64', shape: [n, seq], data: mask };
  return tensors;
}

export const activationsCommand: Subcommand = { summary: 'Write hook activations (and SAE features) of a model over a JSONL file.', usage, main };
