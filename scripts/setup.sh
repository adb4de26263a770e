#!/usr/bin/env bash
# Create .venv (if needed) and install slide2vec-dagster with its test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# cuCIM's CPU reader, without its declared CUDA-12 toolkit dependencies (cupy etc., ~3 GB, unused on
# the CPU and conflicting with torch's CUDA-13 pins); lazy-loader, which it imports, is in pyproject.
.venv/bin/python -m pip install -q --no-deps 'cucim-cu13==26.10.0'
# MOOZY's model code (moozy-slide / moozy presets and their tests), without its declared dependencies:
# huggingface-hub<2 would downgrade the hub client, and wandb / scikit-survival / h5py serve its training CLI.
.venv/bin/python -m pip install -q --no-deps 'moozy==0.1.1'
.venv/bin/python -c "import slide2vec_dagster, cucim, openslide, torch, moozy.models.moozy_slide_encoder; print('slide2vec-dagster environment ready:', '.venv')"
