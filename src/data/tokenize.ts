/**
 * Tokenizers with the behaviour of Python transformers' fast tokenizers, on top of the pure-JS
 * `@huggingface/tokenizers` package (which does normalisation, pre-tokenisation, the BPE / WordPiece
 * model, added tokens and decoding).
 *
 * Where this file departs from, or adds to, the npm package (each checked against transformers by
 * test/data/tokenize.test.ts):
 *  - Special tokens come from the tokenizer.json post-processor, read once as a fixed prefix and
 *    suffix around the text's tokens (GPT-NeoX: none; BERT: `[CLS] ... [SEP]`). Truncation cuts the
 *    text's tokens only, so the special tokens stay (BERT at maxLength L: [CLS] + first L-2 + [SEP]),
 *    as transformers does.
 *  - The `truncation` / `padding` sections of tokenizer.json are ignored, as transformers does: they
 *    apply only when a call asks for them (all-MiniLM-L6-v2's file pads and truncates to 128).
 *  - The ByteLevel (GPT-2 / GPT-NeoX) and BERT pre-tokenizers of the npm package split on JavaScript
 *    `\s`, which counts U+FEFF (byte-order mark) as white space and misses U+0085; the Rust
 *    tokenizers use Unicode White_Space. Bios with a stray U+FEFF tokenized differently, so their
 *    patterns are replaced by the same ones written with `\p{White_Space}`.
 *  - `decode` does not clean up tokenization spaces unless tokenizer_config.json asks for it
 *    (transformers 4.57 default; the npm package defaults to cleaning up), and decodes `[]` to `''`
 *    (the npm package throws).
 *  - Pad token: tokenizer_config.json `pad_token`, else special_tokens_map.json, else the
 *    tokenizer.json `padding.pad_token`, else the eos token, else `<|endoftext|>`. GPT-NeoX
 *    (Pythia) declares no pad token, so it pads with `<|endoftext|>` = id 0, the common practice
 *    (`tokenizer.pad_token = tokenizer.eos_token`); its vocabulary's `<|padding|>` (id 1) is not
 *    declared as the pad token anywhere and is not used. Padded positions have attention mask 0, so
 *    the pad id only matters for the embedding lookup there.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as hfTokenizersUntyped from '@huggingface/tokenizers';
import { tf } from '../engine/engine.js';
import { readJson } from '../io/text.js';

/**
 * The parts of `@huggingface/tokenizers` 0.2.0 used here, as in its types/core/*.d.ts. Its .d.ts files
 * import each other without file extensions, which NodeNext resolution cannot follow, so its own
 * types come out as `any`; these declarations keep this file type-checked.
 */
interface HfTokenizer {
  pre_tokenizer: unknown;
  encode(text: string, options: { add_special_tokens: boolean }): { ids: number[] };
  decode(ids: number[], options: { skip_special_tokens: boolean; clean_up_tokenization_spaces: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_vocab(withAddedTokens: boolean): Map<string, number>;
}
interface HfTokenizersModule {
  Tokenizer: new (tokenizerJson: object, config: object) => HfTokenizer;
  ByteLevelPreTokenizer: abstract new (...args: never[]) => { pattern: RegExp };
  BertPreTokenizer: abstract new (...args: never[]) => { pattern: RegExp };
  SequencePreTokenizer: abstract new (...args: never[]) => { tokenizers: unknown[] };
}
const hfTokenizers = hfTokenizersUntyped as unknown as HfTokenizersModule;

export type PaddingSide = 'right' | 'left';

export interface EncodeOptions {
  /** Add the post-processor's special tokens (BERT: [CLS] ... [SEP]; GPT-NeoX: none). Default true. */
  addSpecialTokens?: boolean;
}

/** Token ids and attention mask, both `[n, seq]` int32; mask 1 marks a real token. */
export interface Batch {
  inputIds: tf.Tensor2D;
  attentionMask: tf.Tensor2D;
}

export interface EncodeBatchOptions extends EncodeOptions {
  /** Longest row, special tokens included. Needs truncation (the default when this is given). */
  maxLength?: number;
  /**
   * Cut rows longer than `maxLength` (or, when it is absent, than the tokenizer's
   * `modelMaxLength`). Default: true when `maxLength` is given, else false.
   */
  truncation?: boolean;
  /** Where pad tokens go. Default: tokenizer_config.json `padding_side`, else right. */
  padding?: PaddingSide;
}

/** Rows padded to the longest one; `lengths[i]` counts the real (mask 1) tokens of row i. */
export interface EncodedBatch {
  inputIds: number[][];
  attentionMask: number[][];
  lengths: number[];
}

export interface DecodeOptions {
  /** Drop special tokens ([CLS], <|endoftext|>, ...). Default false. */
  skipSpecialTokens?: boolean;
}

export interface Tokenizer {
  /** The tokenizer.json this was loaded from. */
  readonly path: string;
  /** The tokenizer.json model type: how its vocabulary entries mark word boundaries. */
  readonly modelType: 'BPE' | 'WordPiece' | 'Unigram';
  /** One more than the largest token id (model vocabulary and added tokens). */
  readonly vocabSize: number;
  readonly padToken: string;
  readonly padId: number;
  /** tokenizer_config.json `model_max_length`; Infinity when absent or transformers' "no limit". */
  readonly modelMaxLength: number;
  readonly paddingSide: PaddingSide;
  /** Special token ids put before / after the text's tokens when special tokens are added. */
  readonly specialPrefix: readonly number[];
  readonly specialSuffix: readonly number[];
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: readonly number[], options?: DecodeOptions): string;
  encodeBatch(texts: readonly string[], options?: EncodeBatchOptions): EncodedBatch;
  /** int32 `[n, seq]` tensors of an encoded batch (call `initEngine()` first); the caller disposes them. */
  toBatch(encoded: EncodedBatch): Batch;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
}

/** transformers stores "no limit" as int(1e30); anything this large means unbounded. */
const UNBOUNDED_MODEL_MAX_LENGTH = 1e12;
/** Text used once at load to read the post-processor's special-token prefix and suffix. */
const SPECIAL_TOKEN_PROBE = 'hello world';

/** Tokenizer models the npm package implements. */
const SUPPORTED_MODELS: readonly string[] = ['BPE', 'WordPiece', 'Unigram'];

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A tokenizer file's JSON; errors name the file and, for a syntax error, what it is. */
function readJsonFile(path: string, what: string): unknown {
  return readJson(path, ` (the ${what})`);
}

/** The tokenizer.json path and, when present beside it, tokenizer_config.json and special_tokens_map.json. */
export function resolveTokenizerFiles(pathToJsonOrDir: string): {
  tokenizerJson: string;
  tokenizerConfig?: string;
  specialTokensMap?: string;
} {
  if (!existsSync(pathToJsonOrDir)) {
    throw new Error(`tokenizer not found: ${pathToJsonOrDir} does not exist (expected a tokenizer.json or a model folder holding one)`);
  }
  const isDir = statSync(pathToJsonOrDir).isDirectory();
  const tokenizerJson = isDir ? join(pathToJsonOrDir, 'tokenizer.json') : pathToJsonOrDir;
  if (isDir && !existsSync(tokenizerJson)) {
    throw new Error(`tokenizer not found: the folder ${pathToJsonOrDir} has no tokenizer.json`);
  }
  const dir = dirname(tokenizerJson);
  const sibling = (name: string): string | undefined => (existsSync(join(dir, name)) ? join(dir, name) : undefined);
  return { tokenizerJson, tokenizerConfig: sibling('tokenizer_config.json'), specialTokensMap: sibling('special_tokens_map.json') };
}

/** Checks the fields the tokenizer needs, so a wrong file fails here with its name, not deep inside. */
function validateTokenizerJson(json: unknown, path: string): JsonObject {
  const notTokenizer = (why: string): Error => new Error(`${path} is not a Hugging Face tokenizer.json: ${why}`);
  if (!isObject(json)) throw notTokenizer('the top level is not a JSON object');
  const model = json.model;
  if (!isObject(model)) throw notTokenizer('missing object field "model"');
  if (typeof model.type !== 'string') throw notTokenizer('missing string field "model.type"');
  if (!SUPPORTED_MODELS.includes(model.type)) {
    // The npm package would fall back to a "legacy" model that maps pieces to ids without splitting them.
    throw new Error(`${path}: field "model.type" is ${JSON.stringify(model.type)}; supported: ${SUPPORTED_MODELS.join(', ')}`);
  }
  if (!isObject(model.vocab) && !Array.isArray(model.vocab)) throw notTokenizer('missing field "model.vocab"');
  if (json.added_tokens !== undefined && !Array.isArray(json.added_tokens)) throw notTokenizer('"added_tokens" is not an array');
  // The npm package trusts every field it reads; a wrong type there surfaces as "x.split is not a
  // function" from deep inside it. Check what it reads, so the error says which field is wrong.
  const bad = (field: string, want: string, got: unknown): Error =>
    new Error(`${path}: field "${field}" must be ${want}, got ${JSON.stringify(got)?.slice(0, 60) ?? 'undefined'}`);
  const tokenId = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;
  if (model.type === 'Unigram') {
    const vocab = model.vocab;
    if (!Array.isArray(vocab)) throw bad('model.vocab', 'a list of [piece, score] pairs for a Unigram model', vocab);
    vocab.forEach((entry, i) => {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string' || typeof entry[1] !== 'number') throw bad(`model.vocab[${i}]`, 'a [piece, score] pair', entry);
    });
  } else {
    if (!isObject(model.vocab)) throw bad('model.vocab', `an object of token -> id for a ${model.type} model`, model.vocab);
    for (const [token, id] of Object.entries(model.vocab)) if (!tokenId(id)) throw bad(`model.vocab.${token}`, 'a non-negative integer id', id);
  }
  if (model.type === 'BPE') {
    const merges = model.merges;
    if (!Array.isArray(merges)) throw bad('model.merges', 'a list of merges', merges);
    // The package reads every merge in the form of the first one.
    const pairs = Array.isArray(merges[0]);
    merges.forEach((m, i) => {
      const ok = pairs ? Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === 'string') : typeof m === 'string' && m.includes(' ');
      if (!ok) throw bad(`model.merges[${i}]`, pairs ? 'a pair of strings, as the first merge is' : 'a string "left right", as the first merge is', m);
    });
  }
  for (const field of ['unk_token', 'continuing_subword_prefix', 'end_of_word_suffix']) {
    const v = model[field];
    if (v !== undefined && v !== null && typeof v !== 'string') throw bad(`model.${field}`, 'a string or null', v);
  }
  ((json.added_tokens ?? []) as unknown[]).forEach((t, i) => {
    if (!isObject(t) || !tokenId(t.id) || typeof t.content !== 'string' || t.content === '') {
      throw bad(`added_tokens[${i}]`, 'an object with an integer "id" and a non-empty string "content"', t);
    }
    for (const flag of ['special', 'normalized', 'lstrip', 'rstrip', 'single_word']) {
      if (t[flag] !== undefined && typeof t[flag] !== 'boolean') throw bad(`added_tokens[${i}].${flag}`, 'true or false', t[flag]);
    }
  });
  for (const [section, list] of COMPONENT_SECTIONS) checkComponent(json[section], section, list, bad);
  // The package keeps the vocabulary in an array indexed by id and walks it id by id: one id far past
  // the number of tokens (a corrupt file) would make it walk billions of empty slots.
  const ids = [
    ...(Array.isArray(model.vocab) ? model.vocab.map((_, i) => i) : Object.values(model.vocab)),
    ...((json.added_tokens ?? []) as { id: number }[]).map((t) => t.id),
  ];
  const limit = 2 * ids.length + 1024;
  const far = ids.find((id) => (id as number) >= limit);
  if (far !== undefined)
    throw new Error(`${path}: token id ${far} is far beyond the ${ids.length} entries of "model.vocab" and "added_tokens" (ids must be dense)`);
  return { ...json, added_tokens: json.added_tokens ?? [] };
}

/** tokenizer.json sections holding one pipeline component, and the field a `Sequence` of them lists its parts in. */
const COMPONENT_SECTIONS: readonly [string, string][] = [
  ['normalizer', 'normalizers'],
  ['pre_tokenizer', 'pretokenizers'],
  ['post_processor', 'processors'],
  ['decoder', 'decoders'],
];

/**
 * Checks one pipeline component (or null, or absent, which the package reports itself) for the
 * fields the npm package reads without checking: the `type`, a Sequence's parts, the special tokens
 * of the BERT/RoBERTa post-processors, template pieces and replace patterns.
 */
function checkComponent(value: unknown, where: string, listField: string, bad: (field: string, want: string, got: unknown) => Error): void {
  if (value === undefined || value === null) return;
  if (!isObject(value) || typeof value.type !== 'string') throw bad(where, 'null or an object with a string "type"', value);
  if (value.type === 'Sequence') {
    const parts = value[listField];
    if (parts !== undefined && !Array.isArray(parts)) throw bad(`${where}.${listField}`, 'a list', parts);
    ((parts ?? []) as unknown[]).forEach((part, i) => {
      if (part === null) throw bad(`${where}.${listField}[${i}]`, 'an object with a string "type"', part);
      checkComponent(part, `${where}.${listField}[${i}]`, listField, bad);
    });
  }
  for (const special of ['sep', 'cls']) {
    if ((value.type === 'BertProcessing' || value.type === 'RobertaProcessing') && !(Array.isArray(value[special]) && typeof value[special][0] === 'string')) {
      throw bad(`${where}.${special}`, 'a [token, id] pair', value[special]);
    }
  }
  if (value.type === 'TemplateProcessing') {
    for (const key of ['single', 'pair']) {
      const pieces = value[key];
      if (!Array.isArray(pieces) || !pieces.every((p) => isObject(p) && (isObject(p.SpecialToken) || isObject(p.Sequence)))) {
        throw bad(`${where}.${key}`, 'a list of {SpecialToken} / {Sequence} pieces', pieces);
      }
    }
  }
  if ('pattern' in value && value.pattern !== undefined) {
    const pattern = value.pattern;
    if (!isObject(pattern) || !(typeof pattern.String === 'string' || typeof pattern.Regex === 'string')) {
      throw bad(`${where}.pattern`, 'an object {"String": ...} or {"Regex": ...}', pattern);
    }
  }
  for (const text of ['content', 'prefix', 'suffix', 'replacement', 'prepend']) {
    if (value[text] !== undefined && value[text] !== null && typeof value[text] !== 'string') throw bad(`${where}.${text}`, 'a string', value[text]);
  }
}

/** A special token as tokenizer_config.json writes it: a string or an AddedToken `{content}`. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (isObject(value) && typeof value.content === 'string') return value.content;
  return undefined;
}

function parseConfig(config: JsonObject, path: string | undefined): { modelMaxLength: number; paddingSide: PaddingSide; cleanUpSpaces: boolean } {
  const where = (field: string): string => `${path ?? 'tokenizer_config.json'}: field "${field}"`;
  const rawMax = config.model_max_length;
  if (rawMax !== undefined && (typeof rawMax !== 'number' || !(rawMax > 0))) {
    throw new Error(`${where('model_max_length')} must be a positive number, got ${JSON.stringify(rawMax)}`);
  }
  const modelMaxLength = rawMax === undefined || rawMax >= UNBOUNDED_MODEL_MAX_LENGTH ? Infinity : rawMax;
  const side = config.padding_side ?? 'right';
  if (side !== 'right' && side !== 'left') {
    throw new Error(`${where('padding_side')} must be "right" or "left", got ${JSON.stringify(side)}`);
  }
  if (config.split_special_tokens === true) {
    throw new Error(`${where('split_special_tokens')}: true is not supported (special tokens in text are always matched)`);
  }
  const cleanUp = config.clean_up_tokenization_spaces ?? false;
  if (typeof cleanUp !== 'boolean') throw new Error(`${where('clean_up_tokenization_spaces')} must be a boolean`);
  return { modelMaxLength, paddingSide: side, cleanUpSpaces: cleanUp };
}

/** The pad token by the precedence documented at the top of this file, or undefined when none exists. */
function choosePadToken(tokenizerJson: JsonObject, config: JsonObject, specialTokensMap: JsonObject, has: (t: string) => boolean): string | undefined {
  const padding = tokenizerJson.padding;
  const candidates = [
    tokenContent(config.pad_token),
    tokenContent(specialTokensMap.pad_token),
    isObject(padding) ? tokenContent(padding.pad_token) : undefined,
    tokenContent(config.eos_token),
    tokenContent(specialTokensMap.eos_token),
    '<|endoftext|>',
  ];
  return candidates.find((t): t is string => t !== undefined && has(t));
}

/** The Rust tokenizers' GPT-2 split pattern, with Unicode White_Space where JavaScript `\s` differs. */
const BYTE_LEVEL_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;
/** BERT pre-tokenization: runs of non-space non-punctuation, or single punctuation characters. */
const BERT_SPLIT = /[^\p{White_Space}\p{P}\u0021-\u002F\u003A-\u0040\u005B-\u0060\u007B-\u007E]+|[\p{P}\u0021-\u002F\u003A-\u0040\u005B-\u0060\u007B-\u007E]/gu;

/** Replaces the `\s`-based split patterns of the npm pre-tokenizers (see the top of this file). */
function useUnicodeWhiteSpace(preTokenizer: unknown): void {
  if (preTokenizer instanceof hfTokenizers.ByteLevelPreTokenizer) {
    preTokenizer.pattern = new RegExp(BYTE_LEVEL_SPLIT.source, BYTE_LEVEL_SPLIT.flags);
  } else if (preTokenizer instanceof hfTokenizers.BertPreTokenizer) {
    preTokenizer.pattern = new RegExp(BERT_SPLIT.source, BERT_SPLIT.flags);
  } else if (preTokenizer instanceof hfTokenizers.SequencePreTokenizer) {
    preTokenizer.tokenizers.forEach(useUnicodeWhiteSpace);
  }
}

/**
 * Splits `withSpecial` into prefix + `content` + suffix; throws when `content` is not a contiguous
 * part of it (a post-processor that rewrites the text's tokens, which this file does not model).
 */
export function splitSpecialTokens(withSpecial: readonly number[], content: readonly number[], path: string): { prefix: number[]; suffix: number[] } {
  for (let start = 0; start + content.length <= withSpecial.length; start++) {
    if (content.every((id, i) => withSpecial[start + i] === id)) {
      return { prefix: withSpecial.slice(0, start), suffix: withSpecial.slice(start + content.length) };
    }
  }
  throw new Error(`${path}: the post-processor does not add special tokens as a fixed prefix and suffix; unsupported`);
}

/**
 * The row of one text: its tokens cut to `maxLength - prefix - suffix` when truncating, wrapped in
 * the special tokens (so they survive truncation).
 */
export function truncateAndWrap(content: readonly number[], prefix: readonly number[], suffix: readonly number[], maxLength: number | undefined): number[] {
  const room = maxLength === undefined ? content.length : maxLength - prefix.length - suffix.length;
  if (room < 0) {
    throw new Error(`maxLength ${maxLength} is shorter than the ${prefix.length + suffix.length} special tokens every row carries`);
  }
  return [...prefix, ...content.slice(0, room), ...suffix];
}

/** Pads rows to the longest with `padId` on `side`; mask 1 marks real tokens. */
export function padRows(rows: readonly (readonly number[])[], padId: number, side: PaddingSide): EncodedBatch {
  const width = rows.reduce((w, r) => Math.max(w, r.length), 0);
  const inputIds: number[][] = [];
  const attentionMask: number[][] = [];
  for (const row of rows) {
    const pad = new Array<number>(width - row.length).fill(padId);
    const zeros = new Array<number>(width - row.length).fill(0);
    const ones = new Array<number>(row.length).fill(1);
    inputIds.push(side === 'right' ? [...row, ...pad] : [...pad, ...row]);
    attentionMask.push(side === 'right' ? [...ones, ...zeros] : [...zeros, ...ones]);
  }
  return { inputIds, attentionMask, lengths: rows.map((r) => r.length) };
}

/** int32 `[n, seq]` tensors of a padded batch. */
export function batchToTensors(encoded: EncodedBatch): Batch {
  const n = encoded.inputIds.length;
  const width = n === 0 ? 0 : encoded.inputIds[0]!.length;
  if (n === 0 || width === 0) throw new Error(`toBatch: the batch is empty (${n} rows of ${width} tokens)`);
  if (encoded.attentionMask.length !== n) throw new Error(`toBatch: ${n} rows of ids but ${encoded.attentionMask.length} of attention mask`);
  const ids = new Int32Array(n * width);
  const mask = new Int32Array(n * width);
  for (let i = 0; i < n; i++) {
    const idRow = encoded.inputIds[i]!;
    const maskRow = encoded.attentionMask[i]!;
    if (idRow.length !== width || maskRow.length !== width) {
      throw new Error(`toBatch: row ${i} has ${idRow.length} ids and ${maskRow.length} mask values, expected ${width} (rows must be padded)`);
    }
    ids.set(idRow, i * width);
    mask.set(maskRow, i * width);
  }
  return { inputIds: tf.tensor2d(ids, [n, width], 'int32'), attentionMask: tf.tensor2d(mask, [n, width], 'int32') };
}

class HfBackedTokenizer implements Tokenizer {
  readonly specialPrefix: readonly number[];
  readonly specialSuffix: readonly number[];
  readonly vocabSize: number;
  readonly padToken: string;
  readonly padId: number;

  constructor(
    private readonly hf: HfTokenizer,
    readonly path: string,
    readonly modelMaxLength: number,
    readonly paddingSide: PaddingSide,
    private readonly cleanUpSpaces: boolean,
    padToken: string | undefined,
    readonly modelType: Tokenizer['modelType'],
  ) {
    let maxId = -1;
    for (const id of hf.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    if (padToken === undefined) {
      throw new Error(`${path}: no pad token (none in tokenizer_config.json, special_tokens_map.json or tokenizer.json, and no eos or <|endoftext|> token)`);
    }
    this.padToken = padToken;
    this.padId = hf.token_to_id(padToken)!;
    const probeContent = this.contentIds(SPECIAL_TOKEN_PROBE);
    const probeFull = hf.encode(SPECIAL_TOKEN_PROBE, { add_special_tokens: true }).ids;
    const { prefix, suffix } = splitSpecialTokens(probeFull, probeContent, path);
    this.specialPrefix = prefix;
    this.specialSuffix = suffix;
  }

  /** The text's own tokens, without special tokens. */
  private contentIds(text: string): number[] {
    const ids = this.hf.encode(text, { add_special_tokens: false }).ids;
    const bad = ids.findIndex((id) => !Number.isInteger(id));
    if (bad >= 0) {
      // A model without an unknown token met a piece outside its vocabulary.
      throw new Error(`${this.path}: no token id for piece ${bad} of ${JSON.stringify(text.slice(0, 80))} (the vocabulary has no unknown token)`);
    }
    return ids;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const content = this.contentIds(text);
    return (options.addSpecialTokens ?? true) ? truncateAndWrap(content, this.specialPrefix, this.specialSuffix, undefined) : content;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= this.vocabSize);
    if (bad >= 0) throw new Error(`decode: id ${ids[bad]} at position ${bad} is not a token of ${this.path} (vocabulary size ${this.vocabSize})`);
    if (ids.length === 0) return '';
    return this.hf.decode([...ids], {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: this.cleanUpSpaces,
    });
  }

  encodeBatch(texts: readonly string[], options: EncodeBatchOptions = {}): EncodedBatch {
    const truncation = options.truncation ?? options.maxLength !== undefined;
    if (!truncation && options.maxLength !== undefined) {
      throw new Error(`encodeBatch: maxLength ${options.maxLength} with truncation: false has no effect (rows are padded to the longest)`);
    }
    const maxLength = truncation ? (options.maxLength ?? this.modelMaxLength) : undefined;
    if (maxLength !== undefined && !(Number.isInteger(maxLength) && maxLength > 0)) {
      throw new Error(
        options.maxLength === undefined
          ? `encodeBatch: truncation without maxLength needs a model_max_length in tokenizer_config.json beside ${this.path}`
          : `encodeBatch: maxLength must be a positive integer, got ${options.maxLength}`,
      );
    }
    const addSpecial = options.addSpecialTokens ?? true;
    const prefix = addSpecial ? this.specialPrefix : [];
    const suffix = addSpecial ? this.specialSuffix : [];
    const rows = texts.map((t) => truncateAndWrap(this.contentIds(t), prefix, suffix, maxLength));
    return padRows(rows, this.padId, options.padding ?? this.paddingSide);
  }

  toBatch(encoded: EncodedBatch): Batch {
    return batchToTensors(encoded);
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }
}

/**
 * Loads a Hugging Face tokenizer from a tokenizer.json or a model folder holding one (with
 * tokenizer_config.json and special_tokens_map.json read when they are beside it). Errors name the
 * file and the field at fault.
 */
export async function loadTokenizer(pathToTokenizerJsonOrModelDir: string): Promise<Tokenizer> {
  const files = resolveTokenizerFiles(pathToTokenizerJsonOrModelDir);
  const json = validateTokenizerJson(readJsonFile(files.tokenizerJson, 'tokenizer file'), files.tokenizerJson);
  const readOptional = (path: string | undefined, what: string): JsonObject => {
    if (path === undefined) return {};
    const value = readJsonFile(path, what);
    if (!isObject(value)) throw new Error(`${what} ${path} is not a JSON object`);
    return value;
  };
  const config = readOptional(files.tokenizerConfig, 'tokenizer config');
  const specialTokensMap = readOptional(files.specialTokensMap, 'special tokens map');
  const { modelMaxLength, paddingSide, cleanUpSpaces } = parseConfig(config, files.tokenizerConfig);
  const extra = config.additional_special_tokens;
  if (extra !== undefined && !(Array.isArray(extra) && extra.every((t) => typeof t === 'string'))) {
    throw new Error(`${files.tokenizerConfig}: field "additional_special_tokens" must be a list of strings`);
  }
  let hf: HfTokenizer;
  try {
    hf = new hfTokenizers.Tokenizer(json, { ...config, clean_up_tokenization_spaces: cleanUpSpaces });
  } catch (err) {
    throw packageError(err, files.tokenizerJson, 'cannot build a tokenizer from');
  }
  useUnicodeWhiteSpace(hf.pre_tokenizer);
  const padToken = choosePadToken(json, config, specialTokensMap, (t) => hf.token_to_id(t) !== undefined);
  try {
    const modelType = (json.model as { type: Tokenizer['modelType'] }).type;
    return new HfBackedTokenizer(hf, files.tokenizerJson, modelMaxLength, paddingSide, cleanUpSpaces, padToken, modelType);
  } catch (err) {
    throw packageError(err, files.tokenizerJson, 'cannot tokenize with');
  }
}

/**
 * An error of the npm package, for the user. Its own errors ("Unknown Decoder type: X") say what is
 * wrong and are kept; an engine error from inside it (a TypeError on a field whose type the checks
 * above do not cover) says nothing about the file, so it becomes "malformed" with the engine error
 * as the cause.
 */
function packageError(err: unknown, path: string, doing: string): Error {
  if (err instanceof Error && err.message.startsWith(path)) return err;
  if (err instanceof TypeError || err instanceof RangeError) {
    return new Error(`${doing} ${path}: the file is malformed (a field has a type @huggingface/tokenizers cannot use; see the cause)`, { cause: err });
  }
  return new Error(`${doing} ${path}: ${(err as Error).message}`, { cause: err });
}
