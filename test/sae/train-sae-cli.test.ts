import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../../src/engine/engine.js';
import { projectRoot } from '../../src/io/shared.js';
import { setQuiet } from '../../src/util/progress.js';
import { trainSaeCommand } from '../../src/cli/train-sae.js';
import { loadSae } from '../../src/sae/load.js';
import { skipWithout } from '../require.js';

const minilm = join(projectRoot(), '.cache/models/all-MiniLM-L6-v2');
const haveModel = existsSync(join(minilm, 'model.safetensors'));

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
});

describe.skipIf(skipWithout(!haveModel, `train-sae on all-MiniLM-L6-v2 needs ${minilm} (scripts/fetch-minilm.sh)`))(
  'sae-eraser train-sae on all-MiniLM-L6-v2 (tiny run)',
  () => {
    it('trains on a JSONL file, evaluates on held-out texts and writes a loadable SAELens folder', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'train-sae-cli-'));
      const sentences = [
        'She is a surgeon at the county hospital.',
        'He works as a nurse in the night shift.',
        'The surgeon operated on the patient for six hours.',
        'Nurses care for patients after surgery.',
        'He graduated from medical school in Boston.',
        'She specialises in paediatric cardiology.',
        'The hospital hired three new nurses this year.',
        'His research focuses on minimally invasive surgery.',
      ];
      writeFileSync(join(dir, 'train.jsonl'), sentences.map((text) => JSON.stringify({ text })).join('\n') + '\n');
      writeFileSync(
        join(dir, 'held.jsonl'),
        sentences
          .slice(0, 3)
          .map((text) => JSON.stringify({ text: text.toUpperCase() }))
          .join('\n') + '\n',
      );
      const out = join(dir, 'sae');
      await trainSaeCommand.main([
        '--model',
        minilm,
        '--hook',
        'layers.1.resid_out',
        '--input',
        join(dir, 'train.jsonl'),
        '--held-out',
        join(dir, 'held.jsonl'),
        '--d-sae',
        '64',
        '--tokens',
        '512',
        '--batch-size',
        '32',
        '--out',
        out,
        '--arch',
        'topk',
        '--k',
        '8',
      ]);
      const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as { heldOut: { fve: number; l0: number; tokens: number }; steps: number };
      expect(metrics.steps).toBe(16);
      // The run's record: resolved options with provenance, and one history line per step.
      const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { config: { dSae: number }; provenance: { node: string } };
      expect(config.config.dSae).toBeGreaterThan(0);
      expect(config.provenance.node).toBe(process.version);
      const history = readFileSync(join(out, 'history.jsonl'), 'utf8').trim().split('\n');
      expect(history.map((l) => (JSON.parse(l) as { step: number }).step)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
      expect(metrics.heldOut.tokens).toBeGreaterThan(10);
      expect(metrics.heldOut.l0).toBeLessThanOrEqual(8);
      expect(Number.isFinite(metrics.heldOut.fve)).toBe(true);
      const sae = loadSae(out);
      expect(sae.metadata.hook).toBe('layers.1.resid_out');
      expect([sae.dIn, sae.dSae]).toEqual([384, 64]);
      sae.dispose();
      await expect(
        trainSaeCommand.main(['--model', minilm, '--hook', 'layers.1.resid_out', '--input', join(dir, 'train.jsonl'), '--out', out]),
      ).rejects.toThrow(/--d-sae is required/);
    });
  },
);
