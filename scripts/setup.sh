#!/usr/bin/env bash
# Create .venv and install ablate with its test tools and the extras the tests use (idempotent; pip only:
# torch comes as a wheel). CI (.ci/run) runs this script, so the tests always find every extra they exercise.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "ablate needs Python >= 3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
EXTRAS="dev,ray,tensorboard,mlflow,diffusers,parquet"
echo "installing ablate into .venv with the extras the tests use: ${EXTRAS} (ray alone is about 240 MB)"
if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] && [ -z "${PIP_INDEX_URL:-}${PIP_EXTRA_INDEX_URL:-}" ] \
  && ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  # PyPI has no CPU-only torch for Linux x86_64: its torch wheel pulls in CUDA's libraries (nvidia-*,
  # triton) whether or not the machine has a GPU. PyTorch's own CPU index has the small build (README).
  echo "the first time, PyPI's torch for Linux x86_64 is its CUDA build, GPU or not: about 3 GB to download and"
  echo "about 5 GB of a .venv of about 6 GB; README.md says how to take PyTorch's CPU build instead"
fi
# setuptools tells every editable install of a flat layout (ablate/ and plugins/ -> ablate_plugins beside
# pyproject.toml) to beware same-named folders; the layout is deliberate, so that notice is silenced here.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install --progress-bar on -e ".[${EXTRAS}]"
echo "ready: .venv/bin/ablate --help ($(du -sh .venv | cut -f1) in .venv)"
