/**
 * Checks on an output location, made before any work starts, so a long run never ends by
 * destroying an input or by failing to write what it computed: the output must not be one of the
 * inputs, must not be a symbolic link (unless the caller forces replacing the link itself), must be
 * a regular file (or a folder, for folder outputs) when it exists, and its folder must be writable.
 */
import { existsSync, lstatSync, mkdirSync, realpathSync, rmSync, unlinkSync, writeFileSync, type Stats } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

export interface OutputCheck {
  /** A file (written atomically in place) or a folder (files written inside it). */
  kind: 'file' | 'folder';
  /** Paths the command reads; the output may be none of them. */
  inputs: readonly (string | undefined)[];
  /** Replace an output that is a symbolic link (the link itself, not its target). */
  force?: boolean;
  /** How the output was given, for messages (e.g. "--out"). */
  name?: string;
}

/** The real path of `p` when it exists (links resolved), else its absolute path. */
function canonical(p: string): string {
  const abs = resolve(p);
  return existsSync(abs) ? realpathSync(abs) : abs;
}

/** Throws a clear error when `path` is not a safe output (see the module docstring); returns it resolved. */
export function checkOutput(path: string, check: OutputCheck): string {
  const name = check.name ?? 'output';
  const abs = resolve(path);
  let stat = lstatIfPresent(abs);
  if (stat?.isSymbolicLink() === true) {
    if (check.force !== true) throw new Error(`${name} ${path} is a symbolic link; refusing to replace it (--force replaces the link itself, not its target)`);
    unlinkSync(abs);
    stat = undefined;
  }
  const target = canonical(abs);
  for (const input of check.inputs) {
    if (input !== undefined && canonical(input) === target) throw new Error(`${name} ${path} is also an input (${input}); choose another output`);
  }
  if (stat !== undefined) {
    if (check.kind === 'file' && !stat.isFile()) throw new Error(`${name} ${path} exists and is not a regular file; refusing to replace it`);
    if (check.kind === 'folder' && !stat.isDirectory()) throw new Error(`${name} ${path} exists and is not a folder`);
  }
  const folder = check.kind === 'folder' ? abs : dirname(abs);
  const probe = join(folder, `.sae-eraser-write-check-${process.pid}`);
  try {
    mkdirSync(folder, { recursive: true });
    writeFileSync(probe, '');
  } catch (err) {
    throw new Error(`${name} ${path}: cannot write in ${folder} (${(err as Error).message})`, { cause: err });
  }
  rmSync(probe);
  return abs;
}

/** lstat, or undefined when nothing can be at `p` (missing, or a parent is not a folder: the write check reports that). */
function lstatIfPresent(p: string): Stats | undefined {
  try {
    return lstatSync(p, { throwIfNoEntry: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw err;
  }
}
