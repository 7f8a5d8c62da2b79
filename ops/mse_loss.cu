// CUDA kernels of ops/mse_loss.h.
//
// Forward: stage 1, mse_loss_blocks(n) blocks of 256 threads; each thread accumulates (y - t)^2 in
// double over a grid-stride slice, the block reduces (warp shuffles, then one warp over the warp
// sums) and writes one partial. Stage 2, one block sums the partials in a fixed order and divides
// by n. Backward: one grid-stride kernel, one thread per element, writes dy and dt.
#include "../core/cuda_reduce.cuh"
#include "../core/cuda_utils.h"
#include "mse_loss.h"

namespace tg::ops::detail {
namespace {

constexpr int kThreads = 256;  // the kernels and block_sum assume this block size

// Sum of v over the block (all kThreads threads call it); valid in thread 0; fixed order.
__device__ double block_sum(double v) {
  __shared__ double scratch[32];
  return cuda::block_sum(v, scratch);
}

template <typename T>
__global__ void mse_partials_kernel(const T* __restrict__ y, const T* __restrict__ t, int64_t n,
                                    double* __restrict__ partials) {
  double acc = 0.0;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const double d = double(y[i]) - double(t[i]);
    acc += d * d;
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <typename T>
__global__ void mse_finish_kernel(const double* __restrict__ partials, int64_t count, int64_t n,
                                  T* __restrict__ out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) acc += partials[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[0] = T(acc / double(n));
}

template <typename T>
__global__ void mse_backward_kernel(const T* __restrict__ y, const T* __restrict__ t,
                                    const T* __restrict__ g, T* __restrict__ dy, T* __restrict__ dt,
                                    int64_t n) {
  const T s = T(2.0 * double(g[0]) / double(n));
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const T d = s * (y[i] - t[i]);
    if (dy) dy[i] = d;
    if (dt) dt[i] = -d;
  }
}

}  // namespace

template <typename T>
void mse_loss_forward_cuda(const T* y, const T* t, T* out, int64_t n, double* partials,
                           cudaStream_t stream) {
  const int64_t blocks = mse_loss_blocks(n);
  mse_partials_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(y, t, n, partials);
  TG_CUDA_CHECK_LAUNCH();
  mse_finish_kernel<<<1, kThreads, 0, stream>>>(partials, blocks, n, out);
  TG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void mse_loss_backward_cuda(const T* y, const T* t, const T* g, T* dy, T* dt, int64_t n,
                            cudaStream_t stream) {
  mse_backward_kernel<<<tg::cuda::grid_for(n, kThreads), kThreads, 0, stream>>>(y, t, g, dy, dt, n);
  TG_CUDA_CHECK_LAUNCH();
}

template void mse_loss_forward_cuda<float>(const float*, const float*, float*, int64_t, double*,
                                           cudaStream_t);
template void mse_loss_forward_cuda<double>(const double*, const double*, double*, int64_t, double*,
                                            cudaStream_t);
template void mse_loss_backward_cuda<float>(const float*, const float*, const float*, float*,
                                            float*, int64_t, cudaStream_t);
template void mse_loss_backward_cuda<double>(const double*, const double*, const double*, double*,
                                             double*, int64_t, cudaStream_t);

}  // namespace tg::ops::detail
