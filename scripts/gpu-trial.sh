#!/usr/bin/env bash
# Development check on the GPU machine (one device call): build, every gtest with the GPU active,
# the new CUDA tests under memcheck, the weight-gradient variants (bench/conv_block), a per-kernel
# profile of the reference step, and tg-bench on a few sweep shapes. Logs under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-gpu}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1 TG_KERNEL_CACHE=/tmp/tgk
S="$OUT/summary.txt"; : >"$S"
note() { echo "$*" | tee -a "$S"; }
t0=$(date +%s)
{ cmake -S . -B build-gpu -G Ninja -DTG_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release \
    -DPython3_EXECUTABLE="$(command -v python3)" && cmake --build build-gpu -j "$(nproc)"; } >"$OUT/build.log" 2>&1 ||
  { grep -E "error|FAILED" "$OUT/build.log" | head -30; exit 1; }
note "build: ok ($(( $(date +%s) - t0 )) s)"
B=build-gpu/tests/tg_tests
t0=$(date +%s)
timeout 300 $B --gtest_brief=1 >"$OUT/gtest.log" 2>&1
note "gtest all: rc=$? ($(( $(date +%s) - t0 )) s) $(grep -E '^\[  (PASSED|FAILED)' "$OUT/gtest.log" | tr '\n' ' ')"
grep -E '^\[  FAILED  \]' "$OUT/gtest.log" | head -20 | tee -a "$S"
F='*ConvBlock*:*CudaGraph*:*CapturedStep*:*TrainerGraph*:*Half*:BatchSourceCuda*'
t0=$(date +%s)
timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 $B --gtest_filter="$F" --gtest_brief=1 >"$OUT/memcheck.log" 2>&1
note "memcheck ($F): rc=$? ($(( $(date +%s) - t0 )) s) $(grep 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1) $(grep -E '^\[  (PASSED|FAILED)' "$OUT/memcheck.log" | tr '\n' ' ')"
nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/weight_grad bench/conv_block/weight_grad.cu >"$OUT/wg_build.log" 2>&1 &&
  timeout 60 /tmp/weight_grad 0 128 >"$OUT/weight_grad.md" 2>&1
note "weight_grad: rc=$?"; cat "$OUT/weight_grad.md" >>"$S"
TB=build-gpu/examples/tg-bench
timeout 90 ncu --clock-control none --print-summary per-kernel $TB --sizes reference --items train_step --reps 1 --warmup 1 >"$OUT/ncu.log" 2>&1
note "ncu: rc=$?"
grep -E "^\s+[a-z_A-Z].*\(|Duration|Invocations" "$OUT/ncu.log" | head -0
python3 - "$OUT/ncu.log" >>"$S" <<'PY'
import re, sys
name=None; rows=[]
for line in open(sys.argv[1]):
    m = re.match(r"\s{2}(\S.*?)\s+\(\d+, \d+, \d+\)x\(\d+, \d+, \d+\)", line)
    if m: name = m.group(1)[:70]
    m = re.match(r"\s+Duration\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", line)
    if m and name: rows.append((name, m.group(1), m.group(2), m.group(3))); name=None
for r in rows: print("ncu", *r)
PY
timeout 120 $TB --sizes reference,small --items forward,train_step,train_step_graph >"$OUT/tgbench.txt" 2>&1
note "tg-bench: rc=$?"; cat "$OUT/tgbench.txt" >>"$S"
for sh in "64 8 64 128 3 8" "32 16 32 192 3 4" "128 4 32 128 5 8" "16 3 32 320 7 8" "256 8 16 64 1 4" "8 64 128 128 3 32"; do
  set -- $sh
  timeout 60 $TB --batch $1 --in-channels $2 --out-channels $3 --size $4 --kernel $5 --groups $6 --items forward,train_step 2>&1 | grep -E "path|forward|train_step" | sed "s/^/$1,$2,$3,$4,$5,$6 /" >>"$S"
done
cat "$S"
