/**
 * Editing a saved eraser checkpoint's files in place, for tests of what the loaders refuse. Both
 * files record the format and method, so `setCheckpointMethod` changes them together to reach a
 * restorer's own method check past `readCheckpoint`'s agreement check.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Rewrites eraser.json in `dir` after `edit` changed its parsed object. */
export function editCheckpointJson(dir: string, edit: (json: Record<string, unknown>) => void): void {
  const path = join(dir, 'eraser.json');
  const json = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  edit(json);
  writeFileSync(path, JSON.stringify(json));
}

/** Rewrites the `__metadata__` of eraser.safetensors in `dir` (the tensor data stays as it is). */
export function editTensorMetadata(dir: string, edit: (metadata: Record<string, string>) => void): void {
  const path = join(dir, 'eraser.safetensors');
  const file = readFileSync(path);
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString('utf8')) as { __metadata__?: Record<string, string> };
  const metadata = header.__metadata__ ?? {};
  edit(metadata);
  header.__metadata__ = metadata;
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  writeFileSync(path, Buffer.concat([length, Buffer.from(text, 'utf8'), file.subarray(8 + headerLength)]));
}

/** Sets the checkpoint's method in both files. */
export function setCheckpointMethod(dir: string, method: string): void {
  editCheckpointJson(dir, (json) => (json.method = method));
  editTensorMetadata(dir, (metadata) => (metadata.method = method));
}
