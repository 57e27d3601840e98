import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseExperimentConfig } from '../../src/experiment/config.js';
import { runExperiment } from '../../src/experiment/runner.js';
import { projectRoot, sharedDir } from '../../src/io/shared.js';
import { skipWithout } from '../require.js';

const shared = sharedDir();

describe.skipIf(skipWithout(shared === undefined, 'the runner input checks need ../shared (set SAE_ERASER_SHARED)'))(
  'runner input checks (needs ../shared)',
  () => {
    const base = {
      model: join(projectRoot(), '.cache/models/all-MiniLM-L6-v2'),
      probeHook: 'layers.3.resid_out',
      dataset: { train: '${shared}/data/bias_in_bios/validate.jsonl', test: '${shared}/data/bias_in_bios/validate.jsonl', professions: ['surgeon', 'nurse'] },
      methods: { original: {} },
      seeds: [42],
    };
    const out = mkdtempSync(join(tmpdir(), 'run-err-'));

    it('rejects an SAE at a hook the model does not have, before any work', async () => {
      const config = parseExperimentConfig({ ...base, saes: { 'layers.7.resid_out': { path: '/nowhere' } } }, 'bad-sae.json');
      await expect(runExperiment(config, { outDir: out })).rejects.toThrow(/bad-sae\.json: SAE hook "layers\.7\.resid_out" does not exist/);
    });

    it('expands SAE hook patterns against the model: one matching nothing is refused, and method hooks are checked against the expansion', async () => {
      const nothing = parseExperimentConfig({ ...base, saes: { 'layers.*.resid_post': { path: join(out, '{hook}') } } }, 'pattern.json');
      await expect(runExperiment(nothing, { outDir: out })).rejects.toThrow(
        /pattern\.json: SAE hook pattern "layers\.\*\.resid_post" matches no hook of this model \(known hooks: embed, layers\.0\.attn_out, /,
      );
      // Every resid_out has an SAE through the pattern (never trained: the check comes first); layers.3.mlp_out has none.
      const saes = { 'layers.*.resid_out': { path: join(out, 'never', '{hook}') } };
      const methods = { shift: { selection: 'manual', features: { 'layers.1.resid_out': [3], 'layers.3.mlp_out': [1] } } };
      await expect(runExperiment(parseExperimentConfig({ ...base, saes, methods }, 'p.json'), { outDir: out })).rejects.toThrow(
        /p\.json: methods\.shift: hook "layers\.3\.mlp_out" has no SAE in "saes" \(SAEs at: layers\.0\.resid_out, layers\.1\.resid_out, layers\.2\.resid_out, layers\.3\.resid_out, layers\.4\.resid_out, layers\.5\.resid_out\)/,
      );
    });

    it('rejects a probe hook the model does not have and a missing SAE without a train spec', async () => {
      await expect(runExperiment(parseExperimentConfig({ ...base, probeHook: 'layers.3.resid' }, 'bad-probe.json'), { outDir: out })).rejects.toThrow(
        /bad-probe\.json: probeHook "layers\.3\.resid" does not exist/,
      );
      const missing = parseExperimentConfig({ ...base, saes: { 'layers.3.resid_out': { path: join(out, 'no-sae') } } }, 'missing.json');
      await expect(runExperiment(missing, { outDir: out })).rejects.toThrow(
        /missing\.json: the SAE for "layers\.3\.resid_out" is missing at .*no-sae, and the config gives no "train" spec/,
      );
    });

    it('rejects hooks named in method options that the model lacks, that come after the probe hook or that have no SAE, before any work', async () => {
      const saes = { 'layers.3.resid_out': { path: join(out, 'never-trained') } };
      const run = (methods: Record<string, unknown>, name: string): Promise<unknown> =>
        runExperiment(parseExperimentConfig({ ...base, saes, methods }, name), { outDir: out });
      await expect(run({ sae_mask: { hooks: ['layers.9.resid_out'] } }, 'mask.json')).rejects.toThrow(
        /mask\.json: methods\.sae_mask: the hook list names "layers\.9\.resid_out", which is not a hook of the model/,
      );
      await expect(run({ neuron_mask: { hooks: ['layers.4.resid_out'] } }, 'late.json')).rejects.toThrow(
        /late\.json: methods\.neuron_mask: hook "layers\.4\.resid_out" comes after the probe hook "layers\.3\.resid_out"/,
      );
      await expect(run({ shift: { selection: 'manual', features: { 'layers.1.resid_out': [3] } } }, 'shift.json')).rejects.toThrow(
        /shift\.json: methods\.shift: hook "layers\.1\.resid_out" has no SAE in "saes"/,
      );
      // Word deletion by SAE features names its SAE's hook (embed by default).
      await expect(run({ 'word_deletion@sae': { sae: {} } }, 'words.json')).rejects.toThrow(
        /words\.json: methods\.word_deletion@sae: hook "embed" has no SAE in "saes" \(SAEs at: layers\.3\.resid_out\)/,
      );
    });

    it('rejects a profession pair the data does not contain, naming the file', async () => {
      const config = parseExperimentConfig({ ...base, dataset: { ...base.dataset, professions: ['surgeon', 'pilot'] } }, 'pair.json');
      await expect(runExperiment(config, { outDir: out })).rejects.toThrow(/validate\.jsonl.*pilot/);
    });
  },
);
