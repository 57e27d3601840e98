/**
 * The number of compute threads: ONNX Runtime's intra-op pool and, when set before the tensor
 * engine starts, the tfjs-wasm thread pool. Defaults to the machine's cores; `--threads N` on any
 * command, or `SAE_ERASER_THREADS=N`, overrides it.
 */
import { availableParallelism } from 'node:os';

let chosen: number | undefined;

function parseThreads(value: string, source: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new Error(`${source} must be a whole number of threads from 1 to 1024, got "${value}"`);
  return n;
}

/** Sets the thread count for everything started after this call (undefined: back to the default). */
export function setThreads(n: number | string | undefined): void {
  chosen = n === undefined ? undefined : typeof n === 'number' ? parseThreads(String(n), 'threads') : parseThreads(n, '--threads');
}

/** The thread count: `setThreads`'s, else `SAE_ERASER_THREADS`, else the machine's cores. */
export function threads(): number {
  if (chosen !== undefined) return chosen;
  const env = process.env.SAE_ERASER_THREADS;
  if (env !== undefined && env !== '') return parseThreads(env, 'SAE_ERASER_THREADS');
  return availableParallelism();
}
