#!/usr/bin/env bash
# The one-GPU calls that produce this folder's figures, from the repository root with .deps (from
# scripts/pack-deps, GoogleTest included) and .whl carried. Every GPU process under a timeout; logs into $OUT.
# Usage: bench/results/2026-11-29-h200x1-fused/run.sh STEP...  with STEP one of
#   test            tests/test_fused_gpu (ops against the fp32 reference, linear + CE at the 1b shape
#                   against unfused, fused trainer against baseline within the A/A floor)
#   liger           time_linear_ce_liger.py: torch's unfused and Liger's fused linear + CE, same shape
#   train:IMPL      ddpbench train --preset 1b --mode lora --impl IMPL (batch 4 x 2048, 5 + 20 steps)
set -uo pipefail
root=$PWD
out=${OUT:-$root/gpu-out}
here=$root/bench/results/2026-11-29-h200x1-fused
mkdir -p "$out"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$out/run.log"; }
source "$root/scripts/gpu-env.sh"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/nvidia-smi.csv" 2>&1
build=$root/build-gpu
# GoogleTest comes from .deps as scripts/pack-deps packs it (headers and static libraries).
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDDPBENCH_CUDA=ON -DDDPBENCH_TESTS=ON \
  -DDDPBENCH_EXTRA_INCLUDE="$root/.deps/include" \
  -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" > "$out/configure.log" 2>&1 ||
  { log "configure failed"; tail -20 "$out/configure.log"; exit 1; }
targets=(ddpbench)
if grep -q "GoogleTest not found" "$out/configure.log"; then log "no GoogleTest (run scripts/pack-deps): the test step is skipped"
else targets+=(test_fused_gpu); fi
log "build"
timeout "${BUILD_TIMEOUT:-180}" cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" > "$out/build.log" 2>&1 ||
  { log "build failed"; grep -E "error" -A3 "$out/build.log" | head -30; tail -3 "$out/build.log"; exit 1; }
log "built"
for step in "$@"; do
  case "$step" in
    test)
      [ -x "$build/tests/test_fused_gpu" ] || { log "test: not built"; continue; }
      timeout 150 "$build/tests/test_fused_gpu" > "$out/test_fused_gpu.log" 2>&1
      log "test_fused_gpu: exit $?"
      grep -E "LINEAR_CE|FUSED_TRAINER|Failure|Which is|rel_err|^\[  (PASSED|FAILED|SKIPPED)|  OK \]|FAILED  \]" "$out/test_fused_gpu.log" | head -40 ;;
    liger)
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$root"/.whl/liger_kernel-*.whl > "$out/pip.log" 2>&1
      PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} timeout 90 python3 "$here/time_linear_ce_liger.py" > "$out/liger.jsonl" 2>&1
      log "liger: exit $?"; cat "$out/liger.jsonl" | tail -6 ;;
    train:*)
      impl=${step#train:}
      timeout 150 "$build/ddpbench" train --preset 1b --mode lora --impl "$impl" --device cuda --micro-batch 4 \
        --seq-len 2048 --warmup 5 --steps 20 > "$out/train-1b-lora-$impl.log" 2>&1
      log "train $impl: exit $?"; tail -4 "$out/train-1b-lora-$impl.log" ;;
    *) log "unknown step $step" ;;
  esac
done
