#!/usr/bin/env bash
# Create .venv and install ablate with its test tools (idempotent; pip only: torch comes as a wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
