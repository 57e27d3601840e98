"""Expected tokenizer outputs from Python transformers, for test/data/tokenize.test.ts.

Writes <out>/neox.json and <out>/minilm.json, each:
  {
    "texts": [...],                  # the inputs, so the TypeScript side encodes exactly these strings
    "withSpecial": [[id, ...], ...], # tok(text)["input_ids"] (add_special_tokens=True)
    "noSpecial": [[id, ...], ...],   # tok(text, add_special_tokens=False)["input_ids"]
    "decoded": [str, ...],           # tok.decode(withSpecial[i])
    "decodedSkipSpecial": [str, ...],# tok.decode(withSpecial[i], skip_special_tokens=True)
    "batches": [ {"padding": "right"|"left", "maxLength": int|null, "start": int, "size": int,
                  "inputIds": [[...]], "attentionMask": [[...]]}, ... ]
  }
Batches cover texts[start:start+size], padded to the longest row (padding=True), truncated at
maxLength when it is not null (truncation=True, max_length=maxLength).

The texts are `--n` bios of the Bias in Bios train split (every bio holding a rare character first,
then evenly spaced ones) followed by hand-written edge cases.

GPT-NeoX: PreTrainedTokenizerFast(tokenizer_file=...) has no pad token; like common practice (and
like src/data/tokenize.ts) it pads with <|endoftext|> (id 0).
"""

import argparse
import json
import os

from transformers import AutoTokenizer, PreTrainedTokenizerFast

EDGE_CASES = [
    "",
    "Hello, I am",
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces  ",
    "many      spaces\tand\ttabs\n\n\nand newlines\r\n",
    "Caf\u00e9 vs Cafe\u0301 (NFC vs NFD), na\u00efve \u00c9lodie \u00dfstra\u00dfe",
    "emoji \U0001f600\U0001f469\u200d\u2695\ufe0f and CJK \u6570\u5b66\u9898 and \u0645\u0631\u062d\u0628\u0627",
    "literal specials: [CLS] [SEP] [PAD] [MASK] [UNK] <|endoftext|> <|padding|>",
    "control\x01chars\u200bzero\ufeffwidth\u2028line\x92",
    # Unicode White_Space vs JavaScript \s: U+FEFF is not white space, U+0085 is; U+0378 is unassigned.
    "Ends. \ufeffHer email\ufeff \ufeff\ufeff x \x85 y\x85\x85z nbsp\u00a0x ideo\u3000x unassigned\u0378x",
    "a" * 150 + " supercalifragilisticexpialidocious " + "x" * 120,
    "numbers 3.14159 1,000,000 2024-01-01 #42 $19.99 50%",
    "don't won't it's I'm we'll they've she'd",
    " ",
]


def pick_bios(path: str, n: int) -> list[str]:
    with open(path, encoding="utf-8") as f:
        bios = [json.loads(line)["text"] for line in f if line.strip()]
    common = set(map(chr, range(32, 127))) | set("\u2019\u201c\u201d\u2013\u2026\u2014\u00e9")
    rare = [i for i, t in enumerate(bios) if any(c not in common for c in t)]
    chosen = rare[: n // 4]
    taken = set(chosen)
    step = len(bios) / n
    k = 0.0
    while len(chosen) < n:
        i = int(k) % len(bios)
        k += step
        while i in taken:
            i = (i + 1) % len(bios)
        chosen.append(i)
        taken.add(i)
    return [bios[i] for i in chosen]


def batches(tok, texts: list[str], batch_size: int, max_length: int) -> list[dict]:
    out = []
    for side in ("right", "left"):
        tok.padding_side = side
        for ml in (None, max_length):
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                if ml is None:
                    enc = tok(chunk, padding=True)
                else:
                    enc = tok(chunk, padding=True, truncation=True, max_length=ml)
                out.append(
                    {
                        "padding": side,
                        "maxLength": ml,
                        "start": start,
                        "size": len(chunk),
                        "inputIds": enc["input_ids"],
                        "attentionMask": enc["attention_mask"],
                    }
                )
    tok.padding_side = "right"
    return out


def reference(tok, texts: list[str], batch_size: int, max_length: int) -> dict:
    with_special = [tok(t)["input_ids"] for t in texts]
    return {
        "texts": texts,
        "withSpecial": with_special,
        "noSpecial": [tok(t, add_special_tokens=False)["input_ids"] for t in texts],
        "decoded": [tok.decode(ids) for ids in with_special],
        "decodedSkipSpecial": [tok.decode(ids, skip_special_tokens=True) for ids in with_special],
        "batches": batches(tok, texts, batch_size, max_length),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--neox", required=True, help="GPT-NeoX tokenizer.json")
    p.add_argument("--minilm", required=True, help="all-MiniLM-L6-v2 model folder")
    p.add_argument("--bios", required=True, help="bias_in_bios train.jsonl")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--max-length", type=int, default=128)
    a = p.parse_args()

    texts = pick_bios(a.bios, a.n) + EDGE_CASES

    neox = PreTrainedTokenizerFast(tokenizer_file=a.neox)
    neox.pad_token = "<|endoftext|>"
    minilm = AutoTokenizer.from_pretrained(a.minilm)

    for name, tok in (("neox", neox), ("minilm", minilm)):
        ref = reference(tok, texts, a.batch_size, a.max_length)
        with open(os.path.join(a.out, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(ref, f, ensure_ascii=True)


if __name__ == "__main__":
    main()
