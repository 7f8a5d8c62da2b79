// conv2d bias gradient: db[c] = sum over (n, s) of dy[n, c, s], s over the Hout*Wout positions.
//
// Deterministic two-stage reduction (no atomics), the same bits on every run and every GPU:
//   stage 1: grid (P, C'), block 256; block (p, c) sums chunk p of channel c's M = N*HW elements
//            (consecutive threads read consecutive elements) into partials[c * P + p];
//   stage 2: one block per channel sums its P partials in a fixed tree.
// P depends on M only (conv2d_bias_grad_partials). Channels beyond the grid's y size loop.
#include "../core/cuda_utils.h"
#include "conv2d.h"

namespace tg::ops {
namespace {

constexpr int kThreads = 256;

// Tree sum of one value per thread over a block of kThreads threads; the result is in thread 0.
template <typename T>
__device__ T block_sum(T v) {
  __shared__ T buf[kThreads];
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half) buf[threadIdx.x] += buf[threadIdx.x + half];
    __syncthreads();
  }
  T r = buf[0];
  __syncthreads();  // buf is reused by the next call
  return r;
}

template <typename T>
__global__ void bias_grad_partial_kernel(const T* __restrict__ dy, T* __restrict__ partials,
                                         int64_t N, int64_t C, int64_t HW, int64_t P) {
  const int64_t M = N * HW;
  const int64_t chunk = (M + P - 1) / P;
  const int64_t p = blockIdx.x;
  const int64_t begin = p * chunk;
  const int64_t end = begin + chunk < M ? begin + chunk : M;
  for (int64_t c = blockIdx.y; c < C; c += gridDim.y) {
    T acc = T(0);
    for (int64_t j = begin + threadIdx.x; j < end; j += kThreads) {
      // element j of channel c: sample n = j / HW, position s = j % HW
      const int64_t n = j / HW;
      acc += dy[(n * C + c) * HW + (j - n * HW)];
    }
    const T total = block_sum(acc);
    if (threadIdx.x == 0) partials[c * P + p] = total;
  }
}

template <typename T>
__global__ void bias_grad_final_kernel(const T* __restrict__ partials, T* __restrict__ db,
                                       int64_t C, int64_t P) {
  for (int64_t c = blockIdx.x; c < C; c += gridDim.x) {
    T acc = T(0);
    for (int64_t p = threadIdx.x; p < P; p += kThreads) acc += partials[c * P + p];
    const T total = block_sum(acc);
    if (threadIdx.x == 0) db[c] = total;
  }
}

}  // namespace

namespace detail {

template <typename T>
void conv2d_bias_grad_cuda(const T* dy, T* db, T* partials, int64_t N, int64_t C, int64_t HW,
                           cudaStream_t stream) {
  const int64_t P = conv2d_bias_grad_partials(N * HW);
  const unsigned cy = unsigned(C < 65535 ? C : 65535);
  bias_grad_partial_kernel<T>
      <<<dim3(unsigned(P), cy), kThreads, 0, stream>>>(dy, partials, N, C, HW, P);
  TG_CUDA_CHECK_LAUNCH();
  const unsigned cx = unsigned(C < 65535 ? C : 65535);
  bias_grad_final_kernel<T><<<cx, kThreads, 0, stream>>>(partials, db, C, P);
  TG_CUDA_CHECK_LAUNCH();
}

template void conv2d_bias_grad_cuda<float>(const float*, float*, float*, int64_t, int64_t, int64_t,
                                           cudaStream_t);
template void conv2d_bias_grad_cuda<double>(const double*, double*, double*, int64_t, int64_t,
                                            int64_t, cudaStream_t);

}  // namespace detail
}  // namespace tg::ops
