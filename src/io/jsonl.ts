/**
 * JSON-lines files that are appended to while they are read (a run's results and history): every
 * complete line parsed, and a last line without its newline (an append under way, or cut short by
 * a crash) set aside rather than read as broken JSON.
 */
import { existsSync } from 'node:fs';
import { readUtf8 } from './text.js';

export interface JsonLines {
  /** Non-empty complete lines, parsed, with their 1-based line numbers. */
  lines: { line: number; value: unknown }[];
  /** Bytes of the complete lines: less than the file's size when the last line is incomplete. */
  completeBytes: number;
  /** Whether the last line lacks its newline (and was left out). */
  incomplete: boolean;
}

/**
 * Reads `path` (an absent file has no lines). A complete line that is not JSON is an error naming
 * the file and line, followed by `hint` when given.
 */
export function readJsonLines(path: string, hint = ''): JsonLines {
  if (!existsSync(path)) return { lines: [], completeBytes: 0, incomplete: false };
  const text = readUtf8(path);
  const end = text.lastIndexOf('\n') + 1;
  const lines: JsonLines['lines'] = [];
  text
    .slice(0, end)
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '') return;
      try {
        lines.push({ line: i + 1, value: JSON.parse(line) });
      } catch (err) {
        throw new Error(`${path}:${i + 1}: not valid JSON (${(err as Error).message})${hint}`, { cause: err });
      }
    });
  return { lines, completeBytes: Buffer.byteLength(text.slice(0, end)), incomplete: end < text.length };
}
