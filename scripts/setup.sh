#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build tapegrad; does nothing when all is present.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config libeigen3-dev libhdf5-dev libgtest-dev
          libcli11-dev nlohmann-json3-dev libopenmpi-dev openmpi-bin)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
