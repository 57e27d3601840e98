import { readFileSync } from 'node:fs';
import { sharedPath } from '../../src/io/shared.js';

/** ../shared's surgeon/nurse bios (validate.jsonl), or undefined when ../shared is absent. */
export const SHARED_BIOS = sharedPath('data', 'bias_in_bios', 'validate.jsonl');

/** Bios `offset` to `offset + perGroup` of each (profession, gender) group of ../shared's validate.jsonl, as JSONL. */
export function biosSubset(perGroup: number, offset: number): string {
  if (SHARED_BIOS === undefined) throw new Error('biosSubset needs ../shared (set SAE_ERASER_SHARED)');
  const rows = readFileSync(SHARED_BIOS, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { profession: string; gender: string });
  const counts = new Map<string, number>();
  const out: string[] = [];
  for (const r of rows) {
    const key = `${r.profession}/${r.gender}`;
    const c = counts.get(key) ?? 0;
    counts.set(key, c + 1);
    if (c >= offset && c < offset + perGroup) out.push(JSON.stringify(r));
  }
  return out.join('\n') + '\n';
}
