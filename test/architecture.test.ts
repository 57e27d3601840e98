/**
 * The folder layout is the architecture: src/ folders form layers, and a file may import only from
 * its own layer or lower ones, never in a cycle. This test reads every import (static, type-only
 * and dynamic) of src/ and fails on an upward import or a cycle between files.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { projectRoot } from '../src/io/shared.js';

/**
 * Lowest first. `src/index.ts` (the public API) may import any layer. Folders in one entry are
 * siblings: same rank, and neither imports the other.
 */
const LAYERS = [
  'util',
  'engine',
  'io',
  'onnx',
  'data',
  'models',
  'sae',
  'cache',
  'probe',
  'erasure',
  'eval',
  ['experiment', 'mnist'],
  'report',
  'cli',
] as const;

/** Folders that only the listed folders (and their own files) may import. */
const IMPORTED_ONLY_BY: Readonly<Record<string, readonly string[]>> = { mnist: ['cli'] };

const src = join(projectRoot(), 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

/** Relative imports of a file, resolved to `src/`-relative `.ts` paths. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => m[1] ?? '');
  return specs.map((s) => relative(src, resolve(dirname(file), s)).replace(/\.js$/, '.ts'));
}

function folderOf(path: string): string {
  return path.includes('/') ? (path.split('/')[0] ?? '') : '';
}

function layerOf(path: string): number {
  const top = folderOf(path);
  return LAYERS.findIndex((layer) => (typeof layer === 'string' ? layer === top : (layer as readonly string[]).includes(top)));
}

const FOLDERS: readonly string[] = LAYERS.flat();

const files = sourceFiles(src).map((f) => relative(src, f));
const graph = new Map(files.map((f) => [f, importsOf(join(src, f))]));

describe('architecture', () => {
  it('has every src/ folder in the layer list', () => {
    const folders = new Set(files.filter((f) => f.includes('/')).map((f) => f.split('/')[0]));
    for (const folder of folders) expect(FOLDERS, `src/${folder}/ is not in the layer list of test/architecture.test.ts`).toContain(folder);
  });

  it('imports only existing files', () => {
    for (const [file, imports] of graph) for (const target of imports) expect(graph.has(target), `${file} imports ${target}, which does not exist`).toBe(true);
  });

  it('never imports a higher layer', () => {
    const upward: string[] = [];
    for (const [file, imports] of graph) {
      if (file === 'index.ts') continue;
      for (const target of imports) if (layerOf(target) > layerOf(file)) upward.push(`${file} -> ${target}`);
    }
    expect(upward).toEqual([]);
  });

  it('never imports a sibling folder', () => {
    const sideways: string[] = [];
    for (const [file, imports] of graph) {
      if (file === 'index.ts') continue;
      for (const target of imports) if (layerOf(target) === layerOf(file) && folderOf(target) !== folderOf(file)) sideways.push(`${file} -> ${target}`);
    }
    expect(sideways).toEqual([]);
  });

  it('imports a restricted folder only from the folders allowed to', () => {
    const refused: string[] = [];
    for (const [file, imports] of graph) {
      if (file === 'index.ts') continue;
      for (const target of imports) {
        const allowed = IMPORTED_ONLY_BY[folderOf(target)];
        if (allowed !== undefined && folderOf(target) !== folderOf(file) && !allowed.includes(folderOf(file))) refused.push(`${file} -> ${target}`);
      }
    }
    expect(refused).toEqual([]);
  });

  it('has no import cycle', () => {
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (file: string, stack: string[]): void => {
      if (state.get(file) === 'done') return;
      if (state.get(file) === 'open') {
        cycles.push([...stack.slice(stack.indexOf(file)), file].join(' -> '));
        return;
      }
      state.set(file, 'open');
      for (const next of graph.get(file) ?? []) visit(next, [...stack, file]);
      state.set(file, 'done');
    };
    for (const file of files) visit(file, []);
    expect(cycles).toEqual([]);
  });
});
