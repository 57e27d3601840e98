"""Writes SAE checkpoints in the formats sae-eraser loads, with PyTorch, and the expected
encode/decode outputs computed by the libraries themselves, loading the very files written here:

  dictionary_learning 0.1.0 (ae.pt = torch.save(state_dict) [+ config.json]):
      dictionary_learning.AutoEncoder.from_pretrained(path, normalize_decoder=False), .encode, .decode
  sae-lens 6.54.12 (cfg.json + sae_weights.safetensors, pre-6.0 and 6.x configs):
      sae_lens.SAE.load_from_disk(folder), .encode, .decode  (standard/ReLU, TopK, JumpReLU)
  eai-sparsify 1.3.3 (cfg.json + sae.safetensors):
      sparsify.SparseCoder.load_from_disk(folder), .encode (top-k acts and indices, scattered to a
      dense f here), .decode

No formula is re-implemented here. Cases without library values: files our loaders must refuse (NaN
weights, SAELens activation normalisation and gated SAEs, an unknown format) and the pickle part
(--part pickle: a pickle zoo of dtypes, views and containers with its expected values, malicious .pt
files whose __reduce__ runs os.system / builtins.exec / posix.system / subprocess, checked here to
really run under torch.load(weights_only=False), then the marker is removed), which tests our torch
pickle reader, not an SAE library. Also a Sparse Feature Circuits zip. Expected arrays go to
<out>/expected/<case>.safetensors (x, f, x_hat).
"""
import argparse, collections, io, json, os, pickle, subprocess, sys, tempfile, zipfile
import torch
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--part", choices=["sae", "pickle"], default="sae",
               help="sae: SAE checkpoints and expected outputs; pickle: the pickle zoo and malicious files")
a = p.parse_args()
OUT = a.out
os.makedirs(os.path.join(OUT, "expected"), exist_ok=True)
g = torch.Generator().manual_seed(42)
MARKER = os.path.join(tempfile.gettempdir(), "sae_eraser_malicious_pickle_marker")


def randn(*shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def save_expected(case, x, f, x_hat):
    save_file({"x": x.contiguous(), "f": f.contiguous(), "x_hat": x_hat.contiguous()},
              os.path.join(OUT, "expected", f"{case}.safetensors"))


def dl_state(d, n):
    enc_w = randn(n, d, scale=1 / d ** 0.5)
    dec_w = randn(d, n)
    dec_w = dec_w / dec_w.norm(dim=0, keepdim=True)
    return collections.OrderedDict(
        bias=randn(d, scale=0.1), **{"encoder.weight": enc_w, "encoder.bias": randn(n, scale=0.05) - 0.02,
                                     "decoder.weight": dec_w})



def write_sae_part():
    # The libraries are imported only for this part (the pickle part needs torch alone).
    from dictionary_learning import AutoEncoder
    from sae_lens import SAE
    from sparsify import SparseCoder

    # ---------------------------------------------------------------- dictionary_learning AutoEncoder
    def dl_forward(path, x):
        # normalize_decoder=False: the weights as stored (our loader does not renormalise either).
        ae = AutoEncoder.from_pretrained(path, normalize_decoder=False)
        with torch.no_grad():
            f = ae.encode(x)
            return f, ae.decode(f)


    def write_dl(case, folder, d, n, tokens, config=None, transform=None):
        os.makedirs(folder, exist_ok=True)
        sd = dl_state(d, n)
        if transform is not None:
            sd = transform(sd)
        torch.save(sd, os.path.join(folder, "ae.pt"))
        if config is not None:
            json.dump(config, open(os.path.join(folder, "config.json"), "w"))
        x = randn(tokens, d)
        f, x_hat = dl_forward(os.path.join(folder, "ae.pt"), x)
        save_expected(case, x, f, x_hat)


    write_dl("dl_small", os.path.join(OUT, "dl_small"), 16, 64, 10,
             config={"trainer": {"dict_class": "AutoEncoder", "trainer_class": "StandardTrainer", "activation_dim": 16,
                                 "dict_size": 64, "lm_name": "EleutherAI/pythia-70m-deduped", "layer": 3}})
    # The full Sparse Feature Circuits shape, in their folder layout.
    write_dl("dl_full", os.path.join(OUT, "fc", "resid_out_layer3", "10_32768"), 512, 32768, 64)


    def f16_views(sd):
        # float16 storages; decoder.weight saved as a transposed (non-contiguous) view, bias as a slice
        # with a storage offset into a larger buffer, and encoder.bias sharing that buffer too.
        d = sd["bias"].numel()
        n = sd["encoder.bias"].numel()
        dec_t = sd["decoder.weight"].T.contiguous().half()  # [n, d]
        buf = torch.cat([randn(3), sd["bias"], sd["encoder.bias"], randn(2)]).half()
        out = collections.OrderedDict()
        out["bias"] = buf[3:3 + d]
        out["encoder.weight"] = sd["encoder.weight"].half()
        out["encoder.bias"] = buf[3 + d:3 + d + n]
        out["decoder.weight"] = dec_t.T  # [d, n], stride (1, d)
        assert not out["decoder.weight"].is_contiguous() and out["bias"].storage_offset() == 3
        return out


    write_dl("dl_view_f16", os.path.join(OUT, "dl_view_f16"), 24, 96, 12, transform=f16_views)


    def with_nan(sd):
        sd["decoder.weight"][2, 5] = float("nan")
        return sd


    os.makedirs(os.path.join(OUT, "dl_nan"), exist_ok=True)
    sd = with_nan(dl_state(8, 32))
    torch.save(sd, os.path.join(OUT, "dl_nan", "ae.pt"))

    # A Sparse Feature Circuits zip (small dictionaries, deflated, with the paper's path prefix).
    with zipfile.ZipFile(os.path.join(OUT, "fc_small.zip"), "w", compression=zipfile.ZIP_DEFLATED) as z:
        for site in ["embed", "attn_out_layer0", "resid_out_layer1"]:
            buf = io.BytesIO()
            torch.save(dl_state(8, 32), buf)
            z.writestr(f"dictionaries/pythia-70m-deduped/{site}/10_32768/ae.pt", buf.getvalue())
        z.writestr("dictionaries/pythia-70m-deduped/README.txt", "not a dictionary")


    # ---------------------------------------------------------------- SAELens
    def sl_forward(folder, x, architecture):
        sae = SAE.load_from_disk(folder, device="cpu")
        assert sae.cfg.architecture() == architecture, (folder, sae.cfg.architecture())
        with torch.no_grad():
            f = sae.encode(x)
            return f, sae.decode(f)


    def write_saelens(case, cfg, tokens=20, threshold=False, extra=None, library=None):
        folder = os.path.join(OUT, case)
        os.makedirs(folder, exist_ok=True)
        d, n = cfg["d_in"], cfg["d_sae"]
        w = {"W_enc": randn(d, n, scale=1 / d ** 0.5), "b_enc": randn(n, scale=0.05), "W_dec": randn(n, d, scale=0.2),
             "b_dec": randn(d, scale=0.1)}
        if threshold:
            w["threshold"] = torch.rand(n, generator=g) * 0.3
        w.update(extra or {})
        save_file(w, os.path.join(folder, "sae_weights.safetensors"))
        json.dump(cfg, open(os.path.join(folder, "cfg.json"), "w"))
        x = randn(tokens, d)
        if library is not None:  # the architecture sae_lens must read from cfg.json
            f, x_hat = sl_forward(folder, x, library)
            save_expected(case, x, f, x_hat)


    # The pre-6.0 flat config of the Pythia-70m-deduped "sm" releases (hook_point, no architecture).
    sm_cfg = {"model_name": "pythia-70m-deduped", "hook_point": "blocks.3.hook_resid_post", "hook_point_layer": 3,
              "hook_point_head_index": None, "d_in": 64, "d_sae": 256, "dtype": "torch.float32", "device": "cuda",
              "context_size": 128, "prepend_bos": True, "dataset_path": "EleutherAI/the_pile_deduplicated",
              "apply_b_dec_to_input": True, "normalize_activations": False}
    write_saelens("saelens_relu", sm_cfg, library="standard")
    write_saelens("saelens_resid_pre0", {**sm_cfg, "hook_point": "blocks.0.hook_resid_pre", "hook_point_layer": 0,
                                         "apply_b_dec_to_input": False}, library="standard")
    write_saelens("saelens_topk_old", {**sm_cfg, "hook_point": "blocks.2.hook_mlp_out", "activation_fn_str": "topk",
                                       "activation_fn_kwargs": {"k": 12}}, library="topk")
    v6 = {"d_in": 48, "d_sae": 192, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
          "normalize_activations": "none", "reshape_activations": "none",
          "metadata": {"model_name": "pythia-70m-deduped", "hook_name": "blocks.1.hook_attn_out", "sae_lens_version": "6.5.1"}}
    write_saelens("saelens_topk", {**v6, "architecture": "topk", "k": 10}, library="topk")
    write_saelens("saelens_jumprelu", {**v6, "architecture": "jumprelu", "apply_b_dec_to_input": False}, threshold=True,
                  library="jumprelu")
    # Refused by our loader (no library values needed): run-time normalisation, gated weights, NaN.
    write_saelens("saelens_norm", {**v6, "architecture": "standard", "normalize_activations": "expected_average_only_in"})
    write_saelens("saelens_gated", {**v6, "architecture": "gated"})
    write_saelens("saelens_nan", {**v6, "architecture": "standard"}, extra={"W_enc": torch.full((48, 192), float("nan"))})


    # ---------------------------------------------------------------- sparsify
    def write_sparsify(case, hookpoint, d, expansion, k, tokens=20):
        folder = os.path.join(OUT, case, hookpoint)
        os.makedirs(folder, exist_ok=True)
        n = d * expansion
        enc_w = randn(n, d, scale=1 / d ** 0.5)
        w = {"encoder.weight": enc_w, "encoder.bias": randn(n, scale=0.05),
             "W_dec": enc_w / enc_w.norm(dim=1, keepdim=True), "b_dec": randn(d, scale=0.1)}
        save_file(w, os.path.join(folder, "sae.safetensors"))
        json.dump({"activation": "topk", "expansion_factor": expansion, "normalize_decoder": True, "num_latents": 0,
                   "k": k, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": d},
                  open(os.path.join(folder, "cfg.json"), "w"))
        x = randn(tokens, d)
        sae = SparseCoder.load_from_disk(folder)
        assert sae.cfg.k == k and sae.num_latents == n
        with torch.no_grad():
            enc = sae.encode(x)
            f = torch.zeros(tokens, n).scatter_(-1, enc.top_indices, enc.top_acts)
            save_expected(case, x, f, sae.decode(enc.top_acts, enc.top_indices))


    write_sparsify("sparsify", "layers.3", 40, 4, 7)

    # ---------------------------------------------------------------- unknown format
    os.makedirs(os.path.join(OUT, "unknown"), exist_ok=True)
    open(os.path.join(OUT, "unknown", "weights.bin"), "wb").write(b"\0" * 16)
    json.dump({"hello": 1}, open(os.path.join(OUT, "unknown", "config.yaml"), "w"))




def write_pickle_part():
    # ---------------------------------------------------------------- pickle zoo
    pk = os.path.join(OUT, "pickle")
    os.makedirs(pk, exist_ok=True)
    base = randn(6, 5)
    shared = randn(20)
    zoo = collections.OrderedDict()
    zoo["f32"] = randn(3, 4)
    zoo["f32_t"] = base.T  # non-contiguous
    zoo["f32_slice"] = shared[4:10]  # storage offset
    zoo["f32_strided"] = shared[1:19:3]  # offset + stride 3, same storage as f32_slice
    zoo["f32_col"] = base[:, 2]  # stride 5
    zoo["f64"] = randn(2, 3).double()
    zoo["f16"] = randn(4, 2).half().T
    zoo["bf16"] = randn(7).bfloat16()
    zoo["i64"] = torch.tensor([[1, -2, 3], [2 ** 40, -(2 ** 33), 0]], dtype=torch.int64)
    zoo["i32"] = torch.tensor([7, -8, 9], dtype=torch.int32)
    zoo["u8"] = torch.tensor([0, 255, 17], dtype=torch.uint8)
    zoo["bool"] = torch.tensor([True, False, True])
    zoo["scalar"] = torch.tensor(2.5)
    zoo["empty"] = torch.zeros(0, 4)
    zoo["param"] = torch.nn.Parameter(randn(2, 2))
    zoo["meta"] = {"name": "sae", "unicode": "naïve ✓", "n": 3, "neg": -7, "big": 2 ** 70, "negbig": -(2 ** 65),
                   "pi": 3.25, "none": None, "flag": True, "off": False, "tuple": (1, "two", 3.0), "list": [1, [2, 3]],
                   "intkey": {1: "one", 2: "two"}, "bytes": b"\x00\x01\xff"}
    torch.save(zoo, os.path.join(pk, "zoo.pt"))


    def to_json(v):
        if isinstance(v, torch.Tensor):
            return {"tensor": True, "dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                    "values": v.detach().double().flatten().tolist() if v.is_floating_point() or v.dtype == torch.bool
                    else [int(t) for t in v.flatten().tolist()]}
        if isinstance(v, dict):
            return {"dict": [[to_json(k), to_json(x)] for k, x in v.items()]}
        if isinstance(v, tuple):
            return {"tuple": [to_json(x) for x in v]}
        if isinstance(v, list):
            return [to_json(x) for x in v]
        if isinstance(v, bytes):
            return {"bytes": list(v)}
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2 ** 53:
            return {"bigint": str(v)}
        return v


    json.dump(to_json(zoo), open(os.path.join(pk, "zoo.json"), "w"))
    # A legacy (non-zip) torch.save file and a file that is not a .pt at all.
    torch.save({"a": torch.zeros(2)}, os.path.join(pk, "legacy.pt"), _use_new_zipfile_serialization=False)
    open(os.path.join(pk, "garbage.pt"), "wb").write(b"hello world, not a pickle")


    # ---------------------------------------------------------------- malicious pickles
    class SystemPayload:
        def __reduce__(self):
            return (os.system, (f"touch {MARKER}",))


    class ExecPayload:
        def __reduce__(self):
            import builtins
            return (builtins.exec, (f"open({MARKER!r}, 'w').write('pwned')",))


    class PopenPayload:
        def __reduce__(self):
            return (subprocess.Popen, (["touch", MARKER],))


    def torch_zip_with_pickle(path, pkl):
        # Same layout torch.save writes, with a hand-made data.pkl.
        name = os.path.splitext(os.path.basename(path))[0]
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(f"{name}/data.pkl", pkl)
            z.writestr(f"{name}/byteorder", "little")
            z.writestr(f"{name}/version", "3\n")


    mal = os.path.join(OUT, "malicious")
    os.makedirs(mal, exist_ok=True)
    # 1. torch.save of a state_dict with a payload next to real tensors (protocol 2, GLOBAL opcode).
    sd = dl_state(8, 32)
    sd["evil"] = SystemPayload()
    torch.save(sd, os.path.join(mal, "ae_system.pt"))
    # 2. builtins.exec via protocol 4 (STACK_GLOBAL) in a hand-made archive.
    torch_zip_with_pickle(os.path.join(mal, "exec.pt"), pickle.dumps({"w": ExecPayload()}, protocol=4))
    # 3. posix.system spelled out in a protocol-0 pickle with the INST opcode.
    torch_zip_with_pickle(os.path.join(mal, "posix_inst.pt"), f"(S'touch {MARKER}'\niposix\nsystem\n.".encode())
    # 4. subprocess.Popen (protocol 5).
    torch_zip_with_pickle(os.path.join(mal, "popen.pt"), pickle.dumps([PopenPayload()], protocol=5))

    # Prove each payload is live: an unrestricted torch.load / pickle.loads creates the marker.
    live = {}
    for name in ["ae_system.pt", "exec.pt", "posix_inst.pt", "popen.pt"]:
        if os.path.exists(MARKER):
            os.remove(MARKER)
        code = ("import torch, sys, time; torch.load(sys.argv[1], weights_only=False); time.sleep(0.3)")
        subprocess.run([sys.executable, "-c", code, os.path.join(mal, name)], check=False, capture_output=True)
        live[name] = os.path.exists(MARKER)
        if os.path.exists(MARKER):
            os.remove(MARKER)
    json.dump({"marker": MARKER, "live": live}, open(os.path.join(mal, "payloads.json"), "w"))



if a.part == "sae":
    write_sae_part()
else:
    write_pickle_part()
print("sae_reference: wrote", OUT, file=sys.stderr)
