/** The front door: `sae-eraser --help` and the `--json` output every subcommand shares. */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from '../../src/cli/main.js';
import { quietly } from './stderr.js';
import { makeRunFolder } from '../report/run-fixture.js';

const COMMANDS = ['activations', 'mnist', 'probe', 'report', 'run', 'train-sae'];

describe('sae-eraser', () => {
  it('--help lists every command with its one-line summary and a copy-paste example', async () => {
    const r = await quietly(() => cli(['--help']));
    expect(r.code).toBe(0);
    for (const name of COMMANDS) {
      const at = r.stdout.search(new RegExp(`^  ${name} +\\S`, 'm'));
      expect(at, `${name} is listed with a summary`).toBeGreaterThanOrEqual(0);
      const next = r.stdout.slice(at).split('\n')[1]!;
      expect(next, `${name}'s example`).toMatch(new RegExp(`^ +e\\.g\\. sae-eraser ${name} `));
    }
    // A command's --help ends with its example too.
    const run = await quietly(() => cli(['run', '--help']));
    expect(run.stdout).toMatch(/\nexample: sae-eraser run --config configs\/ci-minilm-surgeon-nurse\.json --out \S+\n$/);
  });

  it('--threads and --executor are checked before the command runs, on every command', async () => {
    for (const [args, message] of [
      [['--threads', '0'], /--threads must be a whole number of threads from 1 to 1024, got "0"/],
      [['--threads=two'], /--threads must be a whole number/],
      [['--executor', 'gpu'], /--executor must be one of onnx, tfjs, got "gpu"/],
      [['--executor'], /--executor takes a value/],
    ] as const) {
      const dir = mkdtempSync(join(tmpdir(), 'cli-global-'));
      const r = await quietly(() => cli(['report', dir, ...args]));
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
    }
  });

  it('names the known commands when given an unknown one', async () => {
    const r = await quietly(() => cli(['rnu']));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown command "rnu" \(known: activations, .*run, train-sae/);
  });

  it('--json prints the result as one JSON object on stdout, and errors as {"error"} with the exit code', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-json-'));
    await makeRunFolder(dir);
    const ok = await quietly(() => cli(['report', dir, '--json', '--quiet']));
    expect(ok.code).toBe(0);
    expect(ok.stdout.trim().split('\n')).toHaveLength(1);
    expect(JSON.parse(ok.stdout)).toMatchObject({ report: join(dir, 'report.html'), partial: false });
    expect(ok.stdout).not.toMatch(/wrote/);

    const usage = await quietly(() => cli(['report', '--json']));
    expect(usage.code).toBe(2);
    expect(JSON.parse(usage.stdout)).toEqual({ error: { command: 'report', kind: 'usage', message: 'RUN_DIR is required' } });

    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"model": 1}');
    const failed = await quietly(() => cli(['run', '--config', bad, '--out', join(dir, 'out'), '--json']));
    expect(failed.code).toBe(1);
    const e = JSON.parse(failed.stdout) as { error: { kind: string; message: string } };
    expect(e.error.kind).toBe('error');
    expect(e.error.message).toMatch(/bad\.json/);
    expect(failed.stderr).toMatch(/^sae-eraser run: error: /);
  });
});
