#!/usr/bin/env bash
# Creates the Python reference environment used by the parity tests: PyTorch CPU + transformers, and
# the SAE libraries sae-lens, eai-sparsify and dictionary-learning.
# Idempotent: a venv whose stamp matches the requirements is reused.
#
# test/reference/requirements.txt pins every version. Its lines after the "--no-deps" marker are
# installed in a second step without their declared dependencies: those libraries declare far more
# than the modules we import need (plotting, experiment tracking, nnsight's torchvision and
# diffusers), and the first step pins what those modules do import. The import check below fails
# the build if a pin is missing.
#
# SAE_ERASER_REF_VENV builds elsewhere (a private venv to try new pins in); the tests use .venv-ref.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SAE_ERASER_REF_VENV:-.venv-ref}
REQ=test/reference/requirements.txt
STAMP="$VENV/.requirements.sha256"
IMPORTS="import torch, transformers, sae_lens, sparsify, dictionary_learning"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
ready() { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; }
if ready; then exit 0; fi
# Test workers start in parallel: one builds, the others wait for it here and then reuse its venv.
mkdir -p .cache
exec 9>".cache/python-ref-venv.lock"
flock 9
if ready; then exit 0; fi
echo "setting up the Python reference environment in $VENV (PyTorch CPU, transformers, SAE libraries)..." >&2
PY=${PYTHON:-python3}
rm -rf "$VENV" "$VENV.tmp"
"$PY" -m venv "$VENV.tmp"
"$VENV.tmp/bin/pip" install --quiet --upgrade pip >&2
with_deps=$(mktemp)
no_deps=$(mktemp)
trap 'rm -f "$with_deps" "$no_deps"' EXIT
awk '/^# ---- installed with --no-deps/ { nodeps = 1; next } { print > (nodeps ? "'"$no_deps"'" : "'"$with_deps"'") }' "$REQ"
"$VENV.tmp/bin/pip" install --quiet -r "$with_deps" >&2
"$VENV.tmp/bin/pip" install --quiet --no-deps -r "$no_deps" >&2
# Fails here, not in a test, when an import needs a package the pins above leave out.
"$VENV.tmp/bin/python" -c "$IMPORTS" >&2
echo "$want" > "$VENV.tmp/.requirements.sha256"
mv "$VENV.tmp" "$VENV"
echo "Python reference environment ready." >&2
