/**
 * The sae-eraser command line. One file per subcommand in src/cli/, each exporting
 * `{ summary, usage, main(argv) }`; this file only dispatches.
 */
import { EXECUTORS, setExecutor, type ExecutorName } from '../models/executor.js';
import { setQuiet } from '../util/progress.js';
import { setThreads } from '../util/threads.js';
import { globalValue, UsageError } from './args.js';
import type { Subcommand } from './subcommand.js';

const subcommands: Record<string, () => Promise<Subcommand>> = {
  activations: async () => (await import('./activations.js')).activationsCommand,
  budget: async () => (await import('./budget.js')).budgetCommand,
  mask: async () => (await import('./mask.js')).maskCommand,
  mnist: async () => (await import('./mnist.js')).mnistCommand,
  probe: async () => (await import('./probe.js')).probeCommand,
  report: async () => (await import('./report.js')).reportCommand,
  run: async () => (await import('./run.js')).runCommand,
  'train-sae': async () => (await import('./train-sae.js')).trainSaeCommand,
};

/** Every command with its one-line summary and a copy-paste example (loads each command's module). */
async function help(): Promise<string> {
  const lines = [
    'usage: sae-eraser <command> [options]',
    '',
    'Concept erasure with sparse autoencoder features. Every command takes --help (its options),',
    '--quiet (no progress on stderr), --force (replace outputs), --json (the result as one JSON object',
    'on stdout), --threads N (compute threads; default all cores) and --executor onnx|tfjs (what runs',
    'inference-only forward passes: ONNX Runtime, the default, or the tfjs engine).',
    '',
    'commands:',
  ];
  for (const [name, load] of Object.entries(subcommands)) {
    const cmd = await load();
    lines.push(`  ${name.padEnd(12)} ${cmd.summary}`, `  ${''.padEnd(12)} e.g. ${cmd.example}`);
  }
  return lines.join('\n');
}

/**
 * Applies `--threads` and `--executor` (see GLOBAL_OPTIONS) for the whole process; a command
 * without them gets the defaults, whatever an earlier `cli()` call in this process set.
 */
function applyGlobalFlags(argv: readonly string[]): void {
  const threads = globalValue(argv, 'threads');
  try {
    setThreads(threads);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const executor = globalValue(argv, 'executor');
  if (executor !== undefined && !EXECUTORS.includes(executor as ExecutorName))
    throw new UsageError(`--executor must be one of ${EXECUTORS.join(', ')}, got "${executor}"`);
  setExecutor(executor as ExecutorName | undefined);
}

/**
 * Runs `sae-eraser ARGV` and returns the exit code: 0 done, 1 failed, 2 usage error. With --json the
 * result (or the error) is one JSON object on stdout; progress and messages stay on stderr.
 */
export async function cli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${await help()}\n`);
    return name === undefined ? 2 : 0;
  }
  const load = subcommands[name];
  if (load === undefined) {
    process.stderr.write(`sae-eraser: unknown command "${name}" (known: ${Object.keys(subcommands).join(', ')}; sae-eraser --help lists them)\n`);
    return 2;
  }
  const cmd = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${cmd.summary}\n\n${cmd.usage}\n\nexample: ${cmd.example}\n`);
    return 0;
  }
  const json = rest.includes('--json');
  if (rest.includes('--quiet')) setQuiet(true);
  const fail = (code: number, kind: string, message: string, human: string): number => {
    process.stderr.write(human);
    if (json) process.stdout.write(`${JSON.stringify({ error: { command: name, kind, message } })}\n`);
    return code;
  };
  try {
    applyGlobalFlags(rest);
    const result = await cmd.main(rest);
    process.stdout.write(json ? `${JSON.stringify(result.json)}\n` : result.text);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) return fail(2, 'usage', err.message, `sae-eraser ${name}: ${err.message}\n\n${cmd.usage}\n`);
    const e = err as Error;
    if (process.env.SAE_ERASER_DEBUG === '1' && e.stack !== undefined) process.stderr.write(`${e.stack}\n`);
    return fail(1, 'error', e.message, `sae-eraser ${name}: error: ${e.message}\n`);
  }
}
