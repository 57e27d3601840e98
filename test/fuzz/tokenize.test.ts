/**
 * Fuzzing tokenizer files (src/data/tokenize.ts): generated WordPiece vocabularies encode and
 * decode texts of their words exactly; edited tokenizer.json and tokenizer_config.json files
 * (deleted fields, swapped types, boundary values, byte edits) either load into a tokenizer that
 * encodes and decodes, or fail with an error naming the file, never with an engine error.
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../src/data/tokenize.js';
import { breathe, FuzzTally, fuzzParams } from './budget.js';
import { applyByteEdits, applyJsonEdits, byteEdits, expectClear, fuzzDir, jsonEdits } from './mutate.js';

const tmp = fuzzDir('tokenize');
const generated = new FuzzTally('tokenizer: generated vocabularies');
const edited = new FuzzTally('tokenizer: edited tokenizer.json');
const editedConfig = new FuzzTally('tokenizer: edited tokenizer_config.json');
afterAll(() => {
  for (const t of [generated, edited, editedConfig]) t.save();
  tmp.done();
});

const SPECIAL = ['[PAD]', '[UNK]', '[CLS]', '[SEP]'];

/** A BERT-style WordPiece tokenizer.json over `words` (ids 4...). */
function wordPiece(words: readonly string[]): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  SPECIAL.forEach((t, i) => (vocab[t] = i));
  words.forEach((w, i) => (vocab[w] = SPECIAL.length + i));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: { type: 'BertProcessing', sep: ['[SEP]', 3], cls: ['[CLS]', 2] },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}

/** A small byte-level BPE tokenizer.json (GPT-2 style) with a few merges. */
function byteLevelBpe(): Record<string, unknown> {
  const chars = ['a', 'b', 'c', 'Ġ', 'ab', 'Ġa', 'abc', '<|endoftext|>'];
  return {
    version: '1.0',
    added_tokens: [{ id: 7, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      vocab: Object.fromEntries(chars.map((c, i) => [c, i])),
      merges: ['a b', 'Ġ a', 'ab c'],
    },
  };
}

const CONFIG = { pad_token: '[PAD]', model_max_length: 512, padding_side: 'right', clean_up_tokenization_spaces: false };

/** Loads the tokenizer in `dir` and uses it once: encode a text, a batch, decode. */
async function loadAndUse(dir: string): Promise<void> {
  const tok = await loadTokenizer(dir);
  const ids = tok.encode('abc ab hello world');
  tok.decode(ids);
  tok.encodeBatch(['a', 'abc abc'], { maxLength: 8 });
}

const word = fc.stringMatching(/^[a-z]{1,8}$/);

describe('tokenizer files', () => {
  it('encodes texts of a generated vocabulary to its ids, and decodes them back', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(word, { minLength: 1, maxLength: 20 }), fc.array(fc.nat(), { maxLength: 10 }), async (words, picks) => {
        await breathe();
        tmp.write('gen/tokenizer.json', JSON.stringify(wordPiece(words)));
        tmp.write('gen/tokenizer_config.json', JSON.stringify(CONFIG));
        const got = await generated.runAsync(() => loadTokenizer(tmp.path('gen')));
        if (!got.ok) throw got.error;
        const tok = got.value;
        const chosen = picks.map((p) => p % words.length);
        const text = chosen.map((i) => words[i]).join(' ');
        const ids = chosen.map((i) => SPECIAL.length + i);
        expect(tok.encode(text)).toEqual([2, ...ids, 3]);
        expect(tok.decode(ids)).toBe(text);
        expect(tok.vocabSize).toBe(SPECIAL.length + words.length);
      }),
      fuzzParams(60),
    );
  });

  const base = fc.constantFrom('wordpiece', 'bpe').map((kind) => (kind === 'bpe' ? byteLevelBpe() : wordPiece(['hello', 'world', '##s', 'ab'])));

  it('loads edited tokenizer.json files into a working tokenizer, or refuses them naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(base, jsonEdits(), async (json, edits) => {
        await breathe();
        const path = tmp.write('edited/tokenizer.json', JSON.stringify(applyJsonEdits(json, edits)));
        const got = await edited.runAsync(() => loadAndUse(tmp.path('edited')));
        if (!got.ok) expectClear(got.error, path);
      }),
      { ...fuzzParams(200), timeout: 10_000 },
    );
  });

  it('loads byte-edited tokenizer.json files, or refuses them naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(base, byteEdits(), async (json, edits) => {
        await breathe();
        const path = tmp.write('bytes/tokenizer.json', applyByteEdits(new TextEncoder().encode(JSON.stringify(json)), edits));
        const got = await edited.runAsync(() => loadAndUse(tmp.path('bytes')));
        if (!got.ok) expectClear(got.error, path);
      }),
      { ...fuzzParams(100), timeout: 10_000 },
    );
  });

  it('loads edited tokenizer_config.json files, or refuses them naming the file', async () => {
    await fc.assert(
      fc.asyncProperty(jsonEdits(), async (edits) => {
        await breathe();
        tmp.write('config/tokenizer.json', JSON.stringify(wordPiece(['hello', 'world'])));
        const path = tmp.write('config/tokenizer_config.json', JSON.stringify(applyJsonEdits({ ...CONFIG, eos_token: '[SEP]' }, edits)));
        const got = await editedConfig.runAsync(() => loadAndUse(tmp.path('config')));
        if (!got.ok) expectClear(got.error, path.replace(/tokenizer_config\.json$/, ''));
      }),
      { ...fuzzParams(150), timeout: 10_000 },
    );
  });
});
