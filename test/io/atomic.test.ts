import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, lstatSync, mkdtempSync, openSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeAllSync, writeFileAtomic } from '../../src/io/atomic.js';
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
