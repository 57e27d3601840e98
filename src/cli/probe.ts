/**
 * `sae-eraser probe`: train a linear probe on mean-pooled activations at one hook and score it.
 */
import { join } from 'node:path';
import { initEngine, tf } from '../engine/engine.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { buildActivationCache, weightsId } from '../cache/cache.js';
import { buildSplits, loadBiasInBios, type SplitExample } from '../data/bias-in-bios.js';
import { openModel } from '../models/open.js';
import { LinearProbe } from '../probe/linear.js';
import { accuracy, genderAgreement, worstGroup } from '../eval/metrics.js';
import type { CommandResult, Subcommand } from './subcommand.js';
import { UsageError, outputPath, oneOf, optionalInt, optionalString, parse, requireString, stringList } from './args.js';

const usage = `usage: sae-eraser probe --model M --hook H --train FILE --test FILE --label profession|gender
       --split ambiguous|balanced --out DIR [--professions P0,P1] [--text-field F] [--max-length N]
       [--epochs N|converge] [--seed N] [--cache-dir DIR] [--quiet]

Trains the paper's logistic-regression probe (BCE, AdamW lr 1e-2, batch 128) on the mean-pooled
activations at hook H of the chosen train split, and scores it on the test file's balanced split
and its four subgroups. Writes DIR/probe.safetensors and DIR/metrics.json (with the epochs and
optimizer steps taken). --epochs defaults to "converge": train until the epoch loss stops
improving (at most 1000 epochs); the paper trained --epochs 1, a handful of steps on small splits.
Professions default to professor,nurse (LabHC/bias_in_bios codes 21 and 13 also work).`;

async function main(argv: string[]): Promise<CommandResult> {
  const p = parse(argv, {
    model: { type: 'string' },
    hook: { type: 'string' },
    train: { type: 'string' },
    test: { type: 'string' },
    label: { type: 'string' },
    split: { type: 'string' },
    out: { type: 'string' },
    professions: { type: 'string' },
    'text-field': { type: 'string' },
    'max-length': { type: 'string' },
    epochs: { type: 'string' },
    seed: { type: 'string' },
    'cache-dir': { type: 'string' },
  });
  const hook = requireString(p, 'hook');
  const label = oneOf(p, 'label', ['profession', 'gender'] as const, 'profession');
  const splitName = oneOf(p, 'split', ['ambiguous', 'balanced'] as const, 'ambiguous');
  const out = outputPath(p, 'folder', [optionalString(p, 'train'), optionalString(p, 'test'), optionalString(p, 'model')]);
  const pair = stringList(p, 'professions');
  if (pair.length !== 0 && pair.length !== 2) throw new UsageError('--professions takes two names or codes, e.g. surgeon,nurse');
  const professions = pair.length === 2 ? (pair.map((x) => (/^\d+$/.test(x) ? Number(x) : x)) as [string | number, string | number]) : undefined;
  const seed = optionalInt(p, 'seed', 0) ?? 42;
  const textField = optionalString(p, 'text-field');
  const fields = textField === undefined ? undefined : { text: textField };

  await initEngine();
  const train = buildSplits(await loadBiasInBios(requireString(p, 'train'), { fields }), { professions });
  const test = buildSplits(await loadBiasInBios(requireString(p, 'test'), { fields }), { professions });
  const opened = await openModel(requireString(p, 'model'), { maxLength: optionalInt(p, 'max-length') });
  if (!opened.model.hookNames.includes(hook)) throw new Error(`unknown hook "${hook}" for model ${opened.dir}`);

  const trainSplit = train[splitName];
  const testGroups = test.subgroups;
  const texts = [...new Set([...trainSplit, ...test.balanced, ...Object.values(testGroups).flat()].map((e) => e.text))];
  const cache = await buildActivationCache(
    { modelId: weightsId(opened.dir), hooks: [hook], tokenizerId: `${opened.tokenizer.path}:${opened.maxLength}`, texts },
    { model: opened.model, tokenize: opened.tokenize, root: optionalString(p, 'cache-dir') ?? '.cache/activations' },
  );
  const rowOf = new Map(texts.map((t, i) => [t, i]));
  const rows = (split: readonly SplitExample[]): Int32Array => Int32Array.from(split, (e) => rowOf.get(e.text)!);
  const target = (split: readonly SplitExample[]): Int32Array => Int32Array.from(split, (e) => (label === 'profession' ? e.y : e.z));

  const epochsFlag = optionalString(p, 'epochs');
  const epochs = epochsFlag === undefined || epochsFlag === 'converge' ? 'converge' : Number(epochsFlag);
  if (epochs !== 'converge' && (!Number.isInteger(epochs) || epochs < 1))
    throw new UsageError(`--epochs takes a positive integer or "converge", got "${epochsFlag}"`);
  const probe = new LinearProbe(cache.dim(hook), 2, { seed, epochs });
  const X = cache.pooled(hook, rows(trainSplit));
  const fit = probe.fit(X, target(trainSplit));
  X.dispose();
  const Xt = cache.pooled(hook, rows(test.balanced));
  const pred = probe.predict(Xt);
  Xt.dispose();
  const groups = Object.fromEntries(
    Object.entries(testGroups).map(([k, g]) => {
      const Xg = cache.pooled(hook, rows(g));
      const y = target(g);
      const r = { pred: probe.predict(Xg), y };
      Xg.dispose();
      return [k, r];
    }),
  );
  const subgroup = Object.fromEntries(Object.entries(groups).map(([k, g]) => [k, accuracy(g.pred, g.y)]));
  const metrics = {
    model: opened.dir,
    hook,
    label,
    train_split: splitName,
    professions: train.professions,
    n_train: trainSplit.length,
    epochs: fit.epochs,
    steps: fit.steps,
    n_test: test.balanced.length,
    accuracy: accuracy(pred, target(test.balanced)),
    gender_agreement:
      label === 'profession'
        ? genderAgreement(
            pred,
            Int32Array.from(test.balanced, (e) => e.z),
          )
        : undefined,
    subgroup_acc: subgroup,
    worst_group_acc: worstGroup(subgroup),
  };
  probe.save(join(out, 'probe.safetensors'));
  writeJsonAtomic(join(out, 'metrics.json'), metrics);
  probe.dispose();
  opened.model.dispose();
  tf.disposeVariables();
  return {
    json: { out, ...metrics },
    text:
      `${JSON.stringify({ accuracy: metrics.accuracy, gender_agreement: metrics.gender_agreement, worst_group_acc: metrics.worst_group_acc }, null, 2)}\n` +
      `trained ${fit.epochs} epoch(s), ${fit.steps} optimizer steps on ${trainSplit.length} rows\nwrote ${out}/probe.safetensors and ${out}/metrics.json\n`,
  };
}

export const probeCommand: Subcommand = {
  summary: 'Train and score a linear probe on pooled activations at one hook.',
  example:
    'sae-eraser probe --model .cache/models/all-MiniLM-L6-v2 --hook layers.3.resid_out --train ../shared/data/bias_in_bios/train.jsonl --test ../shared/data/bias_in_bios/validate.jsonl --professions surgeon,nurse --label profession --split balanced --out runs/probe',
  usage,
  main,
};
