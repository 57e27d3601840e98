"""PyTorch side of bench/sae-encode.ts and bench/sae-train.ts, at --threads threads, on the same
weights and inputs (raw little-endian float32 files). Prints one JSON line.

--task encode: f = ReLU((x - b_dec) @ W_enc + b_enc) for x [tokens, d] (dictionary_learning
  AutoEncoder.encode), the dense codes (as sae-eraser's side), best of --reps after a warm-up; the
  nonzero count is taken outside the timing, as a check against sae-eraser's.
--task train: steps of the ReLU SAE trainer sae-eraser uses (dictionary_learning StandardTrainer
  loss mean ||x - x_hat|| + l1 mean ||f||_1, Adam, decoder rows projected and renormalised), on
  batches of --batch rows cycled from x; tokens/s over --steps steps after one warm-up step."""
import argparse, json, time
import numpy as np
import torch

p = argparse.ArgumentParser()
p.add_argument("--task", choices=["encode", "train"], required=True)
p.add_argument("--dir", required=True)
p.add_argument("--d", type=int, required=True)
p.add_argument("--dsae", type=int, required=True)
p.add_argument("--tokens", type=int, required=True)
p.add_argument("--batch", type=int, default=1024)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--reps", type=int, default=3)
p.add_argument("--threads", type=int, default=1)
a = p.parse_args()
torch.set_num_threads(a.threads)


def load(name, *shape):
    return torch.from_numpy(np.fromfile(f"{a.dir}/{name}.f32", dtype="<f4").reshape(*shape).copy())


x = load("x", a.tokens, a.d)
W_enc, b_enc, W_dec, b_dec = load("W_enc", a.d, a.dsae), load("b_enc", a.dsae), load("W_dec", a.dsae, a.d), load("b_dec", a.d)

if a.task == "encode":
    def once():
        t0 = time.perf_counter()
        with torch.inference_mode():
            f = torch.relu((x - b_dec) @ W_enc + b_enc)
        return time.perf_counter() - t0, f
    once()
    seconds = []
    for _ in range(a.reps):
        sec, f = once()
        seconds.append(sec)
        nnz = int((f != 0).sum())  # outside the timing; one dense result held at a time
        del f
    best = min(seconds)
    print(json.dumps({"seconds": seconds, "best_seconds": best, "tokens_per_s": a.tokens / best, "nnz": nnz, "torch": torch.__version__, "threads": a.threads}))
else:
    params = [W_enc.clone().requires_grad_(), b_enc.clone().requires_grad_(), W_dec.clone().requires_grad_(), b_dec.clone().requires_grad_()]
    opt = torch.optim.Adam(params, lr=1e-3)

    def step(i):
        we, be, wd, bd = params
        s = (i * a.batch) % (a.tokens - a.batch + 1)
        xb = x[s:s + a.batch]
        f = torch.relu((xb - bd) @ we + be)
        x_hat = f @ wd + bd
        loss = (xb - x_hat).norm(dim=-1).mean() + 0.1 * f.sum(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            wn = wd / wd.norm(dim=1, keepdim=True)
            wd.grad -= (wd.grad * wn).sum(dim=1, keepdim=True) * wn
        opt.step()
        with torch.no_grad():
            wd /= wd.norm(dim=1, keepdim=True)

    step(0)
    t0 = time.perf_counter()
    for i in range(1, a.steps + 1):
        step(i)
    sec = time.perf_counter() - t0
    print(json.dumps({"seconds": sec, "tokens_per_s": a.steps * a.batch / sec, "torch": torch.__version__, "threads": a.threads}))
