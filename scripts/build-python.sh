#!/usr/bin/env bash
# Builds the PyTorch extension tapegrad_torch (python/) against tapegrad, after which
#   PYTHONPATH=python python3 -c 'import tapegrad_torch'
# works. Usage: scripts/build-python.sh [--test] [BUILD_DIR] (default build: the CMake build that
# run.sh and test.sh use, with CUDA when nvcc is there; configured here when missing, and only its
# libtapegrad is built). --test then runs python/tests with the same interpreter.
# Python: $PYTHON, else python3 when it has torch, else Debian's /usr/bin/python3. Without a torch,
# installs Debian's python3-torch, libtorch-dev and pybind11-dev (apt-get, like scripts/setup.sh).
# CUDA tensors are supported when that build has CUDA and the torch does; CPU tensors always.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
TEST=0
if [ "${1:-}" = "--test" ]; then TEST=1; shift; fi
BUILD_DIR=${1:-build}

has_torch() { "$1" -c 'import torch, torch.utils.cpp_extension' >/dev/null 2>&1; }
if [ -z "${PYTHON:-}" ]; then
  if has_torch python3; then PYTHON=python3
  elif [ -x /usr/bin/python3 ] && has_torch /usr/bin/python3; then PYTHON=/usr/bin/python3
  else
    packages=(python3-torch libtorch-dev pybind11-dev python3-setuptools)
    echo "build-python: no torch found; installing ${packages[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"
    PYTHON=/usr/bin/python3
  fi
fi
has_torch "$PYTHON" || { echo "build-python: $PYTHON cannot import torch" >&2; exit 1; }

if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  configure() { cmake -S . -B "$BUILD_DIR" -G Ninja -DTG_WITH_CUDA="$TG_CUDA" -DCMAKE_BUILD_TYPE=Release; }
  configure || { scripts/setup.sh && configure; }
fi
cmake --build "$BUILD_DIR" -j "$JOBS" --target tapegrad
MAX_JOBS=$JOBS "$PYTHON" python/build_ext.py "$BUILD_DIR"
PYTHONPATH=python "$PYTHON" -c 'import tapegrad_torch as t; print("build-python: built", t.__file__, "(CUDA)" if t.built_with_cuda() else "(CPU)")'
if [ $TEST -eq 1 ]; then
  PYTHONPATH=python "$PYTHON" -m unittest discover -s python/tests -v
fi
