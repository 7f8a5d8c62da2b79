#!/usr/bin/env bash
# Sets up, builds and runs every test: once with CUDA (when nvcc is there; GPU tests skip without a
# GPU), once CPU-only under AddressSanitizer + UndefinedBehaviorSanitizer (without MPI, whose own
# allocations the leak checker would report; the data-parallel tests run in the first build).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh

# Test-only packages (scripts/run.sh does not need them): PyTorch and h5py for the parity tests
# (tests/parity/*.py, which ctest reports as skipped without them), and PyTorch's headers, pybind11
# and setuptools for the tapegrad_torch extension (python/).
test_packages=(python3-torch python3-h5py libtorch-dev pybind11-dev python3-setuptools)
missing=()
for p in "${test_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test: installing ${missing[*]} (test-only)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  { $SUDO apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } ||
    echo "test: could not install ${missing[*]}; the parity test will be skipped"
fi
# apt installs them for the system interpreter, which a pyenv or venv python3 on PATH would hide.
PY_ARGS=()
if [ -x /usr/bin/python3 ]; then PY_ARGS=(-DPython3_EXECUTABLE=/usr/bin/python3); fi

echo "== library includes are relative (no consumer header can shadow ours)"
python3 scripts/fix_includes.py --check

echo "== build (TG_WITH_CUDA=$TG_CUDA) and test"
cmake -S . -B build -G Ninja -DTG_WITH_CUDA="$TG_CUDA" -DCMAKE_BUILD_TYPE=Release "${PY_ARGS[@]}"
cmake --build build -j "$JOBS"
ctest --test-dir build --output-on-failure -j "$JOBS"

echo "== PyTorch extension tapegrad_torch (python/) against that build, and its tests"
scripts/build-python.sh --test build

echo "== CPU-only build with ASan + UBSan, and test"
cmake -S . -B build-sanitize -G Ninja -DTG_WITH_CUDA=OFF -DTG_WITH_DIST=OFF -DTG_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo "${PY_ARGS[@]}"
cmake --build build-sanitize -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-sanitize --output-on-failure -j "$JOBS"
echo "== all tests passed"
