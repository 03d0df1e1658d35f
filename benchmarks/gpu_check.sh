#!/usr/bin/env bash
# GPU check (issue 12), under 8 minutes on one GPU: ganforge's training speed (bf16 + channels_last +
# GPU-resident data) against the plain PyTorch DCGAN example loop, for the 28 px and 64 px recommended
# presets, then a fixed training budget each; then (issue 24) the 28 px preset trained ~15 s in each
# --precision (fp32, bf16, fp16), printing images/s, the mean losses and fp16's skipped steps (about 2
# minutes more); see benchmarks/gpu_check.py.
#
# Run from anywhere on a machine with an NVIDIA GPU and a python3 that has CUDA PyTorch:
#   bash benchmarks/gpu_check.sh              # both parts, about 10 minutes
#   bash benchmarks/gpu_check.sh precision    # the precision part alone, about 2 minutes
#   bash benchmarks/gpu_check.sh seeds        # each seed preset's full-run cost (benchmarks/seed_step_cost.py)
# What it needs besides torch: pydantic (pip installs it from .whl/ when missing, for machines without an
# index: benchmarks/gpu_wheels.sh fills .whl/ beforehand) and Fashion-MNIST's .gz files (FASHION_DIR,
# .gpu/fashion-mnist, or Debian's /usr/share/datasets/fashion-mnist).
# Results: gpu_check.json and the final checkpoints, packed in $OUT/gpu_check.tar when OUT is set (a lent
# GPU machine returns only files directly under $OUT), and gpu_precision.json (in $OUT too). FID_10k runs there if the inception-tf weights are
# installed, else afterwards beside them: tar xf gpu_check.tar -C DIR && python benchmarks/gpu_check.py --fid-only DIR
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  "$PY" -m pip install --quiet --no-index --find-links .whl pydantic
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
WORK=${GPU_CHECK_WORK:-/tmp/ganforge-gpu-check}
rm -rf "$WORK"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device visible: nothing to check here (python benchmarks/gpu_check.py --device cpu ... smoke-tests)"
  exit 1
fi
status=0
if [ "${1:-}" = "seeds" ]; then
  # what each seed preset's full run costs on this GPU (seconds per step of its own step, times its length)
  shift
  mkdir -p "${OUT:-$WORK}"
  timeout 400 "$PY" benchmarks/seed_step_cost.py --device cuda --json "${OUT:-$WORK}/seed_step_cost.json" "$@" || status=$?
  exit $status
fi
if [ "${1:-}" = "precision" ]; then
  shift
else
  timeout 470 "$PY" benchmarks/gpu_check.py --out "$WORK" "$@" || status=$?
fi
timeout 150 "$PY" benchmarks/gpu_check.py --precision-check --out "$WORK" "$@" || status=$?
exit $status
