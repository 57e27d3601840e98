import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync, lstatSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkOutput } from '../../src/io/output.js';

describe('checkOutput', () => {
  const dir = mkdtempSync(join(tmpdir(), 'out-check-'));
  const input = join(dir, 'in.jsonl');
  writeFileSync(input, '{"text": "a"}\n');

  it('refuses an output that is one of the inputs, also through another spelling of the path', () => {
    expect(() => checkOutput(input, { kind: 'file', inputs: [input], name: '--out' })).toThrow(/--out .*in\.jsonl is also an input/);
    expect(() => checkOutput(join(dir, '.', 'sub', '..', 'in.jsonl'), { kind: 'file', inputs: [input] })).toThrow(/is also an input/);
    expect(readFileSync(input, 'utf8')).toBe('{"text": "a"}\n');
  });

  it('refuses a symbolic link unless forced, and then replaces the link, not its target', () => {
    const target = join(dir, 'target.bin');
    writeFileSync(target, 'keep');
    const link = join(dir, 'link.bin');
    symlinkSync(target, link);
    expect(() => checkOutput(link, { kind: 'file', inputs: [] })).toThrow(/is a symbolic link; refusing to replace it \(--force/);
    expect(() => checkOutput(link, { kind: 'file', inputs: [target] })).toThrow(/symbolic link/);
    checkOutput(link, { kind: 'file', inputs: [], force: true });
    expect(existsSync(link)).toBe(false);
    expect(readFileSync(target, 'utf8')).toBe('keep');
  });

  it('refuses an existing output of the wrong kind, such as a device or a folder', () => {
    expect(() => checkOutput('/dev/full', { kind: 'file', inputs: [] })).toThrow(/\/dev\/full exists and is not a regular file/);
    mkdirSync(join(dir, 'folder'));
    expect(() => checkOutput(join(dir, 'folder'), { kind: 'file', inputs: [] })).toThrow(/is not a regular file/);
    expect(() => checkOutput(input, { kind: 'folder', inputs: [] })).toThrow(/exists and is not a folder/);
  });

  it('refuses an output whose folder cannot be written, and accepts a new one (creating its folder)', () => {
    expect(() => checkOutput(join(input, 'sub', 'out.json'), { kind: 'file', inputs: [] })).toThrow(/cannot write in/);
    const fresh = join(dir, 'new', 'deeper', 'run');
    expect(checkOutput(fresh, { kind: 'folder', inputs: [input] })).toBe(fresh);
    expect(lstatSync(fresh).isDirectory()).toBe(true);
  });
});
