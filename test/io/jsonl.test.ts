import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readJsonLines } from '../../src/io/jsonl.js';

describe('readJsonLines', () => {
  const dir = mkdtempSync(join(tmpdir(), 'jsonl-'));

  it('parses complete lines with their numbers, skips blank ones, and sets aside a last line without its newline', () => {
    const path = join(dir, 'a.jsonl');
    writeFileSync(path, '{"a":1}\n\n{"b":"é"}\n{"c":');
    const r = readJsonLines(path);
    expect(r.lines).toEqual([
      { line: 1, value: { a: 1 } },
      { line: 3, value: { b: 'é' } },
    ]);
    expect(r.incomplete).toBe(true);
    expect(r.completeBytes).toBe(Buffer.byteLength('{"a":1}\n\n{"b":"é"}\n'));
    expect(readJsonLines(join(dir, 'absent.jsonl'))).toEqual({ lines: [], completeBytes: 0, incomplete: false });
  });

  it('names the file and line of a complete line that is not JSON, with the hint', () => {
    const path = join(dir, 'bad.jsonl');
    writeFileSync(path, '{"a":1}\nnope\n');
    expect(() => readJsonLines(path, '; fix it')).toThrow(/bad\.jsonl:2: not valid JSON \(.*\); fix it$/);
  });
});
