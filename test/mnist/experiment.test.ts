/**
 * The MNIST digit erasure experiment end to end on the shared MNIST files, at a small budget
 * (2000 training and 1000 test images, a few epochs), and the CLI's refusal of bad --erase lists.
 */
import type { HistoryRecord } from '../../src/util/history.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../../src/engine/engine.js';
import { sharedPath } from '../../src/io/shared.js';
import { cli } from '../../src/cli/main.js';
import { MNIST_METRICS_FORMAT, resolveMnistOptions, runMnistExperiment, type MnistMetrics } from '../../src/mnist/experiment.js';
import { MNIST_MASK_METHODS } from '../../src/mnist/options.js';
import { MnistCnn } from '../../src/models/mnist-cnn.js';
import { quietly } from '../cli/stderr.js';
import { skipWithout } from '../require.js';

const mnistDir = sharedPath('data', 'mnist');
const root = mkdtempSync(join(tmpdir(), 'sae-eraser-mnist-run-'));

describe('mnist options', () => {
  it('fill the documented defaults and refuse bad digit lists, naming the field', () => {
    const o = resolveMnistOptions({ data: '/x' });
    expect(o.erase).toEqual([3, 4, 5, 6, 7, 8, 9]);
    expect(o.methods).toEqual(['sae_mask', 'neuron_mask', 'das_mask']);
    expect([o.trainSize, o.cnn.hidden, o.seed]).toEqual([8000, 128, 42]);
    expect(() => resolveMnistOptions({ data: '/x', erase: [3, 3] })).toThrow(/field "erase": lists a digit twice/);
    expect(() => resolveMnistOptions({ data: '/x', erase: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] })).toThrow(/at least one must be kept/);
    expect(() => resolveMnistOptions({ data: '/x', erase: [10] })).toThrow(/field "erase\[0\]"/);
    expect(() => resolveMnistOptions({ data: '/x', mask: { dasRank: 129 } })).toThrow(/mask\.dasRank" is 129, more than the hidden width/);
    expect(() => resolveMnistOptions({ data: '/x', cnn: { epoch: 3 } } as never)).toThrow(/unknown field "cnn\.epoch"/);
  });
});

describe('sae-eraser mnist argument checks', () => {
  const run = (args: string[]) => quietly(() => cli(['mnist', '--data', mnistDir ?? '/nonexistent', '--out', join(root, 'refused'), ...args]));

  it('refuses bad --erase lists before any work, saying what is wrong', async () => {
    const cases: [string, RegExp][] = [
      ['3,x', /--erase: "x" is not a digit 0-9/],
      ['3,10', /--erase: "10" is not a digit 0-9/],
      ['3,4,3', /--erase lists digit 3 twice/],
      ['0,1,2,3,4,5,6,7,8,9', /--erase lists all ten digits; at least one digit must be kept/],
      [',', /--erase names no digit/],
    ];
    for (const [erase, message] of cases) {
      const { code, stderr } = await run(['--erase', erase]);
      expect(code, erase).toBe(2);
      expect(stderr).toMatch(message);
      expect(stderr).toMatch(/usage: sae-eraser mnist/);
    }
    expect(existsSync(join(root, 'refused'))).toBe(false);
  });

  it('refuses unknown methods and a data folder without the MNIST files, naming the file', async () => {
    expect((await run(['--methods', 'sae_mask,leace'])).stderr).toMatch(/--methods: "leace" is not one of sae_mask, neuron_mask, das_mask/);
    const { code, stderr } = await quietly(() => cli(['mnist', '--data', root, '--out', join(root, 'refused')]));
    expect(code).toBe(1);
    expect(stderr).toMatch(/t10k-images-idx3-ubyte\.gz is missing/);
  });
});

describe.skipIf(skipWithout(mnistDir === undefined, 'the MNIST erasure run needs ../shared/data/mnist (set SAE_ERASER_SHARED)'))(
  'MNIST digit erasure, small budget',
  () => {
    const out = join(root, 'run');
    let m: MnistMetrics;
    const logged: HistoryRecord[] = [];
    beforeAll(async () => {
      await initEngine();
      m = await runMnistExperiment(
        {
          data: mnistDir!,
          trainExamples: 2000,
          testExamples: 1000,
          cnn: { channels: 16, epochs: 3 },
          sae: { dSae: 256, epochs: 60 },
          mask: { epochs: 10 },
          probe: { epochs: 10 },
        },
        out,
        (r) => logged.push(r),
      );
    });

    it('logs the training curves: CNN loss per epoch, SAE loss/FVE/L0 per step, each mask per step', () => {
      const stages = new Map<string, HistoryRecord[]>();
      for (const r of logged) stages.set(r.stage, [...(stages.get(r.stage) ?? []), r]);
      expect(stages.get('cnn')!.map((r) => r.step)).toEqual([1, 2, 3]);
      expect(Object.keys(stages.get('sae')![0]!.values).sort()).toEqual(['fve', 'l0', 'loss']);
      for (const method of ['sae_mask', 'neuron_mask', 'das_mask']) {
        const steps = stages.get(method)!;
        expect(steps.length, method).toBeGreaterThan(1);
        // The temperature anneals down over training.
        expect(steps[steps.length - 1]!.values.temperature!, method).toBeLessThan(steps[0]!.values.temperature!);
      }
    });

    it("writes metrics.json with the base accuracy and every method's scores, intervals and units removed", () => {
      const saved = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as MnistMetrics;
      expect(saved.format).toBe(MNIST_METRICS_FORMAT);
      expect(saved.erase).toEqual([3, 4, 5, 6, 7, 8, 9]);
      expect(saved.keep).toEqual([0, 1, 2]);
      expect(saved.data).toMatchObject({ train: 2000, test: 1000 });
      expect(saved.test_acc.n).toBe(1000);
      expect(Object.keys(saved.methods)).toEqual([...MNIST_MASK_METHODS]);
      for (const method of MNIST_MASK_METHODS) {
        const r = saved.methods[method]!;
        for (const key of ['kept_acc', 'erased_acc', 'erased_recoverability'] as const) {
          expect(r[key].lo).toBeLessThanOrEqual(r[key].value);
          expect(r[key].hi).toBeGreaterThanOrEqual(r[key].value);
        }
        expect(r.kept_acc.n + r.erased_acc.n).toBe(1000);
        expect(r.units_removed).toBeGreaterThan(0);
        expect(r.units_removed).toBeLessThan(r.units_total);
      }
      expect(saved.methods.sae_mask!.units_total).toBe(256);
      expect(saved.methods.neuron_mask!.units_total).toBe(128);
      expect(saved.methods.das_mask!.units_total).toBe(32);
      expect(saved.sae.decoder_bias_probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
      expect(readFileSync(join(out, 'table.md'), 'utf8')).toMatch(/\| das_mask \| \d+ \/ 32 \|/);
      // The saved CNN reproduces the reported test accuracy's model.
      const cnn = MnistCnn.load(join(out, 'cnn.safetensors'));
      expect(cnn.config).toEqual({ channels: 16, hidden: 128 });
      cnn.dispose();
    });

    it('trains a CNN far above chance (10%)', () => {
      expect(m.test_acc.value).toBeGreaterThan(0.85);
      // The base model classifies erased digits as well as kept ones: there is something to erase.
      expect(m.base.erased_acc.value).toBeGreaterThan(0.8);
      expect(m.base.erased_recoverability.value).toBeGreaterThan(0.8);
    });

    it('each mask keeps the kept digits and takes most erased digits away from the frozen head', () => {
      for (const method of MNIST_MASK_METHODS) {
        const r = m.methods[method]!;
        // The kept-digit cross-entropy stays in the objective: kept accuracy barely moves.
        expect(r.kept_acc.value, method).toBeGreaterThan(m.base.kept_acc.value - 0.05);
        // The erased term pushes erased digits to uniform predictions: their accuracy falls by half or more.
        expect(r.erased_acc.value, method).toBeLessThan(m.base.erased_acc.value / 2);
        // The bounded term ends far below its start (confident predictions score several nats).
        expect(r.final_erased_loss, method).toBeLessThan(1.5);
      }
    });
  },
);
