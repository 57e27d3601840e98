/**
 * Helpers the format loaders share: named weight arrays checked for shape and finiteness, turned
 * into tensors (transposed when the format stores the other orientation).
 */
import { tf } from '../engine/engine.js';
import { checkFinite } from './sae.js';
import { readJson } from '../io/text.js';

export interface NamedArray {
  shape: readonly number[];
  values: Float32Array;
}

/** Checks `arr` has `shape` and only finite values; errors name the file and tensor. */
export function expectWeight(source: string, name: string, arr: NamedArray | undefined, shape: readonly number[]): Float32Array {
  if (arr === undefined) throw new Error(`${source}: missing tensor "${name}"`);
  if (arr.shape.length !== shape.length || arr.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${source}: tensor "${name}" has shape [${arr.shape}], expected [${shape}]`);
  }
  checkFinite(source, name, arr.values);
  return arr.values;
}

/** `[rows, cols]` values as a tensor, transposed to `[cols, rows]` when `transpose`. */
export function matrix(values: Float32Array, rows: number, cols: number, transpose: boolean): tf.Tensor2D {
  if (!transpose) return tf.tensor2d(values, [rows, cols]);
  return tf.tidy(() => tf.transpose(tf.tensor2d(values, [rows, cols])) as tf.Tensor2D);
}

/** Parses a JSON config file into an object; errors name the file. */
export function readJsonObject(path: string): Record<string, unknown> {
  const value = readJson(path);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${path}: expected a JSON object`);
  return value as Record<string, unknown>;
}

/** A positive integer field of a config, or a clear error. */
export function intField(path: string, cfg: Record<string, unknown>, field: string): number {
  const v = cfg[field];
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
    throw new Error(`${path}: field "${field}" must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/** An optional string field. */
export function stringField(cfg: Record<string, unknown> | undefined, field: string): string | undefined {
  const v = cfg?.[field];
  return typeof v === 'string' && v !== '' ? v : undefined;
}
