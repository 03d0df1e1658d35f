#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels benchmarks/gpu_check.sh needs on a GPU machine that has CUDA
# PyTorch but no package index (Python 3.12, x86-64), and copy Fashion-MNIST to .gpu/ beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl .gpu
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl pydantic pydantic-core annotated-types typing-inspection typing-extensions
if [ -d /usr/share/datasets/fashion-mnist ]; then cp -r /usr/share/datasets/fashion-mnist .gpu/; fi
du -sh .whl .gpu
