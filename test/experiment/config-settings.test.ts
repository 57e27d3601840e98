/**
 * `--set key=value` overrides (applyConfigSettings, readExperimentConfig's `settings`, `sae-eraser run
 * --set`) and the shipped original-setup config, configs/pythia70m-professor-nurse.json.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyConfigSettings, experimentConfigSchema, readExperimentConfig } from '../../src/experiment/config.js';
import { METHOD_NAMES } from '../../src/erasure/eraser.js';
import { projectRoot } from '../../src/io/shared.js';
import { cli } from '../../src/cli/main.js';
import { quietly } from '../cli/stderr.js';

const PYTHIA = join(projectRoot(), 'configs', 'pythia70m-professor-nurse.json');

describe('applyConfigSettings', () => {
  const base = { model: 'm', dataset: { train: 'a', limits: { ambiguous: 10 } }, saes: { 'layers.4.resid_out': { path: 'p' } }, seeds: [1, 2] };

  it('sets fields by dotted path, parsing JSON values and keeping other text as text', () => {
    const out = applyConfigSettings(base, [
      'dataset.limits.ambiguous=40',
      'dataset.limits.testSubgroup=6',
      'seeds=[42]',
      'model=EleutherAI/pythia-70m-deduped',
      'dataset.train="42"',
      'methods.das_mask={"epochs": 1}',
      'saes[layers.4.resid_out].path=/tmp/sae=x',
    ]);
    expect(out).toEqual({
      model: 'EleutherAI/pythia-70m-deduped',
      dataset: { train: '42', limits: { ambiguous: 40, testSubgroup: 6 } },
      saes: { 'layers.4.resid_out': { path: '/tmp/sae=x' } },
      seeds: [42],
      methods: { das_mask: { epochs: 1 } },
    });
    // The input is left as it was.
    expect(base.dataset.limits.ambiguous).toBe(10);
    expect(base.seeds).toEqual([1, 2]);
  });

  it('refuses malformed settings, quoting them', () => {
    const cases: [string, RegExp][] = [
      ['seeds', /expected key=value/],
      ['=3', /expected key=value/],
      ['a..b=1', /expected key=value/],
      ['.a=1', /expected key=value/],
      ['a[]=1', /expected key=value/],
      ['seeds.first=1', /seeds is not an object in the config/],
      ['dataset.train.x=1', /dataset\.train is not an object in the config/],
      ['__proto__.polluted=1', /"__proto__" is not a config field/],
      ['saes[__proto__]=1', /"__proto__" is not a config field/],
    ];
    for (const [setting, why] of cases) {
      expect(() => applyConfigSettings(base, [setting]), setting).toThrow(why);
      expect(() => applyConfigSettings(base, [setting]), setting).toThrow(`--set "${setting}"`);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('readExperimentConfig with settings', () => {
  const dir = mkdtempSync(join(tmpdir(), 'config-settings-'));
  const path = join(dir, 'c.json');
  writeFileSync(
    path,
    JSON.stringify({
      model: 'm',
      probeHook: 'layers.3.resid_out',
      dataset: { train: 'tr.jsonl', test: 'te.jsonl', professions: ['surgeon', 'nurse'] },
      methods: { original: {}, das_mask: {} },
    }),
  );

  it('validates the result like a config file, naming the settings in errors', () => {
    const c = readExperimentConfig(path, ['dataset.limits.ambiguous=40', 'methods.das_mask.epochs=1', 'seeds=[7]']);
    expect(c.dataset.limits).toEqual({ ambiguous: 40 });
    expect(c.seeds).toEqual([7]);
    expect(c.methods.das_mask).toMatchObject({ options: { epochs: 1 } });
    expect(c.source).toBe(`${path} (with --set dataset.limits.ambiguous=40, methods.das_mask.epochs=1, seeds=[7])`);
    expect(() => readExperimentConfig(path, ['dataset.limts.ambiguous=40'])).toThrow(
      `${path} (with --set dataset.limts.ambiguous=40): unknown field "dataset.limts"`,
    );
    expect(() => readExperimentConfig(path, ['methods.das_mask.epochs=0'])).toThrow(/methods\.das_mask\.epochs/);
    expect(() => readExperimentConfig(path, ['dataset.limits.ambiguous=forty'])).toThrow(/dataset\.limits\.ambiguous/);
  });

  it('sae-eraser run --set: a bad setting fails before any work, and the usage documents --set', async () => {
    const out = join(dir, 'out');
    const r = await quietly(() => cli(['run', '--config', path, '--out', out, '--set', 'methods.das_mask.epoch=1', '--quiet']));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/unknown field "methods\.das_mask\.epoch"/);
    expect(existsSync(out)).toBe(false);
    const help = await quietly(() => cli(['run', '--help']));
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--set KEY=VALUE/);
    expect(help.stdout).toMatch(/hf:\/\/datasets\//);
  });
});

describe('configs/pythia70m-professor-nurse.json (the original setup)', () => {
  const raw = JSON.parse(readFileSync(PYTHIA, 'utf8')) as Record<string, unknown>;

  it('validates against the schema and names the paper setup', () => {
    expect(raw.$schema).toBe('./experiment.schema.json');
    expect(experimentConfigSchema.safeParse(raw).error?.issues ?? []).toEqual([]);
    const c = readExperimentConfig(PYTHIA);
    expect(c.model).toBe('EleutherAI/pythia-70m-deduped');
    expect(c.probeHook).toBe('layers.4.resid_out');
    expect(c.maxLength).toBe(128);
    expect(c.dataset.professions).toEqual([21, 13]);
    expect(c.dataset.train).toBe('hf://datasets/LabHC/bias_in_bios/data/train-00000-of-00001-0ab65b32c47407e8.parquet');
    expect(c.dataset.test).toBe('hf://datasets/LabHC/bias_in_bios/data/test-00000-of-00001-5598c840ce8de1ee.parquet');
    expect(Object.keys(c.methods).sort()).toEqual([...METHOD_NAMES].sort());
  });

  it('takes the Feature Circuits SAEs at embed and every submodule of layers 0-4, downloaded when missing', () => {
    const c = readExperimentConfig(PYTHIA);
    const hooks = ['embed', ...[0, 1, 2, 3, 4].flatMap((i) => ['attn_out', 'mlp_out', 'resid_out'].map((k) => `layers.${i}.${k}`))];
    expect(Object.keys(c.saes).sort()).toEqual(hooks.sort());
    for (const [hook, spec] of Object.entries(c.saes)) {
      expect(spec.download, hook).toBe('feature-circuits');
      expect(spec.path, hook).toMatch(/^\.cache\/saes\/pythia-70m-deduped\/(embed|(attn|mlp|resid)_out_layer[0-4])\/10_32768$/);
    }
    // SHIFT (and the random control, which reuses its counts) defaults to every SAE hook up to the probe.
    expect(c.methods.shift).toMatchObject({ method: 'shift', options: {} });
    expect(c.methods.shift!.options).not.toHaveProperty('hooks');
  });
});
