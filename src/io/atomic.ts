/**
 * Atomic file writes: every file this project writes goes to a temp name beside its target and is
 * renamed into place, so a killed run never leaves a half-written result or checkpoint.
 */
import { existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync, openSync, writeSync, fsyncSync, closeSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** A temp path in the same folder as `path` (same filesystem, so rename is atomic). */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/** True when a process with this id is running. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ESRCH') return false;
    if (code === 'EPERM') return true; // it exists but belongs to someone else
    throw err;
  }
}

/**
 * Removes temp files of `path` left by processes that are gone. Writes here are synchronous, so a
 * signal handler could never run in the middle of one: a process killed mid-write (Ctrl-C on a
 * multi-GB output) leaves its temp file, and the next write of the same file removes it.
 */
export function removeStaleTemps(path: string): void {
  const dir = dirname(path);
  const prefix = `.${basename(path)}.`;
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(\d+)\.[0-9a-f]{8}\.tmp$/.exec(name.slice(prefix.length));
    if (m !== null && Number(m[1]) !== process.pid && !alive(Number(m[1]))) rmSync(join(dir, name), { force: true });
  }
}

/** Refuses a target the rename would wrongly replace, creates its folder and removes its stale temp files. */
function prepareTarget(path: string): void {
  // The rename would replace a symbolic link, a device or a folder's entry with a regular file.
  const existing = lstatSync(path, { throwIfNoEntry: false });
  if (existing !== undefined && !existing.isFile())
    throw new Error(`${path} exists and is not a regular file (a link, device or folder); refusing to replace it`);
  mkdirSync(dirname(path), { recursive: true });
  removeStaleTemps(path);
}

/**
 * A file being written in place of `path`: a temp file beside it, open for (positional) writes,
 * that `commit` renames onto `path`. Lets a writer fill a large file piece by piece, in any order,
 * with the same all-or-nothing result as `writeFileAtomic`.
 */
export interface AtomicFile {
  /** Descriptor of the temp file, open for writing; positional writes may go anywhere in it. */
  readonly fd: number;
  /** Flushes the temp file to disk, closes it and renames it onto the target; on failure removes it and throws. */
  commit(): void;
  /** Closes and removes the temp file; does nothing after `commit` or a previous `abort`. */
  abort(): void;
}

/**
 * Starts an atomic write of `path` (see `AtomicFile`), with the checks of `writeFileAtomic`: the
 * target is not replaced when it is a link, device or folder, parent folders are created and stale
 * temp files of dead processes are removed. The caller must end it with `commit` or `abort`.
 *
 * @param path the file to write
 */
export function openFileAtomic(path: string): AtomicFile {
  prepareTarget(path);
  const tmp = tempPathFor(path);
  const fd = openSync(tmp, 'w');
  let ended = false;
  return {
    fd,
    commit() {
      if (ended) throw new Error(`${path}: this atomic write has already ended`);
      ended = true;
      try {
        try {
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        renameSync(tmp, path);
      } catch (err) {
        rmSync(tmp, { force: true });
        throw err;
      }
    },
    abort() {
      if (ended) return;
      ended = true;
      try {
        closeSync(fd);
      } finally {
        rmSync(tmp, { force: true });
      }
    },
  };
}

/** Writes `data` (bytes or text, or a list of byte chunks) to `path` atomically, creating parent folders. */
export function writeFileAtomic(path: string, data: string | Uint8Array | readonly Uint8Array[]): void {
  if (typeof data === 'string' || data instanceof Uint8Array) {
    prepareTarget(path);
    const tmp = tempPathFor(path);
    try {
      writeFileSync(tmp, data);
      renameSync(tmp, path);
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
    return;
  }
  const file = openFileAtomic(path);
  try {
    for (const chunk of data) writeAllSync(file.fd, chunk);
  } catch (err) {
    file.abort();
    throw err;
  }
  file.commit();
}

/** Writes pretty-printed JSON atomically. */
export function writeJsonAtomic(path: string, value: unknown): void {
  writeFileAtomic(path, JSON.stringify(value, null, 2) + '\n');
}

/** Bytes per write call: one call may not write more than 2^31 - 1 bytes. */
const MAX_WRITE = 1 << 30;

/** Writes all of `bytes` to `fd`, in calls of at most `maxWrite` bytes (so chunks over 2 GiB work). */
export function writeAllSync(fd: number, bytes: Uint8Array, maxWrite = MAX_WRITE): void {
  let off = 0;
  while (off < bytes.length) off += writeSync(fd, bytes, off, Math.min(bytes.length - off, maxWrite));
}

/**
 * Writes all of `bytes` to `fd` at byte `position` (positional writes: the file offset is neither
 * used nor moved), in calls of at most `maxWrite` bytes. Positions past 4 GiB are exact (below 2^53).
 */
export function writeAllAtSync(fd: number, bytes: Uint8Array, position: number, maxWrite = MAX_WRITE): void {
  if (!Number.isSafeInteger(position) || position < 0) throw new Error(`writeAllAtSync: position must be a non-negative safe integer, got ${position}`);
  let off = 0;
  while (off < bytes.length) off += writeSync(fd, bytes, off, Math.min(bytes.length - off, maxWrite), position + off);
}
