import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeUtf8, readJson } from '../../src/io/text.js';
import { readTable } from '../../src/io/tabular.js';

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('strict UTF-8 text', () => {
  it('decodes valid UTF-8, multi-byte characters and a byte-order mark included', () => {
    expect(decodeUtf8(utf8('\uFEFFnaïve café — 東京\n'), 'x')).toBe('\uFEFFnaïve café — 東京\n');
  });

  it('refuses invalid bytes, naming the source and the line, where a plain read would give U+FFFD', () => {
    const bytes = Uint8Array.from([...utf8('ok\nstill ok\n'), 0x63, 0x61, 0x66, 0xe9, 0x0a, ...utf8('after\n')]); // Latin-1 "café" on line 3
    expect(Buffer.from(bytes).toString('utf8')).toContain('\uFFFD');
    expect(() => decodeUtf8(bytes, 'bios.jsonl')).toThrow(/^bios\.jsonl line 3: invalid UTF-8/);
    expect(() => decodeUtf8(Uint8Array.from([0xff]), 'one')).toThrow(/^one line 1: invalid UTF-8/);
  });

  it('makes the data readers refuse a Latin-1 file with its name and line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'utf8-'));
    const path = join(dir, 'bios.jsonl');
    writeFileSync(path, Buffer.concat([Buffer.from('{"text": "fine"}\n'), Buffer.from('{"text": "caf\xe9"}\n', 'latin1')]));
    await expect(readTable(path)).rejects.toThrow(/bios\.jsonl line 2: invalid UTF-8/);
  });
});

describe('readJson', () => {
  it('parses a JSON file; a syntax error names the file, then the hint; a read error names the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'read-json-'));
    const good = join(dir, 'good.json');
    writeFileSync(good, '{"a": [1, "é"]}');
    expect(readJson(good)).toEqual({ a: [1, 'é'] });
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"a": ');
    expect(() => readJson(bad)).toThrow(new RegExp(`^${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not valid JSON \\(.+\\)$`));
    expect(() => readJson(bad, '; delete it')).toThrow(/bad\.json: not valid JSON \(.+\); delete it$/);
    expect(() => readJson(join(dir, 'missing.json'))).toThrow(/missing\.json/);
    writeFileSync(join(dir, 'latin1.json'), Uint8Array.from([0x22, 0xe9, 0x22]));
    expect(() => readJson(join(dir, 'latin1.json'))).toThrow(/latin1\.json line 1: invalid UTF-8/);
  });
});
