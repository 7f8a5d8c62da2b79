#!/usr/bin/env bash
# The second half of the GPU proof (after scripts/gpu-quick.sh), in one device call: racecheck on
# the new CUDA code, the PyTorch parity scripts through ctest, the tapegrad_torch extension with
# CUDA and its tests, and ModelNew's benchmark at the reference and small sizes. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-gpu}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
S="$OUT/summary2.txt"; : >"$S"
note() { echo "$*" | tee -a "$S"; }
{ cmake -S . -B build-gpu -G Ninja -DTG_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release \
    -DPython3_EXECUTABLE="$(command -v python3)" && cmake --build build-gpu -j "$(nproc)"; } >"$OUT/build2.log" 2>&1 ||
  { grep -E "error|FAILED" "$OUT/build2.log" | head -30; exit 1; }
note "build: ok"
F='BatchSourceCuda.Streaming*:BatchSourceCuda.APinned*:Broadcast*Cuda*:Unary*Cuda*:Reduce*Cuda*:Matmul*Cuda*:LossMonitor.Cuda*:AdamW.Cuda*:Tape.*Cuda*'
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 build-gpu/tests/tg_tests --gtest_filter="$F" --gtest_brief=1 >"$OUT/racecheck2.log" 2>&1
note "racecheck ($F): rc=$? $(grep 'RACECHECK SUMMARY' "$OUT/racecheck2.log" | tail -1) $(grep -E '^\[  PASSED' "$OUT/racecheck2.log")"
timeout 200 ctest --test-dir build-gpu -R 'parity|install.consumer' -j 4 --output-on-failure >"$OUT/parity.log" 2>&1
note "ctest parity + install: rc=$? $(grep -E 'tests passed|tests failed' "$OUT/parity.log")"
grep -E "Passed|Failed|Skipped|\*\*\*" "$OUT/parity.log" | head -12 | tee -a "$S"
timeout 240 scripts/build-python.sh --test build-gpu >"$OUT/python.log" 2>&1
note "tapegrad_torch (CUDA) tests: rc=$? $(grep -E '^(OK|FAILED|Ran)' "$OUT/python.log" | tr '\n' ' ')"
grep -E "^(FAIL|ERROR):" "$OUT/python.log" | head -10 | tee -a "$S"
PYTHONPATH=python timeout 150 python3 bench/modelnew_bench.py --shapes "128,8,32,256,3,8;128,3,16,32,3,8" --no-default-shapes --json "$OUT/modelnew.json" >"$OUT/modelnew.md" 2>"$OUT/modelnew.err"
note "modelnew bench: rc=$?"
cat "$OUT/modelnew.md"
cat "$S"
