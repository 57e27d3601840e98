/**
 * Runs CLI commands one after another in a process of their own and prints one JSON line per
 * command on stdout, `{ code, peakRssBytes, maxRssBytes, seconds }`: its exit code, the peak
 * resident memory while it ran, this process's peak so far, and its wall time. Argument: a JSON
 * array of argument lists, e.g. `[["activations", "--model", ...], [...]]`. The memory test of
 * `activations` and bench/load-activations.ts run it so that the peaks they read are the commands'.
 *
 * The per-command peak needs Linux, which resets a process's peak (VmHWM) when "5" is written to
 * /proc/self/clear_refs; elsewhere `peakRssBytes` is null. The lifetime peak (`maxRssBytes`) also
 * counts module loading, whose transient memory can hide a command's.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cli } from '../../src/cli/main.js';

/** Resets this process's peak RSS; false where the OS does not allow it. */
function resetPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false; // not Linux, or /proc not writable: only the lifetime peak is reported
  }
}

/** Peak RSS since the last reset, in bytes (VmHWM is in kB). */
function peakSinceReset(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  if (m === null) throw new Error('/proc/self/status has no VmHWM line');
  return Number(m[1]) * 1024;
}

const commands = JSON.parse(process.argv[2] ?? '[]') as string[][];
for (const args of commands) {
  const reset = resetPeak();
  const rssAtStart = process.memoryUsage.rss();
  const start = performance.now();
  // The command's own stdout (its result) goes to stderr: this process's stdout carries only the reports.
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = process.stderr.write.bind(process.stderr) as typeof process.stdout.write;
  let code: number;
  try {
    code = await cli(args);
  } finally {
    process.stdout.write = write;
  }
  const seconds = (performance.now() - start) / 1000;
  const peakRssBytes = reset ? peakSinceReset() : null;
  // resourceUsage reports maxRSS in kilobytes.
  process.stdout.write(`${JSON.stringify({ code, rssAtStart, peakRssBytes, maxRssBytes: process.resourceUsage().maxRSS * 1024, seconds })}\n`);
}
