/**
 * `loadSae(path)`: detects an SAE's format from the files present and loads it.
 *  - `ae.pt` (folder or file)                     -> dictionary_learning AutoEncoder
 *  - `cfg.json` + `sae_weights.safetensors`       -> SAELens
 *  - `cfg.json` + `sae.safetensors`               -> EleutherAI sparsify
 * Anything else is an error that lists what was found.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { loadDictionaryLearningSae, type LoadOptions } from './dictionary-learning.js';
import type { Sae } from './sae.js';
import { isSaeLensDir, loadSaeLensSae, SAELENS_WEIGHTS } from './saelens.js';
import { isSparsifyDir, loadSparsifySae, SPARSIFY_WEIGHTS } from './sparsify.js';

export type { LoadOptions } from './dictionary-learning.js';

export function loadSae(path: string, options: LoadOptions = {}): Sae {
  if (!existsSync(path)) throw new Error(`${path}: no such SAE file or folder`);
  if (statSync(path).isFile()) {
    const name = basename(path);
    if (name.endsWith('.pt')) return loadDictionaryLearningSae(path, options);
    if (name === SAELENS_WEIGHTS) return loadSaeLensSae(dirname(path), options);
    if (name === SPARSIFY_WEIGHTS) return loadSparsifySae(dirname(path), options);
    throw new Error(`${path}: unknown SAE file (expected ae.pt, ${SAELENS_WEIGHTS} or ${SPARSIFY_WEIGHTS}, or a folder holding one)`);
  }
  if (existsSync(`${path}/ae.pt`)) return loadDictionaryLearningSae(path, options);
  if (isSaeLensDir(path)) return loadSaeLensSae(path, options);
  if (isSparsifyDir(path)) return loadSparsifySae(path, options);
  const found = readdirSync(path).sort();
  throw new Error(
    `${path}: unknown SAE format. Expected ae.pt (dictionary_learning), cfg.json + ${SAELENS_WEIGHTS} (SAELens) ` +
      `or cfg.json + ${SPARSIFY_WEIGHTS} (sparsify); found ${found.length === 0 ? 'an empty folder' : found.join(', ')}`,
  );
}
