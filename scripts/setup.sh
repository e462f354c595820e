#!/usr/bin/env bash
# Create .venv and install ablate with its test tools and the extras the tests use (idempotent; pip only:
# torch comes as a wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "ablate needs Python >= 3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
echo "installing ablate and its dependencies into .venv (the first time, torch is a download of several hundred MB)"
# setuptools tells every editable install of a flat layout (ablate/ and plugins/ -> ablate_plugins beside
# pyproject.toml) to beware same-named folders; the layout is deliberate, so that notice is silenced here.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install --progress-bar on -e '.[dev,ray,tensorboard,mlflow,diffusers,parquet]'
echo "ready: .venv/bin/ablate --help"
