/**
 * Locates the shared data folder (`../shared` beside the project, or `SAE_ERASER_SHARED`).
 * Nothing from it is part of the package; it is read only through explicit paths.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project root: the folder holding package.json, found from this file (src/ or dist/src/). */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the sae-eraser project root (no package.json above src/)');
    dir = up;
  }
  return dir;
}

/** The shared data folder, or undefined when absent. */
export function sharedDir(): string | undefined {
  const fromEnv = process.env.SAE_ERASER_SHARED;
  const dir = fromEnv !== undefined && fromEnv !== '' ? resolve(fromEnv) : resolve(projectRoot(), '..', 'shared');
  return existsSync(dir) ? dir : undefined;
}

/** A path inside the shared folder, or undefined when the folder or the file is absent. */
export function sharedPath(...parts: string[]): string | undefined {
  const dir = sharedDir();
  if (dir === undefined) return undefined;
  const p = join(dir, ...parts);
  return existsSync(p) ? p : undefined;
}
