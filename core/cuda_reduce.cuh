// Deterministic warp and block sums for kernels: a fixed order of additions, so the same inputs give
// the same bits on every run (no atomics). Include from .cu files only.
#pragma once

namespace tg::cuda {

/// Sum of v over the warp; the total is in lane 0.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

/// Sums each of v[0..NV) over the block (blockDim.x a multiple of 32); the totals are in thread 0.
/// scratch: 32 * NV values of shared memory. Syncs before reusing scratch, so a kernel may call it
/// repeatedly; every thread of the block must call it.
template <int NV, typename T>
__device__ void block_sum(T (&v)[NV], T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int k = 0; k < NV; ++k) v[k] = warp_sum(v[k]);
  __syncthreads();
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < NV; ++k) scratch[warp * NV + k] = v[k];
  __syncthreads();
  if (warp == 0)
#pragma unroll
    for (int k = 0; k < NV; ++k) v[k] = warp_sum(lane < nwarps ? scratch[lane * NV + k] : T(0));
}

/// One value: the block's total in thread 0. scratch: 32 values.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
  T a[1] = {v};
  block_sum<1>(a, scratch);
  return a[0];
}

/// Two values at once (a and b): totals in thread 0. scratch: 64 values.
template <typename T>
__device__ void block_sum2(T& a, T& b, T* scratch) {
  T v[2] = {a, b};
  block_sum<2>(v, scratch);
  a = v[0];
  b = v[1];
}

}  // namespace tg::cuda
