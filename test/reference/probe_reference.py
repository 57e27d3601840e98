"""Trains linear probes exactly as the Sparse Feature Circuits SHIFT code does (nn.Linear, torch
AdamW, BCEWithLogitsLoss or CrossEntropyLoss, fixed batch order, no reshuffling) and writes, per
case, the data, the initial parameters, the parameters after training and the per-step losses to
<out>/<case>.safetensors. The TypeScript probe starts from the same initial parameters and must
end at the same parameters."""
import argparse, json, os
import numpy as np
import torch
from torch import nn
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
a = p.parse_args()

CASES = [
    # name, n, d, classes, lr, weight_decay (None: torch's AdamW default), batch, epochs
    ("binary_paper", 300, 16, 2, 1e-2, None, 128, 1),
    ("binary_decay", 300, 16, 2, 5e-2, 0.5, 128, 3),
    ("multiclass", 250, 12, 3, 1e-2, None, 64, 2),
]

torch.set_default_dtype(torch.float32)
cases = {}
for k, (name, n, d, classes, lr, wd, batch, epochs) in enumerate(CASES):
    rng = np.random.RandomState(k)
    X = rng.randn(n, d).astype(np.float32)
    W_true = rng.randn(classes if classes > 2 else 1, d).astype(np.float32)
    scores = X @ W_true.T + 0.5 * rng.randn(n, W_true.shape[0]).astype(np.float32)
    y = (scores[:, 0] > 0).astype(np.int64) if classes == 2 else scores.argmax(1).astype(np.int64)

    torch.manual_seed(42 + k)
    probe = nn.Linear(d, 1 if classes == 2 else classes, bias=True)
    w0, b0 = probe.weight.detach().clone(), probe.bias.detach().clone()
    opt = torch.optim.AdamW(probe.parameters(), lr=lr) if wd is None else torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=wd)
    crit = nn.BCEWithLogitsLoss() if classes == 2 else nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    losses = []
    for _ in range(epochs):
        for s in range(0, n, batch):
            logits = probe(Xt[s:s + batch])
            loss = crit(logits.squeeze(-1), yt[s:s + batch].float()) if classes == 2 else crit(logits, yt[s:s + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    save_file(
        {
            "X": Xt, "y": yt, "w0": w0, "b0": b0,
            "w1": probe.weight.detach().clone(), "b1": probe.bias.detach().clone(),
            "losses": torch.tensor(losses, dtype=torch.float32),
        },
        os.path.join(a.out, f"{name}.safetensors"),
    )
    cases[name] = {"classes": classes, "lr": lr, "weight_decay": wd, "batch": batch, "epochs": epochs}

json.dump(cases, open(os.path.join(a.out, "cases.json"), "w"), indent=1)
