/**
 * Runs the Python reference scripts (PyTorch + transformers) that generate fresh expected values for
 * the parity tests. Outputs are cached under .cache/reference/<script>-<hash>/ keyed by the hash of the
 * script, its arguments and the requirements, so a changed script always regenerates.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, rmSync, renameSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../../src/io/shared.js';

export function pythonBin(): string {
  const root = projectRoot();
  execFileSync('bash', [join(root, 'scripts/setup-python-ref.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
  return join(root, '.venv-ref/bin/python');
}

/**
 * Runs `test/reference/<script>` with `--out <dir> ...args` and returns `<dir>`, reusing a previous
 * complete run with the same script content and arguments. The script writes into a temp folder
 * that is renamed into place only when it exits successfully.
 */
export function runPythonReference(script: string, args: readonly string[] = []): string {
  const root = projectRoot();
  const path = join(root, 'test/reference', script);
  const hash = createHash('sha256')
    .update(readFileSync(path))
    .update(JSON.stringify(args))
    .update(readFileSync(join(root, 'test/reference/requirements.txt')))
    .digest('hex')
    .slice(0, 16);
  const out = join(root, '.cache/reference', `${script.replace(/\.py$/, '')}-${hash}`);
  if (existsSync(out)) return out;
  const python = pythonBin();
  const tmp = `${out}.tmp${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    execFileSync(python, [path, '--out', tmp, ...args], {
      cwd: root,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, HF_HUB_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false' },
    });
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  try {
    renameSync(tmp, out);
  } catch (err) {
    // Another test worker finished the same reference first: keep theirs.
    rmSync(tmp, { recursive: true, force: true });
    if (!existsSync(out)) throw err;
  }
  return out;
}
