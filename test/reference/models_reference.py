"""Reference activations for the transformer parity tests, from PyTorch + transformers (fp32, eager
attention, eval mode).

Suites (--suite):
  tiny    small random GPT-NeoX and BERT checkpoints covering the config switches
  pythia  one random GPT-NeoX at the exact Pythia-70m-deduped shape
  minilm  the real all-MiniLM-L6-v2 weights (--model DIR) on the first --n bios of --bios FILE,
          tokenized by transformers' tokenizer (max_length 128, padding to the longest)

Each case is a folder <out>/<name>/ holding the checkpoint (config.json + model.safetensors, from
save_pretrained(safe_serialization=True)) and expected.safetensors with `input_ids` and
`attention_mask` ([n, seq], right padding) and the activation at every hook: `embed` (=
hidden_states[0]), `layers.{i}.attn_out` (attention output after its dense projection),
`layers.{i}.mlp_out` (MLP output projection), `layers.{i}.resid_out` (the layer module's output),
plus `logits` for GPT-NeoX. The minilm case also holds `f64.<hook>`: the same pass in float64
(rounded to float32), to tell fp32 rounding from disagreement. Random cases also hold `edited.*`: the last layer's resid_out (and
logits) of a run with layers.0.mlp_out zeroed and layers.1.attn_out doubled, applied with forward
hooks on the modules. <out>/index.json lists the cases.

Random weights are redrawn (seeded) at a larger scale than transformers' init (std 0.02), so that
attention is far from uniform and position, mask or rotary mistakes change the activations.
"""
import argparse, json, math, os
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel, GPTNeoXConfig, GPTNeoXForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--suite", choices=["tiny", "pythia", "minilm"], required=True)
p.add_argument("--model")
p.add_argument("--bios")
p.add_argument("--n", type=int, default=16)
a = p.parse_args()
torch.set_num_threads(1)


def neox_config(**kw):
    base = dict(vocab_size=101, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
                rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=64, layer_norm_eps=1e-5,
                use_parallel_residual=True, hidden_act="gelu", tie_word_embeddings=False,
                attn_implementation="eager")
    base.update(kw)
    return GPTNeoXConfig(**base)


def bert_config(**kw):
    base = dict(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                max_position_embeddings=40, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
                position_embedding_type="absolute", attn_implementation="eager")
    base.update(kw)
    return BertConfig(**base)


def randomize(model, seed):
    """Redraws every parameter: LayerNorm gains 1 + 0.1 N, biases 0.1 N, embeddings N(0, 1), matrices
    N(0, 1/fan_in) (query/key projections twice that scale, for peaked attention)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            r = torch.randn(prm.shape, generator=g)
            if "LayerNorm" in name or "layernorm" in name or "layer_norm" in name:
                prm.copy_(1 + 0.1 * r if name.endswith("weight") else 0.1 * r)
            elif name.endswith("bias"):
                prm.copy_(0.1 * r)
            elif "embed" in name and prm.dim() == 2 and "embed_out" not in name:
                prm.copy_(r)
            else:
                scale = 2.0 if ("query" in name or ".key." in name) else 1.0
                prm.copy_(r * scale / math.sqrt(prm.shape[1]))


def right_padded_batch(lengths, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), seq), generator=g)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    return ids, mask


def hook_modules(model, kind):
    """(hook name -> module whose forward output is that hook), in forward order."""
    out = {}
    if kind == "gpt_neox":
        for i, layer in enumerate(model.gpt_neox.layers):
            out[f"layers.{i}.attn_out"] = layer.attention
            out[f"layers.{i}.mlp_out"] = layer.mlp
            out[f"layers.{i}.resid_out"] = layer
    else:
        bert = model.bert if hasattr(model, "bert") else model
        for i, layer in enumerate(bert.encoder.layer):
            out[f"layers.{i}.attn_out"] = layer.attention.output.dense
            out[f"layers.{i}.mlp_out"] = layer.output.dense
            out[f"layers.{i}.resid_out"] = layer
    return out


def first(o):
    return o[0] if isinstance(o, tuple) else o


def run(model, kind, ids, mask, edits=None):
    """Forward pass; returns {hook: activation} (+ logits). `edits` maps hook -> fn(act) -> act."""
    acts, handles = {}, []
    for name, module in hook_modules(model, kind).items():
        def hook(_m, _inp, out, name=name):
            if edits and name in edits:
                new = edits[name](first(out))
                out = (new, *out[1:]) if isinstance(out, tuple) else new
            acts[name] = first(out).detach().clone()
            return out
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            res = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    acts["embed"] = res.hidden_states[0].detach().clone()
    if kind == "gpt_neox":
        acts["logits"] = res.logits.detach().clone()
    return acts


EDITS = {"layers.0.mlp_out": torch.zeros_like, "layers.1.attn_out": lambda x: 2 * x}


def write_case(name, model, kind, ids, mask, with_edits):
    folder = os.path.join(a.out, name)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    expected = {"input_ids": ids.clone(), "attention_mask": mask.clone()}
    expected.update(run(model, kind, ids, mask))
    n_layers = model.config.num_hidden_layers
    if with_edits:
        edited = run(model, kind, ids, mask, EDITS)
        last = f"layers.{n_layers - 1}.resid_out"
        expected["edited." + last] = edited[last]
        if "logits" in edited:
            expected["edited.logits"] = edited["logits"]
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(folder, "expected.safetensors"))
    print(f"models_reference: wrote {name} ({kind}, {n_layers} layers, batch {list(ids.shape)})", flush=True)
    return {"name": name, "kind": kind, "nLayers": n_layers, "edits": with_edits}


cases = []
if a.suite == "tiny":
    specs = [
        ("neox_rot25_parallel", "gpt_neox", neox_config()),
        ("neox_rot100_sequential", "gpt_neox", neox_config(num_hidden_layers=2, rotary_pct=1.0, use_parallel_residual=False,
                                                           rotary_emb_base=500, layer_norm_eps=1e-6)),
        ("neox_rot50_sequential_tied_nobias", "gpt_neox", neox_config(hidden_size=48, num_attention_heads=3, intermediate_size=96,
                                                                      rotary_pct=0.5, use_parallel_residual=False,
                                                                      tie_word_embeddings=True, attention_bias=False)),
        ("bert_bare", "bert", bert_config()),
        ("bert_prefixed_mlm", "bert", bert_config(hidden_size=48, num_attention_heads=3, num_hidden_layers=3, intermediate_size=96,
                                                   layer_norm_eps=1e-5)),
    ]
    for i, (name, kind, cfg) in enumerate(specs):
        torch.manual_seed(42 + i)
        if kind == "gpt_neox":
            model = GPTNeoXForCausalLM(cfg)
        else:
            model = BertForMaskedLM(cfg) if "mlm" in name else BertModel(cfg, add_pooling_layer=True)
        model.eval()
        randomize(model, 42 + i)
        if kind == "gpt_neox" and cfg.tie_word_embeddings:
            model.tie_weights()
        ids, mask = right_padded_batch([12, 9, 4], cfg.vocab_size, 42 + i)
        cases.append(write_case(name, model, kind, ids, mask, True))
elif a.suite == "pythia":
    cfg = neox_config(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048,
                      rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=2048, use_parallel_residual=True)
    torch.manual_seed(42)
    model = GPTNeoXForCausalLM(cfg).eval()
    randomize(model, 42)
    ids, mask = right_padded_batch([16, 11, 5], cfg.vocab_size, 42)
    cases.append(write_case("pythia70m_shape", model, "gpt_neox", ids, mask, False))
else:
    if not a.model or not a.bios:
        p.error("--suite minilm needs --model and --bios")
    tok = AutoTokenizer.from_pretrained(a.model)
    model = BertModel.from_pretrained(a.model, attn_implementation="eager").eval()
    texts = []
    with open(a.bios) as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == a.n:
                break
    enc = tok(texts, max_length=128, padding=True, truncation=True, return_tensors="pt")
    folder = os.path.join(a.out, "minilm")
    os.makedirs(folder)
    expected = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    expected.update(run(model, "bert", enc["input_ids"], enc["attention_mask"]))
    # The same pass in float64: how far PyTorch's own fp32 result is from exact arithmetic.
    exact = run(model.double(), "bert", enc["input_ids"], enc["attention_mask"])
    expected.update({"f64." + k: v.float() for k, v in exact.items()})
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(folder, "expected.safetensors"))
    print(f"models_reference: wrote minilm (batch {list(enc['input_ids'].shape)})", flush=True)
    cases.append({"name": "minilm", "kind": "bert", "nLayers": model.config.num_hidden_layers, "edits": False})

with open(os.path.join(a.out, "index.json"), "w") as f:
    json.dump(cases, f, indent=1)
