/**
 * The one checkpoint layout every eraser saves to and loads from:
 *
 *   dir/eraser.json          { format, version, method, head, ...fields of the method family }
 *   dir/eraser.safetensors   the family's tensors (metadata: format and method)
 *   dir/head.safetensors     the retrained probe head, when the eraser has one (`head` names it)
 *
 * `format` names the method family (`sae-eraser/mask`, `sae-eraser/feature-ablation`, ...) and
 * `loadEraser` (load.ts) dispatches on it, as src/models/load.ts does on `model_type`. The JSON is
 * written last, so a folder with `eraser.json` holds a complete checkpoint.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tf } from '../engine/engine.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors, type SafetensorsFile } from '../io/safetensors.js';
import { loadProbe } from '../probe/linear.js';
import type { Probe } from '../probe/probe.js';
import type { HookName } from '../models/model.js';
import { isMethodName, type Eraser, type EraserSae, type MethodName } from './eraser.js';

/** The checkpoint layout version this build writes and reads. */
export const CHECKPOINT_VERSION = 1;

export const ERASER_JSON = 'eraser.json';
export const ERASER_TENSORS = 'eraser.safetensors';
export const HEAD_FILE = 'head.safetensors';

/** Writes `eraser` into `dir` in the layout above (atomically, file by file, JSON last). */
export function saveEraser(eraser: Eraser, dir: string): void {
  const content = eraser.checkpoint();
  try {
    writeSafetensors(join(dir, ERASER_TENSORS), content.tensors, { format: content.format, method: eraser.method });
  } finally {
    tf.dispose(Object.values(content.tensors).filter((t): t is tf.Tensor => t instanceof tf.Tensor));
  }
  if (eraser.head !== undefined) eraser.head.save(join(dir, HEAD_FILE));
  const json = {
    ...content.fields,
    format: content.format,
    version: CHECKPOINT_VERSION,
    method: eraser.method,
    head: eraser.head === undefined ? null : HEAD_FILE,
  };
  writeJsonAtomic(join(dir, ERASER_JSON), json);
}

/** What a family's loader gets: the checked JSON and the tensor file. */
export interface StoredCheckpoint {
  dir: string;
  /** Path of eraser.json, for messages. */
  jsonPath: string;
  format: string;
  method: MethodName;
  /** Every field of eraser.json. */
  json: Readonly<Record<string, unknown>>;
  tensors: SafetensorsFile;
}

/** What the loading side supplies: the SAEs (for SAE-based methods) and what to check against. */
export interface LoadTarget {
  /** SAEs by hook; SAE-based erasers need the ones they were fitted with. */
  saes?: Readonly<Record<HookName, EraserSae>>;
  /** When given, the hook the probe reads here; a checkpoint made for another is refused. */
  probeHook?: HookName;
}

/** Reads and checks the common part of a checkpoint. */
export function readCheckpoint(dir: string): StoredCheckpoint & { head: string | null } {
  const jsonPath = join(dir, ERASER_JSON);
  if (!existsSync(jsonPath)) throw new Error(`${dir}: not an eraser checkpoint (${ERASER_JSON} is missing)`);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readFileSync(jsonPath, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${jsonPath}: not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${jsonPath}: must hold a JSON object`);
  const { format, version, method, head } = json;
  if (typeof format !== 'string') throw new Error(`${jsonPath}: field "format" must be a string, got ${JSON.stringify(format)}`);
  if (version !== CHECKPOINT_VERSION)
    throw new Error(`${jsonPath}: field "version" is ${JSON.stringify(version)}; this build reads version ${CHECKPOINT_VERSION}`);
  if (typeof method !== 'string' || !isMethodName(method)) throw new Error(`${jsonPath}: field "method" is ${JSON.stringify(method)}, not a method name`);
  if (head !== null && head !== HEAD_FILE) throw new Error(`${jsonPath}: field "head" must be null or "${HEAD_FILE}", got ${JSON.stringify(head)}`);
  const tensorPath = join(dir, ERASER_TENSORS);
  if (!existsSync(tensorPath)) throw new Error(`${dir}: ${ERASER_TENSORS} is missing`);
  return { dir, jsonPath, format, method, json, tensors: readSafetensors(tensorPath), head };
}

/** Loads the head a checkpoint names, or undefined. */
export function readHead(dir: string, head: string | null): Probe | undefined {
  if (head === null) return undefined;
  const path = join(dir, head);
  if (!existsSync(path)) throw new Error(`${dir}: eraser.json names a head "${head}", which is missing`);
  return loadProbe(path);
}
