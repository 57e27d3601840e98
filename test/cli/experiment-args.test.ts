/** The helpers `sae-eraser run` and `budget` share (src/cli/experiment-args.ts): the inputs --out may not be, and --seeds. */
import { describe, expect, it } from 'vitest';
import { join, resolve } from 'node:path';
import { experimentInputs, seedsOption } from '../../src/cli/experiment-args.js';
import { parse, UsageError } from '../../src/cli/args.js';
import type { ExperimentConfig } from '../../src/experiment/config.js';

const config = (saes: Record<string, string>): ExperimentConfig =>
  ({
    model: 'models/m',
    cacheDir: '.cache/activations',
    dataset: { train: 'data/train.jsonl', test: 'hf://datasets/o/n/test.jsonl' },
    saes: Object.fromEntries(Object.entries(saes).map(([k, path]) => [k, { path }])),
  }) as unknown as ExperimentConfig;

describe('experimentInputs', () => {
  it('lists the local inputs; a {hook} path protects its folder, and an --out it makes', () => {
    const c = config({ 'layers.3.resid_out': 'saes/fixed', 'layers.*.mlp_out': 'saes/mlp/{hook}/sae' });
    expect(experimentInputs('c.json', c, 'runs/x')).toEqual([
      'c.json',
      'data/train.jsonl',
      'models/m',
      '.cache/activations',
      'saes/fixed',
      resolve('saes/mlp'),
    ]);
    const made = join('saes', 'mlp', 'layers.2.mlp_out', 'sae');
    expect(experimentInputs('c.json', c, made)).toContain(made);
    // Another depth or another folder is no path the pattern makes.
    for (const other of [join('saes', 'mlp', 'a', 'b', 'sae'), join('saes', 'other', 'layers.2.mlp_out', 'sae'), join('saes', 'mlp', 'layers.2.mlp_out')])
      expect(experimentInputs('c.json', c, other), other).not.toContain(other);
  });
});

describe('seedsOption', () => {
  it('reads integers, is undefined when absent and refuses anything else', () => {
    const opts = { seeds: { type: 'string' } } as const;
    expect(seedsOption(parse(['--seeds', '1,2, 3'], opts))).toEqual([1, 2, 3]);
    expect(seedsOption(parse([], opts))).toBeUndefined();
    expect(() => seedsOption(parse(['--seeds', '1,x'], opts))).toThrow(UsageError);
  });
});
