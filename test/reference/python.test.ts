import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inputContents } from './python.js';

describe('reference cache key', () => {
  it('follows the contents of the files and folders the arguments name, not just their paths', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ref-key-'));
    const file = join(dir, 'bios.jsonl');
    const model = join(dir, 'model');
    mkdirSync(model);
    writeFileSync(file, 'a\n');
    writeFileSync(join(model, 'config.json'), '{}');
    const args = ['--bios', file, '--model', model, '--n', '5'];
    const first = inputContents(args);
    expect(inputContents(args)).toBe(first);
    writeFileSync(file, 'b\n');
    const second = inputContents(args);
    expect(second).not.toBe(first);
    writeFileSync(join(model, 'config.json'), '{"x": 1}');
    expect(inputContents(args)).not.toBe(second);
  });
});
