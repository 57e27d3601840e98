/** Choosing the executor (src/models/executor.ts) and the checks `OnnxForward` makes on a batch. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine, tf } from '../../src/engine/engine.js';
import { chooseExecutor, OnnxForward, setExecutor } from '../../src/models/executor.js';
import type { Model } from '../../src/models/model.js';
import { openModel, type OpenedModel } from '../../src/models/open.js';
import { writeTinyBert } from '../cli/tiny-bert.js';

let dir: string;
let opened: OpenedModel;

beforeAll(async () => {
  await initEngine();
  dir = mkdtempSync(join(tmpdir(), 'executor-'));
  opened = await openModel(writeTinyBert(join(dir, 'model'), { d: 16, layers: 1, heads: 2, maxPositions: 16 }));
});

afterAll(() => {
  opened.model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('chooseExecutor', () => {
  const saved = process.env.SAE_ERASER_EXECUTOR;
  afterEach(() => {
    setExecutor(undefined);
    if (saved === undefined) delete process.env.SAE_ERASER_EXECUTOR;
    else process.env.SAE_ERASER_EXECUTOR = saved;
  });

  it('prefers ONNX Runtime where the model has an ONNX form; a request, then setExecutor, then the environment override it', () => {
    delete process.env.SAE_ERASER_EXECUTOR;
    const noGraph: Model = {
      ...opened.model,
      config: opened.model.config,
      hookNames: opened.model.hookNames,
      run: (b, o) => opened.model.run(b, o),
      forwardGraph: undefined,
      dispose: () => {},
    };
    expect(chooseExecutor(opened.model)).toBe('onnx');
    expect(chooseExecutor(noGraph)).toBe('tfjs');
    process.env.SAE_ERASER_EXECUTOR = 'tfjs';
    expect(chooseExecutor(opened.model)).toBe('tfjs');
    setExecutor('onnx');
    expect(chooseExecutor(opened.model)).toBe('onnx');
    expect(chooseExecutor(opened.model, 'tfjs')).toBe('tfjs');
    expect(() => chooseExecutor(noGraph, 'onnx')).toThrow(/the ONNX executor was asked for, but bert models have no ONNX form here/);
    setExecutor(undefined);
    process.env.SAE_ERASER_EXECUTOR = 'cuda';
    expect(() => chooseExecutor(opened.model)).toThrow(/SAE_ERASER_EXECUTOR must be one of onnx, tfjs, got "cuda"/);
  });
});

describe('OnnxForward', () => {
  it('checks a batch as Model.run does: a negative token id or a sequence past maxPositions is an error, not a silent wrap-around', async () => {
    const hook = 'layers.0.resid_out';
    const forward = await OnnxForward.create(opened.model, [hook], (g, hooks) => g.output('acts', hooks[hook]!, 'float32', ['batch', 'seq', 16]), 'check');
    const batch = (ids: number[][]) => ({
      inputIds: tf.tensor2d(ids, undefined, 'int32'),
      attentionMask: tf.onesLike(tf.tensor2d(ids, undefined, 'int32')) as tf.Tensor2D,
    });
    try {
      const good = batch([[1, 2, 3]]);
      expect((await forward.run(good)).acts!.dims).toEqual([1, 3, 16]);
      const negative = batch([[1, -2, 3]]);
      await expect(forward.run(negative)).rejects.toThrow(/token id/i);
      const long = batch([Array.from({ length: 17 }, () => 1)]);
      await expect(forward.run(long)).rejects.toThrow(/16/);
      tf.dispose([good.inputIds, good.attentionMask, negative.inputIds, negative.attentionMask, long.inputIds, long.attentionMask]);
    } finally {
      await forward.dispose();
    }
  });
});
