/**
 * A minimal parquet writer for test fixtures (the project only reads parquet, and no parquet
 * writer is installed). It follows the format spec directly: "PAR1", one row group with one
 * uncompressed v1 data page per column (PLAIN values; definition levels as RLE runs for optional
 * columns), the thrift-compact FileMetaData, its 4-byte length, "PAR1".
 */
import { writeFileAtomic } from '../../src/io/atomic.js';

export type FixtureColumn =
  | { name: string; type: 'string'; optional?: boolean; values: readonly (string | null)[] }
  | { name: string; type: 'int64' | 'int32'; optional?: boolean; values: readonly (number | null)[] };

// Thrift compact protocol type ids.
const I32 = 5;
const I64 = 6;
const BINARY = 8;
const LIST = 9;
const STRUCT = 12;

class CompactWriter {
  readonly out: number[] = [];
  private readonly lastField: number[] = [0];

  varint(v: bigint): void {
    let x = v;
    while (x >= 0x80n) {
      this.out.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    this.out.push(Number(x));
  }

  zigzag(v: number | bigint): void {
    const x = BigInt(v);
    this.varint(x >= 0n ? x << 1n : (-x << 1n) - 1n);
  }

  private header(id: number, type: number): void {
    const last = this.lastField[this.lastField.length - 1]!;
    const delta = id - last;
    if (delta > 0 && delta <= 15) this.out.push((delta << 4) | type);
    else {
      this.out.push(type);
      this.zigzag(id);
    }
    this.lastField[this.lastField.length - 1] = id;
  }

  i32(id: number, v: number): this {
    this.header(id, I32);
    this.zigzag(v);
    return this;
  }

  i64(id: number, v: number): this {
    this.header(id, I64);
    this.zigzag(v);
    return this;
  }

  string(id: number, s: string): this {
    this.header(id, BINARY);
    this.rawString(s);
    return this;
  }

  private rawString(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.varint(BigInt(b.length));
    this.out.push(...b);
  }

  private listHeader(size: number, elemType: number): void {
    if (size < 15) this.out.push((size << 4) | elemType);
    else {
      this.out.push(0xf0 | elemType);
      this.varint(BigInt(size));
    }
  }

  i32List(id: number, values: readonly number[]): this {
    this.header(id, LIST);
    this.listHeader(values.length, I32);
    for (const v of values) this.zigzag(v);
    return this;
  }

  stringList(id: number, values: readonly string[]): this {
    this.header(id, LIST);
    this.listHeader(values.length, BINARY);
    for (const v of values) this.rawString(v);
    return this;
  }

  structList(id: number, items: readonly ((w: CompactWriter) => void)[]): this {
    this.header(id, LIST);
    this.listHeader(items.length, STRUCT);
    for (const body of items) this.structBody(body);
    return this;
  }

  struct(id: number, body: (w: CompactWriter) => void): this {
    this.header(id, STRUCT);
    this.structBody(body);
    return this;
  }

  structBody(body: (w: CompactWriter) => void): void {
    this.lastField.push(0);
    body(this);
    this.out.push(0); // stop
    this.lastField.pop();
  }
}

function u32le(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

/** Definition levels (1 = present, 0 = null) as an RLE/bit-packed hybrid with its 4-byte length. */
function definitionLevels(values: readonly unknown[]): number[] {
  const body = new CompactWriter();
  let i = 0;
  while (i < values.length) {
    const level = values[i] === null ? 0 : 1;
    let j = i;
    while (j < values.length && (values[j] === null ? 0 : 1) === level) j++;
    body.varint(BigInt(j - i) << 1n); // RLE run header: (count << 1) | 0
    body.out.push(level); // bit width 1 -> one byte
    i = j;
  }
  return [...u32le(body.out.length), ...body.out];
}

function plainValues(col: FixtureColumn): number[] {
  const out: number[] = [];
  for (const v of col.values) {
    if (v === null) continue;
    if (col.type === 'string') {
      const b = Buffer.from(v as string, 'utf8');
      out.push(...u32le(b.length), ...b);
    } else if (col.type === 'int32') {
      out.push(...u32le((v as number) | 0));
    } else {
      const b = Buffer.alloc(8);
      b.writeBigInt64LE(BigInt(v as number));
      out.push(...b);
    }
  }
  return out;
}

const PARQUET_TYPE = { int32: 1, int64: 2, string: 6 } as const;

/** Writes the columns (equal lengths) as a one-row-group parquet file. */
export function writeParquetFixture(path: string, columns: readonly FixtureColumn[]): void {
  const numRows = columns[0]!.values.length;
  for (const c of columns) {
    if (c.values.length !== numRows) throw new Error(`fixture column ${c.name}: ${c.values.length} values, expected ${numRows}`);
    if (!c.optional && c.values.some((v) => v === null)) throw new Error(`fixture column ${c.name}: null in a required column`);
  }
  const file: number[] = [...Buffer.from('PAR1')];
  const chunks: { offset: number; size: number }[] = [];
  for (const c of columns) {
    const page = [...(c.optional ? definitionLevels(c.values) : []), ...plainValues(c)];
    const header = new CompactWriter();
    header.structBody((w) => {
      w.i32(1, 0) // DATA_PAGE
        .i32(2, page.length)
        .i32(3, page.length)
        .struct(5, (d) => {
          d.i32(1, numRows).i32(2, 0).i32(3, 3).i32(4, 3); // PLAIN values, RLE levels
        });
    });
    chunks.push({ offset: file.length, size: header.out.length + page.length });
    file.push(...header.out, ...page);
  }
  const meta = new CompactWriter();
  meta.structBody((w) => {
    w.i32(1, 1)
      .structList(2, [
        (s) => {
          s.string(4, 'schema').i32(5, columns.length);
        },
        ...columns.map((c) => (s: CompactWriter) => {
          s.i32(1, PARQUET_TYPE[c.type])
            .i32(3, c.optional ? 1 : 0)
            .string(4, c.name);
          if (c.type === 'string') s.i32(6, 0); // converted type UTF8
        }),
      ])
      .i64(3, numRows)
      .structList(4, [
        (rg) => {
          rg.structList(
            1,
            columns.map((c, k) => (cc: CompactWriter) => {
              cc.i64(2, chunks[k]!.offset).struct(3, (m) => {
                m.i32(1, PARQUET_TYPE[c.type])
                  .i32List(2, [0, 3])
                  .stringList(3, [c.name])
                  .i32(4, 0) // UNCOMPRESSED
                  .i64(5, numRows)
                  .i64(6, chunks[k]!.size)
                  .i64(7, chunks[k]!.size)
                  .i64(9, chunks[k]!.offset);
              });
            }),
          )
            .i64(
              2,
              chunks.reduce((s, c) => s + c.size, 0),
            )
            .i64(3, numRows);
        },
      ]);
  });
  file.push(...meta.out, ...u32le(meta.out.length), ...Buffer.from('PAR1'));
  writeFileAtomic(path, Uint8Array.from(file));
}
