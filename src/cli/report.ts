/**
 * `sae-eraser report RUN_DIR [--out FILE]`: (re)builds the self-contained report.html of a run
 * folder (src/report/html.ts), from a finished run or, marked partial, from one still going.
 */
import { parseArgs } from 'node:util';
import { join, resolve } from 'node:path';
import { checkOutput } from '../io/output.js';
import { writeFileAtomic } from '../io/atomic.js';
import { buildReport } from '../report/html.js';
import { readRunDir } from '../report/run-dir.js';
import type { CommandResult, Subcommand } from './subcommand.js';
import { GLOBAL_OPTIONS, UsageError } from './args.js';

const usage = `usage: sae-eraser report RUN_DIR [--out FILE] [--force] [--quiet] [--json]

Builds report.html for the run folder RUN_DIR (the --out of \`sae-eraser run\`): the results table with
95% intervals, a bar chart per metric, subgroup accuracies, a live feature explorer, cards of the
removed SAE features, training curves and learned-mask histograms, in one file that needs no
network. Writes RUN_DIR/report.html unless --out names another file. A run without metrics.json yet
(still going, or stopped) gets a page from results.jsonl, marked partial.`;

async function main(argv: string[]): Promise<CommandResult> {
  let parsed: ReturnType<typeof parseArgs<{ options: { out: { type: 'string' } } & typeof GLOBAL_OPTIONS; allowPositionals: true }>>;
  try {
    // args.ts's `parse` takes no positionals; this command's one argument is the run folder.
    parsed = parseArgs({
      args: argv,
      options: { out: { type: 'string' }, ...GLOBAL_OPTIONS },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const [dir, ...extra] = parsed.positionals;
  if (dir === undefined || dir === '') throw new UsageError('RUN_DIR is required');
  if (extra.length > 0) throw new UsageError(`one RUN_DIR only; also got ${extra.map((e) => `"${e}"`).join(', ')}`);
  const runDir = resolve(dir);
  // Read and check the whole folder before anything is written (checkOutput creates --out's folder).
  const run = readRunDir(runDir);
  const out = checkOutput(parsed.values.out ?? join(runDir, 'report.html'), {
    kind: 'file',
    inputs: ['config.json', 'results.jsonl', 'history.jsonl', 'metrics.json'].map((f) => join(runDir, f)),
    force: parsed.values.force === true,
    name: '--out',
  });
  const html = buildReport(run);
  writeFileAtomic(out, html);
  const partial = run.metrics === undefined;
  return {
    json: { report: out, bytes: Buffer.byteLength(html), partial },
    text: `wrote ${out} (${(Buffer.byteLength(html) / 1024).toFixed(0)} KiB${partial ? ', partial run' : ''})\n`,
  };
}

export const reportCommand: Subcommand = {
  summary: 'Build the self-contained report.html of a run folder.',
  example: 'sae-eraser report runs/ci',
  usage,
  main,
};
