#!/usr/bin/env bash
# The GPU protocol in one call: the GPU test tier, the GPU benchmarks and the paper-cifar10-smoke preset, in at most
# ~9 minutes of one H200 (each phase has its own time limit; what finished is written even when a phase is cut).
#
#   source .gpu/a/env.sh && OUT=$OUT bash benchmarks/gpu_smoke.sh     # on the lent machine, after
#                                                                      # benchmarks/gpu_prepare.sh here
#
# Writes at most 8 files to $OUT (the device tool brings back ≤ 8 files of ≤ 16 MiB):
#   log.txt               everything every phase printed, with each phase's start time
#   phases.json           seconds and exit status of each phase
#   bench-classifier.json bench-sampling.json bench-fid.json   the three GPU benchmarks (each with its naive reference)
#   smoke-results.json    the run's results.json (every finished run, stage_seconds, FID, curves)
#   smoke-report.tar.gz   report.md + figures/ of the run
# The run folder (RUN, default runs/gpu-smoke) resumes: a second call within the same machine session goes on.
#
# Sizing (estimates from FLOPs and the CPU timings, to be replaced by the measured phases.json): ResNet-18 with the
# CIFAR stem ≈ 0.56 GFLOP forward per 32×32 image, ≈ 1.7 GFLOP a training step; at the ~25,000 img/s targeted on an
# H100 (bf16, channels_last) an epoch of the ~50,000 rebalanced images takes ~2 s, so 7 rows × 8 epochs ≈ 2 min; the
# small CFG UNet (~10 M parameters) trains 2,500 steps of 256 in ~2 min and samples 2 × 22,500 images at 20 steps in
# < 1 min; Inception FID embeds each of ~140,000 images once (~30 s at 5,000 img/s). The GPU test tier (~1–2 min with
# torch.compile) and the benchmarks (~2 min) fill the rest.
set -uo pipefail
OUT=${OUT:-results/gpu-smoke}
RUN=${RUN:-runs/gpu-smoke}
PY=${PY:-python3}
mkdir -p "$OUT"
LOG=$OUT/log.txt
START=$(date +%s)
PHASES=()

phase() {  # phase NAME SECONDS COMMAND...: run COMMAND under a time limit, log its output, record its status
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  echo "=== $name (limit ${limit}s, at $((t0 - START))s)" | tee -a "$LOG"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local status=${PIPESTATUS[0]}
  local t1; t1=$(date +%s)
  echo "=== $name: exit $status after $((t1 - t0))s" | tee -a "$LOG"
  PHASES+=("\"$name\": {\"seconds\": $((t1 - t0)), \"exit\": $status}")
}

{ nvidia-smi -L; $PY -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"; } \
  2>&1 | tee -a "$LOG"
phase "gpu-tests" 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_classify_gpu.py tests/test_cfg_gpu.py \
  tests/test_fid_gpu.py tests/test_gpu_end_to_end.py
phase "smoke-run" 300 $PY -m diffbalance run paper-cifar10-smoke --out "$RUN" --device cuda --quiet
phase "bench-classifier" 50 $PY benchmarks/classifier.py --device cuda --steps 30 --repeats 2 --json "$OUT/bench-classifier.json"
phase "bench-sampling" 35 $PY benchmarks/sampling.py --speed --device cuda --model-size small --json "$OUT/bench-sampling.json"
phase "bench-fid" 35 $PY benchmarks/fid.py --device cuda --n 4096 --rounds 2 --json "$OUT/bench-fid.json"

[ -f "$RUN/results.json" ] && cp "$RUN/results.json" "$OUT/smoke-results.json"
[ -f "$RUN/report.md" ] && tar -czf "$OUT/smoke-report.tar.gz" -C "$RUN" report.md figures
( IFS=,; echo "{${PHASES[*]}, \"total_seconds\": $(( $(date +%s) - START ))}" ) > "$OUT/phases.json"
echo "=== done in $(( $(date +%s) - START ))s; files in $OUT:" | tee -a "$LOG"
ls -la "$OUT" | tee -a "$LOG"
