import { describe, expect, it } from 'vitest';
import { closeSync, lstatSync, mkdtempSync, openSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeAllSync, writeFileAtomic } from '../../src/io/atomic.js';

describe('writeFileAtomic', () => {
  it('refuses to replace a symbolic link or a device with a regular file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'atomic-'));
    const target = join(dir, 'target.txt');
    writeFileSync(target, 'keep');
    const link = join(dir, 'link.txt');
    symlinkSync(target, link);
    expect(() => writeFileAtomic(link, 'new')).toThrow(/link\.txt exists and is not a regular file/);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readFileSync(target, 'utf8')).toBe('keep');
    expect(() => writeFileAtomic('/dev/full', 'x')).toThrow(/not a regular file/);
    expect(lstatSync('/dev/full').isCharacterDevice()).toBe(true);
  });
});

describe('writeAllSync', () => {
  it('writes a chunk larger than one write call allows, in pieces, byte for byte', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'write-all-')), 'x.bin');
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 31) % 251);
    const fd = openSync(path, 'w');
    try {
      writeAllSync(fd, bytes, 64);
    } finally {
      closeSync(fd);
    }
    expect(new Uint8Array(readFileSync(path))).toEqual(bytes);
  });
});
