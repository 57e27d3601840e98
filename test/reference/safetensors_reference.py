"""Writes safetensors files of every dtype with the reference `safetensors` package, plus a
sharded checkpoint, and the expected values as JSON (float64 lists). With --check FILE, instead
reads FILE (written by sae-eraser) and prints its tensors as JSON to stdout."""
import argparse, json, os, sys
import torch
from safetensors.torch import save_file, load_file

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--check")
a = p.parse_args()

if a.check:
    t = load_file(a.check)
    json.dump({k: {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.double().flatten().tolist()} for k, v in t.items()}, sys.stdout)
    sys.exit(0)

g = torch.Generator().manual_seed(0)
x = torch.randn(3, 5, generator=g) * 3
tensors = {
    "f32": x.clone(),
    "f64": x.double(),
    "f16": x.half(),
    "bf16": x.bfloat16(),
    "i64": torch.tensor([[1, -2, 3], [2**31 - 1, -(2**31), 0]], dtype=torch.int64),
    "i32": torch.tensor([7, -8, 9], dtype=torch.int32),
    "u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 4),
}
save_file(tensors, os.path.join(a.out, "all_dtypes.safetensors"), metadata={"format": "pt", "note": "hello"})
expected = {k: {"shape": list(v.shape), "values": v.double().flatten().tolist()} for k, v in tensors.items()}
json.dump(expected, open(os.path.join(a.out, "all_dtypes.json"), "w"))

shard_dir = os.path.join(a.out, "sharded")
os.makedirs(shard_dir)
w1, w2 = torch.randn(4, 4, generator=g), torch.randn(2, generator=g)
save_file({"a.weight": w1}, os.path.join(shard_dir, "model-00001-of-00002.safetensors"))
save_file({"b.bias": w2}, os.path.join(shard_dir, "model-00002-of-00002.safetensors"))
json.dump({"metadata": {"total_size": 72}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.bias": "model-00002-of-00002.safetensors"}}, open(os.path.join(shard_dir, "model.safetensors.index.json"), "w"))
json.dump({"a.weight": w1.flatten().tolist(), "b.bias": w2.tolist()}, open(os.path.join(shard_dir, "expected.json"), "w"))
