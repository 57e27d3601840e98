import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../../src/engine/engine.js';
import { cli } from '../../src/cli/main.js';
import { checkOutputSize } from '../../src/cli/activations.js';
import { quietly } from './stderr.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { projectRoot } from '../../src/io/shared.js';
import { tf } from '../../src/engine/engine.js';
import { AffineSae } from '../../src/sae/sae.js';
import { saveSaeLensSae } from '../../src/sae/saelens.js';
import { loadSae } from '../../src/sae/load.js';

const model = join(projectRoot(), '.cache/models/all-MiniLM-L6-v2');
const dir = mkdtempSync(join(tmpdir(), 'act-cli-'));
const input = join(dir, 'in.jsonl');
const texts = [
  'She is a nurse at the city hospital.',
  'He performs cardiac surgery.',
  'A short one.',
  'Another bio, with more words than the others have in it.',
];

beforeAll(async () => {
  await initEngine();
  writeFileSync(input, texts.map((t) => JSON.stringify({ bio: t })).join('\n') + '\n');
});

describe('sae-eraser activations', () => {
  it('writes [n, seq, d] activations with an attention mask, and mean pooling over real tokens', async () => {
    const none = join(dir, 'none.safetensors');
    const mean = join(dir, 'mean.safetensors');
    const hooks = 'embed,layers.1.resid_out';
    expect(
      await cli(['activations', '--model', model, '--input', input, '--hooks', hooks, '--out', none, '--text-field', 'bio', '--batch-size', '3', '--quiet']),
    ).toBe(0);
    expect(
      await cli(['activations', '--model', model, '--input', input, '--hooks', hooks, '--out', mean, '--text-field', 'bio', '--pool', 'mean', '--quiet']),
    ).toBe(0);
    const a = readSafetensors(none);
    const b = readSafetensors(mean);
    expect(a.names().sort()).toEqual(['attention_mask', 'embed', 'layers.1.resid_out']);
    const [n, seq, d] = a.info('layers.1.resid_out').shape as [number, number, number];
    expect([n, d]).toEqual([4, 384]);
    expect(b.info('layers.1.resid_out').shape).toEqual([4, 384]);
    const mask = a.int32('attention_mask');
    const x = a.float32('layers.1.resid_out');
    const pooled = b.float32('layers.1.resid_out');
    for (let r = 0; r < n; r++) {
      const len = mask.subarray(r * seq, (r + 1) * seq).reduce((s, v) => s + v, 0);
      // Right padding: real tokens first, and pad positions are exactly zero.
      expect(mask[r * seq]).toBe(1);
      for (let t = len; t < seq; t++) expect(Math.abs(x[(r * seq + t) * d]!)).toBe(0);
      for (const j of [0, 17, 383]) {
        let s = 0;
        for (let t = 0; t < len; t++) s += x[(r * seq + t) * d + j]!;
        expect(pooled[r * d + j]).toBeCloseTo(s / len, 4);
      }
    }
  });

  it('adds SAE features and errors for --sae HOOK=PATH that reconstruct the activation', async () => {
    const saeDir = join(dir, 'sae');
    const sae = new AffineSae(
      {
        wEnc: tf.randomNormal([384, 64], 0, 0.1, 'float32', 1) as tf.Tensor2D,
        bEnc: tf.zeros([64]) as tf.Tensor1D,
        wDec: tf.randomNormal([64, 384], 0, 0.1, 'float32', 2) as tf.Tensor2D,
        bDec: tf.zeros([384]) as tf.Tensor1D,
        subtractDecoderBiasFromInput: true,
        activation: { kind: 'relu' },
      },
      { format: 'saelens', source: saeDir, hook: 'layers.1.resid_out' },
    );
    saveSaeLensSae(sae, saeDir);
    const out = join(dir, 'sae.safetensors');
    expect(
      await cli([
        'activations',
        '--model',
        model,
        '--input',
        input,
        '--hooks',
        'layers.1.resid_out',
        '--sae',
        `layers.1.resid_out=${saeDir}`,
        '--out',
        out,
        '--text-field',
        'bio',
        '--pool',
        'mean',
        '--quiet',
      ]),
    ).toBe(0);
    const f = readSafetensors(out);
    expect(f.info('layers.1.resid_out.sae_features').shape).toEqual([4, 64]);
    expect(f.info('layers.1.resid_out.sae_error').shape).toEqual([4, 384]);
    // Pooled x = decode(pooled f) + pooled error, since decoding is affine.
    const loaded = loadSae(saeDir);
    const recon = tf.tidy(() => tf.add(loaded.decode(f.tensor('layers.1.resid_out.sae_features')), f.tensor('layers.1.resid_out.sae_error')));
    const x = f.tensor('layers.1.resid_out');
    expect(tf.max(tf.abs(tf.sub(recon, x))).dataSync()[0]).toBeLessThan(1e-4);
    expect(
      await cli([
        'activations',
        '--model',
        model,
        '--input',
        input,
        '--hooks',
        'embed',
        '--sae',
        `layers.1.resid_out=${saeDir}`,
        '--out',
        out,
        '--text-field',
        'bio',
      ]),
    ).toBe(2);
    tf.dispose([recon, x]);
    sae.dispose();
  });

  it('fails clearly on an unknown hook, an empty input and a missing text field', async () => {
    const out = join(dir, 'x.safetensors');
    const { stderr: text } = await quietly(async () => {
      expect(await cli(['activations', '--model', model, '--input', input, '--hooks', 'layers.9.resid_out', '--out', out, '--text-field', 'bio'])).toBe(1);
      const empty = join(dir, 'empty.jsonl');
      writeFileSync(empty, '');
      expect(await cli(['activations', '--model', model, '--input', empty, '--hooks', 'embed', '--out', out])).toBe(1);
      expect(await cli(['activations', '--model', model, '--input', input, '--hooks', 'embed', '--out', out])).toBe(1);
      expect(await cli(['activations', '--model', model, '--input', input, '--out', out])).toBe(2);
      return 0;
    });
    expect(text).toMatch(/unknown hook "layers\.9\.resid_out"/);
    expect(text).toMatch(/empty\.jsonl: the input file has no rows/);
    expect(text).toMatch(/in\.jsonl line 1: field "text" is missing/);
    expect(text).toMatch(/--hooks is required/);
  });
});

describe('activations output size, checked before the model runs', () => {
  it('refuses a tensor past what one array holds, or an output past memory, and says how to shrink it', () => {
    expect(() => checkOutputSize(200_000, 128, [{ name: 'layers.3.resid_out.sae_features', width: 32_768 }], 'none')).toThrow(
      /output tensor "layers\.3\.resid_out\.sae_features" would hold 838860800000 values \[200000, 128, 32768\] .*use --pool mean/,
    );
    expect(() => checkOutputSize(200_000, 1, [{ name: 'embed.sae_features', width: 32_768 }], 'mean')).toThrow(/use fewer input rows or hooks/);
    expect(() => checkOutputSize(1000, 128, [{ name: 'embed', width: 384 }], 'none', 1e6)).toThrow(/would take 0\.2 GiB, more than this machine's 0\.0 GiB/);
    expect(() => checkOutputSize(1000, 128, [{ name: 'embed', width: 384 }], 'none')).not.toThrow();
  });
});
