import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../../src/engine/engine.js';
import { cli } from '../../src/cli/main.js';
import { quietly } from './stderr.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { projectRoot } from '../../src/io/shared.js';
import { biosSubset, SHARED_BIOS } from './bios-subset.js';
import { skipWithout } from '../require.js';

const bios = SHARED_BIOS;
const model = join(projectRoot(), '.cache/models/all-MiniLM-L6-v2');

describe.skipIf(skipWithout(bios === undefined, 'the probe CLI test needs ../shared (set SAE_ERASER_SHARED)'))('sae-eraser probe', () => {
  const dir = mkdtempSync(join(tmpdir(), 'probe-cli-'));
  beforeAll(async () => {
    await initEngine();
    writeFileSync(join(dir, 'train.jsonl'), biosSubset(12, 0));
    writeFileSync(join(dir, 'test.jsonl'), biosSubset(6, 20));
  });

  it('writes probe.safetensors and metrics.json with accuracy, gender agreement and subgroups', async () => {
    const out = join(dir, 'out');
    const args = [
      'probe',
      '--model',
      model,
      '--hook',
      'layers.2.resid_out',
      '--train',
      join(dir, 'train.jsonl'),
      '--test',
      join(dir, 'test.jsonl'),
      '--label',
      'profession',
      '--split',
      'balanced',
      '--professions',
      'surgeon,nurse',
      '--epochs',
      '20',
      '--max-length',
      '48',
      '--cache-dir',
      join(dir, 'cache'),
      '--out',
      out,
      '--quiet',
    ];
    expect((await quietly(() => cli(args))).code).toBe(0);
    expect(existsSync(join(out, 'probe.safetensors'))).toBe(true);
    const m = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as Record<string, { value: number; n: number }> & {
      n_train: number;
      subgroup_acc: Record<string, { n: number }>;
    };
    expect(m.n_train).toBe(4 * 12);
    expect(m.accuracy!.n).toBe(4 * 6);
    expect(m.accuracy!.value).toBeGreaterThan(0.6);
    expect(Object.keys(m.subgroup_acc).sort()).toEqual(['female_nurse', 'female_surgeon', 'male_nurse', 'male_surgeon']);
    const probe = LinearProbe.load(join(out, 'probe.safetensors'));
    expect(probe.dIn).toBe(384);
    probe.dispose();
  });

  it('trains to convergence by default and says how many epochs and steps it took; --epochs takes a count or "converge"', async () => {
    const out = join(dir, 'default');
    const base = ['probe', '--model', model, '--hook', 'layers.2.resid_out', '--train', join(dir, 'train.jsonl'), '--test', join(dir, 'test.jsonl')];
    const common = ['--label', 'profession', '--split', 'balanced', '--professions', 'surgeon,nurse', '--max-length', '48', '--cache-dir', join(dir, 'cache')];
    expect((await quietly(() => cli([...base, ...common, '--out', out, '--quiet']))).code).toBe(0);
    const m = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as { epochs: number; steps: number; n_train: number };
    // 48 rows in one batch of 128: one step per epoch; the paper's single epoch would be one step.
    expect(m.epochs).toBeGreaterThan(5);
    expect(m.steps).toBe(m.epochs);
    const bad = await quietly(() => cli([...base, ...common, '--out', join(dir, 'bad-epochs'), '--epochs', 'forever', '--quiet']));
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--epochs takes a positive integer or "converge", got "forever"/);
  });

  it('names the file and field for bad labels and an absent profession', async () => {
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"text": "a bio", "profession": "surgeon"}\n');
    const base = ['probe', '--model', model, '--hook', 'layers.2.resid_out', '--test', join(dir, 'test.jsonl'), '--out', join(dir, 'x'), '--quiet'];
    const r1 = await quietly(() => cli([...base, '--train', bad, '--professions', 'surgeon,nurse']));
    expect(r1.code).toBe(1);
    expect(r1.stderr).toMatch(/bad\.jsonl.*gender/);
    const r2 = await quietly(() => cli([...base, '--train', join(dir, 'train.jsonl'), '--professions', 'surgeon,astronaut']));
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/train\.jsonl.*astronaut/);
  });
});
