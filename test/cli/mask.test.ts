/**
 * `sae-eraser mask` with the original project's flags: the probe reader on real torch.save files,
 * the dictionary-folder layouts, the errors raised before any work, and two runs on the offline
 * MiniLM setup (configs/ci-minilm-surgeon-nurse.json, surgeon/nurse from ../shared): the original
 * command line with a trained probe, and a given PyTorch probe whose answers are known.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from '../../src/cli/main.js';
import { readProbeWeights, resolveDictionary } from '../../src/cli/mask.js';
import { initEngine } from '../../src/engine/engine.js';
import { LinearProbe } from '../../src/probe/linear.js';
import { projectRoot, sharedDir } from '../../src/io/shared.js';
import type { ExperimentResult } from '../../src/experiment/results.js';
import type { RunConfigFile } from '../../src/experiment/run-folder.js';
import { loadEraser } from '../../src/erasure/load.js';
import { loadSae } from '../../src/sae/load.js';
import { pythonBin } from '../reference/python.js';
import { skipWithout } from '../require.js';
import { quietly } from './stderr.js';

/** Writes probes with PyTorch: Sparse Feature Circuits' probe module (net.weight, net.bias), a bare nn.Linear, and files that must be refused. */
const WRITE_PROBES = `
import json, os, sys, torch
from torch import nn
from safetensors.torch import save_file
out = sys.argv[1]
class Probe(nn.Module):  # as in Sparse Feature Circuits
    def __init__(self, activation_dim):
        super().__init__()
        self.net = nn.Linear(activation_dim, 1, bias=True)
torch.manual_seed(0)
sfc = Probe(384)
torch.save(sfc.state_dict(), os.path.join(out, "sfc_probe.pth"))
constant = Probe(384)
with torch.no_grad():
    constant.net.weight.zero_()
    constant.net.bias.fill_(1.0)
torch.save(constant.state_dict(), os.path.join(out, "constant.pth"))
linear = nn.Linear(16, 1).half()
torch.save(linear.state_dict(), os.path.join(out, "linear_f16.pt"))
save_file({"weight": linear.weight.float().contiguous(), "bias": linear.bias.float().contiguous()}, os.path.join(out, "plain.safetensors"))
torch.save(nn.Linear(16, 2).state_dict(), os.path.join(out, "two_out.pth"))
torch.save(nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 1)).state_dict(), os.path.join(out, "two_layers.pth"))
torch.save(sfc, os.path.join(out, "module.pth"))
json.dump({
    "sfc": {"weight": sfc.net.weight.flatten().tolist(), "bias": sfc.net.bias.tolist()},
    "linear": {"weight": linear.weight.float().flatten().tolist(), "bias": linear.bias.float().tolist()},
}, open(os.path.join(out, "values.json"), "w"))
`;

describe('the probe file (-pp)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mask-probe-'));
  let values: Record<string, { weight: number[]; bias: number[] }>;
  beforeAll(async () => {
    await initEngine();
    execFileSync(pythonBin(), ['-c', WRITE_PROBES, dir], { stdio: ['ignore', 'inherit', 'inherit'] });
    values = JSON.parse(readFileSync(join(dir, 'values.json'), 'utf8')) as typeof values;
  }, 120_000);

  it("reads Sparse Feature Circuits' probe state dict (net.weight [1, d], net.bias [1]) exactly as PyTorch saved it", () => {
    const p = readProbeWeights(join(dir, 'sfc_probe.pth'));
    expect(p.dIn).toBe(384);
    expect(Array.from(p.weight)).toEqual(Array.from(Float32Array.from(values.sfc!.weight)));
    expect(Array.from(p.bias)).toEqual(Array.from(Float32Array.from(values.sfc!.bias)));
  });

  it('reads a bare nn.Linear state dict in float16, plain safetensors, and a probe saved by sae-eraser probe', () => {
    const want = { weight: Array.from(Float32Array.from(values.linear!.weight)), bias: Array.from(Float32Array.from(values.linear!.bias)) };
    for (const file of ['linear_f16.pt', 'plain.safetensors']) {
      const p = readProbeWeights(join(dir, file));
      expect({ dIn: p.dIn, weight: Array.from(p.weight), bias: Array.from(p.bias) }, file).toEqual({ dIn: 16, ...want });
    }
    const ours = new LinearProbe(16, 2);
    ours.setParameters(Float32Array.from(want.weight), Float32Array.from(want.bias));
    ours.save(join(dir, 'ours.safetensors'));
    ours.dispose();
    const p = readProbeWeights(join(dir, 'ours.safetensors'));
    expect({ dIn: p.dIn, weight: Array.from(p.weight), bias: Array.from(p.bias) }).toEqual({ dIn: 16, ...want });
  });

  it('refuses a probe that is not one binary linear layer, and a pickled module, naming the file', () => {
    expect(() => readProbeWeights(join(dir, 'two_out.pth'))).toThrow(/two_out\.pth: tensor "weight" has shape \[2, 16\], expected \[1, d\]/);
    expect(() => readProbeWeights(join(dir, 'two_layers.pth'))).toThrow(
      /two_layers\.pth: expected the state dict of one linear layer .*found 0\.weight, 0\.bias, 1\.weight, 1\.bias/,
    );
    // torch.save(module) pickles the class itself; the allow-list unpickler refuses to import it.
    expect(() => readProbeWeights(join(dir, 'module.pth'))).toThrow(
      /module\.pth: refusing to unpickle the global "__main__\.Probe".*A probe must be a state dict: torch\.save\(probe\.state_dict\(\), "probe\.pth"\)$/,
    );
    expect(() => readProbeWeights(join(dir, 'missing.pth'))).toThrow(/missing\.pth: probe file not found/);
  });
});

describe('dictionary folders (-rpath, -mpath, -atpath, -dpath)', () => {
  const root = mkdtempSync(join(tmpdir(), 'mask-dicts-'));
  const touch = (...parts: string[]): void => {
    mkdirSync(join(root, ...parts.slice(0, -1)), { recursive: true });
    writeFileSync(join(root, ...parts), '');
  };
  beforeAll(() => {
    // The Feature Circuits layout: <root>/<site>/<id>_<size>/ae.pt, two sizes for resid 3.
    touch('fc', 'resid_out_layer3', '10_32768', 'ae.pt');
    touch('fc', 'resid_out_layer3', '10_4096', 'ae.pt');
    touch('fc', 'mlp_out_layer1', '10_32768', 'ae.pt');
    touch('fc', 'embed', '10_32768', 'ae.pt');
    // Hook-named SAE folders (SAELens), as sae-eraser run trains them.
    touch('ours', 'layers.2.resid_out', 'cfg.json');
    // One SAE on its own.
    touch('single', 'ae.pt');
  });

  it("follows the original's prefix form: -rpath .../resid_out_layer -> resid_out_layer{i}/<id>_<size>", () => {
    expect(resolveDictionary('-rpath', join(root, 'fc', 'resid_out_layer'), 'layers.3.resid_out', 32768)).toBe(
      join(root, 'fc', 'resid_out_layer3', '10_32768'),
    );
    expect(resolveDictionary('-mpath', join(root, 'fc', 'mlp_out_layer'), 'layers.1.mlp_out')).toBe(join(root, 'fc', 'mlp_out_layer1', '10_32768'));
    expect(resolveDictionary('-dpath', join(root, 'fc', 'embed'), 'embed')).toBe(join(root, 'fc', 'embed', '10_32768'));
  });

  it('also takes a Feature Circuits root, a folder of hook-named SAEs, or one SAE', () => {
    expect(resolveDictionary('-rpath', join(root, 'fc'), 'layers.3.resid_out', 4096)).toBe(join(root, 'fc', 'resid_out_layer3', '10_4096'));
    expect(resolveDictionary('-dpath', join(root, 'fc'), 'embed')).toBe(join(root, 'fc', 'embed', '10_32768'));
    expect(resolveDictionary('-rpath', join(root, 'ours'), 'layers.2.resid_out')).toBe(join(root, 'ours', 'layers.2.resid_out'));
    expect(resolveDictionary('-rpath', join(root, 'single'), 'layers.5.resid_out')).toBe(join(root, 'single'));
  });

  it('says what it looked for, and asks for -ad/-ef when the size is ambiguous or absent', () => {
    expect(() => resolveDictionary('-rpath', join(root, 'fc'), 'layers.3.resid_out')).toThrow(
      /holds several dictionaries \(10_32768, 10_4096\); choose one with -ad and -ef/,
    );
    expect(() => resolveDictionary('-rpath', join(root, 'fc'), 'layers.3.resid_out', 512)).toThrow(
      /has no dictionary of size 512 \(-ad x -ef\); found 10_32768, 10_4096/,
    );
    expect(() => resolveDictionary('-atpath', join(root, 'fc', 'attn_out_layer'), 'layers.0.attn_out')).toThrow(
      /^-atpath .*attn_out_layer: no dictionary for layers\.0\.attn_out \(looked for .*attn_out_layer0, /,
    );
  });
});

const shared = sharedDir();
const ciConfig = join(projectRoot(), 'configs/ci-minilm-surgeon-nurse.json');

describe('sae-eraser mask: refused before any work', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mask-cli-'));
  const run = (args: string[]): Promise<{ code: number; stderr: string }> => quietly(() => cli(['mask', '--config', ciConfig, '--quiet', ...args]));

  it('--help prints the usage with the original flags', async () => {
    const help = await quietly(() => cli(['mask', '--help']));
    expect(help.code).toBe(0);
    for (const flag of ['-nds', '-e/--epochs', '-lr', '-btr', '-bts', '-layer', '-eval', '-pp', '-mb', '-d', '-rpath', '-ad', '--original-recipe']) {
      expect(help.stdout, flag).toContain(flag);
    }
  });

  it('usage errors exit 2 with the flag as typed', async () => {
    const out = join(dir, 'never');
    for (const [args, message] of [
      [['--out', out], /-nds\/--method is required/],
      [['--out', out, '-nds', 'sae_mask', '-layer', '[3,x]'], /-layer "\[3,x\]": "x" is neither a submodule index/],
      [['--out', out, '-nds', 'sae_mask', '-e', 'ten'], /-e must be an integer >= 1, got "ten"/],
      [['--out', out, '-nds', 'sae_mask', '-lr', '0'], /-lr must be a positive number, got "0"/],
      [['--out', out, '-nds', 'sae_mask', '-eval', 'age'], /-eval must be profession or gender, got "age"/],
      [['--out', out, '-nds', 'svd masking'], /unknown method "svd masking"/],
      [['--out', out, '-nds', 'sae_mask', '-layer', '[9]'], /sae_mask at layers\.2\.resid_out needs an SAE: give --resid-path \(-rpath\) DIR/],
    ] as const) {
      const r = await run([...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(message);
    }
    expect(existsSync(out)).toBe(false);
  });
});

describe.skipIf(skipWithout(shared === undefined, 'the mask CLI runs need ../shared (set SAE_ERASER_SHARED)'))(
  'sae-eraser mask on the offline MiniLM setup',
  () => {
    const dir = mkdtempSync(join(tmpdir(), 'mask-run-'));
    const probes = join(dir, 'probes');
    beforeAll(async () => {
      await initEngine();
      mkdirSync(probes);
      execFileSync(pythonBin(), ['-c', WRITE_PROBES, probes], { stdio: ['ignore', 'inherit', 'inherit'] });
    }, 120_000);

    it('runs the original command line and recipe (sae_mask, -eval profession, -mb, -d cuda) and writes the metrics and the eraser', async () => {
      const out = join(dir, 'sae');
      const r = await quietly(
        () =>
      cli(['mask', '--config', ciConfig, '--out', out, '--quiet',
        '-nds', 'sae_mask', '-e', '2', '-lr', '0.01', '-btr', '32', '-bts', '64', '-layer', '[12]', '-mb', '-d', 'cuda', '-eval', 'profession', '-task', 'train', '--original-recipe']), // prettier-ignore
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(
        /^-d cuda: accepted; this run uses the tfjs \w+ backend, \d+ threads? \(training and edited passes\), and ONNX Runtime on the CPU, \d+ threads? \(inference-only passes\)$/m,
      );
      // -eval profession reports profession accuracy first.
      expect(r.stdout).toMatch(/^sae_mask: \d+ units removed; profession accuracy [\d.]+% \(before: [\d.]+%\); gender agreement/m);

      const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as ExperimentResult;
      expect(Object.keys(metrics.methods)).toEqual(['original', 'sae_mask']);
      expect(metrics.seeds).toEqual([42]);
      // The original recipe (objective "task" on the balanced split) reads the balanced task labels, and says so.
      expect(metrics.methods.sae_mask!.supervision).toEqual({ labels: ['ambiguous_task', 'balanced_task'], handPicked: false });
      // -mb: at most 1000 examples per training split.
      expect(metrics.n_train.balanced).toBeLessThanOrEqual(1000);
      for (const [method, m] of Object.entries(metrics.methods)) {
        expect(Object.keys(m.subgroup_acc).sort(), method).toEqual(['female_nurse', 'female_surgeon', 'male_nurse', 'male_surgeon']);
        for (const s of [m.profession_acc, m.gender_agreement, m.worst_group_acc, m.gender_probe_acc]) {
          expect(s.mean).toBeGreaterThanOrEqual(0);
          expect(s.mean).toBeLessThanOrEqual(1);
        }
      }
      // The flags as the method's options and the config's overrides.
      const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as RunConfigFile;
      expect(config.config.methods).toEqual({
        original: { method: 'original', name: 'original', options: {} },
        sae_mask: {
          method: 'sae_mask',
          name: 'sae_mask',
          options: expect.objectContaining({
            ...{ epochs: 2, lr: 0.01, batchSize: 32, hooks: ['layers.3.resid_out'], objective: 'task', taskSplit: 'balanced' },
            ...{ initKeep: 0.5, l1: 0, hardMask: false, keepError: false },
          }),
        },
      });
      expect(config.config.batchSize).toBe(64);
      expect((config.config.dataset as { limits: unknown }).limits).toEqual({ ambiguous: 600, balanced: 1000, concept: 1000, testSubgroup: 100 });
      expect(Object.keys(config.config.saes as object)).toEqual(['layers.3.resid_out']);
      const command = JSON.parse(readFileSync(join(out, 'command.json'), 'utf8')) as { device: { requested: string; ran: { backend: string } } };
      expect(command.device.requested).toBe('cuda');

      // Units removed: what metrics.json reports is what the saved eraser removes.
      const sae = loadSae(join(projectRoot(), '.cache/saes/minilm-ci-x16/layers.3.resid_out'), { hook: 'layers.3.resid_out' });
      const eraser = loadEraser(join(out, 'erasers', 'sae_mask', 'seed-42'), { saes: { 'layers.3.resid_out': sae } });
      try {
        const described = eraser.describe();
        expect(metrics.methods.sae_mask!.units_removed).toBe(described.unitsRemoved);
        expect(described.unitsRemoved).toBeGreaterThan(0);
        expect(described.unitsRemoved).toBeLessThan(6144);
      } finally {
        eraser.dispose();
        sae.dispose();
      }
      expect(readFileSync(join(out, 'table.md'), 'utf8')).toMatch(/\| sae_mask \|/);
    }, 600_000);

    it('masks against a given PyTorch probe (-pp .pth, the constant probe says nurse for every bio) with the SAE from -rpath', async () => {
      const out = join(dir, 'given-probe');
      // Relative, as the config names the SAE, so that the run shares the first run's activation cache.
      const rpath = '.cache/saes/minilm-ci-x16';
      const r = await quietly(
        () =>
        cli(['mask', '--config', ciConfig, '--out', out, '--quiet',
          '-nds', 'sae masking', '-e', '2', '-lr', '0.05', '-btr', '32', '-layer', '3', '-mb', '-eval', 'gender', '-pp', join(probes, 'constant.pth'), '-rpath', rpath, '-mpath', dir]), // prettier-ignore
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/^device: this run uses the tfjs/m);
      // -eval gender reports gender agreement and the gender probe first.
      expect(r.stdout).toMatch(
        /^sae_mask: \d+ units removed; gender agreement [\d.]+% \(before: [\d.]+%\), gender probe [\d.]+% \(before: [\d.]+%\); profession/m,
      );
      expect(r.stderr).toMatch(/note: -mpath is not used: no masked hook \(layers\.3\.resid_out\) is of its kind/);
      const metrics = JSON.parse(readFileSync(join(out, 'metrics.json'), 'utf8')) as ExperimentResult;
      const original = metrics.methods.original!;
      // Weight 0, bias 1: z = 1 > 0 for every bio, i.e. the second profession (nurse).
      expect(original.subgroup_acc).toEqual({
        male_surgeon: expect.objectContaining({ mean: 0 }),
        female_surgeon: expect.objectContaining({ mean: 0 }),
        male_nurse: expect.objectContaining({ mean: 1 }),
        female_nurse: expect.objectContaining({ mean: 1 }),
      });
      expect(original.profession_acc.mean).toBe(0.5); // the balanced split is half nurses
      const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as RunConfigFile;
      expect(config.config.methods.sae_mask).toEqual({
        method: 'sae_mask',
        name: 'sae_mask',
        options: expect.objectContaining({ objective: 'concept', epochs: 2, lr: 0.05, hooks: ['layers.3.resid_out'], initKeep: 0.99, l1: 0.05 }),
      });
      expect(config.config.saes).toEqual({ 'layers.3.resid_out': { path: join(rpath, 'layers.3.resid_out') } });
      expect(config.inputs?.probe).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(metrics.methods.sae_mask!.units_removed).toBeLessThan(6144);
    }, 600_000);

    it('checks the probe and the SAE against -ad and -ef before any work', async () => {
      const probe = await quietly(() =>
        cli([
          'mask',
          '--config',
          ciConfig,
          '--out',
          join(dir, 'wrong-probe'),
          '--quiet',
          '-nds',
          'neuron_mask',
          '-pp',
          join(probes, 'constant.pth'),
          '-ad',
          '512',
        ]),
      );
      expect(probe.code).toBe(1);
      expect(probe.stderr).toMatch(/constant\.pth: the probe reads 384 activations, but -ad is 512/);
      const sae = await quietly(() =>
        cli([
          'mask',
          '--config',
          ciConfig,
          '--out',
          join(dir, 'wrong-sae'),
          '--quiet',
          '-nds',
          'sae_mask',
          '-rpath',
          '.cache/saes/minilm-ci-x16',
          '-ad',
          '384',
          '-ef',
          '5',
        ]),
      );
      expect(sae.code).toBe(1);
      expect(sae.stderr).toMatch(/layers\.3\.resid_out: the SAE at layers\.3\.resid_out is 384 -> 6144, but -ad\/-ef ask for 384 -> 1920 \(384 x 5\)/);
      expect(existsSync(join(dir, 'wrong-probe', 'config.json')) || existsSync(join(dir, 'wrong-sae', 'config.json'))).toBe(false);
    }, 600_000);
  },
);
