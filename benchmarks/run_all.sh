#!/usr/bin/env bash
# Run both benchmarks and print their RATIO lines at the end.
#   bash benchmarks/run_all.sh                      # CPU: train mlp,mlp2d; sampling mlp (batch 256) and mlp2d (batch 1000)
#   bash benchmarks/run_all.sh --device cuda        # GPU: adds the small unet to the training benchmark
# Extra arguments go to both scripts (e.g. --threads 1, --rounds 7); TRAIN_MODELS overrides the training models.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
case " $* " in
  *" --device cuda"*|*" --device=cuda"*) DEFAULT_MODELS=mlp,mlp2d,unet ;;
  *) DEFAULT_MODELS=mlp,mlp2d ;;
esac
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
"$PY" benchmarks/bench_train_overhead.py --models "${TRAIN_MODELS:-$DEFAULT_MODELS}" "$@" | tee -a "$LOG"
echo
"$PY" benchmarks/bench_sampling.py --model mlp --batch 256 "$@" | tee -a "$LOG"
echo
"$PY" benchmarks/bench_sampling.py --model mlp2d --batch 1000 "$@" | tee -a "$LOG"
echo
echo "== summary"
grep '^RATIO' "$LOG"
