# Sourced by the scripts: finds nvcc (PATH or /usr/local/cuda) and picks the CUDA setting.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
if command -v nvcc >/dev/null 2>&1; then TG_CUDA=ON; else TG_CUDA=OFF; fi
JOBS=${JOBS:-$(nproc)}
