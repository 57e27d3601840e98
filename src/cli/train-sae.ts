/**
 * `sae-eraser train-sae`: trains an SAE on a model's hook activations over a text file and saves it
 * in SAELens format (cfg.json + sae_weights.safetensors + metrics.json); with several hooks (a list
 * or patterns), one SAE per hook from one activation pass, each in its own subfolder.
 */
import { trainSae, trainSaes, type TrainedSae } from '../sae/train.js';
import { checkHookPattern, isHookPattern } from '../sae/hook-patterns.js';
import { engineInfo } from '../engine/engine.js';
import { HistoryWriter, writeRunConfig } from '../io/run-log.js';
import type { CommandResult, Subcommand } from './subcommand.js';
import { UsageError, outputPath, oneOf, optionalInt, optionalNumber, optionalString, parse, requireString } from './args.js';

const usage = `usage: sae-eraser train-sae --model DIR_OR_REPO --hook HOOK[,HOOK...] --input FILE.jsonl --d-sae N --out DIR
       [--arch relu|topk] [--k K] [--l1 C] [--tokens N] [--held-out FILE.jsonl] [--text-field text]
       [--batch-size 1024] [--lr 1e-3] [--max-length 128] [--seed 42] [--cache-tokens N] [--quiet]

Runs the model once over the texts of FILE (documents shuffled) capturing HOOK, spills its
activations to a file under DIR (4 x d bytes a token, deleted when done; at most the tokens training
reads, or --cache-tokens N), trains a ReLU SAE (L2 + L1, dictionary_learning conventions; --l1,
default 0.1 on inputs scaled to mean norm sqrt(d)) or a TopK SAE (--k, default 32) on --tokens tokens
(default 2,000,000) read back from it, writes periodic checkpoints to DIR/checkpoint (Ctrl-C stops
after the current step and checkpoints it; the same command run again resumes exactly where it
stopped), and saves the SAE to DIR in SAELens format with metrics.json (fraction of variance
explained, L0 and dead-feature fraction on --held-out).

Several hooks: --hook takes a comma-separated list of hook names and patterns, * standing for any
characters (e.g. 'layers.*.resid_out,embed'). The one pass captures every hook, each spilled to its
own file, then one SAE trains per hook, in forward order, each with the same options, into
DIR/<hook>/ (its checkpoint in DIR/<hook>/checkpoint, so a stopped run resumes at the hook it was
training). Disk: 4 x d bytes per token and hook until that hook's SAE is trained.`;

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
  const hooks = requireString(p, 'hook')
    .split(',')
    .map((h) => h.trim());
  for (const h of hooks) {
    if (h === '') throw new UsageError('--hook: an empty hook name in the list');
    checkHookPattern(h, '--hook');
  }
  // One plain hook name: the SAE goes to DIR itself; a list or a pattern: one subfolder per hook.
  const single = hooks.length === 1 && !isHookPattern(hooks[0]!) ? hooks[0]! : undefined;
  // Ctrl-C: stop after the current step with a checkpoint (a second Ctrl-C kills as usual).
  const controller = new AbortController();
  const onSigint = (): void => controller.abort('interrupted');
  process.once('SIGINT', onSigint);
  const options = {
    model: requireString(p, 'model'),
    hook: hooks.join(','),
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
  const { hook: _hook, ...common } = options;
  type Summary = { json: Record<string, unknown>; text: string };
  const summary = (t: TrainedSae): Summary => ({
    json: { out: t.out, steps: t.result.steps, resumedFrom: t.result.resumedFrom, train: t.result.train, heldOut: t.heldOut },
    text:
      `wrote ${t.out} (${t.result.steps} steps)\n` +
      (t.heldOut === undefined
        ? ''
        : `held-out: FVE ${t.heldOut.fve.toFixed(4)}, L0 ${t.heldOut.l0.toFixed(1)}, dead features ${(100 * t.heldOut.deadFraction).toFixed(1)}% (${t.heldOut.tokens} tokens)\n`),
  });
  // Only the summaries are needed: each SAE is freed as soon as it is saved.
  const summaries: Record<string, Summary> = {};
  const keep = (hook: string, t: TrainedSae): void => {
    t.sae.dispose();
    summaries[hook] = summary(t);
  };
  await (
    single !== undefined
      ? trainSae({ ...common, hook: single, onStep: ({ step, loss, fve, l0 }) => history.log({ stage: 'sae', step, values: { loss, fve, l0 } }) }).then((t) =>
          keep(single, t),
        )
      : trainSaes({ ...common, hooks, onStep: ({ hook, step, loss, fve, l0 }) => history.log({ stage: `sae ${hook}`, step, values: { loss, fve, l0 } }) }, keep)
  ).finally(() => {
    process.off('SIGINT', onSigint);
    history.close();
  });
  if (single !== undefined) return summaries[single]!;
  const parts = Object.entries(summaries);
  return { json: { out, saes: Object.fromEntries(parts.map(([hook, s]) => [hook, s.json])) }, text: parts.map(([, s]) => s.text).join('') };
}

export const trainSaeCommand: Subcommand = {
  summary: 'Train an SAE on hook activations of a model (saved in SAELens format).',
  example:
    'sae-eraser train-sae --model .cache/models/all-MiniLM-L6-v2 --hook layers.3.resid_out --input ../shared/data/bias_in_bios/train.jsonl --d-sae 2048 --out runs/sae',
  usage,
  main,
};
