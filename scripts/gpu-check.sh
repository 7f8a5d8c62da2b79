#!/usr/bin/env bash
# The GPU proof, run on the device machine (through the device tool):
#   build with CUDA for sm_90, run every test with the GPU active, compute-sanitizer memcheck and
#   racecheck on the CUDA tests, the gradient-check tool on CUDA, and (when present) the parity script.
# Logs go under $OUT (default ./out-gpu); the last lines printed are the summary.
# Usage: scripts/gpu-check.sh [--quick]   (--quick: build and tests only)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-gpu}
mkdir -p "$OUT"
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/gpu.txt" 2>&1
note "gpu: $(cat "$OUT/gpu.txt")"

JOBS=$(nproc)
{ cmake -S . -B build-gpu -G Ninja -DTG_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_BUILD_TYPE=Release && cmake --build build-gpu -j "$JOBS"; } >"$OUT/build.log" 2>&1
rc=$?
note "build: rc=$rc"
if [ $rc -ne 0 ]; then tail -40 "$OUT/build.log"; exit 1; fi

ctest --test-dir build-gpu --output-on-failure -j 4 >"$OUT/ctest.log" 2>&1
note "ctest: rc=$? $(grep -E 'tests passed|tests failed' "$OUT/ctest.log")"
build-gpu/tests/tg_tests --gtest_brief=1 >"$OUT/gtest.log" 2>&1
note "gtest: $(grep -E '^\[ +(PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$OUT/gtest.log" | tr '\n' ' ')"
grep -E '^\[  FAILED  \]' "$OUT/gtest.log" | head -20

[ $QUICK -eq 1 ] && { cat "$SUMMARY"; exit 0; }

GPU_FILTER='*Cuda*:*CUDA*:*Gpu*:*GPU*:-CudaAllocator.OutOfMemoryIsAClearError'
{
  echo "== memcheck"
  compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
    build-gpu/tests/tg_tests --gtest_filter="$GPU_FILTER" --gtest_brief=1
  echo "memcheck rc=$?"
  echo "== racecheck"
  compute-sanitizer --tool racecheck --error-exitcode 9 \
    build-gpu/tests/tg_tests --gtest_filter="$GPU_FILTER" --gtest_brief=1
  echo "racecheck rc=$?"
} >"$OUT/sanitizer.log" 2>&1
note "sanitizer: $(grep -E '^(memcheck|racecheck) rc=|ERROR SUMMARY' "$OUT/sanitizer.log" | tr '\n' ' ')"

if [ -x build-gpu/examples/tg-gradcheck ]; then
  build-gpu/examples/tg-gradcheck --op all --device cuda --dtype float64 --trials 20 >"$OUT/gradcheck.log" 2>&1
  note "tg-gradcheck cuda float64 --trials 20: rc=$?"
  build-gpu/examples/tg-gradcheck --op all --device cuda --dtype float32 --trials 5 >>"$OUT/gradcheck.log" 2>&1
  note "tg-gradcheck cuda float32 --trials 5: rc=$?"
fi
if command -v mpirun >/dev/null && grep -q "TG_WITH_DIST:BOOL=ON" build-gpu/CMakeCache.txt; then
  # The NCCL path on one GPU: a forced single-rank data-parallel run must match the plain run.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  build-gpu/examples/tg-train make-data --output /tmp/dist.h5 --samples 256 --in-channels 8 \
    --out-channels 32 --height 40 --width 40 >"$OUT/dist.log" 2>&1
  common="--data /tmp/dist.h5 --device cuda --steps 10 --log-every 1 --val-fraction 0 --batch-size 16"
  build-gpu/examples/tg-train $common --output /tmp/dist-plain >>"$OUT/dist.log" 2>&1
  TG_DIST=1 mpirun -np 1 build-gpu/examples/tg-train $common --output /tmp/dist-nccl >>"$OUT/dist.log" 2>&1
  note "dist (NCCL, 1 rank): rc=$? losses equal: $(python3 -c "
import json
r=lambda p: [json.loads(l) for l in open(p)]
a=[x['loss'] for x in r('/tmp/dist-plain/metrics.jsonl') if x['type']=='step']
b=[x['loss'] for x in r('/tmp/dist-nccl/metrics.jsonl') if x['type']=='step']
print(len(a)==len(b)==10 and max(abs(x-y)/abs(x) for x,y in zip(a,b)) < 1e-6)" 2>&1)"
else
  note "dist: skipped (no mpirun or built without MPI)"
fi
if [ -f tests/parity/torch_parity.py ] && [ -x build-gpu/examples/tg-train ]; then
  PYTHONUNBUFFERED=1 python3 tests/parity/torch_parity.py --tg-train build-gpu/examples/tg-train \
    --devices cpu,cuda >"$OUT/parity.log" 2>&1
  note "parity: rc=$?"
  tail -20 "$OUT/parity.log"
fi
cat "$SUMMARY"
