/**
 * Tokenizer tests: known GPT-NeoX encodings, exact parity with Python transformers on Bias in Bios
 * (ids, masks, padding both sides, truncation at 128, decoding) for GPT-NeoX BPE and MiniLM
 * WordPiece, and clear errors on bad files. Expected values come fresh from
 * test/reference/tokenize_reference.py.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initEngine, tf } from '../../src/engine/engine.js';
import { loadTokenizer, padRows, truncateAndWrap, type PaddingSide, type Tokenizer } from '../../src/data/tokenize.js';
import { projectRoot, sharedPath } from '../../src/io/shared.js';
import { runPythonReference } from '../reference/python.js';
import { skipWithout } from '../require.js';

const MAX_LENGTH = 128;
const N_BIOS = 500;
const neoxPath = sharedPath('data', 'tokenizers', 'gpt-neox-20b', 'tokenizer.json');
const biosPath = sharedPath('data', 'bias_in_bios', 'train.jsonl');
const haveShared = neoxPath !== undefined && biosPath !== undefined;
const sharedWhy =
  'the GPT-NeoX and transformers-parity tokenizer tests need ../shared with data/tokenizers/gpt-neox-20b/tokenizer.json and data/bias_in_bios/train.jsonl (set SAE_ERASER_SHARED)';
const miniLmDir = join(projectRoot(), '.cache', 'models', 'all-MiniLM-L6-v2');

/** Extracts all-MiniLM-L6-v2 into .cache (a no-op when it is already there). */
function ensureMiniLm(): void {
  execFileSync('bash', [join(projectRoot(), 'scripts', 'fetch-minilm.sh')], { stdio: ['ignore', 'inherit', 'inherit'] });
}

interface ReferenceBatch {
  padding: PaddingSide;
  maxLength: number | null;
  start: number;
  size: number;
  inputIds: number[][];
  attentionMask: number[][];
}

interface Reference {
  texts: string[];
  withSpecial: number[][];
  noSpecial: number[][];
  decoded: string[];
  decodedSkipSpecial: string[];
  batches: ReferenceBatch[];
}

/** Indices where two lists of rows differ, for a short failure message instead of a 500-row diff. */
function differingRows<T>(actual: readonly T[], expected: readonly T[]): number[] {
  expect(actual.length).toBe(expected.length);
  return expected.flatMap((row, i) => (JSON.stringify(actual[i]) === JSON.stringify(row) ? [] : [i]));
}

describe('tokenizer pure helpers', () => {
  it('truncateAndWrap keeps the special tokens and cuts the text tokens', () => {
    expect(truncateAndWrap([5, 6, 7, 8], [1], [2], 4)).toEqual([1, 5, 6, 2]);
    expect(truncateAndWrap([5, 6], [1], [2], 4)).toEqual([1, 5, 6, 2]);
    expect(truncateAndWrap([5, 6, 7], [], [], undefined)).toEqual([5, 6, 7]);
    expect(truncateAndWrap([5, 6, 7], [1], [2], 2)).toEqual([1, 2]);
    expect(() => truncateAndWrap([5], [1], [2], 1)).toThrow(/maxLength 1 .* 2 special tokens/);
  });

  it('padRows pads to the longest row on either side', () => {
    expect(padRows([[3, 4, 5], [6]], 0, 'right')).toEqual({
      inputIds: [
        [3, 4, 5],
        [6, 0, 0],
      ],
      attentionMask: [
        [1, 1, 1],
        [1, 0, 0],
      ],
      lengths: [3, 1],
    });
    expect(padRows([[3, 4, 5], [6]], 9, 'left')).toEqual({
      inputIds: [
        [3, 4, 5],
        [9, 9, 6],
      ],
      attentionMask: [
        [1, 1, 1],
        [0, 0, 1],
      ],
      lengths: [3, 1],
    });
  });
});

/**
 * A hand-written WordPiece model folder. Its vocabulary: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 hello=4
 * world=5 ##s=6 [EOS]=7.
 */
function writeTinyWordPiece(dir: string, config: Record<string, unknown>): void {
  mkdirSync(dir, { recursive: true });
  const special = ['[PAD]', '[UNK]', '[CLS]', '[SEP]'].map((content, id) => ({ id, content, special: true, normalized: false }));
  writeFileSync(
    join(dir, 'tokenizer.json'),
    JSON.stringify({
      added_tokens: [...special, { id: 7, content: '[EOS]', special: true, normalized: false }],
      normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
      pre_tokenizer: { type: 'BertPreTokenizer' },
      post_processor: { type: 'BertProcessing', sep: ['[SEP]', 3], cls: ['[CLS]', 2] },
      decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
      model: {
        type: 'WordPiece',
        unk_token: '[UNK]',
        continuing_subword_prefix: '##',
        max_input_chars_per_word: 100,
        vocab: { '[PAD]': 0, '[UNK]': 1, '[CLS]': 2, '[SEP]': 3, hello: 4, world: 5, '##s': 6, '[EOS]': 7 },
      },
    }),
  );
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(config));
}

describe('tokenizer on a hand-written WordPiece model (no shared data)', () => {
  let dir: string;
  let tok: Tokenizer;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sae-eraser-tokenize-'));
    writeTinyWordPiece(dir, { pad_token: '[PAD]', eos_token: '[EOS]', padding_side: 'left', model_max_length: 4 });
    tok = await loadTokenizer(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('encodes with [CLS] ... [SEP], splits word pieces, maps unknown words to [UNK]', () => {
    expect(tok.encode('Hello WORLDS')).toEqual([2, 4, 5, 6, 3]);
    expect(tok.encode('hello there', { addSpecialTokens: false })).toEqual([4, 1]);
    expect(tok.decode([2, 4, 5, 6, 3], { skipSpecialTokens: true })).toBe('hello worlds');
  });

  it('reads pad token, padding side and model_max_length from tokenizer_config.json', () => {
    expect(tok.padId).toBe(0);
    expect(tok.paddingSide).toBe('left');
    expect(tok.modelMaxLength).toBe(4);
    expect(tok.encodeBatch(['hello worlds', 'hello'], { truncation: true })).toEqual({
      inputIds: [
        [2, 4, 5, 3],
        [0, 2, 4, 3],
      ],
      attentionMask: [
        [1, 1, 1, 1],
        [0, 1, 1, 1],
      ],
      lengths: [4, 3],
    });
    expect(tok.encodeBatch(['hello worlds', 'hello'], { padding: 'right' }).inputIds).toEqual([
      [2, 4, 5, 6, 3],
      [2, 4, 3, 0, 0],
    ]);
  });

  it('falls back to the eos token when no pad token is declared', async () => {
    const noPad = join(dir, 'no-pad');
    writeTinyWordPiece(noPad, { eos_token: '[EOS]' });
    expect((await loadTokenizer(join(noPad, 'tokenizer.json'))).padId).toBe(7);
  });
});

describe('tokenizer bad input', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sae-eraser-tokenize-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('names a missing file', async () => {
    const missing = join(dir, 'nope', 'tokenizer.json');
    await expect(loadTokenizer(missing)).rejects.toThrow(missing);
  });

  it('names a folder without tokenizer.json', async () => {
    const empty = join(dir, 'empty-model');
    mkdirSync(empty);
    await expect(loadTokenizer(empty)).rejects.toThrow(new RegExp(`${empty}.*no tokenizer\\.json`));
  });

  it('names a JSON file that is not a tokenizer', async () => {
    const path = join(dir, 'config.json');
    writeFileSync(path, JSON.stringify({ hidden_size: 384, num_hidden_layers: 6 }));
    await expect(loadTokenizer(path)).rejects.toThrow(`${path} is not a Hugging Face tokenizer.json: missing object field "model"`);
    const noType = join(dir, 'no-type.json');
    writeFileSync(noType, JSON.stringify({ model: { vocab: {} } }));
    await expect(loadTokenizer(noType)).rejects.toThrow(/no-type\.json .*"model\.type"/);
  });

  it('names an unsupported model type', async () => {
    const path = join(dir, 'wordlevel.json');
    writeFileSync(path, JSON.stringify({ model: { type: 'WordLevel', vocab: { a: 0 } }, added_tokens: [] }));
    await expect(loadTokenizer(path)).rejects.toThrow(`${path}: field "model.type" is "WordLevel"`);
  });

  it('names a bad tokenizer_config.json field', async () => {
    const model = join(dir, 'tiny-bad-config');
    writeTinyWordPiece(model, { padding_side: 'middle' });
    await expect(loadTokenizer(model)).rejects.toThrow(`${join(model, 'tokenizer_config.json')}: field "padding_side" must be "right" or "left"`);
  });

  it('names a file that is not JSON', async () => {
    const path = join(dir, 'broken.json');
    writeFileSync(path, '{"model": ');
    await expect(loadTokenizer(path)).rejects.toThrow(`${path}: not valid JSON (`);
    await expect(loadTokenizer(path)).rejects.toThrow(/\(the tokenizer file\)$/);
  });

  // Inputs found by fuzzing (test/fuzz/tokenize.test.ts), shrunk.
  const tinyJson = (model: string): Record<string, unknown> => {
    writeTinyWordPiece(join(dir, model), {});
    return JSON.parse(readFileSync(join(dir, model, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
  };

  it('refuses a token id far past the vocabulary at once (the npm package walked every id up to it: minutes)', async () => {
    const json = tinyJson('far-id');
    (json.model as { vocab: Record<string, number> }).vocab[''] = 2 ** 31;
    const path = join(dir, 'far-id', 'tokenizer.json');
    writeFileSync(path, JSON.stringify(json));
    await expect(loadTokenizer(path)).rejects.toThrow(
      `${path}: token id 2147483648 is far beyond the 14 entries of "model.vocab" and "added_tokens" (ids must be dense)`,
    );
  });

  it('names a mistyped field instead of forwarding a TypeError from the npm package', async () => {
    const path = join(dir, 'bpe.json');
    const bpe = {
      model: { type: 'BPE', vocab: { a: 0, b: 1, ab: 2 }, merges: ['a b', ['a b']] },
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
    };
    writeFileSync(path, JSON.stringify(bpe));
    await expect(loadTokenizer(path)).rejects.toThrow(`${path}: field "model.merges[1]" must be a string "left right", as the first merge is, got ["a b"]`);
    writeFileSync(path, JSON.stringify({ ...bpe, model: { ...bpe.model, merges: ['a b'], vocab: { a: 'zero' } } }));
    await expect(loadTokenizer(path)).rejects.toThrow(`${path}: field "model.vocab.a" must be a non-negative integer id, got "zero"`);
    writeFileSync(path, JSON.stringify({ ...bpe, model: { ...bpe.model, merges: ['a b'] }, decoder: { type: 'Sequence', decoders: 3 } }));
    await expect(loadTokenizer(path)).rejects.toThrow(`${path}: field "decoder.decoders" must be a list, got 3`);
  });
});

describe.skipIf(skipWithout(!haveShared, sharedWhy))('GPT-NeoX tokenizer (shared data)', () => {
  let tok: Tokenizer;
  beforeAll(async () => {
    tok = await loadTokenizer(neoxPath!);
  });

  it('gives the known encodings of shared/README.md', () => {
    expect(tok.encode('Hello, I am')).toEqual([12092, 13, 309, 717]);
    expect(tok.encode('The quick brown fox jumps over the lazy dog.')).toEqual([510, 3158, 8516, 30013, 27287, 689, 253, 22658, 4370, 15]);
    expect(tok.decode([12092, 13, 309, 717])).toBe('Hello, I am');
  });

  it('adds no special tokens and pads with <|endoftext|>', () => {
    expect(tok.specialPrefix).toEqual([]);
    expect(tok.specialSuffix).toEqual([]);
    expect(tok.padToken).toBe('<|endoftext|>');
    expect(tok.padId).toBe(tok.tokenToId('<|endoftext|>'));
    expect(tok.modelMaxLength).toBe(Infinity);
    const batch = tok.encodeBatch(['Hello, I am', 'Hello'], { padding: 'left' });
    expect(batch.inputIds[1]).toEqual([tok.padId, tok.padId, tok.padId, 12092]);
  });

  it('needs a maxLength to truncate, as it has no model_max_length', () => {
    expect(() => tok.encodeBatch(['Hello'], { truncation: true })).toThrow(/model_max_length/);
    expect(() => tok.encodeBatch(['Hello'], { maxLength: 4, truncation: false })).toThrow(/truncation: false/);
  });

  it('decodes [] to "" and rejects ids outside the vocabulary', () => {
    expect(tok.decode([])).toBe('');
    expect(() => tok.decode([12092, tok.vocabSize])).toThrow(new RegExp(`id ${tok.vocabSize} at position 1 .*gpt-neox-20b`));
  });
});

describe.skipIf(!haveShared)('tokenizer parity with transformers (shared data)', () => {
  const refs: Record<'neox' | 'minilm', Reference> = {} as Record<'neox' | 'minilm', Reference>;
  const toks: Record<'neox' | 'minilm', Tokenizer> = {} as Record<'neox' | 'minilm', Tokenizer>;

  beforeAll(async () => {
    ensureMiniLm();
    const out = await runPythonReference('tokenize_reference.py', [
      '--neox',
      neoxPath!,
      '--minilm',
      miniLmDir,
      '--bios',
      biosPath!,
      '--n',
      String(N_BIOS),
      '--max-length',
      String(MAX_LENGTH),
    ]);
    for (const name of ['neox', 'minilm'] as const) {
      refs[name] = JSON.parse(readFileSync(join(out, `${name}.json`), 'utf8')) as Reference;
    }
    toks.neox = await loadTokenizer(neoxPath!);
    toks.minilm = await loadTokenizer(miniLmDir);
    await initEngine();
  });

  it('the reference covers 500 bios, rows past 128 tokens, and both padding sides', () => {
    for (const name of ['neox', 'minilm'] as const) {
      const ref = refs[name];
      expect(ref.texts.length).toBeGreaterThan(N_BIOS);
      expect(ref.withSpecial.some((ids) => ids.length > MAX_LENGTH)).toBe(true);
      const sides = new Set(ref.batches.map((b) => `${b.padding}/${b.maxLength}`));
      expect([...sides].sort()).toEqual([`left/${MAX_LENGTH}`, 'left/null', `right/${MAX_LENGTH}`, 'right/null']);
    }
  });

  for (const name of ['neox', 'minilm'] as const) {
    describe(name, () => {
      it('encodes every text exactly as transformers, with and without special tokens', () => {
        const ref = refs[name];
        const tok = toks[name];
        expect(
          differingRows(
            ref.texts.map((t) => tok.encode(t)),
            ref.withSpecial,
          ),
        ).toEqual([]);
        expect(
          differingRows(
            ref.texts.map((t) => tok.encode(t, { addSpecialTokens: false })),
            ref.noSpecial,
          ),
        ).toEqual([]);
      });

      it('decodes exactly as transformers, keeping or skipping special tokens', () => {
        const ref = refs[name];
        const tok = toks[name];
        expect(
          differingRows(
            ref.withSpecial.map((ids) => tok.decode(ids)),
            ref.decoded,
          ),
        ).toEqual([]);
        expect(
          differingRows(
            ref.withSpecial.map((ids) => tok.decode(ids, { skipSpecialTokens: true })),
            ref.decodedSkipSpecial,
          ),
        ).toEqual([]);
      });

      it('batch-encodes exactly as transformers: padding left and right, truncation at 128', () => {
        const tok = toks[name];
        for (const b of refs[name].batches) {
          const texts = refs[name].texts.slice(b.start, b.start + b.size);
          const enc = tok.encodeBatch(texts, { padding: b.padding, ...(b.maxLength === null ? {} : { maxLength: b.maxLength }) });
          const where = `${name} batch ${b.padding}/${b.maxLength} at ${b.start}`;
          expect(differingRows(enc.inputIds, b.inputIds), where).toEqual([]);
          expect(differingRows(enc.attentionMask, b.attentionMask), where).toEqual([]);
          expect(enc.lengths, where).toEqual(b.attentionMask.map((m) => m.reduce((s, v) => s + v, 0)));
        }
      });
    });
  }

  it('MiniLM truncation keeps [CLS] + the first maxLength-2 tokens + [SEP]', () => {
    const tok = toks.minilm;
    const text = refs.minilm.texts.find((t) => tok.encode(t).length > MAX_LENGTH)!;
    const row = tok.encodeBatch([text], { maxLength: MAX_LENGTH }).inputIds[0]!;
    expect(row.length).toBe(MAX_LENGTH);
    expect(row[0]).toBe(tok.tokenToId('[CLS]'));
    expect(row[MAX_LENGTH - 1]).toBe(tok.tokenToId('[SEP]'));
    expect(row.slice(1, -1)).toEqual(tok.encode(text, { addSpecialTokens: false }).slice(0, MAX_LENGTH - 2));
    expect(tok.encodeBatch([text], { maxLength: MAX_LENGTH, addSpecialTokens: false }).inputIds[0]).toEqual(
      tok.encode(text, { addSpecialTokens: false }).slice(0, MAX_LENGTH),
    );
  });

  it('MiniLM truncation without maxLength stops at model_max_length 512', () => {
    const tok = toks.minilm;
    expect(tok.modelMaxLength).toBe(512);
    expect(tok.padId).toBe(tok.tokenToId('[PAD]'));
    const long = 'word '.repeat(600);
    expect(tok.encodeBatch([long], { truncation: true }).inputIds[0]!.length).toBe(512);
    expect(() => tok.encodeBatch([long], { maxLength: 1 })).toThrow(/maxLength 1 .* 2 special tokens/);
  });

  it('toBatch makes int32 tensors of the padded ids and mask', () => {
    const tok = toks.minilm;
    const enc = tok.encodeBatch(refs.minilm.texts.slice(0, 3), { padding: 'left', maxLength: 16 });
    const before = tf.memory().numTensors;
    const batch = tok.toBatch(enc);
    expect(batch.inputIds.dtype).toBe('int32');
    expect(batch.attentionMask.dtype).toBe('int32');
    expect(batch.inputIds.shape).toEqual([3, enc.inputIds[0]!.length]);
    expect(batch.inputIds.arraySync()).toEqual(enc.inputIds);
    expect(batch.attentionMask.arraySync()).toEqual(enc.attentionMask);
    tf.dispose([batch.inputIds, batch.attentionMask]);
    expect(tf.memory().numTensors).toBe(before);
    expect(() => tok.toBatch({ inputIds: [[1, 2], [3]], attentionMask: [[1, 1], [1]], lengths: [2, 1] })).toThrow(/row 1 .*\(rows must be padded\)/);
    expect(() => tok.toBatch({ inputIds: [], attentionMask: [], lengths: [] })).toThrow(/empty/);
  });
});
