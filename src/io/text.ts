/**
 * Text files read strictly as UTF-8. `readFileSync(path, 'utf8')` turns invalid bytes into U+FFFD
 * without a word, so a Latin-1 data file would silently become different text; these refuse it,
 * naming the file and the line. A leading byte-order mark is kept, as a plain read keeps it.
 */
import { readFileSync } from 'node:fs';

/** Decodes `bytes` as UTF-8 or throws `source line N: invalid UTF-8 ...`. */
export function decodeUtf8(bytes: Uint8Array, source: string): string {
  const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  try {
    return strict.decode(bytes);
  } catch (err) {
    throw invalidUtf8(source, bytes, err);
  }
}

/**
 * The error for `bytes` that failed to decode: `source line N: invalid UTF-8 ...`, N the first line
 * that does not decode, counting the first line of `bytes` as `firstLine`.
 */
export function invalidUtf8(source: string, bytes: Uint8Array, cause: unknown, firstLine = 1): Error {
  const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  return new Error(`${source} line ${firstInvalidLine(bytes, strict, firstLine)}: invalid UTF-8; convert the file to UTF-8`, { cause });
}

/** Reads a file as strict UTF-8 text (see `decodeUtf8`). */
export function readUtf8(path: string): string {
  return decodeUtf8(readFileSync(path), path);
}

/**
 * Parses a JSON file read as strict UTF-8 text. A syntax error becomes `PATH: not valid JSON
 * (message)` followed by `hint` (e.g. what to do about it); a read error keeps its own message,
 * which names the file.
 */
export function readJson(path: string, hint = ''): unknown {
  const text = readUtf8(path);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})${hint}`, { cause: err });
  }
}

/**
 * The number of the first line of `bytes` that does not decode, counting the first as `firstLine`
 * (line breaks are single bytes in UTF-8, so lines can be decoded one by one).
 */
function firstInvalidLine(bytes: Uint8Array, strict: TextDecoder, firstLine: number): number {
  let line = firstLine;
  let start = 0;
  for (let i = 0; i <= bytes.length; i++) {
    if (i < bytes.length && bytes[i] !== 0x0a) continue;
    try {
      strict.decode(bytes.subarray(start, i));
    } catch {
      return line;
    }
    line++;
    start = i + 1;
  }
  return line;
}
