/**
 * Opens a model by local folder or hub id (`owner/name[@revision]`): the folder, the model and its
 * tokenizer, plus a `tokenize` function that makes right-padded batches. The one entry point the
 * CLI and the experiment runner use.
 */
import { resolveModelDir } from '../io/hub.js';
import { loadTokenizer, type Tokenizer } from '../data/tokenize.js';
import { loadModel } from './load.js';
import type { Batch, Model } from './model.js';

export interface OpenedModel {
  /** Local folder of the model files. */
  dir: string;
  model: Model;
  tokenizer: Tokenizer;
  maxLength: number;
  /** Right-padded batch of `texts`, truncated to `maxLength` tokens. */
  tokenize(texts: string[]): Batch;
}

export async function openModel(dirOrRepo: string, options: { maxLength?: number } = {}): Promise<OpenedModel> {
  const dir = await resolveModelDir(dirOrRepo);
  const model = await loadModel(dir);
  const tokenizer = await loadTokenizer(dir);
  const maxLength = Math.min(options.maxLength ?? 128, model.config.maxPositions, tokenizer.modelMaxLength);
  return {
    dir,
    model,
    tokenizer,
    maxLength,
    tokenize: (texts) => tokenizer.toBatch(tokenizer.encodeBatch(texts, { maxLength, truncation: true, padding: 'right' })),
  };
}
