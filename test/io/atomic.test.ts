import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openFileAtomic, writeAllAtSync, writeAllSync, writeFileAtomic } from '../../src/io/atomic.js';
import { projectRoot } from '../../src/io/shared.js';

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

describe('writeAllAtSync', () => {
  it('writes at a position, in pieces, without moving the file offset, and past 4 GiB in a sparse file', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'write-at-')), 'x.bin');
    const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) % 256);
    const fd = openSync(path, 'w');
    try {
      writeAllAtSync(fd, bytes, 100, 64);
      writeAllSync(fd, Uint8Array.from([9, 9]));
      writeAllAtSync(fd, bytes.subarray(0, 8), 5 * 2 ** 30);
      expect(() => writeAllAtSync(fd, bytes, -1)).toThrow(/position must be a non-negative safe integer, got -1/);
    } finally {
      closeSync(fd);
    }
    const back = new Uint8Array(400);
    const rd = openSync(path, 'r');
    try {
      readSync(rd, back, 0, 400, 0);
      expect(Array.from(back.subarray(0, 2))).toEqual([9, 9]);
      expect(back.subarray(100, 400)).toEqual(bytes);
      const far = new Uint8Array(8);
      readSync(rd, far, 0, 8, 5 * 2 ** 30);
      expect(far).toEqual(bytes.subarray(0, 8));
    } finally {
      closeSync(rd);
    }
    expect(statSync(path).size).toBe(5 * 2 ** 30 + 8);
    rmSync(path);
  });
});

describe('openFileAtomic', () => {
  it('keeps the old file until commit, then replaces it; abort leaves it and no temp file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'open-atomic-'));
    const path = join(dir, 'sub', 'out.bin');
    const tmps = (): string[] => readdirSync(join(dir, 'sub')).filter((f) => f.endsWith('.tmp'));
    writeFileAtomic(path, 'old');
    const aborted = openFileAtomic(path);
    writeAllAtSync(aborted.fd, Uint8Array.from([1, 2, 3]), 0);
    aborted.abort();
    aborted.abort();
    expect(readFileSync(path, 'utf8')).toBe('old');
    expect(tmps()).toEqual([]);
    const file = openFileAtomic(path);
    writeAllAtSync(file.fd, new TextEncoder().encode('new!'), 3);
    writeAllAtSync(file.fd, new TextEncoder().encode('abc'), 0);
    expect(readFileSync(path, 'utf8')).toBe('old');
    expect(tmps().length).toBe(1);
    file.commit();
    file.abort();
    expect(readFileSync(path, 'utf8')).toBe('abcnew!');
    expect(tmps()).toEqual([]);
    expect(() => file.commit()).toThrow(/out\.bin: this atomic write has already ended/);
  });

  it('refuses a link and removes stale temp files of dead processes, as writeFileAtomic does', () => {
    const dir = mkdtempSync(join(tmpdir(), 'open-atomic-'));
    const target = join(dir, 'target.bin');
    writeFileSync(target, 'keep');
    const link = join(dir, 'link.bin');
    symlinkSync(target, link);
    expect(() => openFileAtomic(link)).toThrow(/link\.bin exists and is not a regular file/);
    const dead = join(dir, '.target.bin.999999999.deadbeef.tmp');
    writeFileSync(dead, 'partial');
    const file = openFileAtomic(target);
    expect(existsSync(dead)).toBe(false);
    file.abort();
    expect(readFileSync(target, 'utf8')).toBe('keep');
  });
});

describe('temp files of interrupted writes', () => {
  it('are removed by the next write of the same file when their process is gone, and kept while it runs', () => {
    const dir = mkdtempSync(join(tmpdir(), 'stale-'));
    const target = join(dir, 'shard.safetensors');
    const dead = join(dir, '.shard.safetensors.999999999.deadbeef.tmp');
    const mine = join(dir, `.shard.safetensors.${process.pid}.0badcafe.tmp`);
    const other = join(dir, '.other.bin.999999999.deadbeef.tmp');
    for (const p of [dead, mine, other]) writeFileSync(p, 'partial');
    writeFileAtomic(target, 'done');
    expect(readFileSync(target, 'utf8')).toBe('done');
    expect(existsSync(dead)).toBe(false);
    expect(existsSync(mine)).toBe(true);
    expect(existsSync(other)).toBe(true);
  });

  it('left by a write killed with SIGINT are removed by the next write of that file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sigint-'));
    const out = join(dir, 'out.bin');
    const script = join(dir, 'writer.ts');
    writeFileSync(
      script,
      `import { writeFileAtomic } from ${JSON.stringify(join(projectRoot(), 'src/io/atomic.ts'))};\n` +
        `const big = new Uint8Array(64 * 1024 * 1024);\n` +
        `process.stdout.write('ready\\n');\n` +
        `setTimeout(() => { for (;;) writeFileAtomic(${JSON.stringify(out)}, [big, big, big, big]); }, 0);\n`,
    );
    const child = spawn(join(projectRoot(), 'node_modules/.bin/vite-node'), [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((done) => child.stdout.on('data', (d: Buffer) => d.toString().includes('ready') && done()));
    // Kill it once a temp file of its is on disk, i.e. in the middle of a write.
    while (!readdirSync(dir).some((f) => f.endsWith('.tmp'))) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGINT');
    const signal = await new Promise<NodeJS.Signals | null>((done) => child.on('exit', (_code, s) => done(s)));
    expect(signal).toBe('SIGINT');
    // A write is always in progress in the child's loop, so the kill leaves a temp file behind.
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp')).length).toBeGreaterThan(0);
    writeFileAtomic(out, 'next run');
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(readFileSync(out, 'utf8')).toBe('next run');
  }, 60_000);
});
