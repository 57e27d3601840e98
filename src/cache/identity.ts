/**
 * Identities of what an activation cache depends on or holds.
 *
 * `weightsId` names a model or SAE by the files it is loaded from, so a cache key changes when any of
 * them is overwritten in place: cheap (one `stat` per file, no hash of gigabyte weight files) and
 * the same on every run while nothing changes. `fileSha256` is the checksum of a cache's own shard
 * files, which are small enough to hash.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, readdirSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';

/**
 * File endings that hold weights, configs or tokenizers: safetensors (and their shards and index),
 * torch pickles, config.json / cfg.json / tokenizer.json / vocab.json, merges.txt / vocab.txt, and
 * sentencepiece models.
 */
const WEIGHT_ENDINGS = new Set(['.safetensors', '.pt', '.pth', '.bin', '.ckpt', '.npz', '.npy', '.json', '.txt', '.model']);

/** Configs a loader reads beside a single weights file (SAELens and sparsify `cfg.json`, `config.json`). */
const SIBLING_CONFIGS = ['cfg.json', 'config.json'];

function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
}

/**
 * An id for a model or SAE folder, or a single weights file, that changes whenever one of its
 * weight, config or tokenizer files does: the path, then a hash over each such file's name, size,
 * modification time and inode (symlinks followed, so a hub snapshot is identified by its blobs).
 * For a folder that is every such file directly inside it (hidden and temp files skipped); for a
 * file, the file and the `cfg.json` / `config.json` beside it. Deterministic while nothing changes.
 */
export function weightsId(pathOrDir: string): string {
  const st = statOrUndefined(pathOrDir);
  if (st === undefined) throw new Error(`${pathOrDir}: no such model or SAE file or folder`);
  let files: string[];
  if (st.isDirectory()) {
    files = readdirSync(pathOrDir)
      .filter((name) => !name.startsWith('.') && WEIGHT_ENDINGS.has(extname(name).toLowerCase()))
      .map((name) => join(pathOrDir, name));
  } else {
    const dir = dirname(pathOrDir);
    files = [pathOrDir, ...SIBLING_CONFIGS.map((name) => join(dir, name)).filter((p) => p !== pathOrDir && statOrUndefined(p) !== undefined)];
  }
  const parts = files
    .map((path) => {
      const s = statOrUndefined(path);
      // A dangling symlink (a hub blob that is gone) is recorded as such rather than failing here.
      if (s === undefined) return `${basename(path)}:missing`;
      if (!s.isFile()) return undefined;
      return `${basename(path)}:${s.size}:${s.mtimeMs}:${s.ino}`;
    })
    .filter((p): p is string => p !== undefined)
    .sort();
  return `${pathOrDir}#${createHash('sha256').update(parts.join('\n')).digest('hex').slice(0, 16)}`;
}

/** The sha256 (hex) of a file's bytes, read in chunks. */
export function fileSha256(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 22);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}
