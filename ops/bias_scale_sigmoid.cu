// bias_scale_sigmoid CUDA kernels: s = sigmoid((z + bias_c) * scale_c) and its backward.
// Thread mapping: blocks of 256 threads walk (plane, chunk) pairs with plane = n * C + c, so the
// channel is known per block and no element needs an integer division. The backward writes, per
// (n, c, chunk), the block sums of du and du * (z + bias_c) to workspace[(c * N + n) * P + chunk]
// (and the second half of workspace); a second kernel, one block per channel, sums them in a fixed
// order. Accumulation type = T (float for float32, double for float64).
#include <algorithm>

#include "../core/cuda_reduce.cuh"
#include "../core/cuda_utils.h"
#include "bias_scale_sigmoid.h"

namespace tg::ops::detail {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kForwardChunk = 4096;
constexpr int64_t kMaxGrid = 2147483647;

__device__ __forceinline__ float sigmoid_dev(float u) { return 1.0f / (1.0f + expf(-u)); }
__device__ __forceinline__ double sigmoid_dev(double u) { return 1.0 / (1.0 + exp(-u)); }

using cuda::block_sum2;

template <typename T>
__global__ void forward_kernel(const T* __restrict__ z, const T* __restrict__ bias,
                               const T* __restrict__ scale, T* __restrict__ s, int64_t C,
                               int64_t HxW, int64_t chunks, int64_t total_blocks) {
  for (int64_t blk = blockIdx.x; blk < total_blocks; blk += gridDim.x) {
    const int64_t plane = blk / chunks;
    const int64_t begin = (blk - plane * chunks) * kForwardChunk;
    const int64_t end = min(begin + kForwardChunk, HxW);
    const int64_t c = plane % C;
    const T b = bias[c], k = scale[c];
    const T* zp = z + plane * HxW;
    T* sp = s + plane * HxW;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
      sp[i] = sigmoid_dev((zp[i] + b) * k);
  }
}

// Stage 1: dz (if requested) and per-(n, c, chunk) partial sums (if reduce).
template <typename T>
__global__ void backward_partials_kernel(const T* __restrict__ ds, const T* __restrict__ z,
                                         const T* __restrict__ bias, const T* __restrict__ scale,
                                         T* __restrict__ dz, T* __restrict__ partials, bool reduce,
                                         int64_t N, int64_t C, int64_t HxW, int64_t chunks,
                                         int64_t total_blocks) {
  __shared__ T shm[64];
  const int64_t per_half = N * C * chunks;
  for (int64_t blk = blockIdx.x; blk < total_blocks; blk += gridDim.x) {
    const int64_t plane = blk / chunks;
    const int64_t chunk = blk - plane * chunks;
    const int64_t begin = chunk * kBiasScaleSigmoidChunk;
    const int64_t end = min(begin + kBiasScaleSigmoidChunk, HxW);
    const int64_t n = plane / C, c = plane - n * C;
    const T b = bias[c], k = scale[c];
    const T* zp = z + plane * HxW;
    const T* dsp = ds + plane * HxW;
    T a1 = 0, a2 = 0;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const T zb = zp[i] + b;
      const T sv = sigmoid_dev(zb * k);
      const T du = dsp[i] * sv * (T(1) - sv);
      if (dz) dz[plane * HxW + i] = du * k;
      a1 += du;
      a2 += du * zb;
    }
    if (reduce) {
      block_sum2(a1, a2, shm);
      if (threadIdx.x == 0) {
        const int64_t slot = (c * N + n) * chunks + chunk;
        partials[slot] = a1;
        partials[per_half + slot] = a2;
      }
    }
  }
}

// Stage 2: one block per channel sums its N * chunks partials (thread-strided, then a fixed tree).
template <typename T>
__global__ void backward_reduce_kernel(const T* __restrict__ partials, const T* __restrict__ scale,
                                       T* __restrict__ dbias, T* __restrict__ dscale, int64_t C,
                                       int64_t per_channel) {
  __shared__ T shm[64];
  const int64_t per_half = C * per_channel;
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const T* p1 = partials + c * per_channel;
    const T* p2 = p1 + per_half;
    T a1 = 0, a2 = 0;
    for (int64_t i = threadIdx.x; i < per_channel; i += blockDim.x) {
      a1 += p1[i];
      a2 += p2[i];
    }
    block_sum2(a1, a2, shm);
    if (threadIdx.x == 0) {
      if (dbias) dbias[c] = scale[c] * a1;
      if (dscale) dscale[c] = a2;
    }
  }
}

unsigned grid_of(int64_t blocks) {
  return unsigned(std::min<int64_t>(std::max<int64_t>(blocks, 1), kMaxGrid));
}

}  // namespace

template <typename T>
void bias_scale_sigmoid_forward_cuda(const BiasScaleSigmoidParams& p, const T* z, const T* bias,
                                     const T* scale, T* s, cudaStream_t stream) {
  const int64_t chunks = (p.HxW + kForwardChunk - 1) / kForwardChunk;
  const int64_t total = p.N * p.C * chunks;
  if (total == 0) return;
  forward_kernel<T>
      <<<grid_of(total), kThreads, 0, stream>>>(z, bias, scale, s, p.C, p.HxW, chunks, total);
  TG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void bias_scale_sigmoid_backward_cuda(const BiasScaleSigmoidParams& p, const T* ds, const T* z,
                                      const T* bias, const T* scale, T* dz, T* dbias, T* dscale,
                                      T* workspace, cudaStream_t stream) {
  const bool reduce = dbias != nullptr || dscale != nullptr;
  if (!reduce && dz == nullptr) return;
  TG_CHECK(!reduce || workspace != nullptr,
           "bias_scale_sigmoid_backward_cuda: expected a workspace for the parameter gradients");
  const int64_t chunks = (p.HxW + kBiasScaleSigmoidChunk - 1) / kBiasScaleSigmoidChunk;
  const int64_t total = p.N * p.C * chunks;
  if (total == 0) return;
  backward_partials_kernel<T><<<grid_of(total), kThreads, 0, stream>>>(
      ds, z, bias, scale, dz, workspace, reduce, p.N, p.C, p.HxW, chunks, total);
  TG_CUDA_CHECK_LAUNCH();
  if (reduce) {
    backward_reduce_kernel<T>
        <<<grid_of(p.C), kThreads, 0, stream>>>(workspace, scale, dbias, dscale, p.C, p.N * chunks);
    TG_CUDA_CHECK_LAUNCH();
  }
}

template void bias_scale_sigmoid_forward_cuda<float>(const BiasScaleSigmoidParams&, const float*,
                                                     const float*, const float*, float*,
                                                     cudaStream_t);
template void bias_scale_sigmoid_forward_cuda<double>(const BiasScaleSigmoidParams&, const double*,
                                                      const double*, const double*, double*,
                                                      cudaStream_t);
template void bias_scale_sigmoid_backward_cuda<float>(const BiasScaleSigmoidParams&, const float*,
                                                      const float*, const float*, const float*,
                                                      float*, float*, float*, float*, cudaStream_t);
template void bias_scale_sigmoid_backward_cuda<double>(const BiasScaleSigmoidParams&, const double*,
                                                       const double*, const double*, const double*,
                                                       double*, double*, double*, double*,
                                                       cudaStream_t);

}  // namespace tg::ops::detail
