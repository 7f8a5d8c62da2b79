#!/usr/bin/env bash
# Builds tg-bench, runs it and the PyTorch baseline on the same GPU in one go, and prints the
# side-by-side table. Run on the device machine: scripts/bench.sh  (logs and JSON under $OUT).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out-bench}
mkdir -p "$OUT"
if [ ! -x build-gpu/examples/tg-bench ]; then
  cmake -S . -B build-gpu -G Ninja -DTG_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_BUILD_TYPE=Release -DTG_BUILD_TESTS=OFF >"$OUT/bench-build.log" 2>&1 &&
  cmake --build build-gpu -j "$(nproc)" >>"$OUT/bench-build.log" 2>&1 || { tail -30 "$OUT/bench-build.log"; exit 1; }
fi
build-gpu/examples/tg-bench --reps "${REPS:-20}" --json "$OUT/tg-bench.json" ${TG_BENCH_ARGS:-} | tee "$OUT/tg-bench.txt"
PYTHONUNBUFFERED=1 python3 bench/torch_baseline.py --json "$OUT/torch.json" ${TORCH_ARGS:-} >"$OUT/torch.log" 2>&1 || tail -20 "$OUT/torch.log"
python3 bench/compare.py "$OUT/tg-bench.json" "$OUT/torch.json" | tee "$OUT/table.txt"
