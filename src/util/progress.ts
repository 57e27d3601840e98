/**
 * The one progress helper every long loop reports through. Draws a single updating line on a TTY
 * stderr, prints sparse lines otherwise (CI logs), and nothing when silenced by `--quiet`
 * (`setQuiet(true)`) or `SAE_ERASER_QUIET=1`.
 */
let quiet = process.env.SAE_ERASER_QUIET === '1';

export function setQuiet(value: boolean): void {
  quiet = value;
}

export function isQuiet(): boolean {
  return quiet;
}

export interface Progress {
  /** Advances by `n` units; `info` is shown after the counter (for example a loss). */
  tick(n?: number, info?: string): void;
  /** Ends the bar and prints the total time. */
  done(info?: string): void;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${Math.round(s - 60 * m)
    .toString()
    .padStart(2, '0')}s`;
}

/** Starts a progress report for `total` units of `unit` (total 0 or unknown: a plain counter). */
export function progress(label: string, total: number, unit = 'it'): Progress {
  const start = Date.now();
  const tty = process.stderr.isTTY === true;
  let count = 0;
  let lastDraw = 0;
  const draw = (info: string | undefined, final: boolean): void => {
    if (quiet) return;
    const now = Date.now();
    // Redraw at most every 100 ms on a TTY and every 10 s in logs.
    if (!final && now - lastDraw < (tty ? 100 : 10_000)) return;
    lastDraw = now;
    const elapsed = (now - start) / 1000;
    const rate = count / Math.max(elapsed, 1e-9);
    let line = `${label}: ${count}${total > 0 ? `/${total}` : ''} ${unit}`;
    if (total > 0) {
      const frac = Math.min(1, count / total);
      const width = 24;
      const filled = Math.round(frac * width);
      line = `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${count}/${total} ${unit}`;
      if (!final && count > 0) line += ` eta ${formatSeconds((total - count) / rate)}`;
    }
    line += ` ${rate.toFixed(rate < 10 ? 2 : 0)} ${unit}/s ${formatSeconds(elapsed)}`;
    if (info !== undefined) line += ` ${info}`;
    if (tty) process.stderr.write(`\r\x1b[2K${line}${final ? '\n' : ''}`);
    else process.stderr.write(`${line}\n`);
  };
  return {
    tick(n = 1, info?: string) {
      count += n;
      draw(info, false);
    },
    done(info?: string) {
      draw(info, true);
    },
  };
}
