/**
 * The sae-eraser command line. One file per subcommand in src/cli/, each exporting
 * `{ summary, usage, main(argv) }`; this file only dispatches.
 */
import { setQuiet } from '../util/progress.js';
import { UsageError } from './args.js';
import type { Subcommand } from './subcommand.js';

const subcommands: Record<string, () => Promise<Subcommand>> = {
  activations: async () => (await import('./activations.js')).activationsCommand,
  mnist: async () => (await import('./mnist.js')).mnistCommand,
  probe: async () => (await import('./probe.js')).probeCommand,
  report: async () => (await import('./report.js')).reportCommand,
  run: async () => (await import('./run.js')).runCommand,
  'train-sae': async () => (await import('./train-sae.js')).trainSaeCommand,
};

function help(): string {
  return ['usage: sae-eraser <command> [options]   (--help on any command for its options)', '', 'commands:']
    .concat(Object.keys(subcommands).map((name) => `  ${name}`))
    .join('\n');
}

export async function cli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name === undefined ? 2 : 0;
  }
  const load = subcommands[name];
  if (load === undefined) {
    process.stderr.write(`sae-eraser: unknown command "${name}"\n${help()}\n`);
    return 2;
  }
  const cmd = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${cmd.summary}\n\n${cmd.usage}\n`);
    return 0;
  }
  if (rest.includes('--quiet')) setQuiet(true);
  try {
    await cmd.main(rest);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`sae-eraser ${name}: ${err.message}\n\n${cmd.usage}\n`);
      return 2;
    }
    const e = err as Error;
    process.stderr.write(`sae-eraser ${name}: error: ${e.message}\n`);
    if (process.env.SAE_ERASER_DEBUG === '1' && e.stack !== undefined) process.stderr.write(`${e.stack}\n`);
    return 1;
  }
}
