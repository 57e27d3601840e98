/**
 * Runs the Python reference scripts (PyTorch + transformers) that generate fresh expected values for
 * the parity tests. Outputs are cached under .cache/reference/<script>-<hash>/ keyed by the hash of the
 * script, its arguments, the contents of every file or folder an argument names, and the
 * requirements, so a changed script or input always regenerates.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, renameSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { projectRoot } from '../../src/io/shared.js';

export function pythonBin(): string {
  const root = projectRoot();
  execFileSync('bash', [join(root, 'scripts/setup-python-ref.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
  return join(root, '.venv-ref/bin/python');
}

/** Runs a command with its output shown, without blocking the event loop (a test worker blocked for a minute loses its link to vitest). */
function run(command: string, args: readonly string[], options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(' ')} exited with ${signal ?? `code ${code}`}`));
    });
  });
}

/**
 * Runs `test/reference/<script>` with `--out <dir> ...args` and returns `<dir>`, reusing a previous
 * complete run with the same script content and arguments. The script writes into a temp folder
 * that is renamed into place only when it exits successfully.
 */
export async function runPythonReference(script: string, args: readonly string[] = []): Promise<string> {
  const root = projectRoot();
  const path = join(root, 'test/reference', script);
  const hash = createHash('sha256')
    .update(readFileSync(path))
    .update(JSON.stringify(args))
    .update(inputContents(args))
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
    await run(python, [path, '--out', tmp, ...args], { cwd: root, env: { ...process.env, HF_HUB_OFFLINE: '1', TOKENIZERS_PARALLELISM: 'false' } });
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

/** A digest of the contents of every existing file an argument names (folders: all files in them, by relative path). */
export function inputContents(args: readonly string[]): string {
  const hash = createHash('sha256');
  const add = (path: string, label: string): void => {
    if (statSync(path).isDirectory()) {
      for (const name of readdirSync(path).sort()) add(join(path, name), `${label}/${name}`);
    } else {
      hash.update(label).update(readFileSync(path));
    }
  };
  args.forEach((arg, i) => {
    if (arg !== '' && existsSync(arg)) add(arg, `arg${i}`);
  });
  return hash.digest('hex');
}
