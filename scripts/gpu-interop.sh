#!/usr/bin/env bash
# One device call for the interop checks that need the GPU machine's Python packages: the checkpoint
# parity with PyTorch (HDF5 and safetensors, issue 13), the tapegrad_torch extension's CUDA tests
# and ModelNew's benchmark (issue 15), the fused block's CUDA tests, and tg-bench at the two built-in
# sizes as a baseline. Logs under $OUT; a summary last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-gpu}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
S="$OUT/summary-interop.txt"; : >"$S"
note() { echo "$*" | tee -a "$S"; }
{ cmake -S . -B build-gpu -G Ninja -DTG_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release \
    -DPython3_EXECUTABLE="$(command -v python3)" && cmake --build build-gpu -j "$(nproc)"; } >"$OUT/build.log" 2>&1 ||
  { grep -E "error|FAILED" "$OUT/build.log" | head -30; exit 1; }
note "build: ok"
timeout 120 build-gpu/tests/tg_tests --gtest_filter='*ConvBlock*:*Fused*' --gtest_brief=1 >"$OUT/convblock.log" 2>&1
note "conv_block gtests: rc=$? $(grep -E '^\[  (PASSED|FAILED)' "$OUT/convblock.log" | tr '\n' ' ')"
timeout 180 python3 tests/parity/checkpoint_parity.py --build build-gpu --devices cpu,cuda >"$OUT/ckpt_parity.log" 2>&1
note "checkpoint parity: rc=$?"; tail -12 "$OUT/ckpt_parity.log" | tee -a "$S"
timeout 240 scripts/build-python.sh --test build-gpu >"$OUT/python.log" 2>&1
note "tapegrad_torch (CUDA) tests: rc=$? $(grep -E '^(OK|FAILED|Ran)' "$OUT/python.log" | tr '\n' ' ')"
grep -E "^(FAIL|ERROR):|skipped" "$OUT/python.log" | head -10 | tee -a "$S"
PYTHONPATH=python timeout 150 python3 bench/modelnew_bench.py --shapes reference,small --json "$OUT/modelnew.json" >"$OUT/modelnew.md" 2>"$OUT/modelnew.err"
note "modelnew bench: rc=$?"; cat "$OUT/modelnew.md" >>"$S"
timeout 60 build-gpu/examples/tg-bench --sizes reference,small --items forward,train_step >"$OUT/tgbench.txt" 2>&1
note "tg-bench: rc=$?"; cat "$OUT/tgbench.txt" >>"$S"
cat "$S"
