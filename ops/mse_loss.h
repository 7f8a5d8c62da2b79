// Mean squared error loss: L = mean((y - t)^2) over all elements, as a 0-dim tensor (shape {}).
//
// y (input) and t (target) have the same shape, dtype and device; no broadcasting. The sum is
// accumulated in double. Saved: y and t (they exist anyway; nothing new is kept alive).
// Backward, from dL = g: dy = 2 (y - t) / numel * g, dt = -dy (only when t requires grad).
//
// CUDA thread mapping: forward, mse_loss_blocks(n) blocks of 256 threads each write the double sum
// of (y - t)^2 over a grid-stride slice; one block then sums those partials in a fixed order
// (deterministic, no atomics). Backward, one grid-stride kernel writes dy and dt together.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../core/tensor.h"

// cudaStream_t is CUstream_st*; declared here so that this header needs no CUDA headers.
struct CUstream_st;

namespace tg::ops {

/// mean((input - target)^2) as a 0-dim tensor. input and target: same shape, dtype and device,
/// non-empty. Differentiable in both.
Tensor mse_loss(const Tensor& input, const Tensor& target);

namespace detail {

/// Blocks of the first (fused) stage of the CUDA forward over n elements; depends on n only.
inline int64_t mse_loss_blocks(int64_t n) {
  return std::clamp<int64_t>((n + 4095) / 4096, 1, 1024);
}

/// out[0] = sum_i (y[i] - t[i])^2 / n
template <typename T>
void mse_loss_forward_cpu(const T* y, const T* t, T* out, int64_t n);
/// d = 2 (y[i] - t[i]) / n * g[0]; dy[i] = d and dt[i] = -d, each written only when its pointer
/// is not null.
template <typename T>
void mse_loss_backward_cpu(const T* y, const T* t, const T* g, T* dy, T* dt, int64_t n);

/// CUDA versions (device pointers, queued on stream).
/// partials: device scratch of mse_loss_blocks(n) doubles.
template <typename T>
void mse_loss_forward_cuda(const T* y, const T* t, T* out, int64_t n, double* partials,
                           CUstream_st* stream);
template <typename T>
void mse_loss_backward_cuda(const T* y, const T* t, const T* g, T* dy, T* dt, int64_t n,
                            CUstream_st* stream);

}  // namespace detail
}  // namespace tg::ops
