/**
 * SAE specs with `download: "feature-circuits"` (src/experiment/saes.ts): the Feature Circuits layout
 * a path must follow, checked when the config is read, and ensureSae's answer when the extracted
 * dictionaries lack the one asked for. Hook patterns in `saes` (checked when read, expanded against
 * the model's hooks), and `ensureSaes` training every missing SAE from one activation pass. The download itself, through the hub client, is exercised
 * end to end in pythia-hub.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../../src/engine/engine.js';
import { parseExperimentConfig } from '../../src/experiment/config.js';
import { ensureSae, ensureSaes, expandSaeSpecs, featureCircuitsTarget, saeQuality } from '../../src/experiment/saes.js';
import { standardHookNames } from '../../src/models/model.js';
import { openModel, type OpenedModel } from '../../src/models/open.js';
import { countingPasses } from '../models/helpers.js';
import { loadSae } from '../../src/sae/load.js';
import type { AffineSae } from '../../src/sae/sae.js';
import { setQuiet } from '../../src/util/progress.js';
import { writeTinyBert } from '../cli/tiny-bert.js';

const base = {
  model: 'm',
  probeHook: 'layers.4.resid_out',
  dataset: { train: 'tr.parquet', test: 'te.parquet', professions: [21, 13] },
  methods: { original: {} },
};

function withSae(hook: string, spec: Record<string, unknown>): unknown {
  return { ...base, saes: { [hook]: spec } };
}

describe('download "feature-circuits"', () => {
  it('accepts a path in the Feature Circuits layout for its hook', () => {
    const c = parseExperimentConfig(
      withSae('layers.4.resid_out', { path: 'x/pythia-70m-deduped/resid_out_layer4/10_32768/', download: 'feature-circuits' }),
      'c.json',
    );
    expect(c.saes['layers.4.resid_out']).toEqual({ path: 'x/pythia-70m-deduped/resid_out_layer4/10_32768/', download: 'feature-circuits' });
    expect(featureCircuitsTarget('embed', '/a/b/pythia-70m-deduped/embed/10_32768', 'w')).toEqual({ dir: '/a/b', dict: '10_32768' });
    expect(featureCircuitsTarget('layers.0.attn_out', 'pythia-70m-deduped/attn_out_layer0/3_4096', 'w')).toEqual({ dir: '.', dict: '3_4096' });
  });

  it('refuses, when the config is read, a path whose site is not its hook or that leaves the layout', () => {
    const cases: [string, string, RegExp][] = [
      [
        'layers.4.resid_out',
        'x/pythia-70m-deduped/resid_out_layer3/10_32768',
        /must be <folder>\/pythia-70m-deduped\/resid_out_layer4\/<id>_<size>.*got "x\/pythia-70m-deduped\/resid_out_layer3\/10_32768"/,
      ],
      ['embed', 'x/pythia-70m-deduped/mlp_out_layer0/10_32768', /pythia-70m-deduped\/embed\/<id>_<size>/],
      ['layers.4.resid_out', 'x/saes/resid_out_layer4/10_32768', /pythia-70m-deduped\/resid_out_layer4/],
      ['layers.4.resid_out', 'x/pythia-70m-deduped/resid_out_layer4/latest', /<id>_<size>/],
      ['layers.4.resid_out', 'x/pythia-70m-deduped/resid_out_layer4/10_32768/ae.pt', /got ".*ae\.pt"/],
      ['blocks.4.hook_resid_post', 'x/pythia-70m-deduped/resid_out_layer4/10_32768', /needs a hook name as the SAE's key/],
    ];
    for (const [hook, path, why] of cases) {
      const parse = (): unknown => parseExperimentConfig(withSae(hook, { path, download: 'feature-circuits' }), 'c.json');
      expect(parse, path).toThrow(why);
      expect(parse, path).toThrow(`c.json: saes["${hook}"]: `);
    }
  });

  it('refuses "download" together with "train", and an unknown source', () => {
    const path = 'x/pythia-70m-deduped/resid_out_layer4/10_32768';
    expect(() => parseExperimentConfig(withSae('layers.4.resid_out', { path, download: 'feature-circuits', train: {} }), 'c.json')).toThrow(
      /saes\.layers\.4\.resid_out\.download.*either "train" or "download"/,
    );
    expect(() => parseExperimentConfig(withSae('layers.4.resid_out', { path, download: 'saelens' }), 'c.json')).toThrow(/download/);
  });

  it('a present path is used as is; a site missing from extracted dictionaries is an error saying how to fetch again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fc-sae-'));
    const root = join(dir, 'pythia-70m-deduped');
    const present = join(root, 'embed', '10_32768');
    mkdirSync(present, { recursive: true });
    writeFileSync(join(present, 'ae.pt'), 'not read here');
    // The download branch never touches the model: nothing is trained.
    const opened = undefined as unknown as OpenedModel;
    const context = { source: 'c.json', model: 'EleutherAI/pythia-70m-deduped' };
    expect(await ensureSae('embed', { path: present, download: 'feature-circuits' }, opened, context, [])).toBe(present);
    const absent = join(root, 'resid_out_layer4', '10_32768');
    await expect(ensureSae('layers.4.resid_out', { path: absent, download: 'feature-circuits' }, opened, context, [])).rejects.toThrow(
      `c.json: the SAE for "layers.4.resid_out" is missing at ${absent}, and the Sparse Feature Circuits dictionaries at ${root} do not include it (delete ${root} to fetch them again)`,
    );
  });
});

describe('hook patterns in "saes"', () => {
  const hooks = standardHookNames(2);
  const train = { dSae: 32, epochs: 2 };

  it('expand in forward order with {hook} replaced; an explicit key overrides a pattern for its hook', () => {
    const c = parseExperimentConfig(
      { ...base, saes: { 'layers.*.resid_out': { path: 'saes/{hook}', train }, 'layers.1.resid_out': { path: 'mine/{hook}' }, embed: { path: 'e' } } },
      'c.json',
    );
    // An explicit key's {hook} is replaced when the config is read; a pattern's once the model is known.
    expect(c.saes['layers.1.resid_out']!.path).toBe('mine/layers.1.resid_out');
    expect(c.saes['layers.*.resid_out']!.path).toBe('saes/{hook}');
    const specs = expandSaeSpecs(c.saes, hooks, 'c.json');
    expect(Object.keys(specs)).toEqual(['embed', 'layers.0.resid_out', 'layers.1.resid_out']);
    expect(specs['layers.0.resid_out']).toEqual({ path: 'saes/layers.0.resid_out', train: { ...train, arch: 'relu', seed: 42 } });
    expect(specs['layers.1.resid_out']).toEqual({ path: 'mine/layers.1.resid_out' });
    expect(specs.embed).toEqual({ path: 'e' });
  });

  it('refuses, when read, a pattern path without {hook} or a pattern with characters no hook has; once the model is known, a pattern matching nothing', () => {
    expect(() => parseExperimentConfig({ ...base, saes: { 'layers.*.mlp_out': { path: 'saes/mlp', train } } }, 'c.json')).toThrow(
      'c.json: saes["layers.*.mlp_out"]: the path of a hook pattern must contain {hook} (else every hook it matches would share one SAE), got "saes/mlp"',
    );
    expect(() => parseExperimentConfig({ ...base, saes: { 'layers.(0|1).mlp_out*': { path: '{hook}' } } }, 'c.json')).toThrow(
      /c\.json: saes\["layers\.\(0\|1\)\.mlp_out\*"\]: "layers\.\(0\|1\)\.mlp_out\*" is not a hook name or pattern/,
    );
    const c = parseExperimentConfig({ ...base, saes: { 'blocks.*.hook_resid_post': { path: 's/{hook}' } } }, 'c.json');
    expect(() => expandSaeSpecs(c.saes, hooks, 'c.json')).toThrow(
      `c.json: SAE hook pattern "blocks.*.hook_resid_post" matches no hook of this model (known hooks: ${hooks.join(', ')})`,
    );
    const unknown = parseExperimentConfig({ ...base, saes: { 'layers.7.resid_out': { path: 's' } } }, 'c.json');
    expect(() => expandSaeSpecs(unknown.saes, hooks, 'c.json')).toThrow('c.json: SAE hook "layers.7.resid_out" does not exist in this model');
    // The Feature Circuits layout is checked for each hook a pattern expands to.
    const fc = parseExperimentConfig(
      { ...base, saes: { 'layers.*.mlp_out': { path: 'x/pythia-70m-deduped/{hook}/1_2', download: 'feature-circuits' } } },
      'c.json',
    );
    expect(() => expandSaeSpecs(fc.saes, hooks, 'c.json')).toThrow(/c\.json: saes\["layers\.\*\.mlp_out"\]: .*mlp_out_layer0\/<id>_<size>/);
  });
});

describe('ensureSaes', () => {
  it('trains every missing SAE from one pass, leaves present ones untouched, and equals ensureSae at one hook', async () => {
    await initEngine();
    setQuiet(true);
    const dir = mkdtempSync(join(tmpdir(), 'ensure-saes-'));
    const opened = await openModel(writeTinyBert(join(dir, 'model'), { d: 16, layers: 2, heads: 2, maxPositions: 32 }), { maxLength: 32 });
    const counter = countingPasses(opened);
    const counting = counter.model;
    try {
      const texts = Array.from({ length: 50 }, (_, i) => `bio ${i}: ${i % 2 ? 'he' : 'she'} is a ${i % 3 ? 'nurse' : 'surgeon'} at ward ${i * 11}.`);
      const train = { arch: 'topk' as const, dSae: 32, k: 4, batchSize: 64, epochs: 2, seed: 42 };
      // A present SAE: a folder that is not even an SAE, to show it is not read or rewritten.
      const present = join(dir, 'saes', 'embed');
      mkdirSync(present, { recursive: true });
      writeFileSync(join(present, 'marker'), 'kept');
      const config = parseExperimentConfig({ ...base, saes: { 'layers.*': { path: join(dir, 'saes', '{hook}'), train }, embed: { path: present } } }, 'c.json');
      const specs = expandSaeSpecs(config.saes, opened.model.hookNames, 'c.json');
      const records: string[] = [];
      const paths = await ensureSaes(specs, counting, { source: 'c.json', model: 'tiny' }, texts, (r) => records.push(r.stage));
      expect(Object.keys(paths)).toEqual(opened.model.hookNames);
      // 45 training texts in batches of 16 documents, then the 5 held out: 4 forward passes for 6 SAEs.
      expect(counter.passes).toBe(4);
      expect(readdirSync(present)).toEqual(['marker']);
      expect(new Set(records)).toEqual(new Set(opened.model.hookNames.slice(1).map((h) => `sae ${h}`)));
      // Only SAE folders are left beside them, no spilled activations.
      expect(readdirSync(join(dir, 'saes')).sort()).toEqual([...opened.model.hookNames].sort());
      const hook = 'layers.1.mlp_out';
      const metrics = JSON.parse(readFileSync(join(paths[hook]!, 'metrics.json'), 'utf8')) as {
        hook: string;
        epochs: number;
        heldOut: { fve: number; l0: number; deadFraction: number };
      };
      expect([metrics.hook, metrics.epochs]).toEqual([hook, 2]);
      const sae = loadSae(paths[hook]!) as AffineSae;
      expect(saeQuality(paths[hook]!, sae)).toEqual({
        path: paths[hook],
        fve: metrics.heldOut.fve,
        l0: metrics.heldOut.l0,
        dead_fraction: metrics.heldOut.deadFraction,
        d_sae: 32,
        arch: 'topk',
      });
      // Without a training record: the size and activation, no quality.
      expect(saeQuality(join(dir, 'nowhere'), sae)).toEqual({ path: join(dir, 'nowhere'), fve: null, l0: null, dead_fraction: null, d_sae: 32, arch: 'topk' });

      // One hook alone (ensureSae) from the same texts and seed: the same SAE.
      const alone = join(dir, 'alone', hook);
      const before = statSync(paths[hook]!).mtimeMs;
      expect(await ensureSae(hook, { path: alone, train }, opened, { source: 'c.json', model: 'tiny' }, texts)).toBe(alone);
      const single = loadSae(alone) as AffineSae;
      for (const name of ['wEnc', 'bEnc', 'wDec', 'bDec'] as const) expect(single[name].dataSync(), name).toEqual(sae[name].dataSync());
      single.dispose();
      sae.dispose();
      // Present now: a second call trains nothing.
      counter.passes = 0;
      expect(await ensureSaes(specs, counting, { source: 'c.json', model: 'tiny' }, texts)).toEqual(paths);
      expect(counter.passes).toBe(0);
      expect(statSync(paths[hook]!).mtimeMs).toBe(before);
      // A missing SAE without a recipe is refused before anything trains.
      rmSync(paths['layers.0.attn_out']!, { recursive: true });
      await expect(
        ensureSaes({ ...specs, 'layers.0.attn_out': { path: paths['layers.0.attn_out']! } }, counting, { source: 'c.json', model: 'tiny' }, texts),
      ).rejects.toThrow(/the SAE for "layers\.0\.attn_out" is missing at .*no "train" spec/);
      expect(counter.passes).toBe(0);
      expect(existsSync(paths['layers.0.attn_out']!)).toBe(false);
    } finally {
      opened.model.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
