/**
 * Small helpers over node:util parseArgs shared by the subcommands: typed option readers that fail
 * with a message naming the flag.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { checkOutput } from '../io/output.js';

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

export class UsageError extends Error {}

/**
 * Flags every subcommand takes: --quiet (no progress), --force (replace outputs), --json (result as
 * JSON), --help, --threads N (compute threads) and --executor onnx|tfjs (what runs inference-only
 * forward passes). `cli()` applies the last two before the subcommand starts.
 */
export const GLOBAL_OPTIONS = {
  quiet: { type: 'boolean' },
  force: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  threads: { type: 'string' },
  executor: { type: 'string' },
} as const;

/** The value of a global flag `--name V` or `--name=V` in raw arguments (the last one given). */
export function globalValue(argv: readonly string[], name: string): string | undefined {
  let value: string | undefined;
  argv.forEach((a, i) => {
    if (a === `--${name}`) {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new UsageError(`--${name} takes a value`);
      value = next;
    } else if (a.startsWith(`--${name}=`)) value = a.slice(name.length + 3);
  });
  return value;
}

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

export function parse(argv: string[], options: OptionSpec): Parsed {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...options, ...GLOBAL_OPTIONS },
      allowPositionals: false,
      strict: true,
    });
    return { values: values as Parsed['values'], positionals };
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export function requireString(p: Parsed, name: string): string {
  const v = p.values[name];
  if (typeof v !== 'string' || v === '') throw new UsageError(`--${name} is required`);
  return v;
}

export function optionalString(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new UsageError(`--${name} takes a value`);
  return v;
}

export function optionalInt(p: Parsed, name: string, min = 1): number | undefined {
  const v = optionalString(p, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got "${v}"`);
  return n;
}

export function optionalNumber(p: Parsed, name: string): number | undefined {
  const v = optionalString(p, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got "${v}"`);
  return n;
}

export function stringList(p: Parsed, name: string): string[] {
  const v = p.values[name];
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [String(v)])
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

export function oneOf<T extends string>(p: Parsed, name: string, allowed: readonly T[], fallback: T): T {
  const v = optionalString(p, name) ?? fallback;
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, got "${v}"`);
  return v as T;
}

/**
 * The `--out` path, checked before any work (io/output.ts): not one of `inputs`, not a symbolic
 * link unless `--force`, of the right kind when it exists, and writable. Returns it resolved.
 */
export function outputPath(p: Parsed, kind: 'file' | 'folder', inputs: readonly (string | undefined)[]): string {
  return checkOutput(requireString(p, 'out'), { kind, inputs, force: p.values.force === true, name: '--out' });
}
