#!/usr/bin/env bash
# The GPU proof in one device call of under 10 minutes: build with CUDA, every gtest with the GPU
# active, compute-sanitizer memcheck and racecheck on the CUDA tests, tg-gradcheck on CUDA.
# Logs under $OUT; the summary is printed last. scripts/gpu-check.sh is the full version (ctest,
# parity scripts, NCCL).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-gpu}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
S="$OUT/summary.txt"; : >"$S"
note() { echo "$*" | tee -a "$S"; }
note "gpu: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
{ cmake -S . -B build-gpu -G Ninja -DTG_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release &&
  cmake --build build-gpu -j "$(nproc)"; } >"$OUT/build.log" 2>&1 || { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1; }
note "build: ok"
timeout 300 build-gpu/tests/tg_tests --gtest_brief=1 >"$OUT/gtest.log" 2>&1
note "gtest: rc=$? $(grep -E '^\[ +(PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$OUT/gtest.log" | tr '\n' ' ')"
grep -E '^\[  FAILED  \]' "$OUT/gtest.log" | sort -u | head -30 | tee -a "$S"
F='*Cuda*:*CUDA*:*Gpu*:*GPU*:-CudaAllocator.OutOfMemoryIsAClearError:*Trainer*:*Process*'
timeout 200 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 build-gpu/tests/tg_tests --gtest_filter="$F" --gtest_brief=1 >"$OUT/memcheck.log" 2>&1
note "memcheck: rc=$? $(grep 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)"
timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 build-gpu/tests/tg_tests --gtest_filter="$F" --gtest_brief=1 >"$OUT/racecheck.log" 2>&1
note "racecheck: rc=$? $(grep 'RACECHECK SUMMARY' "$OUT/racecheck.log" | tail -1)"
timeout 120 build-gpu/examples/tg-gradcheck --op all --device cuda --dtype float64 --trials 3 >"$OUT/gradcheck.log" 2>&1
note "tg-gradcheck cuda float64: rc=$?"
timeout 60 build-gpu/examples/tg-gradcheck --op all --device cuda --dtype float32 --trials 2 >>"$OUT/gradcheck.log" 2>&1
note "tg-gradcheck cuda float32: rc=$?"
grep -i fail "$OUT/gradcheck.log" | head -10
cat "$S"
