/**
 * What every command that trains something leaves beside its results, so that a run can be read
 * (and compared) later: its provenance (which code, backend and machine made it) and its training
 * history, one JSON line per logged step in `history.jsonl` and the same curves as TensorBoard event
 * files under `tensorboard/<stage>/` (TensorBoard and the dashboards that sync from it read them).
 *
 * `sae-eraser run` writes these through its run folder (src/experiment/run-folder.ts); `train-sae`
 * and `mnist` write them into their output folders with `writeRunConfig` and a `HistoryWriter`.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { HistoryLog } from '../util/history.js';
import { writeJsonAtomic } from './atomic.js';
import { projectRoot } from './shared.js';
import { readUtf8 } from './text.js';
import { EventFileWriter } from './tfevents.js';

/** Where and with what a run was made. */
export interface Provenance {
  package: { name: string; version: string };
  /** The checkout's commit (and whether it had uncommitted changes), null when not run from a git checkout. */
  git: { commit: string; dirty: boolean } | { error: string } | null;
  node: string;
  platform: string;
  backend: string;
  threads: number;
  /** Intra-op threads of ONNX Runtime, which runs inference-only passes (absent in runs before it did). */
  onnxThreads?: number;
  started: string;
}

function gitInfo(root: string): Provenance['git'] {
  if (!existsSync(join(root, '.git'))) return null;
  try {
    const git = (...args: string[]): string => execFileSync('git', ['-C', root, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
    return { commit: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--untracked-files=no') !== '' };
  } catch (err) {
    // A checkout without a usable git (not installed, unsafe ownership): recorded, not fatal.
    return { error: (err as Error).message.split('\n')[0]! };
  }
}

/** Provenance of a run started now. */
export function provenance(engine: { backend: string; threads: number; onnxThreads?: number }): Provenance {
  const root = projectRoot();
  const pkg = JSON.parse(readUtf8(join(root, 'package.json'))) as { name: string; version: string };
  return {
    package: { name: pkg.name, version: pkg.version },
    git: gitInfo(root),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    backend: engine.backend,
    threads: engine.threads,
    ...(engine.onnxThreads === undefined ? {} : { onnxThreads: engine.onnxThreads }),
    started: new Date().toISOString(),
  };
}

/**
 * Writes `dir/config.json`: `{ "config": <the resolved options>, "provenance": ... }` (atomically).
 *
 * @param dir The command's output folder.
 * @param config The options as the command resolved them (defaults filled in).
 * @param engine The tensor backend and its threads (`engineInfo()` in src/engine/engine.ts).
 */
export function writeRunConfig(dir: string, config: unknown, engine: { backend: string; threads: number; onnxThreads?: number }): void {
  writeJsonAtomic(join(dir, 'config.json'), { config, provenance: provenance(engine) });
}

/** A stage name as a relative folder: its "/" parts kept (TensorBoard nests them), other characters made safe. */
function boardFolder(stage: string): string {
  return stage
    .split('/')
    .map((part) => part.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^\.+$/, '_'))
    .filter((part) => part !== '')
    .join('/');
}

/** Appends training records to `dir/history.jsonl` and to TensorBoard event files under `dir/tensorboard/`. */
export class HistoryWriter {
  private fd: number | undefined;
  private readonly boards = new Map<string, EventFileWriter>();
  private readonly started = Date.now();

  /**
   * @param dir The output folder.
   * @param fresh Remove an earlier history and TensorBoard folder first (a run started afresh); by
   *   default lines are appended (a resumed run continues its history).
   */
  constructor(
    private readonly dir: string,
    fresh = false,
  ) {
    if (fresh) HistoryWriter.remove(dir);
  }

  /** Removes `dir`'s history.jsonl and tensorboard/ (a run started afresh). */
  static remove(dir: string): void {
    rmSync(join(dir, 'history.jsonl'), { force: true });
    rmSync(join(dir, 'tensorboard'), { recursive: true, force: true });
  }

  /** Logs one record, with the seconds since this writer was made. */
  readonly log: HistoryLog = (record) => {
    this.fd ??= openSync(join(this.dir, 'history.jsonl'), 'a');
    const line = { stage: record.stage, step: record.step, elapsed: Math.round((Date.now() - this.started) / 100) / 10, ...record.values };
    writeSync(this.fd, `${JSON.stringify(line)}\n`);
    let board = this.boards.get(record.stage);
    if (board === undefined) {
      board = new EventFileWriter(join(this.dir, 'tensorboard', boardFolder(record.stage)));
      this.boards.set(record.stage, board);
    }
    board.scalars(record.step, record.values);
  };

  /** Closes the files (a later writer appends to them). */
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    for (const board of this.boards.values()) board.close();
    this.boards.clear();
  }
}
