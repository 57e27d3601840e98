/**
 * `sae-eraser mnist`: the MNIST digit erasure experiment (src/mnist/experiment.ts): trains a small
 * CNN, an SAE on its hidden layer, and SAE-feature, neuron and DAS masks that erase chosen digits;
 * writes metrics.json and table.md to the output folder and prints the table.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MNIST_TEST_FILES } from '../data/mnist.js';
import { mnistTable, resolveMnistOptions, runMnistExperiment } from '../mnist/experiment.js';
import { engineInfo } from '../engine/engine.js';
import { HistoryWriter, writeRunConfig } from '../io/run-log.js';
import { MNIST_MASK_METHODS, type MnistMaskMethod, type MnistOptionsInput } from '../mnist/options.js';
import { sharedPath } from '../io/shared.js';
import type { CommandResult, Subcommand } from './subcommand.js';
import { UsageError, optionalInt, optionalString, outputPath, parse, stringList } from './args.js';

const usage = `usage: sae-eraser mnist --out DIR [--data DIR] [--erase 3,4,5,6,7,8,9] [--methods sae_mask,neuron_mask,das_mask]
       [--seed 42] [--cnn-epochs 8] [--sae-epochs 30] [--mask-epochs 20] [--probe-epochs 20]
       [--train-examples N] [--test-examples N] [--quiet]

Splits the 10k MNIST images of --data (default ../shared/data/mnist: t10k-images-idx3-ubyte.gz and
t10k-labels-idx1-ubyte.gz) seeded into 8000 training and 2000 test images, trains a small CNN, a
ReLU SAE on its 128-unit hidden layer, and one learned mask per method over that layer (SAE
features, neurons, or DAS directions) with the CNN's output layer frozen: kept digits keep their
cross-entropy low, erased digits are pushed to uniform predictions (a bounded loss, minimum log 10).
--erase lists the digits to erase (default 3-9, as the original; at least one digit must be kept).
Writes DIR/metrics.json (test_acc of the CNN; per method kept_acc, erased_acc,
erased_recoverability with 95% intervals, and units_removed), DIR/table.md, the CNN, the SAE and
the masks. --train-examples / --test-examples use only the first N images of each split.`;

/** Parses an --erase list: digits 0-9, no repeats, at least one digit erased and one kept. */
export function parseErasedDigits(items: readonly string[]): number[] {
  if (items.length === 0) throw new UsageError('--erase names no digit; give a comma-separated list such as 3,4,5,6,7,8,9');
  const digits: number[] = [];
  for (const item of items) {
    if (!/^\d$/.test(item)) throw new UsageError(`--erase: "${item}" is not a digit 0-9`);
    const d = Number(item);
    if (digits.includes(d)) throw new UsageError(`--erase lists digit ${d} twice`);
    digits.push(d);
  }
  if (digits.length === 10) throw new UsageError('--erase lists all ten digits; at least one digit must be kept');
  return digits;
}

function parseMethods(items: readonly string[]): MnistMaskMethod[] | undefined {
  if (items.length === 0) return undefined;
  const methods: MnistMaskMethod[] = [];
  for (const item of items) {
    if (!(MNIST_MASK_METHODS as readonly string[]).includes(item)) throw new UsageError(`--methods: "${item}" is not one of ${MNIST_MASK_METHODS.join(', ')}`);
    if (methods.includes(item as MnistMaskMethod)) throw new UsageError(`--methods lists ${item} twice`);
    methods.push(item as MnistMaskMethod);
  }
  return methods;
}

async function main(argv: string[]): Promise<CommandResult> {
  const p = parse(argv, {
    data: { type: 'string' },
    out: { type: 'string' },
    erase: { type: 'string', multiple: true },
    methods: { type: 'string', multiple: true },
    seed: { type: 'string' },
    'cnn-epochs': { type: 'string' },
    'sae-epochs': { type: 'string' },
    'mask-epochs': { type: 'string' },
    'probe-epochs': { type: 'string' },
    'train-examples': { type: 'string' },
    'test-examples': { type: 'string' },
  });
  const erase = p.values.erase === undefined ? undefined : parseErasedDigits(stringList(p, 'erase'));
  const methods = parseMethods(stringList(p, 'methods'));
  const data = optionalString(p, 'data') ?? sharedPath('data', 'mnist');
  if (data === undefined) throw new UsageError('--data is required: ../shared/data/mnist (the default) is absent');
  // Checked before the output folder is made; the files' contents are checked when they are read.
  for (const file of MNIST_TEST_FILES) if (!existsSync(join(data, file))) throw new Error(`--data ${data}: ${file} is missing`);
  const options: MnistOptionsInput = {
    data,
    erase,
    methods,
    seed: optionalInt(p, 'seed', 0),
    trainExamples: optionalInt(p, 'train-examples'),
    testExamples: optionalInt(p, 'test-examples'),
    cnn: { epochs: optionalInt(p, 'cnn-epochs') },
    sae: { epochs: optionalInt(p, 'sae-epochs') },
    mask: { epochs: optionalInt(p, 'mask-epochs') },
    probe: { epochs: optionalInt(p, 'probe-epochs') },
  };
  const resolved = resolveMnistOptions(options);
  const out = outputPath(p, 'folder', [data]);
  writeRunConfig(out, resolved, await engineInfo());
  const history = new HistoryWriter(out, true);
  let metrics;
  try {
    metrics = await runMnistExperiment(resolved, out, history.log);
  } finally {
    history.close();
  }
  return { json: { out, ...metrics }, text: `${mnistTable(metrics)}\nwrote ${out}/metrics.json (${metrics.seconds.total} s)\n` };
}

export const mnistCommand: Subcommand = {
  summary: 'MNIST digit erasure: a CNN, an SAE on its hidden layer, and SAE / neuron / DAS masks that erase chosen digits.',
  example: 'sae-eraser mnist --out runs/mnist --erase 3,4,5,6,7,8,9',
  usage,
  main,
};
