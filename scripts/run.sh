#!/usr/bin/env bash
# Sets up, builds, and trains on the built-in default dataset (GPU when there is one, else CPU).
# Extra arguments go to tg-train, e.g. scripts/run.sh --epochs 20.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
source scripts/env.sh
cmake -S . -B build -G Ninja -DTG_WITH_CUDA="$TG_CUDA" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$JOBS" --target tg-train
exec build/examples/tg-train --output run "$@"
