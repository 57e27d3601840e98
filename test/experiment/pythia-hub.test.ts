/**
 * The original setup end to end without the internet: the shipped configs/pythia70m-professor-nurse.json
 * run through the CLI against the local hub test server (test/io/hub-server.ts), which serves
 *  - EleutherAI/pythia-70m-deduped: a random checkpoint at the exact Pythia-70m-deduped shape, written
 *    by transformers (test/reference/models_reference.py, the parity tests' "pythia" suite), with the
 *    GPT-NeoX tokenizer from ../shared;
 *  - datasets/LabHC/bias_in_bios: synthetic bios in the LabHC format under the real file names,
 *    written by the datasets library (test/reference/pythia_hub_reference.py);
 *  - saprmarks/pythia-70m-deduped-saes: a Sparse Feature Circuits zip of real ae.pt files written by
 *    torch.save from dictionary_learning AutoEncoders (64 features each instead of 32768).
 * Sizes are cut with --seeds and --set, leaving the shipped file as a user runs it. A second run, with
 * the server stopped, HF_HUB_OFFLINE=1 and the extracted SAEs and activation cache deleted, must
 * rebuild everything from the hub cache alone and score every method exactly as the first did.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from '../../src/cli/main.js';
import { readExperimentConfig } from '../../src/experiment/config.js';
import type { ExperimentResult } from '../../src/experiment/results.js';
import { projectRoot, sharedPath } from '../../src/io/shared.js';
import { FakeHub, fakeCommit, useHubEnv, type FakeFile } from '../io/hub-server.js';
import { runPythonReference } from '../reference/python.js';
import { skipWithout } from '../require.js';
import { quietly } from '../cli/stderr.js';

const CONFIG = join(projectRoot(), 'configs', 'pythia70m-professor-nurse.json');
const tokenizerPath = sharedPath('data', 'tokenizers', 'gpt-neox-20b', 'tokenizer.json');
const python = join(projectRoot(), '.venv-ref', 'bin', 'python');

/** The real file names of LabHC/bias_in_bios (its data/ folder on the hub). */
const BIOS_FILES = {
  train: 'data/train-00000-of-00001-0ab65b32c47407e8.parquet',
  test: 'data/test-00000-of-00001-5598c840ce8de1ee.parquet',
  dev: 'data/dev-00000-of-00001-e6551072fff26949.parquet',
};

/** Small enough for CI: a few dozen bios through a 70M-parameter model, few optimiser steps per method. */
const QUICK = [
  '--seeds',
  '42',
  '--set',
  'dataset.limits={"ambiguous": 24, "balanced": 16, "concept": 24, "testBalanced": 16, "testSubgroup": 6}',
  '--set',
  'batchSize=16',
  '--set',
  'methods.sae_mask.epochs=2',
  '--set',
  'methods.neuron_mask.epochs=2',
  '--set',
  'methods.das_mask.epochs=1',
  // First-order attribution on 8 bios: integrated gradients would take 10 passes per hook (16 hooks).
  '--set',
  'methods.shift={"attribution": "atp", "attributionExamples": 8}',
  '--set',
  'methods.shift_retrain={"attribution": "atp", "attributionExamples": 8}',
  '--set',
  'methods.random={"attribution": "atp", "attributionExamples": 8}',
];

const missing = tokenizerPath === undefined || !existsSync(python);

describe.skipIf(
  skipWithout(
    missing,
    'the Pythia hub test needs ../shared/data/tokenizers/gpt-neox-20b (set SAE_ERASER_SHARED) and the Python reference environment (scripts/setup-python-ref.sh)',
  ),
)('the original setup (configs/pythia70m-professor-nurse.json) from a local hub', () => {
  let restoreEnv: () => void = () => undefined;
  const savedCwd = process.cwd();
  const work = mkdtempSync(join(tmpdir(), 'pythia-hub-'));
  const hub = new FakeHub();
  const methods = Object.keys(readExperimentConfig(CONFIG).methods);
  let online: ExperimentResult;

  beforeAll(async () => {
    const fixtures = await runPythonReference('pythia_hub_reference.py', ['--dict-size', '64']);
    const model = join(await runPythonReference('models_reference.py', ['--suite', 'pythia']), 'pythia70m_shape');
    const file = (path: string, lfs = false): FakeFile => ({ content: readFileSync(path), lfs });
    const text = (s: string): FakeFile => ({ content: Buffer.from(s) });
    hub.addRepo({
      id: 'EleutherAI/pythia-70m-deduped',
      type: 'model',
      refs: {
        main: {
          commit: fakeCommit('pythia-70m-deduped'),
          files: {
            'config.json': file(join(model, 'config.json')),
            'model.safetensors': file(join(model, 'model.safetensors'), true),
            'tokenizer.json': file(tokenizerPath!),
            'special_tokens_map.json': text('{"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}'),
            'README.md': text('# a random checkpoint at the Pythia-70m-deduped shape\n'),
          },
        },
      },
    });
    hub.addRepo({
      id: 'LabHC/bias_in_bios',
      type: 'dataset',
      refs: {
        main: {
          commit: fakeCommit('bias_in_bios'),
          files: {
            [BIOS_FILES.train]: file(join(fixtures, 'bias_in_bios', 'train.parquet'), true),
            [BIOS_FILES.test]: file(join(fixtures, 'bias_in_bios', 'test.parquet'), true),
            [BIOS_FILES.dev]: file(join(fixtures, 'bias_in_bios', 'dev.parquet'), true),
            'README.md': text('# synthetic bios in the LabHC/bias_in_bios format\n'),
          },
        },
      },
    });
    hub.addRepo({
      id: 'saprmarks/pythia-70m-deduped-saes',
      type: 'model',
      refs: {
        main: {
          commit: fakeCommit('pythia-70m-deduped-saes'),
          files: { 'dictionaries_pythia-70m-deduped_10.zip': file(join(fixtures, 'dictionaries_pythia-70m-deduped_10.zip'), true) },
        },
      },
    });
    await hub.start();
    restoreEnv = useHubEnv(hub.url, join(work, 'hf'));
    // The config's relative paths (.cache/saes, .cache/activations) land in the temp folder, not the checkout.
    process.chdir(work);
  });

  afterAll(async () => {
    process.chdir(savedCwd);
    restoreEnv();
    await hub.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('runs the shipped config through the CLI from the hub: every method scores', async () => {
    const r = await quietly(() => cli(['run', '--config', CONFIG, '--out', join(work, 'runs', 'pythia'), ...QUICK, '--quiet']));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    online = JSON.parse(readFileSync(join(work, 'runs', 'pythia', 'metrics.json'), 'utf8')) as ExperimentResult;
    expect(online.model).toBe('EleutherAI/pythia-70m-deduped');
    expect(online.professions).toEqual(['professor', 'nurse']);
    expect(online.n_train.ambiguous).toBe(24);
    expect(Object.keys(online.methods).sort()).toEqual([...methods].sort());
    for (const m of methods) {
      const scores = online.methods[m]!;
      expect(scores.per_seed.map((s) => s.seed)).toEqual([42]);
      for (const metric of [scores.profession_acc, scores.gender_agreement, scores.worst_group_acc, scores.gender_probe_acc]) {
        expect(metric.mean).toBeGreaterThanOrEqual(0);
        expect(metric.mean).toBeLessThanOrEqual(1);
      }
    }
    // Every file came over HTTP from the three repos (a model's files at the commit its revision
    // resolved to), the big ones as LFS blobs.
    for (const [repo, file] of [
      ['/EleutherAI/pythia-70m-deduped', 'model.safetensors'],
      ['/EleutherAI/pythia-70m-deduped', 'tokenizer.json'],
      ['/datasets/LabHC/bias_in_bios', BIOS_FILES.train],
      ['/datasets/LabHC/bias_in_bios', BIOS_FILES.test],
      ['/saprmarks/pythia-70m-deduped-saes', 'dictionaries_pythia-70m-deduped_10.zip'],
    ]) {
      const asked = hub.log.filter((q) => q.url.startsWith(`${repo}/resolve/`) && q.url.endsWith(`/${file}`));
      expect(asked.length, `${repo} ${file}`).toBeGreaterThan(0);
    }
    expect(hub.requests('hub', '/lfs-blobs/').filter((q) => q.method === 'GET').length).toBe(4);
    // The zip was extracted in the Feature Circuits layout, layer 5 included.
    for (const site of ['embed', 'attn_out_layer0', 'mlp_out_layer4', 'resid_out_layer4', 'resid_out_layer5']) {
      expect(existsSync(join(work, '.cache', 'saes', 'pythia-70m-deduped', site, '10_32768', 'ae.pt')), site).toBe(true);
    }
  });

  it('runs again with the server stopped and HF_HUB_OFFLINE=1, from the hub cache alone, to the same scores', async () => {
    expect(online, 'the online run must have finished').toBeDefined();
    await hub.stop();
    const requestsBefore = hub.log.length;
    process.env.HF_HUB_OFFLINE = '1';
    // Without these the offline run would not need the hub cache for the SAEs or the model's activations.
    rmSync(join(work, '.cache'), { recursive: true });
    const out = join(work, 'runs', 'pythia-offline');
    const r = await quietly(() => cli(['run', '--config', CONFIG, '--out', out, ...QUICK, '--quiet']));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(hub.log.length).toBe(requestsBefore);
    expect(existsSync(join(work, '.cache', 'saes', 'pythia-70m-deduped', 'resid_out_layer4', '10_32768', 'ae.pt'))).toBe(true);
    const offline = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as ExperimentResult;
    const scores = (r: ExperimentResult): unknown =>
      Object.fromEntries(methods.map((m) => [m, r.methods[m]!.per_seed.map(({ seconds: _s, ...rest }) => rest)]));
    expect(scores(offline)).toEqual(scores(online));
  });
});
