#!/usr/bin/env bash
# Creates the Python reference environment (PyTorch CPU + transformers) used by the parity tests.
# Idempotent: a venv whose stamp matches the requirements is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-ref
REQ=test/reference/requirements.txt
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import torch, transformers" 2>/dev/null; then
  exit 0
fi
echo "setting up the Python reference environment in $VENV (PyTorch CPU + transformers)..." >&2
PY=${PYTHON:-python3}
if [ -d "$VENV" ]; then rm -rf "$VENV"; fi
"$PY" -m venv "$VENV.tmp"
"$VENV.tmp/bin/pip" install --quiet --upgrade pip >&2
# torch 2.13.0 is the CPU wheel; a plain `torch` would pull a multi-GB CUDA build.
"$VENV.tmp/bin/pip" install --quiet -r "$REQ" >&2
echo "$want" > "$VENV.tmp/.requirements.sha256"
# Fix the shebangs of console scripts after the rename; we only call python directly.
mv "$VENV.tmp" "$VENV"
echo "Python reference environment ready." >&2
