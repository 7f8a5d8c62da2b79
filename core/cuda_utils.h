// CUDA-side helpers: the per-device context (stream and cuDNN handle, created lazily) and the checking
// macros. Included only by .cu files and *_cuda.cpp files, never by public headers.
#pragma once

#include <cuda_runtime.h>
#include <cudnn.h>

#include "error.h"

namespace tg::cuda {

/// The stream that all of the current device's work is queued on.
cudaStream_t stream();
/// The cuDNN handle of the current device, bound to stream().
cudnnHandle_t cudnn_handle();
/// Properties of the current device (cached).
const cudaDeviceProp& device_properties();

/// A launch configuration for n independent elements: 256 threads, enough blocks to cover n, capped
/// at a multiple of the SM count (kernels use grid-stride loops).
inline unsigned grid_for(int64_t n, int threads = 256) {
  int64_t blocks = (n + threads - 1) / threads;
  int64_t cap = int64_t(device_properties().multiProcessorCount) * 32;
  if (blocks > cap) blocks = cap;
  return unsigned(blocks < 1 ? 1 : blocks);
}

}  // namespace tg::cuda

#define TG_CUDA_CHECK(expr)                                                             \
  do {                                                                                  \
    cudaError_t tg_err_ = (expr);                                                       \
    if (tg_err_ != cudaSuccess)                                                         \
      TG_THROW("CUDA error in ", #expr, ": ", cudaGetErrorName(tg_err_), " (",         \
               cudaGetErrorString(tg_err_), ")");                                       \
  } while (0)

#define TG_CUDNN_CHECK(expr)                                                            \
  do {                                                                                  \
    cudnnStatus_t tg_st_ = (expr);                                                      \
    if (tg_st_ != CUDNN_STATUS_SUCCESS)                                                 \
      TG_THROW("cuDNN error in ", #expr, ": ", cudnnGetErrorString(tg_st_));           \
  } while (0)

#define TG_CUDA_CHECK_LAUNCH() TG_CUDA_CHECK(cudaGetLastError())
