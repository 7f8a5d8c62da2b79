// group_norm CUDA kernels (see ops/group_norm.h for the formulas).
//
// Forward, three kernels:
//   stats_partial: one block per (n, g, chunk of kGroupNormChunk of the group's contiguous M
//     elements). Each thread runs Welford on d = x - K, K = the group's first element (the shift
//     keeps the running mean small for offset data); the block merges its threads' (count, mean,
//     M2) with Chan's formula in a fixed tree and writes them to the workspace.
//   stats_final: one block per (n, g) merges the chunks in a fixed order: mean = K + m, rstd.
//   apply: blocks over (plane n * C + c, chunk of the plane): y = ((x - K) - m) * rstd * gamma + b.
// Backward, up to four kernels:
//   partials: blocks over (plane, chunk): sums of dy and dy * (x - mean) -> workspace.
//   group: one block per (n, g): per-(n, c) sums over the chunks, mean(g) and mean(g * xhat).
//   dx: blocks over (plane, chunk):
//     dx = rstd * (gamma dy - mean(g) - (x - mean) rstd mean(g xhat)).
//   params: one block per channel sums over n: dgamma = sum_n rstd * sum dy (x - mean),
//     dbeta = sum dy.
// Accumulation type = T (float for float32, double for float64); every order is fixed.
#include <algorithm>

#include "../core/cuda_reduce.cuh"
#include "../core/cuda_utils.h"
#include "group_norm.h"

namespace tg::ops::detail {
namespace {

constexpr int kThreads = 256;
constexpr int kSmallThreads = 128;
constexpr int64_t kChunk = kGroupNormChunk;
constexpr int64_t kMaxGrid = 2147483647;

unsigned grid_of(int64_t blocks) {
  return unsigned(std::min<int64_t>(std::max<int64_t>(blocks, 1), kMaxGrid));
}

template <typename T>
struct Welford {
  T n, mean, m2;
};

// Chan et al.: merges two (count, mean, M2) summaries.
template <typename T>
__device__ __forceinline__ Welford<T> merge(const Welford<T>& a, const Welford<T>& b) {
  if (b.n == T(0)) return a;
  if (a.n == T(0)) return b;
  const T n = a.n + b.n;
  const T w = b.n / n;
  const T delta = b.mean - a.mean;
  return {n, a.mean + delta * w, a.m2 + b.m2 + delta * delta * a.n * w};
}

template <typename T>
__device__ __forceinline__ Welford<T> warp_merge(Welford<T> v) {
  for (int o = 16; o > 0; o >>= 1) {
    Welford<T> other{__shfl_down_sync(0xffffffffu, v.n, o),
                     __shfl_down_sync(0xffffffffu, v.mean, o),
                     __shfl_down_sync(0xffffffffu, v.m2, o)};
    v = merge(v, other);
  }
  return v;
}

// Merges over the block (blockDim.x a multiple of 32); valid in thread 0. shm holds 96 values.
template <typename T>
__device__ Welford<T> block_merge(Welford<T> v, T* shm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_merge(v);
  __syncthreads();  // shm may still be read from a previous call
  if (lane == 0) {
    shm[warp] = v.n;
    shm[32 + warp] = v.mean;
    shm[64 + warp] = v.m2;
  }
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? Welford<T>{shm[lane], shm[32 + lane], shm[64 + lane]}
                      : Welford<T>{T(0), T(0), T(0)};
    v = warp_merge(v);
  }
  return v;
}

using cuda::block_sum2;

__device__ __forceinline__ float inv_sqrt(float v) { return 1.0f / sqrtf(v); }
__device__ __forceinline__ double inv_sqrt(double v) { return 1.0 / sqrt(v); }

// ---- forward ------------------------------------------------------------------------------------

template <typename T>
__global__ void stats_partial_kernel(const T* __restrict__ x, T* __restrict__ part_mean,
                                     T* __restrict__ part_m2, int64_t M, int64_t chunks,
                                     int64_t total_blocks) {
  __shared__ T shm[96];
  for (int64_t blk = blockIdx.x; blk < total_blocks; blk += gridDim.x) {
    const int64_t ng = blk / chunks;
    const int64_t begin = (blk - ng * chunks) * kChunk;
    const int64_t end = min(begin + kChunk, M);
    const T* xg = x + ng * M;
    const T shift = xg[0];
    Welford<T> w{T(0), T(0), T(0)};
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const T d = xg[i] - shift;
      w.n += T(1);
      const T delta = d - w.mean;
      w.mean += delta / w.n;
      w.m2 += delta * (d - w.mean);
    }
    w = block_merge(w, shm);
    if (threadIdx.x == 0) {
      part_mean[blk] = w.mean;
      part_m2[blk] = w.m2;
    }
  }
}

template <typename T>
__global__ void stats_final_kernel(const T* __restrict__ x, const T* __restrict__ part_mean,
                                   const T* __restrict__ part_m2, T* __restrict__ mean,
                                   T* __restrict__ rstd, T* __restrict__ mshift, int64_t M,
                                   int64_t chunks, int64_t NG, T eps) {
  __shared__ T shm[96];
  for (int64_t ng = blockIdx.x; ng < NG; ng += gridDim.x) {
    Welford<T> w{T(0), T(0), T(0)};
    for (int64_t k = threadIdx.x; k < chunks; k += blockDim.x) {
      const T count = T(min(kChunk, M - k * kChunk));
      w = merge(w, Welford<T>{count, part_mean[ng * chunks + k], part_m2[ng * chunks + k]});
    }
    w = block_merge(w, shm);
    if (threadIdx.x == 0) {
      const T var = max(w.m2 / T(M), T(0));
      mean[ng] = x[ng * M] + w.mean;
      rstd[ng] = inv_sqrt(var + eps);
      mshift[ng] = w.mean;
    }
  }
}

template <typename T>
__global__ void apply_kernel(const T* __restrict__ x, const T* __restrict__ gamma,
                             const T* __restrict__ beta, const T* __restrict__ rstd,
                             const T* __restrict__ mshift, T* __restrict__ y, int64_t C, int64_t G,
                             int64_t D, int64_t HxW, int64_t chunks, int64_t total_blocks) {
  const int64_t M = D * HxW;
  for (int64_t blk = blockIdx.x; blk < total_blocks; blk += gridDim.x) {
    const int64_t plane = blk / chunks;
    const int64_t begin = (blk - plane * chunks) * kChunk;
    const int64_t end = min(begin + kChunk, HxW);
    const int64_t n = plane / C, c = plane - n * C;
    const int64_t ng = n * G + c / D;
    const T shift = x[ng * M];
    const T m = mshift[ng];
    const T a = rstd[ng] * (gamma ? gamma[c] : T(1));
    const T b = beta ? beta[c] : T(0);
    const T* xp = x + plane * HxW;
    T* yp = y + plane * HxW;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      yp[i] = ((xp[i] - shift) - m) * a + b;
    }
  }
}

// ---- backward -----------------------------------------------------------------------------------

template <typename T>
__global__ void backward_partials_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                         const T* __restrict__ mean, T* __restrict__ part_dy,
                                         T* __restrict__ part_dyx, int64_t C, int64_t G, int64_t D,
                                         int64_t HxW, int64_t chunks, int64_t total_blocks) {
  __shared__ T shm[64];
  for (int64_t blk = blockIdx.x; blk < total_blocks; blk += gridDim.x) {
    const int64_t plane = blk / chunks;
    const int64_t begin = (blk - plane * chunks) * kChunk;
    const int64_t end = min(begin + kChunk, HxW);
    const int64_t n = plane / C, c = plane - n * C;
    const T mu = mean[n * G + c / D];
    const T* dyp = dy + plane * HxW;
    const T* xp = x + plane * HxW;
    T a1 = 0, a2 = 0;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const T g = dyp[i];
      a1 += g;
      a2 += g * (xp[i] - mu);
    }
    block_sum2(a1, a2, shm);
    if (threadIdx.x == 0) {
      part_dy[blk] = a1;
      part_dyx[blk] = a2;
    }
  }
}

template <typename T>
__global__ void backward_group_kernel(const T* __restrict__ part_dy, const T* __restrict__ part_dyx,
                                      const T* __restrict__ gamma, const T* __restrict__ rstd,
                                      T* __restrict__ sdy, T* __restrict__ sdyx,
                                      T* __restrict__ coef, int64_t C, int64_t G, int64_t D,
                                      int64_t M, int64_t chunks, int64_t NG) {
  __shared__ T shm[64];
  for (int64_t ng = blockIdx.x; ng < NG; ng += gridDim.x) {
    const int64_t n = ng / G, g = ng - n * G;
    T a1 = 0, a2 = 0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      const int64_t c = g * D + d;
      const int64_t nc = n * C + c;
      T s1 = 0, s2 = 0;
      for (int64_t k = 0; k < chunks; ++k) {
        s1 += part_dy[nc * chunks + k];
        s2 += part_dyx[nc * chunks + k];
      }
      sdy[nc] = s1;
      sdyx[nc] = s2;
      const T gam = gamma ? gamma[c] : T(1);
      a1 += gam * s1;
      a2 += gam * s2;
    }
    block_sum2(a1, a2, shm);
    if (threadIdx.x == 0) {
      coef[2 * ng] = a1 / T(M);                 // mean of g = dy * gamma
      coef[2 * ng + 1] = rstd[ng] * a2 / T(M);  // mean of g * xhat
    }
  }
}

template <typename T>
__global__ void backward_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                   const T* __restrict__ mean, const T* __restrict__ rstd,
                                   const T* __restrict__ gamma, const T* __restrict__ coef,
                                   T* __restrict__ dx, int64_t C, int64_t G, int64_t D, int64_t HxW,
                                   int64_t chunks, int64_t total_blocks) {
  for (int64_t blk = blockIdx.x; blk < total_blocks; blk += gridDim.x) {
    const int64_t plane = blk / chunks;
    const int64_t begin = (blk - plane * chunks) * kChunk;
    const int64_t end = min(begin + kChunk, HxW);
    const int64_t n = plane / C, c = plane - n * C;
    const int64_t ng = n * G + c / D;
    const T r = rstd[ng], mu = mean[ng];
    const T a = r * (gamma ? gamma[c] : T(1));
    const T b = r * coef[2 * ng];
    const T k = r * r * coef[2 * ng + 1];
    const T* dyp = dy + plane * HxW;
    const T* xp = x + plane * HxW;
    T* dxp = dx + plane * HxW;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      dxp[i] = a * dyp[i] - b - (xp[i] - mu) * k;
    }
  }
}

template <typename T>
__global__ void backward_params_kernel(const T* __restrict__ sdy, const T* __restrict__ sdyx,
                                       const T* __restrict__ rstd, T* __restrict__ dgamma,
                                       T* __restrict__ dbeta, int64_t N, int64_t C, int64_t G,
                                       int64_t D) {
  __shared__ T shm[64];
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    const int64_t g = c / D;
    T a1 = 0, a2 = 0;
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
      a1 += rstd[n * G + g] * sdyx[n * C + c];
      a2 += sdy[n * C + c];
    }
    block_sum2(a1, a2, shm);
    if (threadIdx.x == 0) {
      if (dgamma) dgamma[c] = a1;
      if (dbeta) dbeta[c] = a2;
    }
  }
}

}  // namespace

template <typename T>
void group_norm_forward_cuda(const GroupNormParams& p, const T* x, const T* gamma, const T* beta,
                             T* y, T* mean, T* rstd, T* workspace, cudaStream_t stream) {
  const int64_t NG = p.N * p.G, M = p.M();
  if (NG == 0 || M == 0) return;
  const int64_t group_chunks = group_norm_chunks(M);
  T* part_mean = workspace;
  T* part_m2 = part_mean + NG * group_chunks;
  T* mshift = part_m2 + NG * group_chunks;
  stats_partial_kernel<T><<<grid_of(NG * group_chunks), kThreads, 0, stream>>>(
      x, part_mean, part_m2, M, group_chunks, NG * group_chunks);
  TG_CUDA_CHECK_LAUNCH();
  stats_final_kernel<T><<<grid_of(NG), kSmallThreads, 0, stream>>>(
      x, part_mean, part_m2, mean, rstd, mshift, M, group_chunks, NG, T(p.eps));
  TG_CUDA_CHECK_LAUNCH();
  const int64_t plane_chunks = group_norm_chunks(p.HxW);
  const int64_t total = p.N * p.C * plane_chunks;
  apply_kernel<T><<<grid_of(total), kThreads, 0, stream>>>(x, gamma, beta, rstd, mshift, y, p.C,
                                                           p.G, p.D(), p.HxW, plane_chunks, total);
  TG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void group_norm_backward_cuda(const GroupNormParams& p, const T* dy, const T* x, const T* mean,
                              const T* rstd, const T* gamma, T* dx, T* dgamma, T* dbeta,
                              T* workspace, cudaStream_t stream) {
  if (!dx && !dgamma && !dbeta) return;
  const int64_t NC = p.N * p.C, NG = p.N * p.G;
  if (NC == 0 || p.HxW == 0) return;
  const int64_t chunks = group_norm_chunks(p.HxW);
  const int64_t total = NC * chunks;
  T* part_dy = workspace;
  T* part_dyx = part_dy + total;
  T* sdy = part_dyx + total;
  T* sdyx = sdy + NC;
  T* coef = sdyx + NC;
  backward_partials_kernel<T><<<grid_of(total), kThreads, 0, stream>>>(
      dy, x, mean, part_dy, part_dyx, p.C, p.G, p.D(), p.HxW, chunks, total);
  TG_CUDA_CHECK_LAUNCH();
  backward_group_kernel<T><<<grid_of(NG), kSmallThreads, 0, stream>>>(
      part_dy, part_dyx, gamma, rstd, sdy, sdyx, coef, p.C, p.G, p.D(), p.M(), chunks, NG);
  TG_CUDA_CHECK_LAUNCH();
  if (dx) {
    backward_dx_kernel<T><<<grid_of(total), kThreads, 0, stream>>>(
        dy, x, mean, rstd, gamma, coef, dx, p.C, p.G, p.D(), p.HxW, chunks, total);
    TG_CUDA_CHECK_LAUNCH();
  }
  if (dgamma || dbeta) {
    backward_params_kernel<T><<<grid_of(p.C), kThreads, 0, stream>>>(sdy, sdyx, rstd, dgamma, dbeta,
                                                                     p.N, p.C, p.G, p.D());
    TG_CUDA_CHECK_LAUNCH();
  }
}

template void group_norm_forward_cuda<float>(const GroupNormParams&, const float*, const float*,
                                             const float*, float*, float*, float*, float*,
                                             cudaStream_t);
template void group_norm_forward_cuda<double>(const GroupNormParams&, const double*, const double*,
                                              const double*, double*, double*, double*, double*,
                                              cudaStream_t);
template void group_norm_backward_cuda<float>(const GroupNormParams&, const float*, const float*,
                                              const float*, const float*, const float*, float*,
                                              float*, float*, float*, cudaStream_t);
template void group_norm_backward_cuda<double>(const GroupNormParams&, const double*, const double*,
                                               const double*, const double*, const double*, double*,
                                               double*, double*, double*, cudaStream_t);

}  // namespace tg::ops::detail
