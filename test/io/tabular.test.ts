import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  formatFromPath,
  parseCsv,
  parseCsvRecords,
  parseJsonl,
  readParquet,
  readTable,
  streamTable,
  type RowStream,
  type Table,
} from '../../src/io/tabular.js';
import { writeParquetFixture } from './parquet-fixture.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sae-eraser-tabular-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('JSONL', () => {
  it('parses one object per line, skips blank lines and keeps line numbers', () => {
    const t = parseJsonl('\uFEFF{"a": 1, "b": "x"}\r\n\n{"b": "y", "c": null}\n', 'f.jsonl');
    expect(t.rows).toEqual([
      { a: 1, b: 'x' },
      { b: 'y', c: null },
    ]);
    expect(t.columns).toEqual(['a', 'b', 'c']);
    expect(t.where(0)).toBe('f.jsonl line 1');
    expect(t.where(1)).toBe('f.jsonl line 3');
  });

  it('names the file and line of invalid JSON or a non-object', () => {
    expect(() => parseJsonl('{"a": 1}\n{"a": \n', 'bad.jsonl')).toThrow(/bad\.jsonl line 2: invalid JSON/);
    expect(() => parseJsonl('{"a": 1}\n\n[1, 2]\n', 'arr.jsonl')).toThrow(/arr\.jsonl line 3: expected a JSON object, got an array/);
    expect(() => parseJsonl('3\n', 'num.jsonl')).toThrow(/num\.jsonl line 1: expected a JSON object/);
  });
});

describe('CSV (RFC 4180)', () => {
  it('handles quoted fields with delimiters, doubled quotes and line breaks', () => {
    const text = 'text,profession,gender\r\n"Hello, world",nurse,female\r\n"She said ""hi""\r\nand left",surgeon,male\r\nplain,13,1';
    const t = parseCsv(text, 'q.csv');
    expect(t.columns).toEqual(['text', 'profession', 'gender']);
    expect(t.rows).toEqual([
      { text: 'Hello, world', profession: 'nurse', gender: 'female' },
      { text: 'She said "hi"\r\nand left', profession: 'surgeon', gender: 'male' },
      { text: 'plain', profession: '13', gender: '1' },
    ]);
    // Record 2 starts on line 3 and spans two lines, so record 3 is on line 5.
    expect([t.where(0), t.where(1), t.where(2)]).toEqual(['q.csv line 2', 'q.csv line 3', 'q.csv line 5']);
  });

  it('keeps empty fields, a quoted empty field and a trailing empty field', () => {
    const recs = parseCsvRecords('a,,"",\n\n"",b\n', 'e.csv');
    expect(recs).toEqual([
      { fields: ['a', '', '', ''], line: 1 },
      { fields: ['', 'b'], line: 3 },
    ]);
  });

  it('accepts another delimiter and LF or CR line breaks', () => {
    const t = parseCsv('x;y\n1;"a;b"\r2;c\n', 's.csv', { delimiter: ';' });
    expect(t.rows).toEqual([
      { x: '1', y: 'a;b' },
      { x: '2', y: 'c' },
    ]);
  });

  it('names the file, line and field of malformed input', () => {
    expect(() => parseCsv('a,b\n1,"open\n2,3\n', 'u.csv')).toThrow(/u\.csv line 2: field 2: unterminated quoted field/);
    expect(() => parseCsv('a,b\n1,x"y\n', 'm.csv')).toThrow(/m\.csv line 2: field 2: double quote inside an unquoted field/);
    expect(() => parseCsv('a,b\n"x"y,1\n', 'c.csv')).toThrow(/c\.csv line 2: field 1: unexpected "y" after a closing quote/);
    expect(() => parseCsv('a,b\n1,2\n3\n', 'n.csv')).toThrow(/n\.csv line 3: expected 2 fields \(a, b\), found 1/);
    expect(() => parseCsv('a,a\n1,2\n', 'd.csv')).toThrow(/d\.csv line 1: duplicate header field "a"/);
    expect(() => parseCsv('', 'z.csv')).toThrow(/z\.csv: empty CSV file/);
  });
});

describe('parquet', () => {
  it('reads a file in the LabHC/bias_in_bios layout (hard_text, int64 profession and gender)', async () => {
    const path = join(dir, 'bios.parquet');
    writeParquetFixture(path, [
      { name: 'hard_text', type: 'string', optional: true, values: ['She teaches nursing.', 'He lectures on physics.', 'Ünïcode ✓'] },
      { name: 'profession', type: 'int64', optional: true, values: [13, 21, 21] },
      { name: 'gender', type: 'int64', values: [1, 0, 1] },
    ]);
    const t = await readParquet(path);
    expect(t.columns).toEqual(['hard_text', 'profession', 'gender']);
    expect(t.rows).toEqual([
      { hard_text: 'She teaches nursing.', profession: 13, gender: 1 },
      { hard_text: 'He lectures on physics.', profession: 21, gender: 0 },
      { hard_text: 'Ünïcode ✓', profession: 21, gender: 1 },
    ]);
    expect(t.where(2)).toBe(`${path} row 2`);
  });

  it('returns nulls, reads selected columns and names a missing one', async () => {
    const path = join(dir, 'nulls.parquet');
    writeParquetFixture(path, [
      { name: 'text', type: 'string', optional: true, values: ['a', null, 'c', 'd'] },
      { name: 'n', type: 'int32', optional: true, values: [null, null, 7, -3] },
    ]);
    const t = await readParquet(path, { columns: ['n'] });
    expect(t.rows).toEqual([{ n: null }, { n: null }, { n: 7 }, { n: -3 }]);
    const all = await readParquet(path);
    expect(all.rows.map((r) => r.text)).toEqual(['a', null, 'c', 'd']);
    await expect(readParquet(path, { columns: ['gender'] })).rejects.toThrow(/nulls\.parquet: cannot read parquet: no column "gender" \(columns: text, n\)/);
  });

  it('names the file when it is not parquet or is truncated', async () => {
    const junk = join(dir, 'junk.parquet');
    writeFileSync(junk, 'this is not parquet at all');
    await expect(readParquet(junk)).rejects.toThrow(/junk\.parquet: cannot read parquet/);
    const good = join(dir, 'good.parquet');
    writeParquetFixture(good, [{ name: 'x', type: 'int64', values: [1, 2, 3] }]);
    const bytes = readFileSync(good);
    const cut = join(dir, 'cut.parquet');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 6));
    await expect(readParquet(cut)).rejects.toThrow(/cut\.parquet: cannot read parquet/);
  });

  it("calls a file whose metadata does not decode damaged, rather than repeat the parquet library's TypeError", async () => {
    const good = join(dir, 'meta.parquet');
    writeParquetFixture(good, [{ name: 'text', type: 'string', values: ['a', 'b'] }]);
    const bytes = readFileSync(good);
    const footer = bytes.readUInt32LE(bytes.length - 8);
    const damaged = join(dir, 'damaged.parquet');
    let engineErrors = 0;
    // Zero each byte of the footer metadata in turn: some damage makes the library throw TypeErrors.
    for (let at = bytes.length - 8 - footer; at < bytes.length - 8; at++) {
      const copy = Buffer.from(bytes);
      copy[at] = 0;
      writeFileSync(damaged, copy);
      for (const read of [() => readParquet(damaged), () => collect(streamTable(damaged))]) {
        const err = await read().then(
          () => undefined,
          (e: unknown) => e as Error,
        );
        if (err === undefined) continue;
        expect(err.message).toMatch(/damaged\.parquet: cannot read parquet: /);
        if (err.cause instanceof TypeError || err.cause instanceof RangeError) {
          engineErrors++;
          expect(err.message).toMatch(/the file is damaged or not a parquet file/);
          expect(err.message).not.toContain(err.cause.message);
        }
      }
    }
    expect(engineErrors).toBeGreaterThan(0);
  });
});

describe('readTable', () => {
  it('dispatches on the extension and names an unknown one', async () => {
    expect(formatFromPath('a/b.JSONL')).toBe('jsonl');
    expect(formatFromPath('x.csv')).toBe('csv');
    expect(formatFromPath('x.parquet')).toBe('parquet');
    expect(() => formatFromPath('x.txt')).toThrow(/x\.txt: cannot tell the table format/);
    const csv = join(dir, 't.csv');
    writeFileSync(csv, 'a,b\n1,2\n');
    expect((await readTable(csv)).rows).toEqual([{ a: '1', b: '2' }]);
    const jsonl = join(dir, 't.data');
    writeFileSync(jsonl, '{"a": 1}\n');
    expect((await readTable(jsonl, { format: 'jsonl' })).rows).toEqual([{ a: 1 }]);
    await expect(readTable(join(dir, 'missing.jsonl'))).rejects.toThrow(/missing\.jsonl: cannot read/);
  });
});

/** Every row of a stream with where it came from. */
async function collect(stream: RowStream): Promise<{ rows: unknown[]; where: string[] }> {
  const rows: unknown[] = [];
  const where: string[] = [];
  for await (const { row, position } of stream) {
    rows.push(row);
    where.push(stream.where(position));
  }
  return { rows, where };
}

/** A table's rows and `where` of each, to compare with a stream's. */
function expected(t: Table): { rows: unknown[]; where: string[] } {
  return { rows: [...t.rows], where: t.rows.map((_, i) => t.where(i)) };
}

describe('streamTable', () => {
  it('reads JSONL line by line with the rows and line numbers readTable gives, across read chunks and long lines', async () => {
    // Over 3 MiB: rows cross the 1 MiB read chunks, multi-byte characters straddle chunk ends,
    // and one line longer than a chunk is carried over whole.
    const lines = ['\uFEFF{"text": "first", "i": -1}\r'];
    for (let i = 0; i < 40_000; i++) lines.push(i % 997 === 0 ? '' : JSON.stringify({ text: `naïve café 東京 ${'é'.repeat(i % 13)}`, i }));
    lines.push(JSON.stringify({ text: '€'.repeat(1_500_000), i: 'long' }));
    lines.push('{"text": "last, no line break"}');
    const path = join(dir, 'big.jsonl');
    writeFileSync(path, lines.join('\n'));
    const stream = streamTable(path);
    expect(stream.format).toBe('jsonl');
    const got = await collect(stream);
    expect(got).toEqual(expected(await readTable(path)));
    expect(got.rows.length).toBe(40_000 - Math.ceil(40_000 / 997) + 3);
    // A second pass reads the file again.
    expect((await collect(stream)).rows.length).toBe(got.rows.length);
  });

  it('names the file and line of invalid UTF-8 (also past the first read chunk), invalid JSON and a missing file', async () => {
    const path = join(dir, 'latin1.jsonl');
    const head = Buffer.from(Array.from({ length: 50_000 }, (_, i) => JSON.stringify({ text: `row ${i} ✓ ok` }) + '\n').join(''));
    expect(head.length).toBeGreaterThan(1 << 20);
    writeFileSync(path, Buffer.concat([head, Buffer.from('{"text": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n{"text": "x"}\n')]));
    await expect(collect(streamTable(path))).rejects.toThrow(/latin1\.jsonl line 50001: invalid UTF-8/);
    const bad = join(dir, 'bad-line.jsonl');
    writeFileSync(bad, '{"a": 1}\n\n[1]\n');
    await expect(collect(streamTable(bad))).rejects.toThrow(/bad-line\.jsonl line 3: expected a JSON object, got an array/);
    writeFileSync(bad, '{"a": 1}\n{"a": \n');
    await expect(collect(streamTable(bad))).rejects.toThrow(/bad-line\.jsonl line 2: invalid JSON/);
    await expect(collect(streamTable(join(dir, 'missing.jsonl')))).rejects.toThrow(/missing\.jsonl: cannot read/);
  });

  it('reads CSV a record at a time, with quoted fields over several lines, CRLF and bare CR breaks, as readTable does', async () => {
    const path = join(dir, 'stream.csv');
    const body = [
      '\uFEFFtext,n\r\n',
      '"one ""quoted"", with, commas",1\r\n',
      '\r\n',
      '"spans\nthree\r\nlines",2\n',
      'plain,3\rbare cr,4\n',
      '"ends with quote """,5\n',
      ...Array.from({ length: 20_000 }, (_, i) => `"row ${i} — ${'ü'.repeat(i % 7)}\n(2nd line)",${i}\n`),
      'last,6',
    ].join('');
    writeFileSync(path, body);
    const got = await collect(streamTable(path));
    expect(got).toEqual(expected(await readTable(path)));
    expect(got.rows.slice(0, 5)).toEqual([
      { text: 'one "quoted", with, commas', n: '1' },
      { text: 'spans\nthree\r\nlines', n: '2' },
      { text: 'plain', n: '3' },
      { text: 'bare cr', n: '4' },
      { text: 'ends with quote "', n: '5' },
    ]);
    expect(got.where.slice(0, 5)).toEqual([2, 4, 7, 8, 9].map((l) => `${path} line ${l}`));
    const semi = join(dir, 'semi.csv');
    writeFileSync(semi, 'a;b\n1;"x;y"\n');
    expect((await collect(streamTable(semi, { delimiter: ';' }))).rows).toEqual([{ a: '1', b: 'x;y' }]);
  });

  it('names the line of malformed CSV after multi-line records, as parseCsv does', async () => {
    const cases: [string, RegExp][] = [
      ['a,b\n"x\ny",1\n1,"open\n2,3\n', /line 4: field 2: unterminated quoted field/],
      ['a,b\n"x\ny",1\n1,x"y\n', /line 4: field 2: double quote inside an unquoted field/],
      ['a,b\n"x\ny",1\n"x"y,1\n', /line 4: field 1: unexpected "y" after a closing quote/],
      ['a,b\n"x\ny",1\n3\n', /line 4: expected 2 fields \(a, b\), found 1/],
      ['a,a\n1,2\n', /line 1: duplicate header field "a"/],
      ['\n\n', /: empty CSV file/],
    ];
    for (const [text, message] of cases) {
      const path = join(dir, 'malformed.csv');
      writeFileSync(path, text);
      expect(() => parseCsv(text, path)).toThrow(message);
      await expect(collect(streamTable(path))).rejects.toThrow(message);
    }
  });

  it('reads parquet row group by row group with the rows and positions readParquet gives', async () => {
    const path = join(dir, 'stream.parquet');
    writeParquetFixture(path, [
      { name: 'text', type: 'string', optional: true, values: ['a', null, 'c', 'd'] },
      { name: 'n', type: 'int64', values: [1, 2, 3, 4] },
    ]);
    const stream = streamTable(path, { columns: ['text'] });
    expect(await collect(stream)).toEqual(expected(await readParquet(path, { columns: ['text'] })));
    await expect(collect(streamTable(path, { columns: ['gender'] }))).rejects.toThrow(/stream\.parquet: cannot read parquet: no column "gender"/);
  });
});

describe('column names that are Object.prototype members', () => {
  it('keeps a CSV column named __proto__ as an own field, not as the row prototype', () => {
    const table = parseCsv('__proto__,text\nsome value,a bio\n', 'proto.csv');
    const row = table.rows[0]!;
    expect(Object.getPrototypeOf(row)).toBe(Object.prototype);
    expect(Object.keys(row)).toEqual(['__proto__', 'text']);
    expect(Object.getOwnPropertyDescriptor(row, '__proto__')?.value).toBe('some value');
    expect(row.text).toBe('a bio');
  });
});

describe('parquet pages that declare more than the file holds', () => {
  /** A fuzzer-found parquet file, from its base64, at a fresh path named `name`. */
  const fuzzFile = (name: string, base64: string): string => {
    const path = join(mkdtempSync(join(tmpdir(), 'parquet-pages-')), name);
    writeFileSync(path, Buffer.from(base64, 'base64'));
    return path;
  };

  it('refuses, naming the file and the page, a mangled page header that made hyparquet abort the process (invalid size 184071938)', async () => {
    // Found by the fuzzer (test/fuzz/tabular.test.ts, scale 30, seed 1795930247): a byte-mutated 3-row file.
    const path = fuzzFile(
      'mutated.parquet',
      'UEFSMRUAFUgVSCwVBhUAFQYVBgAAEAAAAPGgs43xp5i78qeKrPCTroQEAAAA8L2tlwQAAADwtIC2FQAVjgEVjgEsFQYVABUGFQYAAB8AAADmnYjwsrSW86elhPOhiLj0g42E8pWftPSHuL/zq62RAAAAABwAAAD0i72087SaNfn80rvkA7EF+SuvsvKTjpvylpmA8o2fjvKiu4/xi762FQAVrgEVrgEsFQYVABUGFQYAABgAAADxjKyh8KqDqvCviZzzvKy586uRp/KZn6YgAAAA8Zuij/C6srvyp5C6862khfOilbvzsp6Q8qWor/GCgZETAIe5i/Ooorzwv4ugFQAVxgEVxgEsFQYVABUGFQYAABwAAADzqoSX8oOyjvC5hYjxj6yb8qGEofGwoIjxvYiwHAAAAPCZi4/wlrKG8aOlo/K5g6fxuKSH87ySpfOvlogfAAAA8rykkPC7v6nyt4mZ8JKTm/GlqprzkYip7q2r8K2usxUCGVxIBnNjaGVtYRUIABUMJQAYCPKFvLbziL2sJQAAFQwlCBgM8JyKk/GmkKnwrLugJQAAFQwlABgY8qO6vPK2lqDzraCL8Lqah/KTn7nxlbqxJQAAFQwlABgI8J2PnfK6koYlAAAWBhkcGUwmCBwVDBklAAYZGAjyhby284i9rBUAFgYWahZqJggAACZyHBUMGSUABhkYDPCcipPxppCp8Ky7oBUAFgYWtAEWtAEmcgAAJqYCHBUMGSUABhkYGPKjurzytsCg862gi/C6mofyk5+58ZW6sRUAFgYW1AEW1AEmpgIAACb6AxwVDBklAAYZGAjwnY+d8rqShhUAFgYW7AEW7AEm+gMAABbeBRYGAAASAQAAUEFSMQ==',
    );
    await expect(readParquet(path)).rejects.toThrow(
      /mutated\.parquet: cannot read parquet: (row group 0, column ".*", page \d+: (declares \d+|the page header does not decode)|column ".*" is (repeated|nested|missing its repetition type))/,
    );
  });

  it('refuses a column whose repetition type was lost (hyparquet read it as repeated and aborted the process)', async () => {
    // Found by the fuzzer (scale 100, seed 13): a byte-mutated 3-row file whose last column has no repetition type.
    const path = fuzzFile(
      'untyped.parquet',
      'UEFSMRUAFWwVbCwVBhUAFQYVBgAAFAAAAPOVj6rztYOW9IW1g/Cvn73ziKOTBwAAAOWSvfOErpYPAAAA8aC2lvO3kqnwu6C86Ki/FQAVVBVULBUGFQAVBhUGAAAAAAAABAAAAPK0vZIaAAAA4YiU5piz8oColfOMtr7zgqqC8LyVpfC1o4AVABWgARWgASwVBhUAFQYVBgAADAAAAPGc/////4ux8rSWmigAAADyoI+Y8YWzlvKQjJ7xkLma8piArPO0uqDzooaG85OfovOyrpfymoC5EAAAAPO/rY/wmL+w8LWHqvCXgbsVABXYARXYASwVBhUAFQYVBgAAJAAAAPCrlZzzvpWU8b+MhfGCg7zwmKag8YSam/O5lJjyPLS+8qeHmSQAAADwnrSk8JWCv/K2mrfxirWl8qadg/KMporxi7iA8ouosPGMhLQYAAAA8qqdifOWoIzzkryu85KzpvO1rJHzhKO8FQIZXEgGc2NoZW1hFQgAFQwlABgE8JG3iCUAABUMJQAYE+S7ifCprJnwn6qK8522mPKwn5ElAAAVDCUAGBDwnrKV9ICcuPGyio7zspeIJQAAFQwlARgT8Zips+C1gvCVl6/zkpWe8oGHoiUAABYGGRwZTCYIHBUMGSUABhkYBPCRt4gVABYGFo4BFo4BJggAACaWARwVDBklAAYZGBPku4nwqayZ8J+qivOdtpjysJ+RFQAWBhZ2FnYmlgEAACaMAhwVDBklAAYZGBDwnrKV9ICcuPGyio7zspeIFQAWBhbGARbGASaMAgAAJtIDHBUMGSUABhkYE/GYqbPgtYLwlZev85KVnvKBh6IVABYGFv4BFv4BJtIDAAAWyAUWBgAAIAEAAFBBUjE=',
    );
    await expect(readParquet(path)).rejects.toThrow(/untyped\.parquet: cannot read parquet: column ".*" is missing its repetition type: only flat columns/);
  });
});
