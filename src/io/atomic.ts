/**
 * Atomic file writes: every file this project writes goes to a temp name beside its target and is
 * renamed into place, so a killed run never leaves a half-written result or checkpoint.
 */
import { lstatSync, mkdirSync, renameSync, rmSync, writeFileSync, openSync, writeSync, fsyncSync, closeSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** A temp path in the same folder as `path` (same filesystem, so rename is atomic). */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

/** Writes `data` (bytes or text, or a list of byte chunks) to `path` atomically, creating parent folders. */
export function writeFileAtomic(path: string, data: string | Uint8Array | readonly Uint8Array[]): void {
  // The rename would replace a symbolic link, a device or a folder's entry with a regular file.
  const existing = lstatSync(path, { throwIfNoEntry: false });
  if (existing !== undefined && !existing.isFile())
    throw new Error(`${path} exists and is not a regular file (a link, device or folder); refusing to replace it`);
  mkdirSync(dirname(path), { recursive: true });
  const tmp = tempPathFor(path);
  try {
    if (typeof data === 'string' || data instanceof Uint8Array) {
      writeFileSync(tmp, data);
    } else {
      const fd = openSync(tmp, 'w');
      try {
        for (const chunk of data) writeAllSync(fd, chunk);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
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
