/**
 * Readers for row-oriented data files: JSON Lines, CSV (RFC 4180) and Apache Parquet (through
 * `hyparquet`). Each returns a `Table`: rows as plain objects plus `where(i)`, which names the file
 * and the line (or parquet row) that row i came from, so that every later error can point at it.
 *
 * Value types: JSONL keeps JSON types; CSV cells are always strings (no type guessing: the consumer
 * decides); parquet integers arrive as numbers (INT64 values beyond 2^53 stay bigint), strings as
 * strings, nulls as null.
 */
import { extname } from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';
import { readUtf8 } from './text.js';

export type TableFormat = 'jsonl' | 'csv' | 'parquet';

export type Row = Record<string, unknown>;

export interface Table {
  /** The file (or a caller-given name for in-memory text). */
  readonly source: string;
  readonly format: TableFormat;
  /** Column names in order of first appearance. */
  readonly columns: readonly string[];
  readonly rows: readonly Row[];
  /** "file line 12" / "file row 7": where row i came from, for error messages. */
  where(i: number): string;
}

/** The format a path's extension implies (.jsonl/.ndjson/.json, .csv, .parquet). */
export function formatFromPath(path: string): TableFormat {
  const ext = extname(path).toLowerCase();
  if (ext === '.jsonl' || ext === '.ndjson' || ext === '.json') return 'jsonl';
  if (ext === '.csv') return 'csv';
  if (ext === '.parquet' || ext === '.pq') return 'parquet';
  throw new Error(`${path}: cannot tell the table format from the extension "${ext}" (expected .jsonl, .csv or .parquet)`);
}

function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function lineTable(source: string, format: TableFormat, rows: Row[], lines: number[]): Table {
  const columns: string[] = [];
  const seen = new Set<string>();
  for (const row of rows) {
    for (const key of Object.keys(row)) {
      if (!seen.has(key)) {
        seen.add(key);
        columns.push(key);
      }
    }
  }
  return { source, format, columns, rows, where: (i) => `${source} line ${lines[i]}` };
}

/** Parses JSON Lines text: one JSON object per line; blank lines are skipped. */
export function parseJsonl(text: string, source = '<jsonl>'): Table {
  const rows: Row[] = [];
  const lines: number[] = [];
  const all = stripBom(text).split('\n');
  for (let i = 0; i < all.length; i++) {
    const line = all[i]!.replace(/\r$/, '');
    if (line.trim() === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new Error(`${source} line ${i + 1}: invalid JSON: ${(err as Error).message}`, { cause: err });
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw new Error(`${source} line ${i + 1}: expected a JSON object, got ${Array.isArray(value) ? 'an array' : JSON.stringify(value)}`);
    }
    rows.push(value as Row);
    lines.push(i + 1);
  }
  return lineTable(source, 'jsonl', rows, lines);
}

export interface CsvOptions {
  /** Field separator, one character; default ",". */
  delimiter?: string;
}

/**
 * Splits CSV text into records of raw fields, following RFC 4180: fields are separated by the
 * delimiter and records by CRLF (a bare LF or CR is accepted too); a field that starts with a
 * double quote runs to the matching closing quote, may contain delimiters and line breaks, and
 * writes a literal quote as "". A quote inside an unquoted field, or anything but a delimiter or
 * line break after a closing quote, is an error. Returns each record with the line it starts on.
 */
export function parseCsvRecords(text: string, source = '<csv>', options: CsvOptions = {}): { fields: string[]; line: number }[] {
  const delimiter = options.delimiter ?? ',';
  if (delimiter.length !== 1 || delimiter === '"' || delimiter === '\n' || delimiter === '\r') {
    throw new Error(`${source}: invalid CSV delimiter ${JSON.stringify(delimiter)}`);
  }
  const s = stripBom(text);
  const records: { fields: string[]; line: number }[] = [];
  let line = 1;
  let i = 0;
  const n = s.length;
  while (i < n) {
    // A blank line (nothing before its line break) is skipped, not read as one empty field.
    if (s[i] === '\n' || s[i] === '\r') {
      i += s[i] === '\r' && s[i + 1] === '\n' ? 2 : 1;
      line++;
      continue;
    }
    const recordLine = line;
    const fields: string[] = [];
    // One record: fields until an unquoted line break or the end of the text.
    for (;;) {
      let field = '';
      if (s[i] === '"') {
        const openLine = line;
        i++;
        for (;;) {
          if (i >= n) throw new Error(`${source} line ${openLine}: field ${fields.length + 1}: unterminated quoted field`);
          const c = s[i]!;
          if (c === '"') {
            if (s[i + 1] === '"') {
              field += '"';
              i += 2;
              continue;
            }
            i++;
            break;
          }
          if (c === '\n' || (c === '\r' && s[i + 1] !== '\n')) line++;
          field += c;
          i++;
        }
        if (i < n && s[i] !== delimiter && s[i] !== '\n' && s[i] !== '\r') {
          throw new Error(`${source} line ${line}: field ${fields.length + 1}: unexpected ${JSON.stringify(s[i])} after a closing quote`);
        }
      } else {
        const start = i;
        while (i < n && s[i] !== delimiter && s[i] !== '\n' && s[i] !== '\r') {
          if (s[i] === '"') {
            throw new Error(
              `${source} line ${line}: field ${fields.length + 1}: double quote inside an unquoted field (quote the whole field and write "" for a quote)`,
            );
          }
          i++;
        }
        field = s.slice(start, i);
      }
      fields.push(field);
      if (i < n && s[i] === delimiter) {
        i++;
        continue;
      }
      break;
    }
    // Consume the line break (CRLF, LF or CR).
    if (s[i] === '\r') i++;
    if (s[i] === '\n') i++;
    line++;
    records.push({ fields, line: recordLine });
  }
  return records;
}

/**
 * Parses CSV text with a header record (RFC 4180). Every record must have as many fields as the
 * header; blank lines are skipped. Cells are strings.
 */
export function parseCsv(text: string, source = '<csv>', options: CsvOptions = {}): Table {
  const records = parseCsvRecords(text, source, options);
  if (records.length === 0) throw new Error(`${source}: empty CSV file (no header)`);
  const header = records[0]!.fields;
  const seen = new Set<string>();
  header.forEach((name, k) => {
    if (name === '') throw new Error(`${source} line ${records[0]!.line}: header field ${k + 1} is empty`);
    if (seen.has(name)) throw new Error(`${source} line ${records[0]!.line}: duplicate header field "${name}"`);
    seen.add(name);
  });
  const rows: Row[] = [];
  const lines: number[] = [];
  for (const { fields, line } of records.slice(1)) {
    if (fields.length !== header.length) {
      throw new Error(`${source} line ${line}: expected ${header.length} fields (${header.join(', ')}), found ${fields.length}`);
    }
    const row: Row = {};
    header.forEach((name, k) => {
      row[name] = fields[k];
    });
    rows.push(row);
    lines.push(line);
  }
  return { source, format: 'csv', columns: header, rows, where: (i) => `${source} line ${lines[i]}` };
}

function readText(path: string): string {
  try {
    return readUtf8(path);
  } catch (err) {
    throw new Error(`${path}: cannot read: ${(err as Error).message}`, { cause: err });
  }
}

/** Reads a JSON Lines file. */
export function readJsonl(path: string): Table {
  return parseJsonl(readText(path), path);
}

/** Reads a CSV file with a header record. */
export function readCsv(path: string, options: CsvOptions = {}): Table {
  return parseCsv(readText(path), path, options);
}

export interface ParquetOptions {
  /** Read only these columns (all when omitted); a missing one is an error naming it. */
  columns?: readonly string[];
}

/** bigint -> number when exactly representable; everything else unchanged. */
function normaliseCell(value: unknown): unknown {
  if (typeof value === 'bigint' && value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER)) {
    return Number(value);
  }
  return value;
}

/**
 * Reads a parquet file (flat schema; snappy and uncompressed pages are supported by hyparquet
 * itself, other codecs fail with the file named).
 */
export async function readParquet(path: string, options: ParquetOptions = {}): Promise<Table> {
  let rows: Row[];
  let columns: string[];
  try {
    const file = await asyncBufferFromFile(path);
    const metadata = await parquetMetadataAsync(file);
    const available = parquetSchema(metadata).children.map((c) => c.element.name);
    if (options.columns !== undefined) {
      for (const c of options.columns) {
        if (!available.includes(c)) throw new Error(`no column "${c}" (columns: ${available.join(', ')})`);
      }
    }
    columns = options.columns !== undefined ? [...options.columns] : available;
    const raw = (await parquetReadObjects({ file, metadata, columns })) as Row[];
    rows = raw.map((r) => {
      const out: Row = {};
      for (const c of columns) out[c] = normaliseCell(r[c]);
      return out;
    });
  } catch (err) {
    throw new Error(`${path}: cannot read parquet: ${(err as Error).message}`, { cause: err });
  }
  return { source: path, format: 'parquet', columns, rows, where: (i) => `${path} row ${i}` };
}

export interface ReadTableOptions extends CsvOptions, ParquetOptions {
  /** Overrides the format implied by the extension. */
  format?: TableFormat;
}

/** Reads a JSONL, CSV or parquet file, by extension unless `format` is given. */
export async function readTable(path: string, options: ReadTableOptions = {}): Promise<Table> {
  const format = options.format ?? formatFromPath(path);
  switch (format) {
    case 'jsonl':
      return readJsonl(path);
    case 'csv':
      return readCsv(path, options);
    case 'parquet':
      return readParquet(path, options);
  }
}
