"""PyTorch side of bench/forward.ts: the same forward pass (a GPT-NeoX checkpoint's first --layers
layers) on the same token ids, timed with the same number of threads. Prints one JSON line.

Input: --ids FILE, a raw little-endian int32 file of n x seq token ids (all real tokens)."""
import argparse, json, time
import numpy as np
import torch
from transformers import GPTNeoXForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--ids", required=True)
p.add_argument("--n", type=int, required=True)
p.add_argument("--seq", type=int, required=True)
p.add_argument("--layers", type=int, required=True, help="run layers 0..layers-1")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--reps", type=int, default=3)
p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
a = p.parse_args()

torch.set_num_threads(a.threads)
model = GPTNeoXForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation=a.attn).eval()
base = model.gpt_neox
base.layers = base.layers[: a.layers]  # stop after layer layers-1, like stopAfter
ids = torch.from_numpy(np.fromfile(a.ids, dtype="<i4").reshape(a.n, a.seq).astype(np.int64))
mask = torch.ones_like(ids)

with torch.inference_mode():
    base(input_ids=ids, attention_mask=mask)  # warm-up
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        out = base(input_ids=ids, attention_mask=mask).last_hidden_state
        times.append(time.perf_counter() - t0)
best = min(times)
print(json.dumps({"seconds": times, "best_seconds": best, "tokens_per_s": a.n * a.seq / best, "threads": a.threads,
                  "attn": a.attn, "torch": torch.__version__}))
