import { beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../../src/engine/engine.js';
import { cli } from '../../src/cli/main.js';
import { checkOutputSize } from '../../src/cli/activations.js';
import { quietly } from './stderr.js';
import { readSafetensors, writeSafetensors, type RawTensor } from '../../src/io/safetensors.js';
import { projectRoot } from '../../src/io/shared.js';
import { tf } from '../../src/engine/engine.js';
import { AffineSae } from '../../src/sae/sae.js';
import { saveSaeLensSae } from '../../src/sae/saelens.js';
import { loadSae } from '../../src/sae/load.js';
import type { Sae } from '../../src/sae/sae.js';
import { openModel } from '../../src/models/open.js';
import { meanPool } from '../../src/models/pool.js';
import { maxOf, pushAll } from '../../src/util/arrays.js';
import { writeTinyBert } from './tiny-bert.js';
import { skipWithout } from '../require.js';

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
  it('refuses an output larger than the free space of its folder, naming its size, largest tensor and how to shrink it', () => {
    const free = { bytes: 50 * 2 ** 30, folder: '/data/out' };
    expect(() =>
      checkOutputSize(
        {
          'layers.3.resid_out': { dtype: 'F32', shape: [200_000, 128, 384] },
          'layers.3.resid_out.sae_features': { dtype: 'F32', shape: [200_000, 128, 32_768] },
          attention_mask: { dtype: 'I64', shape: [200_000, 128] },
        },
        'none',
        free,
      ),
    ).toThrow(
      /the output would take 3161\.8 GiB, largest tensor "layers\.3\.resid_out\.sae_features" \[200000, 128, 32768\] \(3125\.0 GiB\), more than the 50\.0 GiB free in \/data\/out; use --pool mean/,
    );
    expect(() => checkOutputSize({ 'embed.sae_features': { dtype: 'F32', shape: [2_000_000, 32_768] } }, 'mean', free)).toThrow(
      /use fewer input rows or hooks/,
    );
    // Tensors past 2^32 elements are fine when the disk has room: they are written in pieces.
    expect(() => checkOutputSize({ embed: { dtype: 'F32', shape: [2 ** 20, 128, 64] } }, 'none', free)).not.toThrow();
  });
});

/**
 * The output as the command wrote it before streaming: every tensor gathered in memory, batch by
 * batch (the same batches, so the same arithmetic), then written at once by writeSafetensors.
 */
async function inMemoryActivations(
  modelDir: string,
  texts: string[],
  hooks: string[],
  saes: Record<string, Sae>,
  pool: 'none' | 'mean',
  batchSize: number,
): Promise<Record<string, RawTensor>> {
  const opened = await openModel(modelDir);
  const n = texts.length;
  const seq = maxOf(opened.tokenizer.encodeBatch(texts, { maxLength: opened.maxLength, truncation: true }).lengths);
  const gathered: Record<string, { width: number; data: number[] }> = {};
  const mask: bigint[] = [];
  for (let start = 0; start < n; start += batchSize) {
    const batch = opened.tokenize(texts.slice(start, start + batchSize));
    const [rows, len] = batch.inputIds.shape;
    const result = opened.model.run(batch, { capture: hooks });
    tf.tidy(() => {
      const add = (name: string, x: tf.Tensor3D): void => {
        const width = x.shape[2];
        const out = (gathered[name] ??= { width, data: [] });
        if (pool === 'mean') {
          pushAll(out.data, Array.from(meanPool(x, batch.attentionMask).dataSync()));
          return;
        }
        // Pad positions are +0 (x * 0 would be -0 where x < 0, which differs in bytes).
        const v = tf.where(tf.expandDims(tf.cast(batch.attentionMask, 'bool'), 2), x, tf.zerosLike(x)).dataSync();
        for (let r = 0; r < rows; r++) {
          pushAll(out.data, Array.from(v.subarray(r * len * width, (r + 1) * len * width)));
          pushAll(out.data, new Array<number>((seq - len) * width).fill(0));
        }
      };
      for (const hook of hooks) {
        const x = result.captures[hook]!;
        add(hook, x);
        const sae = saes[hook];
        if (sae !== undefined) {
          const flat = tf.reshape(x, [rows * len, x.shape[2]]);
          const f = sae.encode(flat);
          add(`${hook}.sae_features`, tf.reshape(f, [rows, len, sae.dSae]) as tf.Tensor3D);
          add(`${hook}.sae_error`, tf.reshape(tf.sub(flat, sae.decode(f)), [rows, len, x.shape[2]]) as tf.Tensor3D);
        }
      }
      const m = batch.attentionMask.dataSync();
      for (let r = 0; r < rows; r++) for (let t = 0; t < seq; t++) mask.push(t < len ? BigInt(m[r * len + t]!) : 0n);
    });
    tf.dispose([...Object.values(result.captures), batch.inputIds, batch.attentionMask]);
  }
  opened.model.dispose();
  const tensors: Record<string, RawTensor> = {};
  for (const [name, { width, data }] of Object.entries(gathered)) {
    tensors[name] = { dtype: 'F32', shape: pool === 'none' ? [n, seq, width] : [n, width], data: Float32Array.from(data) };
  }
  if (pool === 'none') tensors.attention_mask = { dtype: 'I64', shape: [n, seq], data: BigInt64Array.from(mask) };
  return tensors;
}

describe('activations are streamed to disk', () => {
  const tinyDir = join(dir, 'tiny-bert');
  const saeDir = join(dir, 'tiny-sae');
  const lines = [
    'The nurse said hello 123.',
    'He performs cardiac surgery at the hospital every single weekday morning.',
    'Short.',
    'She is a nurse.',
    'Ünïcode names: Zoë and José met in Kraków.',
    'A bio with several more words than most of the others have.',
    'Last one.',
  ];

  beforeAll(() => {
    writeTinyBert(tinyDir, { d: 32, layers: 2, heads: 4, maxPositions: 64 });
    const sae = new AffineSae(
      {
        wEnc: tf.randomNormal([32, 48], 0, 0.3, 'float32', 3) as tf.Tensor2D,
        bEnc: tf.randomNormal([48], 0, 0.1, 'float32', 4) as tf.Tensor1D,
        wDec: tf.randomNormal([48, 32], 0, 0.3, 'float32', 5) as tf.Tensor2D,
        bDec: tf.randomNormal([32], 0, 0.1, 'float32', 6) as tf.Tensor1D,
        subtractDecoderBiasFromInput: true,
        activation: { kind: 'relu' },
      },
      { format: 'saelens', source: saeDir, hook: 'layers.1.resid_out' },
    );
    saveSaeLensSae(sae, saeDir);
    sae.dispose();
  });

  it('writes, for both pools and with --sae, the bytes of the in-memory output, over a CSV input too', async () => {
    const jsonl = join(dir, 'stream-in.jsonl');
    writeFileSync(jsonl, lines.map((t, i) => JSON.stringify({ id: i, bio: t })).join('\n') + '\n');
    const csv = join(dir, 'stream-in.csv');
    writeFileSync(csv, 'id,bio\n' + lines.map((t, i) => `${i},"${t}"`).join('\n') + '\n');
    const hooks = ['embed', 'layers.1.resid_out'];
    const sae = loadSae(saeDir);
    for (const pool of ['none', 'mean'] as const) {
      for (const input of [jsonl, csv]) {
        const out = join(dir, `streamed-${pool}.safetensors`);
        const onnxOut = join(dir, `streamed-onnx-${pool}.safetensors`);
        const args = ['activations', '--model', tinyDir, '--input', input, '--hooks', hooks.join(','), '--sae', `layers.1.resid_out=${saeDir}`];
        const common = ['--text-field', 'bio', '--pool', pool, '--batch-size', '3', '--quiet'];
        const tensorsBefore = tf.memory().numTensors;
        expect(await cli([...args, '--out', out, ...common, '--executor', 'tfjs'])).toBe(0);
        expect(await cli([...args, '--out', onnxOut, ...common])).toBe(0);
        expect(tf.memory().numTensors, 'tensors left by the command').toBe(tensorsBefore);
        const opened = await openModel(tinyDir);
        opened.model.dispose();
        const reference = join(dir, `reference-${pool}.safetensors`);
        writeSafetensors(reference, await inMemoryActivations(tinyDir, lines, hooks, { 'layers.1.resid_out': sae }, pool, 3), {
          model: opened.dir,
          pool,
          input,
        });
        // The tfjs executor computes exactly what the in-memory pass does; ONNX Runtime (the
        // default) the same function, to float rounding.
        expect(readFileSync(out).equals(readFileSync(reference)), `${pool} pooling from ${input}`).toBe(true);
        const f = readSafetensors(out);
        const onnx = readSafetensors(onnxOut);
        expect(onnx.names().sort()).toEqual(f.names().sort());
        for (const name of f.names()) {
          if (name === 'attention_mask') {
            expect(Buffer.from(onnx.bytes(name)).equals(Buffer.from(f.bytes(name)))).toBe(true);
            continue;
          }
          const want = f.float32(name);
          const got = onnx.float32(name);
          expect(got.length).toBe(want.length);
          let diff = 0;
          for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
          expect(diff, `${name}, ${pool} pooling: ONNX Runtime vs tfjs`).toBeLessThan(1e-4);
        }
        expect(f.names().sort()).toEqual(
          [
            'embed',
            'layers.1.resid_out',
            'layers.1.resid_out.sae_error',
            'layers.1.resid_out.sae_features',
            ...(pool === 'none' ? ['attention_mask'] : []),
          ].sort(),
        );
        expect(f.info('layers.1.resid_out.sae_features').shape[0]).toBe(lines.length);
      }
    }
    sae.dispose();
  });

  it.skipIf(skipWithout(process.platform !== 'linux', 'the activations memory test reads per-command peak RSS from /proc, which only Linux has'))(
    "keeps the peak memory of a run flat while its output grows fivefold (a child process reports each run's peak RSS)",
    async () => {
      const loadDir = mkdtempSync(join(tmpdir(), 'act-load-'));
      try {
        const wide = writeTinyBert(join(loadDir, 'model'), { d: 128, layers: 1, heads: 2, maxPositions: 64 });
        const words = ['nurse', 'surgeon', 'teacher', 'engineer', 'pilot'];
        const inputOf = (n: number): string => {
          const path = join(loadDir, `rows-${n}.jsonl`);
          writeFileSync(path, Array.from({ length: n }, (_, i) => JSON.stringify({ text: `The ${words[i % 5]} said hello ${i % 1000}.` })).join('\n') + '\n');
          return path;
        };
        const hooks = 'embed,layers.0.attn_out,layers.0.mlp_out,layers.0.resid_out';
        // A small warm-up run first (module loading, engine start-up), then the large run before the
        // small one: memory a held result leaves behind would be reused by a later run and hide it.
        const sizes = [50, 20_000, 4_000];
        const commands = sizes.map((n) => [
          'activations',
          '--model',
          wide,
          '--input',
          inputOf(n),
          '--hooks',
          hooks,
          '--out',
          join(loadDir, `out-${n}.safetensors`),
          '--batch-size',
          '64',
          '--quiet',
        ]);
        const stdout = await new Promise<string>((done, fail) => {
          const child = join(projectRoot(), 'test/cli/activations-child.ts');
          execFile(join(projectRoot(), 'node_modules/.bin/vite-node'), [child, JSON.stringify(commands)], { maxBuffer: 1 << 20 }, (err, out) =>
            err === null ? done(out) : fail(err),
          );
        });
        const reports = stdout
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { code: number; rssAtStart: number; peakRssBytes: number | null });
        expect(reports.map((r) => r.code)).toEqual([0, 0, 0]);
        // What each run added to the memory the process held when it started.
        const growth = reports.map((r) => {
          if (r.peakRssBytes === null) throw new Error('the child could not reset its peak RSS (/proc/self/clear_refs not writable)');
          return r.peakRssBytes - r.rssAtStart;
        });
        const bytes = sizes.map((n) => statSync(join(loadDir, `out-${n}.safetensors`)).size);
        const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`;
        console.log(`activations memory: peak RSS growth ${growth.map(mib).join(' / ')} for ${sizes.join(' / ')} rows (outputs ${bytes.map(mib).join(' / ')})`);
        // Holding the results would add about the output's size to a run's peak; streaming adds a batch.
        const outputGrowth = bytes[1]! - bytes[2]!;
        expect(outputGrowth).toBeGreaterThan(250 * 2 ** 20);
        expect(growth[1]!).toBeLessThan(bytes[1]! / 4);
        expect(growth[1]! - growth[2]!).toBeLessThan(outputGrowth / 4);
      } finally {
        rmSync(loadDir, { recursive: true, force: true });
      }
    },
    180_000,
  );
});
