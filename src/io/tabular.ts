/**
 * Readers for row-oriented data files: JSON Lines, CSV (RFC 4180) and Apache Parquet (through
 * `hyparquet`). Each returns a `Table`: rows as plain objects plus `where(i)`, which names the file
 * and the line (or parquet row) that row i came from, so that every later error can point at it.
 *
 * Value types: JSONL keeps JSON types; CSV cells are always strings (no type guessing: the consumer
 * decides); parquet integers arrive as numbers (INT64 values beyond 2^53 stay bigint), strings as
 * strings, nulls as null.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { extname } from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';
import { invalidUtf8, readUtf8 } from './text.js';
import { checkParquetPages } from './parquet-pages.js';

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

/** The row on JSON Lines line `line` (text without its line break), or undefined for a blank line. */
function jsonlRow(text: string, source: string, line: number): Row | undefined {
  const trimmed = text.endsWith('\r') ? text.slice(0, -1) : text;
  if (trimmed.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(trimmed);
  } catch (err) {
    throw new Error(`${source} line ${line}: invalid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error(`${source} line ${line}: expected a JSON object, got ${Array.isArray(value) ? 'an array' : JSON.stringify(value)}`);
  }
  return value as Row;
}

/** Parses JSON Lines text: one JSON object per line; blank lines are skipped. */
export function parseJsonl(text: string, source = '<jsonl>'): Table {
  const rows: Row[] = [];
  const lines: number[] = [];
  const all = stripBom(text).split('\n');
  for (let i = 0; i < all.length; i++) {
    const row = jsonlRow(all[i]!, source, i + 1);
    if (row === undefined) continue;
    rows.push(row);
    lines.push(i + 1);
  }
  return lineTable(source, 'jsonl', rows, lines);
}

export interface CsvOptions {
  /** Field separator, one character; default ",". */
  delimiter?: string;
}

/**
 * Sets a column's value as an own property, whatever its name: a column named "__proto__" must be a
 * field like any other, not replace the row's prototype (as plain assignment would).
 */
function setField(row: Row, name: string, value: Row[string]): void {
  Object.defineProperty(row, name, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * Splits CSV text into records of raw fields, following RFC 4180: fields are separated by the
 * delimiter and records by CRLF (a bare LF or CR is accepted too); a field that starts with a
 * double quote runs to the matching closing quote, may contain delimiters and line breaks, and
 * writes a literal quote as "". A quote inside an unquoted field, or anything but a delimiter or
 * line break after a closing quote, is an error. Returns each record with the line it starts on.
 */
export function parseCsvRecords(text: string, source = '<csv>', options: CsvOptions = {}): CsvRecord[] {
  return csvRecordsFrom(stripBom(text), source, csvDelimiter(options, source), 1);
}

/** One CSV record: its fields and the line it starts on. */
export interface CsvRecord {
  fields: string[];
  line: number;
}

/** The checked delimiter of `options` (default ","). */
function csvDelimiter(options: CsvOptions, source: string): string {
  const delimiter = options.delimiter ?? ',';
  if (delimiter.length !== 1 || delimiter === '"' || delimiter === '\n' || delimiter === '\r') {
    throw new Error(`${source}: invalid CSV delimiter ${JSON.stringify(delimiter)}`);
  }
  return delimiter;
}

/** `parseCsvRecords` on text that starts on line `firstLine` of `source` (a piece of a streamed file). */
function csvRecordsFrom(s: string, source: string, delimiter: string, firstLine: number): CsvRecord[] {
  const records: CsvRecord[] = [];
  let line = firstLine;
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
  const header = csvHeader(records[0]!, source);
  const rows: Row[] = [];
  const lines: number[] = [];
  for (const record of records.slice(1)) {
    rows.push(csvRow(header, record, source));
    lines.push(record.line);
  }
  return { source, format: 'csv', columns: header, rows, where: (i) => `${source} line ${lines[i]}` };
}

/** The column names of a header record: none empty, none twice. */
function csvHeader(record: CsvRecord, source: string): string[] {
  const seen = new Set<string>();
  record.fields.forEach((name, k) => {
    if (name === '') throw new Error(`${source} line ${record.line}: header field ${k + 1} is empty`);
    if (seen.has(name)) throw new Error(`${source} line ${record.line}: duplicate header field "${name}"`);
    seen.add(name);
  });
  return record.fields;
}

/** A record as a row keyed by the header; it must have one field per column. */
function csvRow(header: readonly string[], { fields, line }: CsvRecord, source: string): Row {
  if (fields.length !== header.length) {
    throw new Error(`${source} line ${line}: expected ${header.length} fields (${header.join(', ')}), found ${fields.length}`);
  }
  const row: Row = {};
  header.forEach((name, k) => {
    setField(row, name, fields[k]);
  });
  return row;
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
 * The error for a parquet file that cannot be read. A TypeError or RangeError from the parquet
 * library ("Cannot read properties of undefined") means a damaged file, and its text would tell the
 * user nothing about theirs, so it is kept only as the cause.
 */
function parquetError(path: string, err: unknown): Error {
  const engine = err instanceof TypeError || err instanceof RangeError;
  const why = engine ? 'the file is damaged or not a parquet file (its metadata or pages do not decode)' : (err as Error).message;
  return new Error(`${path}: cannot read parquet: ${why}`, { cause: err });
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
    await checkParquetPages(file, metadata, columns);
    const raw = (await parquetReadObjects({ file, metadata, columns })) as Row[];
    rows = raw.map((r) => {
      const out: Row = {};
      for (const c of columns) setField(out, c, normaliseCell(r[c]));
      return out;
    });
  } catch (err) {
    throw parquetError(path, err);
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

/** One row of a streamed table and where it came from. */
export interface StreamedRow {
  row: Row;
  /** The line a JSONL or CSV row starts on (1-based), or a parquet row's index (0-based); `where` names it. */
  position: number;
}

/**
 * A table read row by row (`streamTable`): each iteration reads the file again from the start,
 * holding only the current line (JSONL, CSV record) or row group (parquet).
 */
export interface RowStream extends AsyncIterable<StreamedRow> {
  readonly source: string;
  readonly format: TableFormat;
  /** "file line 12" / "file row 7": where the row at `position` came from, for error messages. */
  where(position: number): string;
}

/** Bytes read per call while streaming a text file. */
const STREAM_CHUNK_BYTES = 1 << 20;

/**
 * The lines of a file (without their LF; a CR before it is kept), decoded as strict UTF-8 a chunk
 * at a time, with a leading byte-order mark dropped. Holds one chunk plus the longest line.
 */
function* utf8Lines(path: string): Generator<string> {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new Error(`${path}: cannot read: ${(err as Error).message}`, { cause: err });
  }
  try {
    const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    const chunk = Buffer.allocUnsafe(STREAM_CHUNK_BYTES);
    let carry: Buffer = Buffer.alloc(0);
    let line = 1;
    for (;;) {
      let got: number;
      try {
        got = readSync(fd, chunk, 0, chunk.length, null);
      } catch (err) {
        throw new Error(`${path}: cannot read: ${(err as Error).message}`, { cause: err });
      }
      const bytes = carry.length === 0 ? chunk.subarray(0, got) : Buffer.concat([carry, chunk.subarray(0, got)]);
      // Decode whole lines only: a line break is one byte in UTF-8, never part of a longer character.
      const end = got === 0 ? bytes.length : bytes.lastIndexOf(0x0a) + 1;
      if (end > 0) {
        let text: string;
        try {
          text = strict.decode(bytes.subarray(0, end));
        } catch (err) {
          throw invalidUtf8(path, bytes.subarray(0, end), err, line);
        }
        if (line === 1) text = stripBom(text);
        const lines = text.split('\n');
        // Text that ends with a line break splits into a last empty piece, which is no line.
        if (lines[lines.length - 1] === '') lines.pop();
        for (const l of lines) {
          yield l;
          line++;
        }
      }
      if (got === 0) return;
      carry = Buffer.from(bytes.subarray(end));
    }
  } finally {
    closeSync(fd);
  }
}

function* jsonlRows(path: string): Generator<StreamedRow> {
  let line = 0;
  for (const text of utf8Lines(path)) {
    line++;
    const row = jsonlRow(text, path, line);
    if (row !== undefined) yield { row, position: line };
  }
}

/** Where a CSV scan stands at the end of a line: only `inQuotes` means the record goes on. */
const enum CsvScan {
  FieldStart,
  Unquoted,
  InQuotes,
  /** Just after a quote inside a quoted field: the closing quote, or the first of a doubled one. */
  QuoteInQuotes,
}

/** The scan state after `text`, from `state`; a quote where RFC 4180 allows none leaves the record to the parser to reject. */
function csvScan(text: string, state: CsvScan, delimiter: string): CsvScan {
  if (state !== CsvScan.InQuotes && !text.includes('"')) return CsvScan.FieldStart;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (state === CsvScan.InQuotes) {
      if (c === '"') state = CsvScan.QuoteInQuotes;
    } else if (c === delimiter || c === '\n' || c === '\r') {
      state = CsvScan.FieldStart;
    } else if (c === '"') {
      state = state === CsvScan.FieldStart || state === CsvScan.QuoteInQuotes ? CsvScan.InQuotes : CsvScan.Unquoted;
    } else {
      state = CsvScan.Unquoted;
    }
  }
  return state;
}

/** Line breaks in `text` as the CSV parser counts them: LF, CRLF and a bare CR each count once. */
function csvLineBreaks(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\n' || (c === '\r' && text[i + 1] !== '\n')) n++;
  }
  return n;
}

/** The records of a CSV file, parsed a record at a time (a quoted field may span lines). */
function* csvRecords(path: string, delimiter: string): Generator<CsvRecord> {
  let pending = '';
  let pendingLine = 1;
  let state = CsvScan.FieldStart;
  const flush = (): CsvRecord[] => {
    const records = csvRecordsFrom(pending, path, delimiter, pendingLine);
    pendingLine += csvLineBreaks(pending);
    pending = '';
    return records;
  };
  for (const text of utf8Lines(path)) {
    pending += text + '\n';
    state = csvScan(text, state, delimiter);
    if (state === CsvScan.InQuotes) continue;
    state = CsvScan.FieldStart;
    yield* flush();
  }
  // An unterminated quoted field: the parser names its line.
  if (pending !== '') yield* flush();
}

function* csvRows(path: string, options: CsvOptions): Generator<StreamedRow> {
  const delimiter = csvDelimiter(options, path);
  let header: string[] | undefined;
  for (const record of csvRecords(path, delimiter)) {
    if (header === undefined) header = csvHeader(record, path);
    else yield { row: csvRow(header, record, path), position: record.line };
  }
  if (header === undefined) throw new Error(`${path}: empty CSV file (no header)`);
}

async function* parquetRows(path: string, options: ParquetOptions): AsyncGenerator<StreamedRow> {
  let file: Awaited<ReturnType<typeof asyncBufferFromFile>>;
  let metadata: Awaited<ReturnType<typeof parquetMetadataAsync>>;
  let columns: string[];
  try {
    file = await asyncBufferFromFile(path);
    metadata = await parquetMetadataAsync(file);
    const available = parquetSchema(metadata).children.map((c) => c.element.name);
    for (const c of options.columns ?? []) if (!available.includes(c)) throw new Error(`no column "${c}" (columns: ${available.join(', ')})`);
    columns = options.columns !== undefined ? [...options.columns] : available;
    await checkParquetPages(file, metadata, columns);
  } catch (err) {
    throw parquetError(path, err);
  }
  // One row group at a time: parquet compresses and encodes a column chunk as a whole.
  let rowStart = 0;
  for (const group of metadata.row_groups) {
    const rowEnd = rowStart + Number(group.num_rows);
    let raw: Row[];
    try {
      raw = (await parquetReadObjects({ file, metadata, columns, rowStart, rowEnd })) as Row[];
    } catch (err) {
      throw parquetError(path, err);
    }
    for (let i = 0; i < raw.length; i++) {
      const out: Row = {};
      for (const c of columns) setField(out, c, normaliseCell(raw[i]![c]));
      yield { row: out, position: rowStart + i };
    }
    rowStart = rowEnd;
  }
}

/**
 * Reads a JSONL, CSV or parquet file row by row, by extension unless `options.format` is given,
 * with the values, checks and error messages of `readTable`, but holding only the current line,
 * record or parquet row group. Iterate it as often as needed; each pass reads the file again.
 */
export function streamTable(path: string, options: ReadTableOptions = {}): RowStream {
  const format = options.format ?? formatFromPath(path);
  return {
    source: path,
    format,
    where: (position) => `${path} ${format === 'parquet' ? 'row' : 'line'} ${position}`,
    async *[Symbol.asyncIterator]() {
      if (format === 'parquet') yield* parquetRows(path, options);
      else yield* format === 'jsonl' ? jsonlRows(path) : csvRows(path, options);
    },
  };
}
