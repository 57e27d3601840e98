/**
 * The run folder of `sae-eraser run`: what a researcher reads after (or during) a run, and what lets
 * an interrupted run resume.
 *
 *   config.json     the fully resolved config, the identity of its inputs (model, SAE and data
 *                   weights ids, once known) and provenance: package version, git commit when run
 *                   from a checkout, backend and thread count, Node version, start time
 *   results.jsonl   one line per method and seed, appended (and flushed to disk) as soon as it is
 *                   scored: {"method", "seed", "result"}, the result's scores those on the reporting
 *                   part of the test file and, under "tuning", on its tuning part
 *   history.jsonl   one line per logged training step: {"stage", "step", "elapsed", ...values}
 *   tensorboard/    the same history as TensorBoard event files, one folder (a TensorBoard run) per stage
 *   metrics.json    written by the runner at the end (its presence marks a finished run)
 *
 * Reopening a folder with the same resolved config resumes: method/seed pairs already in
 * `results.jsonl` are not run again. The seeds and the list of methods may grow between runs (a
 * pair's result depends only on the rest of the config and that method's options); anything else
 * that differs is refused once the folder holds results, and so is a finished run, unless `force`
 * starts the folder afresh. (A folder whose earlier attempt scored nothing, e.g. stopped by a config
 * error, takes the new config.) A folder from before the test file was split has no
 * `dataset.testSplit` in its config: a different config, so its whole-file results are never mixed
 * with reporting-part ones.
 */
import { closeSync, existsSync, fsyncSync, ftruncateSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { writeJsonAtomic } from '../io/atomic.js';
import { HistoryWriter, provenance, type Provenance } from '../io/run-log.js';
import { readJsonLines } from '../io/jsonl.js';
import { readUtf8 } from '../io/text.js';
import type { HistoryLog } from '../util/history.js';
import type { ExperimentResult, MethodSeedResult } from './results.js';

/** The contents of `config.json`. */
export interface RunConfigFile {
  /** The config file the run was started from (not compared on resume: a moved config is the same config). */
  source: string;
  /** The resolved config, as the runner used it. */
  config: ResolvedConfig;
  /** Content identities of the weights and data the results depend on, recorded once known. */
  inputs?: Record<string, string>;
  provenance: Provenance;
}

/** A resolved experiment config as plain JSON; `seeds` and `methods` are compared by the rules above. */
export interface ResolvedConfig {
  seeds: number[];
  methods: Record<string, unknown>;
  [field: string]: unknown;
}

export interface RunFolderOptions {
  /** Start afresh: discard the folder's results, history and metrics instead of resuming or refusing. */
  force?: boolean;
  /** The config file's path, recorded in config.json. */
  source: string;
  /** The tensor backend and its thread count, recorded as provenance. */
  engine: { backend: string; threads: number; onnxThreads?: number };
}

const FILES = { config: 'config.json', results: 'results.jsonl', history: 'history.jsonl', metrics: 'metrics.json' } as const;

/** JSON with object keys sorted, so that equal configs compare equal whatever their key order. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

/** What differs between a folder's config and the requested one, in words (empty when resumable). */
export function configDifferences(before: ResolvedConfig, now: ResolvedConfig): string[] {
  const out: string[] = [];
  const keys = [...new Set([...Object.keys(before), ...Object.keys(now)])].filter((k) => k !== 'seeds' && k !== 'methods').sort();
  for (const key of keys) if (canonical(before[key]) !== canonical(now[key])) out.push(`"${key}"`);
  for (const method of Object.keys(now.methods)) {
    if (method in before.methods && canonical(before.methods[method]) !== canonical(now.methods[method])) out.push(`the options of method "${method}"`);
  }
  return out;
}

interface ResultLine {
  method: string;
  seed: number;
  result: MethodSeedResult;
}

/** Appends one line and flushes it to disk, so that a result once reported survives a crash. */
function appendDurable(path: string, line: string): void {
  const fd = openSync(path, 'a');
  try {
    writeSync(fd, `${line}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads `results.jsonl`. A last line without its newline is an append cut short by a crash: it is
 * dropped (that pair runs again) and cut from the file so the next append starts on a fresh line.
 */
function readResults(path: string): ResultLine[] {
  const hint = '; fix or delete the line, or rerun with --force';
  const { lines, completeBytes, incomplete } = readJsonLines(path, hint);
  if (incomplete) {
    process.stderr.write(`${path}: dropping an incomplete last line (a result being written when the run stopped); that pair runs again\n`);
    const fd = openSync(path, 'r+');
    try {
      ftruncateSync(fd, completeBytes);
    } finally {
      closeSync(fd);
    }
  }
  return lines.map(({ line, value }) => {
    const p = value as Partial<ResultLine>;
    if (typeof p.method !== 'string' || !Number.isInteger(p.seed) || typeof p.result !== 'object' || p.result === null) {
      throw new Error(`${path}:${line}: expected {"method", "seed", "result"}${hint}`);
    }
    return p as ResultLine;
  });
}

const pairKey = (method: string, seed: number): string => `${method}\u0000${seed}`;

export class RunFolder {
  private readonly results = new Map<string, MethodSeedResult>();
  private readonly started = Date.now();
  private readonly historyWriter: HistoryWriter;

  private constructor(
    /** The folder. */
    readonly dir: string,
    private file: RunConfigFile,
  ) {
    this.historyWriter = new HistoryWriter(dir);
  }

  /**
   * Opens `dir` for a run of `config`: a new or foreign folder starts a run; a folder of an unfinished
   * run with the same config resumes it; a finished run, or one with a different config, is refused
   * unless `options.force`, which deletes its results, history and metrics first.
   */
  static open(dir: string, config: ResolvedConfig, options: RunFolderOptions): RunFolder {
    const path = (name: keyof typeof FILES): string => join(dir, FILES[name]);
    if (options.force === true) {
      for (const name of Object.keys(FILES) as (keyof typeof FILES)[]) rmSync(path(name), { force: true });
      HistoryWriter.remove(dir);
    }
    const file: RunConfigFile = { source: options.source, config, provenance: provenance(options.engine) };
    const folder = new RunFolder(dir, file);
    if (existsSync(path('config'))) {
      let before: RunConfigFile;
      try {
        before = JSON.parse(readUtf8(path('config'))) as RunConfigFile;
      } catch (err) {
        throw new Error(`${path('config')}: not valid JSON (${(err as Error).message}); use --force to start the run afresh`, { cause: err });
      }
      if (existsSync(path('metrics'))) {
        throw new Error(`${dir} holds a finished run (metrics.json); choose another --out, or --force to run again and replace it`);
      }
      const earlier = readResults(path('results'));
      const differences = configDifferences(before.config, config);
      if (differences.length > 0 && earlier.length > 0) {
        throw new Error(`${dir} holds a run of a different config (${differences.join(', ')} differ); choose another --out, or --force to start it afresh`);
      }
      if (differences.length > 0) {
        // An earlier attempt that scored nothing (a config error, say): nothing to keep or to mix up.
        HistoryWriter.remove(dir);
      } else {
        file.inputs = before.inputs;
        for (const line of earlier) folder.results.set(pairKey(line.method, line.seed), line.result);
      }
    } else if (existsSync(path('results')) || existsSync(path('metrics'))) {
      throw new Error(`${dir} holds results but no config.json; choose another --out, or --force to start afresh`);
    }
    writeJsonAtomic(path('config'), file);
    return folder;
  }

  /** Pairs already scored (by an earlier, interrupted run). */
  get resumed(): number {
    return this.results.size;
  }

  /** The result of `method` at `seed` when it was already scored. */
  result(method: string, seed: number): MethodSeedResult | undefined {
    return this.results.get(pairKey(method, seed));
  }

  /** Records a scored pair: appended to results.jsonl and flushed before this returns. */
  record(method: string, seed: number, result: MethodSeedResult): void {
    appendDurable(join(this.dir, FILES.results), JSON.stringify({ method, seed, result } satisfies ResultLine));
    this.results.set(pairKey(method, seed), result);
  }

  /**
   * Records the identity of each input (model, SAEs) in config.json; on a resumed run they must match
   * the identities recorded before, or the earlier results were computed from other weights.
   */
  checkInputs(inputs: Record<string, string>): void {
    const before = this.file.inputs;
    // Only results already scored can be stale; with none, the new inputs simply replace the old.
    if (before !== undefined && this.results.size > 0) {
      const changed = Object.keys(inputs).filter((k) => before[k] !== undefined && before[k] !== inputs[k]);
      if (changed.length > 0) {
        throw new Error(
          `${this.dir}: ${changed.join(', ')} changed since this run started (other weights or data); its earlier results would not match. Choose another --out, or --force to start afresh`,
        );
      }
    }
    this.file.inputs = { ...before, ...inputs };
    writeJsonAtomic(join(this.dir, FILES.config), this.file);
  }

  /** Appends training records to history.jsonl and tensorboard/, with the seconds since the run (re)started. */
  get history(): HistoryLog {
    return this.historyWriter.log;
  }

  /** Writes metrics.json, marking the run finished. */
  finish(result: ExperimentResult): void {
    this.close();
    writeJsonAtomic(join(this.dir, FILES.metrics), result);
  }

  /** Closes the history files (also on failure; a later run appends to them). */
  close(): void {
    this.historyWriter.close();
  }
}
