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
import { writeTinyBert } from '../cli/tiny-bert.js';

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

describe('sae-eraser train-sae with several hooks (tiny BERT)', () => {
  it('trains one SAE per hook of a list with patterns into DIR/<hook>/, from one pass, and resumes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'train-sae-cli-multi-'));
    const model = writeTinyBert(join(dir, 'model'), { d: 16, layers: 2, heads: 2, maxPositions: 32 });
    const texts = Array.from({ length: 24 }, (_, i) => JSON.stringify({ text: `text ${i}: the ${i % 2 ? 'nurse' : 'surgeon'} saw patient ${i * 3}.` }));
    writeFileSync(join(dir, 'train.jsonl'), texts.join('\n') + '\n');
    writeFileSync(join(dir, 'held.jsonl'), texts.slice(0, 4).join('\n') + '\n');
    const out = join(dir, 'saes');
    // prettier-ignore
    const argv = ['--model', model, '--hook', 'layers.*.resid_out, embed', '--input', join(dir, 'train.jsonl'), '--held-out', join(dir, 'held.jsonl'),
      '--d-sae', '32', '--arch', 'topk', '--k', '4', '--tokens', '640', '--batch-size', '64', '--max-length', '32', '--out', out];
    const first = await trainSaeCommand.main(argv);
    const hooks = ['embed', 'layers.0.resid_out', 'layers.1.resid_out'];
    const json = first.json as { out: string; saes: Record<string, { out: string; steps: number; resumedFrom: number; heldOut: { fve: number } }> };
    expect(Object.keys(json.saes)).toEqual(hooks);
    for (const hook of hooks) {
      expect(json.saes[hook]).toMatchObject({ out: join(out, hook), steps: 10, resumedFrom: 0 });
      expect(Number.isFinite(json.saes[hook]!.heldOut.fve)).toBe(true);
      const sae = loadSae(join(out, hook));
      expect([sae.metadata.hook, sae.dIn, sae.dSae]).toEqual([hook, 16, 32]);
      sae.dispose();
      const metrics = JSON.parse(readFileSync(join(out, hook, 'metrics.json'), 'utf8')) as { hook: string; steps: number };
      expect([metrics.hook, metrics.steps]).toEqual([hook, 10]);
    }
    expect(first.text).toContain(`wrote ${join(out, 'layers.1.resid_out')} (10 steps)`);
    // One run record and one history for the run: 10 steps per hook, each hook its own stage.
    const history = readFileSync(join(out, 'history.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { stage: string });
    expect(hooks.map((h) => history.filter((r) => r.stage === `sae ${h}`).length)).toEqual([10, 10, 10]);
    expect((JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { config: { hook: string } }).config.hook).toBe('layers.*.resid_out,embed');
    // The same command again resumes every hook from its finished checkpoint.
    const again = (await trainSaeCommand.main(argv)).json as typeof json;
    expect(hooks.map((h) => again.saes[h]!.resumedFrom)).toEqual([10, 10, 10]);
    await expect(trainSaeCommand.main(argv.map((a) => (a === 'layers.*.resid_out, embed' ? 'layers.*.resid' : a)))).rejects.toThrow(
      /--hook: hook pattern "layers\.\*\.resid" matches no hook of this model \(known hooks: embed, layers\.0\.attn_out/,
    );
    await expect(trainSaeCommand.main(argv.map((a) => (a === 'layers.*.resid_out, embed' ? 'embed,,layers.0.mlp_out' : a)))).rejects.toThrow(/empty hook name/);
  });
});
