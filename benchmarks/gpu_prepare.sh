#!/usr/bin/env bash
# Before a lent GPU's first call, on the development machine: stage the shared kit (wheels the GPU image lacks,
# CIFAR-10, the Inception weights: ../shared/gpu/stage.sh) plus pytest, which the GPU test tier needs and the GPU
# image lacks (pure-Python wheels for Python 3.12). Then, with the device tool, two calls back to back:
#   1. carry [".gpu/a"]: source .gpu/a/env.sh && nvidia-smi -L
#   2. carry [".gpu/b"]: source .gpu/a/env.sh && OUT=$OUT bash benchmarks/gpu_smoke.sh     (timeout ≤ 600 s)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
bash ../shared/gpu/stage.sh
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform any \
    -d .gpu/a/wheels pytest pluggy iniconfig packaging
du -sh .gpu/a .gpu/b
