import { describe, expect, it } from 'vitest';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from '../../src/cli/main.js';
import { quietly } from './stderr.js';

describe('sae-eraser run', () => {
  const dir = mkdtempSync(join(tmpdir(), 'run-cli-'));
  // Nothing here exists: a run that got past the config would fail on the model or the data instead.
  const config = {
    model: join(dir, 'no-model'),
    probeHook: 'layers.3.resid_out',
    dataset: { train: join(dir, 'train.jsonl'), test: join(dir, 'test.jsonl'), professions: ['surgeon', 'nurse'] },
    saes: { 'layers.3.resid_out': { path: join(dir, 'no-sae'), train: { dSae: 64 } } },
    methods: { original: {}, inlp: { iteration: 5 } },
  };

  it('refuses a config with a bad option before loading anything, naming the file and the field', async () => {
    const path = join(dir, 'bad.json');
    writeFileSync(path, JSON.stringify(config));
    const out = join(dir, 'out');
    const r = await quietly(() => cli(['run', '--config', path, '--out', out, '--quiet']));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^sae-eraser run: error: .*bad\.json: unknown field "methods\.inlp\.iteration"/);
    expect(existsSync(out)).toBe(false);
  });

  it('refuses an --out that is an input or a symbolic link before any work, and leaves both alone', async () => {
    const path = join(dir, 'outs.json');
    writeFileSync(path, JSON.stringify({ ...config, methods: { original: {} } }));
    writeFileSync(config.dataset.train, 'precious\n');
    const same = await quietly(() => cli(['run', '--config', path, '--out', config.dataset.train, '--quiet']));
    expect(same.code).toBe(1);
    expect(same.stderr).toMatch(/--out .*train\.jsonl is also an input/);
    expect(readFileSync(config.dataset.train, 'utf8')).toBe('precious\n');
    const real = join(dir, 'real-out');
    mkdirSync(real);
    const link = join(dir, 'link-out');
    symlinkSync(real, link);
    const linked = await quietly(() => cli(['run', '--config', path, '--out', link, '--quiet']));
    expect(linked.code).toBe(1);
    expect(linked.stderr).toMatch(/link-out is a symbolic link; refusing to replace it/);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    // With --force the link itself goes; the run then gets as far as the (missing) data.
    const forced = await quietly(() => cli(['run', '--config', path, '--out', link, '--force', '--quiet']));
    expect(forced.code).toBe(1);
    expect(forced.stderr).not.toMatch(/symbolic link/);
    expect(lstatSync(real).isDirectory()).toBe(true);
  });

  it("refuses an --out that a hook pattern's SAE path makes, or its folder", async () => {
    const path = join(dir, 'pattern.json');
    const saes = join(dir, 'saes');
    writeFileSync(
      path,
      JSON.stringify({ ...config, saes: { 'layers.*.resid_out': { path: join(saes, '{hook}'), train: { dSae: 64 } } }, methods: { original: {} } }),
    );
    for (const out of [join(saes, 'layers.3.resid_out'), saes]) {
      const r = await quietly(() => cli(['run', '--config', path, '--out', out, '--quiet']));
      expect(r.code, out).toBe(1);
      expect(r.stderr, out).toMatch(/--out .* is also an input/);
      expect(existsSync(out), out).toBe(false);
    }
  });

  it('refuses --val', async () => {
    const path = join(dir, 'good.json');
    writeFileSync(path, JSON.stringify({ ...config, methods: { original: {} } }));
    const r = await quietly(() => cli(['run', '--config', path, '--out', join(dir, 'out2'), '--val', join(dir, 'val.jsonl'), '--quiet']));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--val/);
  });
});
