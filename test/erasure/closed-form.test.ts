import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { ActivationCache } from '../../src/cache/cache.js';
import {
  AffineEraser,
  createInlpFitter,
  createLeaceFitter,
  inlpOptionsSchema,
  leaceOptionsSchema,
  resolveLeaceOptions,
} from '../../src/erasure/closed-form.js';
import { saveEraser } from '../../src/erasure/checkpoint.js';
import type { Eraser, EraserSae, FitContext, LabelledSplit } from '../../src/erasure/eraser.js';
import { LeaceFitter, oneHot } from '../../src/erasure/leace.js';
import { loadEraser } from '../../src/erasure/load.js';
import { parseMethodOptions } from '../../src/erasure/methods.js';
import { mulberry32, randomNormal } from '../../src/data/prng.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { parseStrict } from '../../src/util/schema.js';
import { editCheckpointJson, editTensorMetadata, setCheckpointMethod } from './checkpoint-files.js';
import { auditedContext, expectStatedReads } from './label-audit.js';

const HOOK = 'layers.0.resid_out';
const D = 8;
const N = 600;

/** Pooled activations with a planted gender direction (axis 0 + axis 1) and a task direction (axis 2). */
function plantedData(): { cache: ActivationCache; split: LabelledSplit } {
  const rng = mulberry32(5);
  const x = new Float32Array(N * D);
  const y = new Int32Array(N);
  const z = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    y[i] = rng() < 0.5 ? 1 : 0;
    z[i] = rng() < 0.75 ? y[i]! : 1 - y[i]!;
    for (let j = 0; j < D; j++) x[i * D + j] = randomNormal(rng) * (j + 1) * 0.3;
    x[i * D + 0]! += 2 * z[i]!;
    x[i * D + 1]! -= 2 * z[i]!;
    x[i * D + 2]! += 1.5 * y[i]!;
  }
  const rows = Int32Array.from({ length: N }, (_, i) => i);
  return { cache: ActivationCache.fromArrays(N, { [HOOK]: x }), split: { rows, y, z, texts: [] } };
}

function context(cache: ActivationCache, split: LabelledSplit, extra: Partial<FitContext> = {}): FitContext {
  return { cache, concept: split, train: split, probeHook: HOOK, seed: 42, saes: {}, ...extra } as unknown as FitContext;
}

/** The LEACE eraser fitted with `options` (parsed as a config's), without a retrained head unless asked. */
async function fitLeace(ctx: FitContext, options: Record<string, unknown> = {}): Promise<AffineEraser> {
  const eraser = await createLeaceFitter(parseStrict(leaceOptionsSchema, { retrainHead: false, ...options }, 'leace options')).fit(ctx);
  expect(eraser).toBeInstanceOf(AffineEraser);
  return eraser as AffineEraser;
}

async function fitInlpEraser(ctx: FitContext, options: Record<string, unknown> = {}): Promise<AffineEraser> {
  const eraser = await createInlpFitter(parseStrict(inlpOptionsSchema, { retrainHead: false, ...options }, 'inlp options')).fit(ctx);
  expect(eraser).toBeInstanceOf(AffineEraser);
  return eraser as AffineEraser;
}

/** A biased probe on the planted data: the retrained heads inherit its training options. */
function trainedProbe(cache: ActivationCache, split: LabelledSplit): LinearProbe {
  const probe = new LinearProbe(D, 2, { epochs: 5, batchSize: 32, seed: 3 });
  const X = cache.pooled(HOOK, split.rows);
  probe.fit(X, split.y);
  X.dispose();
  return probe;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function classMeanGap(X: tf.Tensor2D, z: Int32Array): number {
  const data = X.arraySync();
  const sums = [new Float64Array(D), new Float64Array(D)];
  const counts = [0, 0];
  data.forEach((row, i) => {
    counts[z[i]!]!++;
    row.forEach((v, j) => (sums[z[i]!]![j]! += v));
  });
  let gap = 0;
  for (let j = 0; j < D; j++) gap = Math.max(gap, Math.abs(sums[0]![j]! / counts[0]! - sums[1]![j]! / counts[1]!));
  return gap;
}

function genderProbeAccuracy(X: tf.Tensor2D, z: Int32Array): number {
  const probe = new LinearProbe(D, 2, { epochs: 30, seed: 1 });
  probe.fit(X, z);
  const pred = probe.predict(X);
  probe.dispose();
  return pred.reduce((a, p, i) => a + (p === z[i] ? 1 : 0), 0) / z.length;
}

beforeAll(async () => {
  await initEngine();
});

describe('closed-form erasers', () => {
  it.each(['leace', 'orth', 'diff_in_means'])('LEACE (%s) equalises the gender class means on the pooled fast path', async (variant) => {
    const { cache, split } = plantedData();
    const before = cache.pooled(HOOK);
    expect(classMeanGap(before, split.z)).toBeGreaterThan(1.5);
    const eraser = await fitLeace(context(cache, split), { variant });
    const after = eraser.erasePooled(cache, split.rows);
    expect(classMeanGap(after, split.z)).toBeLessThan(1e-3);
    expect(eraser.describe().unitsRemoved).toBe(1);
    expect(genderProbeAccuracy(before, split.z)).toBeGreaterThan(0.95);
    // Only gender's linear information goes; the task direction is still there.
    const taskGap = Math.abs(after.arraySync().reduce((a, r, i) => a + (split.y[i] ? r[2]! : -r[2]!), 0) / N);
    expect(taskGap).toBeGreaterThan(0.3);
    tf.dispose([before, after]);
    eraser.dispose();
  });

  it('INLP drives a linear gender probe towards chance', async () => {
    const { cache, split } = plantedData();
    const eraser = await fitInlpEraser(context(cache, split), { iterations: 8 });
    const after = eraser.erasePooled(cache, split.rows);
    expect(eraser.describe().unitsRemoved).toBeGreaterThanOrEqual(1);
    // Gender and task are correlated (75%), so a probe may still reach the task-driven rate, not 95%+.
    expect(genderProbeAccuracy(after, split.z)).toBeLessThan(0.8);
    after.dispose();
    eraser.dispose();
  });

  it('token-level edits agree with the pooled path, and checkpoints round-trip', async () => {
    const { cache, split } = plantedData();
    const eraser = await fitLeace(context(cache, split));
    // Treat 6 pooled rows as the tokens of one sequence: mean of edited tokens = erased mean.
    const rows = [0, 1, 2, 3, 4, 5];
    const tokens = tf.expandDims(cache.pooled(HOOK, rows), 0) as tf.Tensor3D;
    const edited = eraser.edits()[HOOK]!(tokens);
    const pooledOfEdited = tf.mean(edited, 1);
    const erasedMean = tf.mean(eraser.erasePooled(cache, rows), 0, true);
    expect(tf.max(tf.abs(tf.sub(pooledOfEdited, erasedMean))).dataSync()[0]).toBeLessThan(1e-5);

    const dir = mkdtempSync(join(tmpdir(), 'leace-'));
    saveEraser(eraser, dir);
    const loaded = loadEraser(dir, { probeHook: HOOK });
    expect(loaded.method).toBe('leace');
    expect(loaded.head).toBeUndefined();
    expect(loaded.describe()).toEqual(eraser.describe());
    const a = eraser.erasePooled(cache, rows).dataSync();
    const b = loaded.erasePooled(cache, rows)!.dataSync();
    for (let i = 0; i < a.length; i++) expect(b[i]).toBe(a[i]);
    // The hook's width comes from an SAE there, when one is given.
    const wider = { [HOOK]: { dIn: D + 1, dSae: 4 } as EraserSae };
    expect(() => loadEraser(dir, { saes: wider })).toThrow(/erasure has width 8, but the hook has width 9/);
    expect(() => loadEraser(dir, { probeHook: 'embed' })).toThrow(/fitted at "layers.0.resid_out", but the probe reads "embed"/);
    // The checkpoint records the options with the defaults of the fields its variant reads.
    const json = JSON.parse(readFileSync(join(dir, 'eraser.json'), 'utf8')) as { method: string; options: unknown };
    expect(json.options).toEqual({ variant: 'leace', shrinkage: true, svdTol: 0.01, retrainHead: false });
    // One loader for the format: a leace checkpoint comes back as leace, and a method outside the format is refused.
    setCheckpointMethod(dir, 'shift');
    expect(() => loadEraser(dir)).toThrow(/field "method" is "shift"; the sae-eraser\/affine format holds leace and inlp/);
    expect(() => eraser.edits()[HOOK]!(tf.zeros([1, 2, D + 1]) as tf.Tensor3D)).toThrow(/expects width 8/);
    loaded.dispose();
    eraser.dispose();
  });

  it('LEACE honours shrinkage: false, exactly as LeaceFitter does', async () => {
    const { cache, split } = plantedData();
    // Few examples for the width, where shrinkage matters.
    const few: LabelledSplit = { rows: split.rows.slice(0, 24), y: split.y.slice(0, 24), z: split.z.slice(0, 24), texts: [] };
    const shrunk = await fitLeace(context(cache, few));
    const plain = await fitLeace(context(cache, few), { shrinkage: false });
    const X = cache.pooled(HOOK, few.rows);
    const want = new LeaceFitter(D, 2, { shrinkage: false }).update(X, oneHot(few.z, 2)).eraser();
    const wantShrunk = new LeaceFitter(D, 2).update(X, oneHot(few.z, 2)).eraser();
    X.dispose();
    expect(Array.from(plain.erasure.left)).toEqual(Array.from(want.left));
    expect(Array.from(plain.erasure.right)).toEqual(Array.from(want.right));
    expect(Array.from(shrunk.erasure.right)).toEqual(Array.from(wantShrunk.right));
    expect(maxAbsDiff(plain.erasure.right, shrunk.erasure.right)).toBeGreaterThan(1e-3);
    expect(plain.options).toMatchObject({ shrinkage: false });
    plain.dispose();
    shrunk.dispose();
  });

  it('states the labels it read: the concept gender labels, and the ambiguous task labels (probe or retrained head)', async () => {
    const { cache, split } = plantedData();
    const probe = trainedProbe(cache, split);
    const want = { labels: ['ambiguous_task', 'concept_gender'], handPicked: false };
    const fits: [string, (ctx: FitContext) => Promise<Eraser>][] = [
      ['leace, no head', (ctx) => fitLeace(ctx, { variant: 'orth' })],
      ['inlp, no head', (ctx) => fitInlpEraser(ctx, { iterations: 2 })],
      ['leace, retrained head', (ctx) => createLeaceFitter(parseStrict(leaceOptionsSchema, {}, 'leace')).fit(ctx)],
    ];
    for (const [name, fit] of fits) {
      const { ctx, reads } = auditedContext(context(cache, split, { probe }));
      const eraser = await fit(ctx);
      expect(eraser.describe().supervision, name).toEqual(want);
      expectStatedReads(eraser, reads);
      // Never the concept set's task labels: the erasure is fitted on gender alone.
      expect(reads.has('concept_task'), name).toBe(false);
      expect(reads.has('ambiguous_task'), name).toBe(eraser.head !== undefined);
      eraser.dispose();
    }
    probe.dispose();
  });

  it("retrains the head by default with the biased probe's options; heads round-trip for leace and inlp", async () => {
    const { cache, split } = plantedData();
    const probe = trainedProbe(cache, split);
    const ctx = context(cache, split, { probe });
    const fitted: Eraser[] = [
      await createLeaceFitter(parseStrict(leaceOptionsSchema, {}, 'leace')).fit(ctx),
      await createInlpFitter(parseStrict(inlpOptionsSchema, { iterations: 3 }, 'inlp')).fit(ctx),
    ];
    for (const eraser of fitted) {
      const head = eraser.head!;
      expect(head).toBeDefined();
      expect(head).not.toBe(probe);
      const X = eraser.erasePooled(cache, split.rows)!;
      const manual = new LinearProbe(D, 2, { ...probe.options, progressLabel: undefined });
      manual.fit(X, split.y);
      const dir = mkdtempSync(join(tmpdir(), `${eraser.method}-head-`));
      saveEraser(eraser, dir);
      const loaded = loadEraser(dir, { probeHook: HOOK });
      expect(loaded.method).toBe(eraser.method);
      expect(loaded.describe()).toEqual(eraser.describe());
      const Y = loaded.erasePooled(cache, split.rows)!;
      expect(maxAbsDiff(X.dataSync(), Y.dataSync())).toBe(0);
      const [z1, z2, z3] = [head.logits(X), loaded.head!.logits(X), manual.logits(X)];
      expect(maxAbsDiff(z1.dataSync(), z2.dataSync())).toBe(0);
      expect(maxAbsDiff(z1.dataSync(), z3.dataSync())).toBe(0);
      // Options that say the head was retrained, with the head gone, are refused rather than loaded headless.
      editCheckpointJson(dir, (j) => (j.head = null));
      expect(() => loadEraser(dir)).toThrow(/retrainHead: true, but field "head" is null/);
      tf.dispose([X, Y, z1, z2, z3]);
      manual.dispose();
      loaded.dispose();
      eraser.dispose();
    }
    probe.dispose();
  });

  it('validates options when a config is read', () => {
    const leace = (o: unknown): unknown => resolveLeaceOptions(parseMethodOptions('leace', o, 'methods.leace').options as never);
    expect(leace({})).toEqual({ variant: 'leace', shrinkage: true, svdTol: 0.01, retrainHead: true });
    expect(parseMethodOptions('inlp', undefined, 'methods.inlp').options).toEqual({ iterations: 10, retrainHead: true });
    expect(() => parseMethodOptions('inlp', { iterations: '20' }, 'methods.inlp')).toThrow(
      /methods.inlp: field "iterations": .*expected number, received string/,
    );
    expect(() => parseMethodOptions('inlp', { iteration: 5 }, 'methods.inlp')).toThrow(
      /methods.inlp: unknown field "iteration" \(known: iterations, retrainHead\)/,
    );
    expect(() => parseMethodOptions('inlp', { iterations: 0 }, 'methods.inlp')).toThrow(/field "iterations"/);
    expect(() => parseMethodOptions('leace', { variant: 'oblique' }, 'methods.leace')).toThrow(/field "variant"/);
    expect(() => parseMethodOptions('leace', { shrinkage: 'no' }, 'methods.leace')).toThrow(/field "shrinkage"/);
    expect(() => parseMethodOptions('leace', { retrainHead: 1 }, 'methods.leace')).toThrow(/field "retrainHead"/);
  });

  it('refuses LEACE options the variant does not read; resolves the defaults of those it reads', () => {
    const parse = (o: unknown): Record<string, unknown> => parseMethodOptions('leace', o, 'methods.leace').options;
    // Only what the config sets is parsed; the defaults of variant-dependent fields are applied by the fitter.
    expect(parse({})).toEqual({ variant: 'leace', retrainHead: true });
    expect(() => parse({ variant: 'orth', shrinkage: false })).toThrow(
      /methods.leace: field "shrinkage": applies only to variant "leace" \(variant is "orth"\)/,
    );
    expect(() => parse({ variant: 'diff_in_means', shrinkage: true })).toThrow(/field "shrinkage": applies only to variant "leace"/);
    expect(() => parse({ variant: 'diff_in_means', svdTol: 0.1 })).toThrow(/field "svdTol": applies only to variants "leace" and "orth"/);
    expect(resolveLeaceOptions(parse({ variant: 'orth', svdTol: 0.1 }) as never)).toEqual({ variant: 'orth', svdTol: 0.1, retrainHead: true });
    expect(resolveLeaceOptions(parse({ variant: 'orth' }) as never)).toEqual({ variant: 'orth', svdTol: 0.01, retrainHead: true });
    expect(resolveLeaceOptions(parse({ variant: 'diff_in_means' }) as never)).toEqual({ variant: 'diff_in_means', retrainHead: true });
    expect(resolveLeaceOptions(parse({ shrinkage: false }) as never)).toEqual({ variant: 'leace', shrinkage: false, svdTol: 0.01, retrainHead: true });
  });

  it('refuses a malformed checkpoint, naming the file and the field', async () => {
    const { cache, split } = plantedData();
    const eraser = await fitLeace(context(cache, split), { variant: 'orth' });
    const dir = mkdtempSync(join(tmpdir(), 'leace-bad-'));
    saveEraser(eraser, dir);
    eraser.dispose();
    const good = readFileSync(join(dir, 'eraser.json'), 'utf8');
    const withJson = (edit: (json: Record<string, unknown>) => void): (() => unknown) => {
      writeFileSync(join(dir, 'eraser.json'), good);
      editCheckpointJson(dir, edit);
      return () => loadEraser(dir);
    };
    const path = join(dir, 'eraser.json').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    expect(withJson((j) => (j.options = 'fast'))).toThrow(new RegExp(`^${path}: field "options": `));
    expect(withJson((j) => (j.options = { variant: 'orth', shrinkage: true, retrainHead: false }))).toThrow(
      /field "options.shrinkage": applies only to variant "leace"/,
    );
    expect(withJson((j) => (j.options = { variant: 'orth', retrainHead: false, speed: 2 }))).toThrow(/unknown field "options.speed"/);
    expect(withJson((j) => (j.extra = 1))).toThrow(new RegExp(`^${path}: unknown field "extra"`));
    expect(withJson((j) => (j.dim = 'eight'))).toThrow(/field "dim": must be a positive integer/);
    expect(withJson((j) => (j.rank = D + 1))).toThrow(/field "rank" must be an integer in \[0, 8\]/);
    expect(withJson((j) => delete j.hook)).toThrow(/field "hook"/);
    expect(withJson((j) => (j.version = 1))).toThrow(/field "version" is 1, an earlier checkpoint layout/);
    expect(withJson((j) => (j.format = 'sae-eraser/mask'))).toThrow(
      /field "format" is "sae-eraser\/mask", but .*eraser\.safetensors was written for format "sae-eraser\/affine"/,
    );
    // The two files must be one checkpoint: the method recorded in the tensors' metadata must match.
    writeFileSync(join(dir, 'eraser.json'), good);
    editTensorMetadata(dir, (m) => (m.method = 'inlp'));
    expect(() => loadEraser(dir)).toThrow(/field "method" is "leace", but .*eraser\.safetensors was written for method "inlp"/);
    editTensorMetadata(dir, (m) => (m.method = 'leace'));
    loadEraser(dir).dispose();
  });
});
