"""PyTorch side of bench/mask-training.ts: the original learned SAE-mask method, which reruns the model and
the SAE at every optimiser step.

Per step, on a batch of --batch examples (right-padded token ids, lengths from the inputs file):
  hidden states of the whole GPT-NeoX (output_hidden_states; layer --layer's output is read),
  f = ReLU((x - b_dec) W_enc + b_enc)              (frozen SAE, no gradient)
  s = sigmoid(m / T_step), T from torch.linspace(0.1, 0.001, epochs * steps_per_epoch)
  x' = (f * s) W_dec + b_dec                        (the original drops the SAE error)
  pooled = mean over real tokens of x'; logit = pooled w + b (frozen probe)
  loss = BCE-with-logits(logit, y); Adam(lr 1e-3) step on m.
Times --steps steps after one warm-up step (the full 25 epochs take hours here) and prints one
JSON line with the per-step seconds; bench/mask-training.ts extrapolates to epochs.
Inputs: --inputs, a safetensors file written by bench/mask-training.ts (input_ids, lengths, y, W_enc, b_enc,
W_dec, b_dec, probe_weight, probe_bias); --model, the Hugging Face folder of the model.
"""
import argparse, json, math, time
import torch
from safetensors.torch import load_file
from transformers import GPTNeoXForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--inputs", required=True)
p.add_argument("--layer", type=int, required=True)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--epochs", type=int, default=25)
p.add_argument("--steps", type=int, default=4)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--seed", type=int, default=42)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)

t = load_file(a.inputs)
ids_all, lengths, y_all = t["input_ids"].long(), t["lengths"].long(), t["y"].float()
W_enc, b_enc, W_dec, b_dec = t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"]
w, b = t["probe_weight"].reshape(-1), t["probe_bias"].reshape(())
n = ids_all.shape[0]
model = GPTNeoXForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
for q in model.parameters():
    q.requires_grad_(False)

steps_per_epoch = math.ceil(n / a.batch)
total = a.epochs * steps_per_epoch
temps = torch.linspace(0.1, 0.001, total)
m = torch.zeros(W_enc.shape[1], requires_grad=True)
opt = torch.optim.Adam([m], lr=1e-3)
order = torch.randperm(n)


def step(k):
    idx = order[(k * a.batch) % n:(k * a.batch) % n + a.batch]
    L = int(lengths[idx].max())
    ids = ids_all[idx, :L]
    mask = (torch.arange(L)[None, :] < lengths[idx][:, None]).long()
    with torch.no_grad():
        hs = model.gpt_neox(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        x = hs[a.layer + 1]
        f = torch.relu((x - b_dec) @ W_enc + b_enc)
    s = torch.sigmoid(m / temps[k % total])
    x_hat = (f * s) @ W_dec + b_dec
    mf = mask[..., None].float()
    pooled = (x_hat * mf).sum(1) / mf.sum(1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(pooled @ w + b, y_all[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


step(0)
times = []
for k in range(1, a.steps + 1):
    t0 = time.perf_counter()
    step(k)
    times.append(time.perf_counter() - t0)
print(json.dumps({"step_seconds": times, "mean_step_seconds": sum(times) / len(times), "steps_per_epoch": steps_per_epoch,
                  "threads": a.threads, "torch": torch.__version__}))
