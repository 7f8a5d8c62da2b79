#!/usr/bin/env bash
# Sets up, builds and runs every test: once with CUDA (when nvcc is there; GPU tests skip without a
# GPU), once CPU-only under AddressSanitizer + UndefinedBehaviorSanitizer (without MPI, whose own
# allocations the leak checker would report; the data-parallel tests run in the first build).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

echo "== build (TG_WITH_CUDA=$TG_CUDA) and test"
cmake -S . -B build -G Ninja -DTG_WITH_CUDA="$TG_CUDA" -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$JOBS"
ctest --test-dir build --output-on-failure -j "$JOBS"

echo "== PyTorch extension tapegrad_torch (python/) against that build, and its tests"
scripts/build-python.sh --test build

echo "== CPU-only build with ASan + UBSan, and test"
cmake -S . -B build-sanitize -G Ninja -DTG_WITH_CUDA=OFF -DTG_WITH_DIST=OFF -DTG_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build-sanitize -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-sanitize --output-on-failure -j "$JOBS"
echo "== all tests passed"
