"""PyTorch side of bench/collect.ts: activation collection with transformers, the same work as
sae-eraser's activation cache on the same texts, at --threads threads. Prints one JSON line.

Timed from the first tokenisation to the written output (the model and SAE are loaded before):
texts are batched as the cache batches them (within consecutive blocks of --shard texts, by text
length, --batch texts per batch), tokenised by the model folder's fast tokenizer (right padding,
truncation at --max-length), run through BertModel's layers 0..--layer (the output of layer
--layer is layers.{layer}.resid_out), then per token
  f = ReLU((x - s b_dec) W_enc + b_enc),  error = x - (f W_dec + b_dec)   (s = subtract_b_dec),
and x, f and the error are mean-pooled over real tokens. The pooled arrays are written to --out
(safetensors: acts_pooled, codes_pooled, error_pooled, n_tokens), rows in text order.

Inputs: --model, a BERT folder; --texts, a JSON list of strings; --sae, a safetensors file with
W_enc [d, dSae], b_enc, W_dec [dSae, d], b_dec, subtract_b_dec [1] (written by bench/collect.ts).
"""
import argparse, json, resource, sys, time
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BertModel
from transformers.utils import logging as hf_logging

hf_logging.set_verbosity_error()  # not the notice that the pooler weights go unused: BertModel here stops before the pooler

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--texts", required=True)
p.add_argument("--sae", required=True)
p.add_argument("--layer", type=int, required=True)
p.add_argument("--batch", type=int, default=32)
p.add_argument("--shard", type=int, default=512)
p.add_argument("--max-length", type=int, default=128)
p.add_argument("--out", required=True)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)

with open(a.texts, encoding="utf8") as f:
    texts = json.load(f)
n = len(texts)
tok = AutoTokenizer.from_pretrained(a.model)
model = BertModel.from_pretrained(a.model, add_pooling_layer=False).eval()
model.encoder.layer = model.encoder.layer[: a.layer + 1]
s = load_file(a.sae)
W_enc, b_enc, W_dec, b_dec = s["W_enc"], s["b_enc"], s["W_dec"], s["b_dec"]
subtract = bool(s["subtract_b_dec"][0] != 0)
d, d_sae = W_enc.shape

t0 = time.perf_counter()
acts = torch.empty(n, d)
codes = torch.empty(n, d_sae)
errors = torch.empty(n, d)
n_tokens = torch.empty(n, dtype=torch.int32)
with torch.inference_mode():
    for start in range(0, n, a.shard):
        block = sorted(range(start, min(n, start + a.shard)), key=lambda i: len(texts[i]))
        for b in range(0, len(block), a.batch):
            rows = block[b : b + a.batch]
            enc = tok([texts[i] for i in rows], padding=True, truncation=True, max_length=a.max_length, return_tensors="pt")
            x = model(**enc).last_hidden_state
            f = torch.relu(((x - b_dec) if subtract else x) @ W_enc + b_enc)
            err = x - (f @ W_dec + b_dec)
            m = enc["attention_mask"].unsqueeze(-1).to(x.dtype)
            count = m.sum(1).clamp(min=1)
            idx = torch.tensor(rows)
            acts[idx] = (x * m).sum(1) / count
            codes[idx] = (f * m).sum(1) / count
            errors[idx] = (err * m).sum(1) / count
            n_tokens[idx] = enc["attention_mask"].sum(1).to(torch.int32)
save_file({"acts_pooled": acts, "codes_pooled": codes, "error_pooled": errors, "n_tokens": n_tokens}, a.out)
seconds = time.perf_counter() - t0

# ru_maxrss is in kilobytes on Linux and in bytes on macOS.
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(json.dumps({"seconds": seconds, "examples_per_s": n / seconds, "tokens": int(n_tokens.sum()), "max_rss_bytes": maxrss,
                  "attn": model.config._attn_implementation, "torch": torch.__version__, "threads": a.threads}))
