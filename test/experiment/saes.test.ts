/**
 * SAE specs with `download: "feature-circuits"` (src/experiment/saes.ts): the Feature Circuits layout
 * a path must follow, checked when the config is read, and ensureSae's answer when the extracted
 * dictionaries lack the one asked for. The download itself, through the hub client, is exercised
 * end to end in pythia-hub.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseExperimentConfig } from '../../src/experiment/config.js';
import { ensureSae, featureCircuitsTarget } from '../../src/experiment/saes.js';
import type { OpenedModel } from '../../src/models/open.js';

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
