/**
 * `sae-eraser train-sae`: trains an SAE on a model's hook activations over a text file and saves it
 * in SAELens format (cfg.json + sae_weights.safetensors + metrics.json).
 */
import { trainSae } from '../sae/train.js';
import { engineInfo } from '../engine/engine.js';
import { HistoryWriter, writeRunConfig } from '../io/run-log.js';
import type { CommandResult, Subcommand } from './subcommand.js';
import { UsageError, outputPath, oneOf, optionalInt, optionalNumber, optionalString, parse, requireString } from './args.js';

const usage = `usage: sae-eraser train-sae --model DIR_OR_REPO --hook HOOK --input FILE.jsonl --d-sae N --out DIR
       [--arch relu|topk] [--k K] [--l1 C] [--tokens N] [--held-out FILE.jsonl] [--text-field text]
       [--batch-size 1024] [--lr 1e-3] [--max-length 128] [--seed 42] [--cache-tokens N] [--quiet]

Streams HOOK activations of the model over the texts of FILE (documents shuffled, bounded memory),
trains a ReLU SAE (L2 + L1, dictionary_learning conventions; --l1, default 0.1 on inputs scaled to
mean norm sqrt(d)) or a TopK SAE (--k, default 32) on --tokens tokens (default 2,000,000), writes
periodic checkpoints to DIR/checkpoint (Ctrl-C stops after the current step and checkpoints it; the
same command run again resumes exactly where it stopped), and saves the SAE to DIR in SAELens format
with metrics.json (fraction of variance explained, L0 and dead-feature fraction on --held-out).
--cache-tokens N collects up to N training tokens once (4 x d bytes each) and trains from memory,
which is much faster when --tokens is several passes over the data.`;

async function main(argv: string[]): Promise<CommandResult> {
  const p = parse(argv, {
    model: { type: 'string' },
    hook: { type: 'string' },
    input: { type: 'string' },
    'held-out': { type: 'string' },
    'd-sae': { type: 'string' },
    out: { type: 'string' },
    arch: { type: 'string' },
    k: { type: 'string' },
    l1: { type: 'string' },
    tokens: { type: 'string' },
    'text-field': { type: 'string' },
    'batch-size': { type: 'string' },
    lr: { type: 'string' },
    'max-length': { type: 'string' },
    seed: { type: 'string' },
    'cache-tokens': { type: 'string' },
  });
  const dSae = optionalInt(p, 'd-sae');
  if (dSae === undefined) throw new UsageError('--d-sae is required');
  const arch = oneOf(p, 'arch', ['relu', 'topk'] as const, 'relu');
  const l1 = optionalNumber(p, 'l1');
  if (l1 !== undefined && l1 < 0) throw new UsageError('--l1 must be >= 0');
  const lr = optionalNumber(p, 'lr');
  if (lr !== undefined && lr <= 0) throw new UsageError('--lr must be > 0');
  const out = outputPath(p, 'folder', [optionalString(p, 'input'), optionalString(p, 'held-out'), optionalString(p, 'model')]);
  // Ctrl-C: stop after the current step with a checkpoint (a second Ctrl-C kills as usual).
  const controller = new AbortController();
  const onSigint = (): void => controller.abort('interrupted');
  process.once('SIGINT', onSigint);
  const options = {
    model: requireString(p, 'model'),
    hook: requireString(p, 'hook'),
    input: requireString(p, 'input'),
    heldOut: optionalString(p, 'held-out'),
    out,
    textField: optionalString(p, 'text-field'),
    arch,
    dSae,
    k: optionalInt(p, 'k'),
    l1,
    lr,
    tokens: optionalInt(p, 'tokens') ?? 2_000_000,
    batchSize: optionalInt(p, 'batch-size'),
    maxLength: optionalInt(p, 'max-length'),
    seed: optionalInt(p, 'seed', 0),
    cacheTokens: optionalInt(p, 'cache-tokens'),
    signal: controller.signal,
  };
  // A resumed run (same --out, same settings) continues its history; provenance is of this run.
  const { signal: _signal, ...recorded } = options;
  writeRunConfig(out, recorded, await engineInfo());
  const history = new HistoryWriter(out);
  const { heldOut, result } = await trainSae({
    ...options,
    onStep: ({ step, loss, fve, l0 }) => history.log({ stage: 'sae', step, values: { loss, fve, l0 } }),
  }).finally(() => {
    process.off('SIGINT', onSigint);
    history.close();
  });
  const text =
    `wrote ${out} (${result.steps} steps)\n` +
    (heldOut === undefined
      ? ''
      : `held-out: FVE ${heldOut.fve.toFixed(4)}, L0 ${heldOut.l0.toFixed(1)}, dead features ${(100 * heldOut.deadFraction).toFixed(1)}% (${heldOut.tokens} tokens)\n`);
  return { json: { out, steps: result.steps, resumedFrom: result.resumedFrom, train: result.train, heldOut }, text };
}

export const trainSaeCommand: Subcommand = {
  summary: 'Train an SAE on hook activations of a model (saved in SAELens format).',
  example:
    'sae-eraser train-sae --model .cache/models/all-MiniLM-L6-v2 --hook layers.3.resid_out --input ../shared/data/bias_in_bios/train.jsonl --d-sae 2048 --out runs/sae',
  usage,
  main,
};
