"""Optimiser steps of the SAE libraries' trainers, for the training-convention tests
(test/sae/train.test.ts against src/sae/train.ts trainStepsFrom):

  relu: dictionary_learning 0.1.0 StandardTrainer (its AutoEncoder forward, its loss terms, its
        ConstrainedAdam: the decoder gradient projected off each unit decoder column, Adam, the
        columns renormalised; its LambdaLR schedule with no warm-up, so a constant lr). Our
        objective uses the trainer's unsquared `l2_loss` term, where 0.1.0 optimises its squared
        `mse_loss`: the step below backpropagates l2_loss + l1 * sparsity_loss, the two terms as the
        trainer computes them (checked against the values it logs).
  topk: eai-sparsify 1.3.3 SparseCoder (its fused top-k encoder and decoder, its `fvu` loss,
        remove_gradient_parallel_to_decoder_directions, set_decoder_norm_to_unit_norm) with
        torch.optim.Adam, as sparsify's Trainer builds it for optimizer="adam" (without
        bitsandbytes), at a constant lr.

Both start from the same seeded weights (decoder rows of unit norm) and batches, written to
<out>/<arch>.safetensors with the loss of every step and the weights after the last one.
"""
import argparse, json, os, sys
import torch
from safetensors.torch import save_file
from dictionary_learning.trainers.standard import StandardTrainer
from sparsify import SparseCoder, SparseCoderConfig

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
a = p.parse_args()
g = torch.Generator().manual_seed(7)
D, N, B, STEPS = 24, 96, 64, 4
SETTINGS = {"relu": {"lr": 1e-3, "l1": 0.1}, "topk": {"lr": 2e-3, "k": 6}}


def start():
    """Weights in our orientation (W_enc [d, n], W_dec [n, d] with unit rows) and the batches [steps, B, d]."""
    w_dec = torch.randn(N, D, generator=g)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
    w = {"W_enc": torch.randn(D, N, generator=g) / D ** 0.5, "b_enc": torch.randn(N, generator=g) * 0.05,
         "W_dec": w_dec, "b_dec": torch.randn(D, generator=g) * 0.1}
    # Inputs: a mean offset plus a few decoder directions, plus noise, so that codes are sparse but not empty.
    x = torch.randn(STEPS, B, D, generator=g) * 0.3 + 0.2
    x += torch.relu(torch.randn(STEPS, B, N, generator=g) - 1.5) @ w_dec
    return w, x


def relu_steps(w, xs):
    s = SETTINGS["relu"]
    tr = StandardTrainer(steps=STEPS + 1, activation_dim=D, dict_size=N, layer=0, lm_name="none", lr=s["lr"],
                         l1_penalty=s["l1"], warmup_steps=0, sparsity_warmup_steps=None, resample_steps=None, seed=0,
                         device="cpu")
    tr.ae.load_state_dict({"bias": w["b_dec"].clone(), "encoder.weight": w["W_enc"].T.contiguous(),
                           "encoder.bias": w["b_enc"].clone(), "decoder.weight": w["W_dec"].T.contiguous()})
    losses = []
    for step, x in enumerate(xs):
        tr.optimizer.zero_grad()
        log = tr.loss(x, step=step, logging=True)
        x_hat, f = log.x_hat, log.f
        # The trainer's own two terms (as in StandardTrainer.loss), checked against what it logs.
        l2 = torch.linalg.norm(x - x_hat, dim=-1).mean()
        l1 = f.norm(p=1, dim=-1).mean()
        assert abs(l2.item() - log.losses["l2_loss"]) <= 1e-6 * abs(l2.item())
        assert abs(l1.item() - log.losses["sparsity_loss"]) <= 1e-6 * max(abs(l1.item()), 1e-12)
        loss = l2 + s["l1"] * l1
        loss.backward()
        tr.optimizer.step()
        tr.scheduler.step()
        assert tr.optimizer.param_groups[0]["lr"] == s["lr"]
        losses.append(loss.item())
    ae = tr.ae
    after = {"W_enc": ae.encoder.weight.T, "b_enc": ae.encoder.bias, "W_dec": ae.decoder.weight.T, "b_dec": ae.bias}
    return losses, after


def topk_steps(w, xs):
    s = SETTINGS["topk"]
    sae = SparseCoder(D, SparseCoderConfig(k=s["k"], num_latents=N), device="cpu")
    with torch.no_grad():
        sae.encoder.weight.copy_(w["W_enc"].T)
        sae.encoder.bias.copy_(w["b_enc"])
        sae.W_dec.copy_(w["W_dec"])
        sae.b_dec.copy_(w["b_dec"])
    opt = torch.optim.Adam(sae.parameters(), lr=s["lr"])
    losses = []
    for x in xs:
        # sparsify's Trainer renormalises the decoder at the start of every step, then steps.
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        losses.append(out.fvu.item())
    # The renormalisation the next step would begin with (ours renormalises right after each step).
    sae.set_decoder_norm_to_unit_norm()
    after = {"W_enc": sae.encoder.weight.T, "b_enc": sae.encoder.bias, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    return losses, after


for arch, run in [("relu", relu_steps), ("topk", topk_steps)]:
    w, xs = start()
    losses, after = run({k: v.clone() for k, v in w.items()}, xs)
    tensors = {f"start.{k}": v.contiguous() for k, v in w.items()}
    tensors.update({f"after.{k}": v.detach().contiguous() for k, v in after.items()})
    tensors["x"] = xs.contiguous()
    tensors["loss"] = torch.tensor(losses, dtype=torch.float32)
    save_file(tensors, os.path.join(a.out, f"{arch}.safetensors"))
json.dump(SETTINGS, open(os.path.join(a.out, "settings.json"), "w"))
print("sae_train_reference: wrote", a.out, file=sys.stderr)
