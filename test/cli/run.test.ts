import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
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
    const started = Date.now();
    const r = await quietly(() => cli(['run', '--config', path, '--out', out, '--quiet']));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^sae-eraser run: error: .*bad\.json: unknown field "methods\.inlp\.iteration"/);
    expect(existsSync(out)).toBe(false);
    expect(Date.now() - started).toBeLessThan(60_000);
  });

  it('refuses --val', async () => {
    const path = join(dir, 'good.json');
    writeFileSync(path, JSON.stringify({ ...config, methods: { original: {} } }));
    const r = await quietly(() => cli(['run', '--config', path, '--out', join(dir, 'out2'), '--val', join(dir, 'val.jsonl'), '--quiet']));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--val/);
  });
});
