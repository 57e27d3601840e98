/**
 * A synthetic Bias in Bios problem with known answers, for runner tests that need no ../shared and
 * no Python: a tiny random-weight BERT with a hand-written WordPiece vocabulary of whole words, and
 * JSONL files in the project's Bias in Bios format (`text`, `profession`, `gender`).
 *
 * Each bio is a shuffled bag of words: `GENDER_MENTIONS` pronouns of its gender, one profession
 * word (surgeon or nurse) and `FILLERS` neutral words drawn at random. So, by construction:
 *  - gender is carried by the pronouns alone, and they are all in word_deletion's default list:
 *    after deletion a text is independent of gender given its profession;
 *  - gender is more salient than profession (three mentions against one), so a probe trained where
 *    the two always agree (the ambiguous split) leans on gender and fails the anti-stereotypical
 *    groups, while a probe trained on balanced data reads the profession word;
 *  - every train group has the same size, so the balanced split and the concept set (capped at
 *    the whole pool) are the same rows, with gender independent of profession.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mulberry32, randomInt, randomNormal, type Rng } from '../../src/data/prng.js';
import { writeSafetensors, type RawTensor } from '../../src/io/safetensors.js';

export const MALE_WORDS = ['he', 'his', 'him'] as const;
export const FEMALE_WORDS = ['she', 'her', 'hers'] as const;
export const PROFESSIONS = ['surgeon', 'nurse'] as const;
/** Neutral words; none is in word_deletion's default list. */
export const FILLER_WORDS = [
  'the',
  'a',
  'works',
  'at',
  'hospital',
  'patients',
  'years',
  'team',
  'city',
  'clinic',
  'staff',
  'night',
  'day',
  'unit',
  'ward',
  'experience',
] as const;
/** Pronouns per bio. */
export const GENDER_MENTIONS = 3;
/** Neutral words per bio. */
export const FILLERS = 6;

const SPECIAL = ['[PAD]', '[UNK]', '[CLS]', '[SEP]'] as const;
const WORDS: readonly string[] = [...SPECIAL, ...MALE_WORDS, ...FEMALE_WORDS, ...PROFESSIONS, ...FILLER_WORDS];

export interface TinyBertOptions {
  /** hidden_size; default 32. */
  dModel?: number;
  /** num_hidden_layers; default 2. */
  nLayers?: number;
  /** Seed of the random weights; default 1. */
  seed?: number;
}

/**
 * Writes a BERT model folder (config.json, model.safetensors, tokenizer.json,
 * tokenizer_config.json) with random weights over the synthetic vocabulary. Word embeddings are
 * N(0, 1) so tokens stay distinct after the embedding LayerNorm; the attention and MLP weights are
 * N(0, 0.1^2), enough to mix tokens without drowning them.
 */
export function writeTinyBert(dir: string, options: TinyBertOptions = {}): void {
  const d = options.dModel ?? 32;
  const nLayers = options.nLayers ?? 2;
  const dFf = 2 * d;
  const maxPositions = 32;
  const rng = mulberry32(options.seed ?? 1);
  mkdirSync(dir, { recursive: true });
  const normal = (shape: number[], std: number): RawTensor => ({
    dtype: 'F32',
    shape,
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => randomNormal(rng, 0, std)),
  });
  const constant = (n: number, value: number): RawTensor => ({ dtype: 'F32', shape: [n], data: new Float32Array(n).fill(value) });
  const layerNorm = (prefix: string): Record<string, RawTensor> => ({ [`${prefix}.weight`]: constant(d, 1), [`${prefix}.bias`]: constant(d, 0) });
  const linear = (prefix: string, dIn: number, dOut: number): Record<string, RawTensor> => ({
    [`${prefix}.weight`]: normal([dOut, dIn], 0.1),
    [`${prefix}.bias`]: constant(dOut, 0),
  });
  let tensors: Record<string, RawTensor> = {
    'embeddings.word_embeddings.weight': normal([WORDS.length, d], 1),
    'embeddings.position_embeddings.weight': normal([maxPositions, d], 0.1),
    'embeddings.token_type_embeddings.weight': normal([2, d], 0.1),
    ...layerNorm('embeddings.LayerNorm'),
  };
  for (let i = 0; i < nLayers; i++) {
    const p = `encoder.layer.${i}`;
    tensors = {
      ...tensors,
      ...linear(`${p}.attention.self.query`, d, d),
      ...linear(`${p}.attention.self.key`, d, d),
      ...linear(`${p}.attention.self.value`, d, d),
      ...linear(`${p}.attention.output.dense`, d, d),
      ...layerNorm(`${p}.attention.output.LayerNorm`),
      ...linear(`${p}.intermediate.dense`, d, dFf),
      ...linear(`${p}.output.dense`, dFf, d),
      ...layerNorm(`${p}.output.LayerNorm`),
    };
  }
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({
      model_type: 'bert',
      hidden_size: d,
      num_hidden_layers: nLayers,
      num_attention_heads: 2,
      intermediate_size: dFf,
      hidden_act: 'gelu',
      layer_norm_eps: 1e-12,
      max_position_embeddings: maxPositions,
      type_vocab_size: 2,
      vocab_size: WORDS.length,
    }),
  );
  writeFileSync(
    join(dir, 'tokenizer.json'),
    JSON.stringify({
      added_tokens: SPECIAL.map((content, id) => ({ id, content, special: true, normalized: false })),
      normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
      pre_tokenizer: { type: 'BertPreTokenizer' },
      post_processor: { type: 'BertProcessing', sep: ['[SEP]', 3], cls: ['[CLS]', 2] },
      decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
      model: {
        type: 'WordPiece',
        unk_token: '[UNK]',
        continuing_subword_prefix: '##',
        max_input_chars_per_word: 100,
        vocab: Object.fromEntries(WORDS.map((w, i) => [w, i])),
      },
    }),
  );
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ pad_token: '[PAD]', model_max_length: maxPositions }));
}

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[randomInt(rng, items.length)]!;
}

/** One bio: the profession word, GENDER_MENTIONS pronouns and FILLERS neutral words, shuffled. */
export function syntheticBio(rng: Rng, profession: (typeof PROFESSIONS)[number], gender: 'male' | 'female'): string {
  const pronouns = gender === 'male' ? MALE_WORDS : FEMALE_WORDS;
  const words: string[] = [profession];
  for (let i = 0; i < GENDER_MENTIONS; i++) words.push(pick(rng, pronouns));
  for (let i = 0; i < FILLERS; i++) words.push(pick(rng, FILLER_WORDS));
  for (let i = words.length - 1; i > 0; i--) {
    const j = randomInt(rng, i + 1);
    [words[i], words[j]] = [words[j]!, words[i]!];
  }
  return words.join(' ');
}

/**
 * Writes a JSONL file with `perGroup` distinct bios of each (profession, gender) group, groups
 * interleaved. `avoid` holds texts not to reuse (another file's), and receives this file's.
 */
export function writeSyntheticBios(path: string, perGroup: number, seed: number, avoid: Set<string> = new Set()): void {
  const rng = mulberry32(seed);
  const lines: string[] = [];
  for (let i = 0; i < perGroup; i++) {
    for (const profession of PROFESSIONS) {
      for (const gender of ['male', 'female'] as const) {
        let text = syntheticBio(rng, profession, gender);
        while (avoid.has(text)) text = syntheticBio(rng, profession, gender);
        avoid.add(text);
        lines.push(JSON.stringify({ text, profession, gender }));
      }
    }
  }
  writeFileSync(path, `${lines.join('\n')}\n`);
}
