/**
 * SAEs at several hooks from one activation pass (src/sae/train.ts `trainSaesOnModel`, `trainSaes`):
 * one model pass for every hook, each SAE equal to the one a one-hook run trains with the same seed,
 * and a run stopped at its second hook resuming to the weights of an uninterrupted run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { openModel, type OpenedModel } from '../../src/models/open.js';
import { countingPasses } from '../models/helpers.js';
import { setQuiet } from '../../src/util/progress.js';
import { loadSae } from '../../src/sae/load.js';
import type { AffineSae } from '../../src/sae/sae.js';
import { trainSae, trainSaes, trainSaesOnModel, type SaeJob, type TrainedSae } from '../../src/sae/train.js';
import { writeTinyBert } from '../cli/tiny-bert.js';

let dir: string;
let modelDir: string;
let opened: OpenedModel;
const texts = Array.from({ length: 40 }, (_, i) => `bio ${i}: ${i % 3 === 0 ? 'she' : 'he'} is a ${i % 2 === 0 ? 'nurse' : 'surgeon'} at clinic ${i * 13}.`);

beforeAll(async () => {
  await initEngine();
  setQuiet(true);
  dir = mkdtempSync(join(tmpdir(), 'train-saes-'));
  modelDir = writeTinyBert(join(dir, 'model'), { d: 16, layers: 2, heads: 2, maxPositions: 32 });
  opened = await openModel(modelDir, { maxLength: 32 });
  writeFileSync(join(dir, 'train.jsonl'), texts.map((text) => JSON.stringify({ text })).join('\n') + '\n');
  writeFileSync(
    join(dir, 'held.jsonl'),
    texts
      .slice(0, 8)
      .map((text) => JSON.stringify({ text: text.toUpperCase() }))
      .join('\n') + '\n',
  );
});

afterAll(() => {
  opened.model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function weights(sae: AffineSae): Float32Array[] {
  return [sae.wEnc, sae.bEnc, sae.wDec, sae.bDec].map((t) => t.dataSync() as Float32Array);
}

/** What a run trained, by hook: each SAE's weights copied and the SAE disposed as it arrives. */
interface Kept {
  out: string;
  heldOut: TrainedSae['heldOut'];
  resumedFrom: number;
  steps: number;
  weights: Float32Array[];
}

function keeper(): { kept: Record<string, Kept>; onTrained: (hook: string, t: TrainedSae) => void } {
  const kept: Record<string, Kept> = {};
  return {
    kept,
    onTrained: (hook, t) => {
      kept[hook] = { out: t.out, heldOut: t.heldOut, resumedFrom: t.result.resumedFrom, steps: t.result.steps, weights: weights(t.sae) };
      t.sae.dispose();
    },
  };
}

describe('trainSaesOnModel', () => {
  it('runs the model once over the training and once over the held-out texts for every hook, and trains what a one-hook run trains', async () => {
    const counter = countingPasses(opened);
    const counting = counter.model;
    const job = (hook: string, seed: number, arch: 'relu' | 'topk'): SaeJob => {
      const out = join(dir, `job-${counter.passes}-${hook}-${seed}`);
      return {
        out,
        spillDir: dir,
        train: { arch, dSae: 32, k: 4, batchSize: 64, seed, warmupSteps: 5, resampleSteps: 0 },
        tokens: (collected) => collected * 3,
        info: { note: 'test' },
      };
    };
    const data = { model: 'tiny', texts: texts.slice(8), heldOut: texts.slice(0, 8), seed: 3 };
    const { kept: many, onTrained } = keeper();
    await trainSaesOnModel(
      counting,
      { 'layers.1.resid_out': job('layers.1.resid_out', 7, 'topk'), embed: job('embed', 8, 'relu'), 'layers.0.mlp_out': job('layers.0.mlp_out', 9, 'relu') },
      data,
      onTrained,
    );
    // Two forward passes of 16 documents (the source's batch) per 32 training texts and 8 held-out ones.
    expect(counter.passes).toBe(Math.ceil(32 / 16) + 1);
    expect(Object.keys(many)).toEqual(['embed', 'layers.0.mlp_out', 'layers.1.resid_out']);
    // Each hook's files are gone once it is trained.
    expect(readdirSync(dir).filter((f) => f.startsWith('sae-activations-'))).toEqual([]);
    const metrics = JSON.parse(readFileSync(join(many['layers.1.resid_out']!.out, 'metrics.json'), 'utf8')) as Record<string, unknown>;
    expect(metrics).toMatchObject({ hook: 'layers.1.resid_out', arch: 'topk', dSae: 32, k: 4, seed: 7, note: 'test', model: 'tiny' });
    const held = metrics.heldOut as { fve: number; l0: number; deadFraction: number; tokens: number };
    expect(held.l0).toBeLessThanOrEqual(4);
    expect(held.tokens).toBeGreaterThan(8 * 5);
    expect(metrics.trainTokens).toBeGreaterThan(32 * 5);

    counter.passes = 0;
    const one = keeper();
    await trainSaesOnModel(counting, { 'layers.1.resid_out': job('layers.1.resid_out', 7, 'topk') }, data, one.onTrained);
    expect(counter.passes).toBe(3);
    // The same spilled activations and seed: the same SAE, bit for bit, and the same held-out metrics.
    expect(one.kept['layers.1.resid_out']!.weights).toEqual(many['layers.1.resid_out']!.weights);
    expect(one.kept['layers.1.resid_out']!.heldOut).toEqual(many['layers.1.resid_out']!.heldOut);
    // Another seed trains another SAE (the comparison above can fail).
    const other = keeper();
    await trainSaesOnModel(opened, { 'layers.1.resid_out': job('layers.1.resid_out', 8, 'topk') }, data, other.onTrained);
    expect(other.kept['layers.1.resid_out']!.weights).not.toEqual(one.kept['layers.1.resid_out']!.weights);
  });

  it('holds one SAE at a time: each goes to onTrained as soon as it is saved, and a failed save frees it', async () => {
    const job = (hook: string, out = join(dir, `leak-${hook}`)): SaeJob => ({
      out,
      spillDir: dir,
      train: { arch: 'topk', dSae: 32, k: 4, batchSize: 64, seed: 1, warmupSteps: 5, resampleSteps: 0 },
      tokens: () => 64 * 5,
      info: {},
    });
    const data = { model: 'tiny', texts: texts.slice(8), heldOut: texts.slice(0, 8), seed: 3 };
    const jobs = { embed: job('embed'), 'layers.0.resid_out': job('layers.0.resid_out'), 'layers.1.resid_out': job('layers.1.resid_out') };
    const before = tf.memory().numTensors;
    const alive: number[] = [];
    await trainSaesOnModel(opened, jobs, data, (_hook, t) => {
      // The tensors alive beyond those of before: this SAE's four only, whichever hook it is.
      alive.push(tf.memory().numTensors - before);
      t.sae.dispose();
    });
    expect(alive).toEqual([4, 4, 4]);
    expect(tf.memory().numTensors).toBe(before);
    // A save that throws (its folder is a file) frees the SAE it was saving, and nothing reaches onTrained.
    const blocked = join(dir, 'leak-blocked');
    writeFileSync(blocked, 'not a folder');
    let called = 0;
    const err = await trainSaesOnModel(opened, { embed: job('embed', join(blocked, 'sae')) }, data, () => {
      called++;
    }).catch((e: Error) => e);
    expect(String(err)).toMatch(/leak-blocked/);
    expect(called).toBe(0);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('trainSaes', () => {
  const options = (out: string): Parameters<typeof trainSaes>[0] => ({
    model: modelDir,
    hooks: ['layers.*.resid_out', 'embed'],
    input: join(dir, 'train.jsonl'),
    heldOut: join(dir, 'held.jsonl'),
    out,
    maxLength: 32,
    arch: 'topk',
    dSae: 32,
    k: 4,
    tokens: 64 * 20,
    batchSize: 64,
    warmupSteps: 5,
    checkpointEvery: 7,
    seed: 5,
  });

  it('trains one SAE per hook into out/<hook>/; one hook alone trains the same SAE into out itself', async () => {
    const out = join(dir, 'multi');
    const { kept: trained, onTrained } = keeper();
    await trainSaes(options(out), onTrained);
    expect(Object.keys(trained)).toEqual(['embed', 'layers.0.resid_out', 'layers.1.resid_out']);
    expect(readdirSync(out).sort()).toEqual(['embed', 'layers.0.resid_out', 'layers.1.resid_out']);
    for (const [hook, t] of Object.entries(trained)) {
      expect(t.out).toBe(join(out, hook));
      expect(t.steps).toBe(20);
      const sae = loadSae(t.out);
      expect([sae.metadata.hook, sae.dSae]).toEqual([hook, 32]);
      sae.dispose();
      expect(readdirSync(t.out).filter((f) => f.startsWith('sae-activations-'))).toEqual([]);
    }
    const { hooks: _hooks, onStep: _onStep, ...rest } = options(join(dir, 'single'));
    const single = await trainSae({ ...rest, hook: 'layers.0.resid_out' });
    expect(existsSync(join(dir, 'single', 'cfg.json'))).toBe(true);
    expect(weights(single.sae)).toEqual(trained['layers.0.resid_out']!.weights);
    single.sae.dispose();
  });

  it('a run stopped in its second hook resumes there and ends with the weights of an uninterrupted run', async () => {
    const { kept: whole, onTrained } = keeper();
    await trainSaes(options(join(dir, 'whole')), onTrained);
    const out = join(dir, 'stopped');
    const controller = new AbortController();
    const stopped = await trainSaes(
      {
        ...options(out),
        signal: controller.signal,
        onStep: ({ hook, step }) => {
          if (hook === 'layers.0.resid_out' && step === 10) controller.abort('test');
        },
      },
      (_hook, t) => t.sae.dispose(),
    ).catch((err: Error) => err);
    expect(String(stopped)).toMatch(/stopped at step 10 of 20 \(test\); the checkpoint in .*layers\.0\.resid_out.checkpoint resumes it/);
    // The first hook was saved, the third never started; no spilled activations are left behind.
    expect(existsSync(join(out, 'embed', 'cfg.json'))).toBe(true);
    expect(existsSync(join(out, 'layers.0.resid_out', 'cfg.json'))).toBe(false);
    expect(existsSync(join(out, 'layers.1.resid_out', 'checkpoint'))).toBe(false);
    for (const hook of Object.keys(whole)) expect(readdirSync(join(out, hook)).filter((f) => f.startsWith('sae-activations-'))).toEqual([]);
    const { kept: resumed, onTrained: onResumed } = keeper();
    await trainSaes(options(out), onResumed);
    expect(Object.fromEntries(Object.entries(resumed).map(([h, t]) => [h, t.resumedFrom]))).toEqual({
      embed: 20,
      'layers.0.resid_out': 10,
      'layers.1.resid_out': 0,
    });
    for (const hook of Object.keys(whole)) expect(resumed[hook]!.weights, hook).toEqual(whole[hook]!.weights);
  });
});
