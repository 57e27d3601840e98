/**
 * `sae-eraser activations`: hook activations of a model over a JSONL file, as one safetensors file.
 *
 * Memory stays bounded by one batch however long the input is: a first pass reads the input row by
 * row, checks it and measures each text's token count (4 bytes a row are kept), which fixes the
 * output's shapes; the file's header is then written, and a second pass runs the model batch by
 * batch and writes each batch's rows straight to their place in the file (io/safetensors-stream.ts).
 */
import { existsSync, statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import { tf, initEngine } from '../engine/engine.js';
import { SafetensorsStreamWriter, safetensorsLayout, type TensorPlan } from '../io/safetensors-stream.js';
import { streamTable, type RowStream, type StreamedRow } from '../io/tabular.js';
import { openModel, type OpenedModel } from '../models/open.js';
import { createCollector, type BatchValues } from '../cache/collect.js';
import { loadSae } from '../sae/load.js';
import { checkSaeFitsModel } from '../sae/hook-names.js';
import type { Sae } from '../sae/sae.js';
import { progress } from '../util/progress.js';
import type { CommandResult, Subcommand } from './subcommand.js';
import { UsageError, outputPath, oneOf, optionalInt, optionalString, parse, requireString, stringList } from './args.js';
import { maxOf } from '../util/arrays.js';

const usage = `usage: sae-eraser activations --model DIR_OR_REPO --input FILE.jsonl --hooks H1,H2 --out FILE.safetensors
       [--text-field text] [--max-length N] [--pool none|mean] [--batch-size N] [--sae HOOK=PATH ...] [--quiet]

Runs the model over the texts of FILE.jsonl (one JSON object per line) and writes one F32 tensor per
hook, named by the hook: [n, seq, d] right-padded plus "attention_mask" [n, seq] for --pool none
(default), or [n, d] (mean over non-pad tokens) for --pool mean. Each --sae HOOK=PATH adds
HOOK.sae_features ([n, seq, dSae] or [n, dSae]) and HOOK.sae_error ([n, seq, d] or [n, d]).
Hooks: embed, layers.{i}.attn_out, layers.{i}.mlp_out, layers.{i}.resid_out.
The input is read twice (to size the output, then to run the model), never held; .csv and
.parquet inputs work too. The output is written as it is computed, and refused up front when it
would not fit in the free space of its folder.`;

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

async function main(argv: string[]): Promise<CommandResult> {
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
  const saes: Record<string, Sae> = {};
  try {
    for (const h of hooks)
      if (!model.hookNames.includes(h))
        throw new Error(`unknown hook "${h}": this model has hooks ${model.hookNames[0]}, ..., ${model.hookNames[model.hookNames.length - 1]}`);
    for (const [hook, path] of Object.entries(saePaths)) {
      const sae = await loadSae(path, { hook });
      saes[hook] = sae;
      checkSaeFitsModel(sae, model, hook);
    }
    const rows = streamTable(input);
    const plan = await planOutput(rows, textField, hooks, saes, opened, pool);
    checkOutputSize(plan.tensors, pool, freeBytes(dirname(out)));
    const writer = SafetensorsStreamWriter.create(out, plan.tensors, { model: opened.dir, pool, input });
    try {
      await computeActivations(rows, textField, hooks, saes, opened, pool, batchSize, plan, writer);
      writer.finish();
    } catch (err) {
      writer.abort();
      throw err;
    }
    return {
      json: { out, rows: plan.n, tensors: Object.fromEntries(Object.entries(plan.tensors).map(([name, t]) => [name, t.shape])) },
      text: `wrote ${Object.keys(plan.tensors).length} tensors for ${plan.n} texts to ${out}\n`,
    };
  } finally {
    for (const sae of Object.values(saes)) sae.dispose();
    model.dispose();
  }
}

/** The text of a streamed row, or an error naming its line and the field. */
function textOf({ row, position }: StreamedRow, rows: RowStream, textField: string): string {
  const t = row[textField];
  if (typeof t !== 'string') throw new Error(`${rows.where(position)}: field "${textField}" is ${t === undefined ? 'missing' : 'not a string'}`);
  return t;
}

/** What the first pass over the input finds: the row count, each row's token count (--pool none) and the output tensors. */
interface OutputPlan {
  n: number;
  /** Padded width of --pool none outputs: the longest tokenised text (1 for --pool mean). */
  seq: number;
  /** Token count of each row, for --pool none; the second pass checks the input still matches. */
  lengths: Int32Array | undefined;
  tensors: Record<string, TensorPlan>;
}

/** Texts tokenised at once in the first pass (only their lengths are kept). */
const SCAN_BATCH = 256;

/**
 * First pass over the input, before any model work: checks every row's text field, counts the rows
 * and, for --pool none, records each row's token count (the output's padded width is the longest).
 * Holds one scan batch of texts and the lengths, 4 bytes a row.
 */
async function planOutput(
  rows: RowStream,
  textField: string,
  hooks: readonly string[],
  saes: Readonly<Record<string, Sae>>,
  opened: OpenedModel,
  pool: 'none' | 'mean',
): Promise<OutputPlan> {
  const { tokenizer, maxLength } = opened;
  let lengths = pool === 'none' ? new Int32Array(1024) : undefined;
  let n = 0;
  let seq = 0;
  let texts: string[] = [];
  const measure = (): void => {
    if (lengths === undefined || texts.length === 0) return;
    if (n > lengths.length) {
      const grown = new Int32Array(Math.max(2 * lengths.length, n));
      grown.set(lengths);
      lengths = grown;
    }
    const measured = tokenizer.encodeBatch(texts, { maxLength, truncation: true }).lengths;
    lengths.set(measured, n - texts.length);
    seq = Math.max(seq, maxOf(measured));
    texts = [];
  };
  const bar = progress('reading input', 0, 'rows');
  for await (const r of rows) {
    const text = textOf(r, rows, textField);
    n++;
    if (lengths !== undefined) {
      texts.push(text);
      if (texts.length === SCAN_BATCH) measure();
    }
    bar.tick();
  }
  measure();
  bar.done();
  if (n === 0) throw new Error(`${rows.source}: the input file has no rows`);
  const d = opened.model.config.dModel;
  const shape = (width: number): number[] => (pool === 'none' ? [n, seq, width] : [n, width]);
  const tensors: Record<string, TensorPlan> = {};
  for (const hook of hooks) {
    tensors[hook] = { dtype: 'F32', shape: shape(d) };
    const sae = saes[hook];
    if (sae !== undefined) {
      tensors[`${hook}.sae_features`] = { dtype: 'F32', shape: shape(sae.dSae) };
      tensors[`${hook}.sae_error`] = { dtype: 'F32', shape: shape(d) };
    }
  }
  if (pool === 'none') tensors.attention_mask = { dtype: 'I64', shape: [n, seq] };
  return { n, seq: pool === 'none' ? seq : 1, lengths: lengths?.subarray(0, n), tensors };
}

/** Bytes free for this user in `folder`'s file system. */
function freeBytes(folder: string): { bytes: number; folder: string } {
  const s = statfsSync(folder);
  return { bytes: s.bavail * s.bsize, folder };
}

/**
 * Refuses, before the model runs, an output that would not fit in the free space of its folder,
 * naming its size, its largest tensor and what makes it smaller. Tensors of any size are written
 * (in pieces), so space on disk is the one limit.
 *
 * @param tensors the output's tensors (dtype and shape)
 * @param pool the --pool mode, for the hint
 * @param free bytes free in the output's folder, and that folder
 */
export function checkOutputSize(tensors: Readonly<Record<string, TensorPlan>>, pool: 'none' | 'mean', free: { bytes: number; folder: string }): void {
  const { size, places } = safetensorsLayout(tensors);
  if (size <= free.bytes) return;
  const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  const hint = pool === 'none' ? '--pool mean (one row per text) or fewer input rows' : 'fewer input rows or hooks';
  let largest = '';
  let largestBytes = -1;
  for (const [name, { rows, rowBytes }] of places) {
    if (rows * rowBytes > largestBytes) {
      largestBytes = rows * rowBytes;
      largest = `"${name}" [${tensors[name]!.shape.join(', ')}] (${gib(largestBytes)})`;
    }
  }
  throw new Error(`the output would take ${gib(size)}, largest tensor ${largest}, more than the ${gib(free.bytes)} free in ${free.folder}; use ${hint}`);
}

/**
 * Second pass: runs the model batch by batch and writes each batch's rows of every output straight
 * to its place in the file; nothing outlives its batch. Fails if the input changed since the first pass.
 */
async function computeActivations(
  rows: RowStream,
  textField: string,
  hooks: readonly string[],
  saes: Readonly<Record<string, Sae>>,
  opened: OpenedModel,
  pool: 'none' | 'mean',
  batchSize: number,
  plan: OutputPlan,
  writer: SafetensorsStreamWriter,
): Promise<void> {
  const { model, tokenizer, maxLength } = opened;
  const { n, seq, lengths } = plan;
  const d = model.config.dModel;
  const changed = (what: string): Error =>
    new Error(`${rows.source}: the input changed while it was being read (${what}); run again on a file that is not being written`);
  const bar = progress('activations', n, 'ex');
  const collector = await createCollector(model, { hooks, saes, perToken: pool === 'none' });
  const runBatch = async (texts: string[], start: number): Promise<void> => {
    const encoded = tokenizer.encodeBatch(texts, { maxLength, truncation: true, padding: 'right' });
    if (lengths !== undefined) {
      encoded.lengths.forEach((len, r) => {
        if (len !== lengths[start + r]) throw changed(`row ${start + r} now has ${len} tokens, not ${lengths[start + r]}`);
      });
    }
    const batch = tokenizer.toBatch(encoded);
    const [count, len] = batch.inputIds.shape;
    let values: BatchValues;
    try {
      values = await collector.values(batch);
    } finally {
      tf.dispose([batch.inputIds, batch.attentionMask]);
    }
    const write = (name: string, pooled: Float32Array | undefined, tokens: Float32Array | undefined, width: number): void => {
      if (pool === 'mean') {
        writer.writeRows(name, start, pooled!);
        return;
      }
      // Each row is right-padded to this batch's length: place its real tokens in the output's
      // width and leave pad positions zero, so the output does not depend on how texts were batched.
      const padded = new Float32Array(count * seq * width);
      for (let r = 0; r < count; r++) padded.set(tokens!.subarray(r * len * width, (r * len + encoded.lengths[r]!) * width), r * seq * width);
      writer.writeRows(name, start, padded);
    };
    for (const hook of hooks) {
      write(hook, values.pooled.get(hook), values.tokenActs.get(hook), d);
      const sae = saes[hook];
      if (sae === undefined) continue;
      write(`${hook}.sae_features`, values.codesPooled.get(hook), values.tokenCodes.get(hook), sae.dSae);
      write(`${hook}.sae_error`, values.errorPooled.get(hook), values.tokenErrors.get(hook), d);
    }
    if (pool === 'none') {
      const mask = new BigInt64Array(count * seq);
      for (let r = 0; r < count; r++) mask.fill(1n, r * seq, r * seq + encoded.lengths[r]!);
      writer.writeRows('attention_mask', start, mask);
    }
    bar.tick(count);
  };
  /** Reads the rows again, in batches of `batchSize`. */
  async function collectRows(): Promise<void> {
    let start = 0;
    let texts: string[] = [];
    for await (const r of rows) {
      if (start + texts.length >= n) throw changed(`it has more than the ${n} rows first read`);
      texts.push(textOf(r, rows, textField));
      if (texts.length === batchSize) {
        await runBatch(texts, start);
        start += texts.length;
        texts = [];
      }
    }
    if (texts.length > 0) {
      await runBatch(texts, start);
      start += texts.length;
    }
    if (start !== n) throw changed(`it has ${start} rows, not the ${n} first read`);
  }
  try {
    await collectRows();
  } finally {
    await collector.dispose();
  }
  bar.done();
}

export const activationsCommand: Subcommand = {
  summary: 'Write hook activations (and SAE features) of a model over a JSONL, CSV or parquet file, streamed into one safetensors file.',
  example:
    'sae-eraser activations --model .cache/models/all-MiniLM-L6-v2 --input ../shared/data/bias_in_bios/validate.jsonl --hooks layers.3.resid_out --pool mean --out runs/acts.safetensors',
  usage,
  main,
};
