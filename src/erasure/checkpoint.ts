/**
 * The one checkpoint layout every eraser saves to and loads from:
 *
 *   dir/eraser.json          { format, version, method, head, ...fields of the method family }
 *   dir/eraser.safetensors   the family's tensors (metadata: format and method, which must agree with the JSON)
 *   dir/head.safetensors     the retrained probe head, when the eraser has one (`head` names it)
 *
 * `format` names the method family (`sae-eraser/mask`, `sae-eraser/feature-ablation`, ...) and
 * `loadEraser` (load.ts) dispatches on it, as src/models/load.ts does on `model_type`. Each family's
 * restorer parses the whole JSON with a strict schema (`checkpointFields` plus its own fields), so
 * an unknown or malformed field is an error naming the file and the field. The JSON is written
 * last, so a folder with `eraser.json` holds a complete checkpoint.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { tf } from '../engine/engine.js';
import { writeJsonAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors, type SafetensorsFile } from '../io/safetensors.js';
import { loadProbe } from '../probe/linear.js';
import type { Probe } from '../probe/probe.js';
import type { HookName } from '../models/model.js';
import { isMethodName, type Eraser, type EraserSae, type MethodName } from './eraser.js';
import { readUtf8 } from '../io/text.js';

/**
 * The checkpoint layout version this build writes. Version 3 added the feature-ablation family's
 * `supervision` (the labels the fit read, which a random control's plan does not hold): that
 * family refuses its version 2 files (feature-ablation.ts); the other families' fields did not
 * change, so their version 2 files are read as they are. Version 1 files (an earlier layout, with
 * other fields and without the strict per-family schemas) are not read.
 */
export const CHECKPOINT_VERSION = 3;

/** The versions `readCheckpoint` accepts (a family may refuse an older one its fields changed since); `checkpointFields` lists them too. */
export const READ_VERSIONS: readonly number[] = [2, CHECKPOINT_VERSION];

/** The refusal of a checkpoint written in an earlier layout, with the remedy. */
export function earlierLayoutError(jsonPath: string, version: number, what: string): Error {
  return new Error(
    `${jsonPath}: field "version" is ${version}, an earlier checkpoint layout ${what} (version ${CHECKPOINT_VERSION}); refit the eraser to get a checkpoint this build reads`,
  );
}

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

/**
 * The eraser.json fields every checkpoint has (`readCheckpoint` checks them): spread them into a
 * family's strict schema of its whole JSON.
 */
export const checkpointFields = {
  format: z.string().describe('The method family, which names the restorer.'),
  version: z
    .union([z.literal(2), z.literal(CHECKPOINT_VERSION)])
    .describe(`The layout version (this build writes ${CHECKPOINT_VERSION}; a family may refuse an earlier one).`),
  method: z.string().describe('The method the eraser was fitted by.'),
  head: z.literal(HEAD_FILE).nullable().describe('The retrained head file, or null.'),
};

/** Reads and checks the common part of a checkpoint. */
export function readCheckpoint(dir: string): StoredCheckpoint & { head: string | null } {
  const jsonPath = join(dir, ERASER_JSON);
  if (!existsSync(jsonPath)) throw new Error(`${dir}: not an eraser checkpoint (${ERASER_JSON} is missing)`);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(readUtf8(jsonPath)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${jsonPath}: not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${jsonPath}: must hold a JSON object`);
  const { format, version, method, head } = json;
  if (typeof format !== 'string') throw new Error(`${jsonPath}: field "format" must be a string, got ${JSON.stringify(format)}`);
  if (version === 1) throw earlierLayoutError(jsonPath, 1, "whose fields differ from this build's");
  if (typeof version !== 'number' || !READ_VERSIONS.includes(version))
    throw new Error(`${jsonPath}: field "version" is ${JSON.stringify(version)}; this build reads versions ${READ_VERSIONS.join(' and ')}`);
  if (typeof method !== 'string' || !isMethodName(method)) throw new Error(`${jsonPath}: field "method" is ${JSON.stringify(method)}, not a method name`);
  if (head !== null && head !== HEAD_FILE) throw new Error(`${jsonPath}: field "head" must be null or "${HEAD_FILE}", got ${JSON.stringify(head)}`);
  const tensorPath = join(dir, ERASER_TENSORS);
  if (!existsSync(tensorPath)) throw new Error(`${dir}: ${ERASER_TENSORS} is missing`);
  const tensors = readSafetensors(tensorPath);
  // The two files are written separately: a JSON from another checkpoint, or edited, must not pass.
  for (const [key, value] of [
    ['format', format],
    ['method', method],
  ] as const) {
    const written = tensors.metadata[key];
    if (written !== value) {
      throw new Error(
        `${jsonPath}: field "${key}" is ${JSON.stringify(value)}, but ${tensorPath} was written for ${key} ${JSON.stringify(written ?? null)}: the two files are not one checkpoint`,
      );
    }
  }
  return { dir, jsonPath, format, method, json, tensors, head };
}

/**
 * Refuses a checkpoint whose options say the probe head was retrained (`retrainHead`) but that
 * holds no head: loaded, it would silently evaluate with the biased probe instead.
 */
export function checkRetrainedHead(stored: StoredCheckpoint, retrainHead: boolean): void {
  if (retrainHead && stored.json.head === null) {
    throw new Error(`${stored.jsonPath}: the options say retrainHead: true, but field "head" is null: the retrained head is missing`);
  }
}

/** Loads the head a checkpoint names, or undefined. */
export function readHead(dir: string, head: string | null): Probe | undefined {
  if (head === null) return undefined;
  const path = join(dir, head);
  if (!existsSync(path)) throw new Error(`${dir}: eraser.json names a head "${head}", which is missing`);
  return loadProbe(path);
}
