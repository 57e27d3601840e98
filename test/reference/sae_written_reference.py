"""Loads SAE folders that sae-eraser wrote with the libraries themselves and encodes / decodes inputs
with them, for the tests that our output is what the libraries read (test/sae/formats.test.ts).

Each argument is a case folder holding `sae/` (the SAE as sae-eraser saved it) and `x.safetensors`
(tensor "x" [tokens, d_in]). The format is detected like sae-eraser's loadSae:
  cfg.json + sae_weights.safetensors  -> sae_lens 6.54.12 SAE.load_from_disk
  cfg.json + sae.safetensors          -> sparsify 1.3.3 SparseCoder.load_from_disk
  ae.pt                               -> dictionary_learning 0.1.0 AutoEncoder.from_pretrained
Writes <out>/<case>.safetensors (f, x_hat) and <out>/<case>.json (what the library read).
"""
import argparse, json, os, sys
import torch
from safetensors.torch import load_file, save_file

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("cases", nargs="+")
a = p.parse_args()


def run(folder, x):
    if os.path.exists(os.path.join(folder, "sae_weights.safetensors")):
        from sae_lens import SAE
        sae = SAE.load_from_disk(folder, device="cpu")
        f = sae.encode(x)
        meta = sae.cfg.metadata
        info = {"library": "sae_lens", "architecture": sae.cfg.architecture(), "d_in": sae.cfg.d_in,
                "d_sae": sae.cfg.d_sae, "k": getattr(sae.cfg, "k", None),
                "apply_b_dec_to_input": sae.cfg.apply_b_dec_to_input, "hook_name": meta.hook_name,
                "model_name": meta.model_name}
        return f, sae.decode(f), info
    if os.path.exists(os.path.join(folder, "sae.safetensors")):
        from sparsify import SparseCoder
        sae = SparseCoder.load_from_disk(folder)
        enc = sae.encode(x)
        f = torch.zeros(x.shape[0], sae.num_latents).scatter_(-1, enc.top_indices, enc.top_acts)
        info = {"library": "sparsify", "d_in": sae.d_in, "d_sae": sae.num_latents, "k": sae.cfg.k}
        return f, sae.decode(enc.top_acts, enc.top_indices), info
    if os.path.exists(os.path.join(folder, "ae.pt")):
        from dictionary_learning import AutoEncoder
        ae = AutoEncoder.from_pretrained(os.path.join(folder, "ae.pt"), normalize_decoder=False)
        f = ae.encode(x)
        return f, ae.decode(f), {"library": "dictionary_learning", "d_in": ae.activation_dim, "d_sae": ae.dict_size}
    raise SystemExit(f"{folder}: no SAE files the libraries read")


for case in a.cases:
    name = os.path.basename(os.path.normpath(case))
    x = load_file(os.path.join(case, "x.safetensors"))["x"]
    with torch.no_grad():
        f, x_hat, info = run(os.path.join(case, "sae"), x)
    save_file({"f": f.contiguous(), "x_hat": x_hat.contiguous()}, os.path.join(a.out, f"{name}.safetensors"))
    json.dump(info, open(os.path.join(a.out, f"{name}.json"), "w"))
print("sae_written_reference: wrote", a.out, file=sys.stderr)
