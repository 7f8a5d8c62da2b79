// CUDA kernels of ops/elementwise.h (formulas and layouts there).
//
// Elementwise kernels: grid-stride loops, one thread per element, 256 threads per block.
// Reductions are deterministic: stage 1 has a fixed number of blocks (chosen from the sizes only)
// that each write one double partial; stage 2 sums a group of partials in one block in a fixed
// order. All accumulation is in double, for float32 as well.
#include "../core/cuda_reduce.cuh"
#include "../core/cuda_utils.h"
#include "elementwise.h"

namespace tg::ops::detail {
namespace {

constexpr int kThreads = 256;  // every kernel here, and block_sum, assume this block size

__device__ __forceinline__ int64_t global_index() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

__device__ __forceinline__ float exp_of(float x) { return expf(x); }
__device__ __forceinline__ double exp_of(double x) { return exp(x); }

// Sum of v over the block (all kThreads threads call it); valid in thread 0; fixed order.
__device__ double block_sum(double v) {
  __shared__ double scratch[32];
  return cuda::block_sum(v, scratch);
}

template <typename T>
struct AddOp {
  __device__ T operator()(T a, T b) const { return a + b; }
};
template <typename T>
struct SubOp {
  __device__ T operator()(T a, T b) const { return a - b; }
};
template <typename T>
struct MulOp {
  __device__ T operator()(T a, T b) const { return a * b; }
};

template <typename T, typename F>
__global__ void binary_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                              BinaryParams p, F f) {
  const bool broadcast = p.a_per_channel || p.b_per_channel;
  for (int64_t i = global_index(); i < p.n; i += grid_stride()) {
    const int64_t c = broadcast ? (i / p.HxW) % p.C : 0;
    out[i] = f(a[p.a_per_channel ? c : i], b[p.b_per_channel ? c : i]);
  }
}

template <typename T>
__global__ void affine_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t n, T alpha,
                              T beta) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) out[i] = alpha * x[i] + beta;
}

template <typename T>
__global__ void sigmoid_forward_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t n) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) {
    const T v = x[i];
    // Never exponentiates a positive number, so nothing overflows.
    if (v >= T(0)) {
      out[i] = T(1) / (T(1) + exp_of(-v));
    } else {
      const T e = exp_of(v);
      out[i] = e / (T(1) + e);
    }
  }
}

template <typename T>
__global__ void sigmoid_backward_kernel(const T* __restrict__ y, const T* __restrict__ dy,
                                        T* __restrict__ dx, int64_t n) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) dx[i] = dy[i] * y[i] * (T(1) - y[i]);
}

template <typename T>
__global__ void square_backward_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                       T* __restrict__ dx, int64_t n) {
  for (int64_t i = global_index(); i < n; i += grid_stride()) dx[i] = T(2) * x[i] * dy[i];
}

template <typename T>
__global__ void fill_scaled_kernel(const T* __restrict__ g, T* __restrict__ out, int64_t n,
                                   double scale) {
  const T v = T(scale * double(g[0]));
  for (int64_t i = global_index(); i < n; i += grid_stride()) out[i] = v;
}

// Stage 1 of a full sum: block b sums x[b * kThreads + t + k * gridDim.x * kThreads] over k, t.
template <typename T>
__global__ void sum_partials_kernel(const T* __restrict__ x, int64_t n,
                                    double* __restrict__ partials) {
  double acc = 0.0;
  for (int64_t i = global_index(); i < n; i += grid_stride()) acc += double(x[i]);
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Stage 1 of a per-channel sum: block c * chunks + k sums the elements
// j = k * kThreads + t + m * chunks * kThreads (m = 0, 1, ...) of channel c, where j = n * HxW + hw
// runs over the channel's N * HxW elements.
template <typename T>
__global__ void channel_partials_kernel(const T* __restrict__ g, const T* __restrict__ other,
                                        int64_t C, int64_t HxW, int64_t per_channel, int64_t chunks,
                                        double* __restrict__ partials) {
  const int64_t c = int64_t(blockIdx.x) / chunks;
  const int64_t k = int64_t(blockIdx.x) - c * chunks;
  double acc = 0.0;
  for (int64_t j = k * kThreads + threadIdx.x; j < per_channel; j += chunks * kThreads) {
    const int64_t n = j / HxW;
    const int64_t idx = (n * C + c) * HxW + (j - n * HxW);
    acc += other ? double(g[idx]) * double(other[idx]) : double(g[idx]);
  }
  acc = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// Stage 2: block b sums partials[b * count, (b + 1) * count) and writes out[b] = scale * sum.
template <typename T>
__global__ void finish_sums_kernel(const double* __restrict__ partials, int64_t count, double scale,
                                   T* __restrict__ out) {
  const double* p = partials + int64_t(blockIdx.x) * count;
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) acc += p[i];
  acc = block_sum(acc);
  if (threadIdx.x == 0) out[blockIdx.x] = T(scale * acc);
}

}  // namespace

template <typename T>
void binary_cuda(BinaryOp op, const T* a, const T* b, T* out, const BinaryParams& p,
                 cudaStream_t stream) {
  const unsigned grid = tg::cuda::grid_for(p.n, kThreads);
  switch (op) {
    case BinaryOp::Add:
      binary_kernel<<<grid, kThreads, 0, stream>>>(a, b, out, p, AddOp<T>{});
      break;
    case BinaryOp::Sub:
      binary_kernel<<<grid, kThreads, 0, stream>>>(a, b, out, p, SubOp<T>{});
      break;
    case BinaryOp::Mul:
      binary_kernel<<<grid, kThreads, 0, stream>>>(a, b, out, p, MulOp<T>{});
      break;
  }
  TG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void affine_cuda(const T* x, T* out, int64_t n, double alpha, double beta, cudaStream_t stream) {
  affine_kernel<<<tg::cuda::grid_for(n, kThreads), kThreads, 0, stream>>>(x, out, n, T(alpha),
                                                                          T(beta));
  TG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void sigmoid_forward_cuda(const T* x, T* out, int64_t n, cudaStream_t stream) {
  sigmoid_forward_kernel<<<tg::cuda::grid_for(n, kThreads), kThreads, 0, stream>>>(x, out, n);
  TG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void sigmoid_backward_cuda(const T* y, const T* dy, T* dx, int64_t n, cudaStream_t stream) {
  sigmoid_backward_kernel<<<tg::cuda::grid_for(n, kThreads), kThreads, 0, stream>>>(y, dy, dx, n);
  TG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void square_backward_cuda(const T* x, const T* dy, T* dx, int64_t n, cudaStream_t stream) {
  square_backward_kernel<<<tg::cuda::grid_for(n, kThreads), kThreads, 0, stream>>>(x, dy, dx, n);
  TG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void sum_cuda(const T* x, T* out, int64_t n, double scale, double* partials, cudaStream_t stream) {
  const int64_t blocks = reduce_blocks(n);
  sum_partials_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(x, n, partials);
  TG_CUDA_CHECK_LAUNCH();
  finish_sums_kernel<<<1, kThreads, 0, stream>>>(partials, blocks, scale, out);
  TG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void fill_scaled_cuda(const T* g, T* out, int64_t n, double scale, cudaStream_t stream) {
  fill_scaled_kernel<<<tg::cuda::grid_for(n, kThreads), kThreads, 0, stream>>>(g, out, n, scale);
  TG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void channel_sum_cuda(const T* g, const T* other, T* out, int64_t N, int64_t C, int64_t HxW,
                      double scale, double* partials, cudaStream_t stream) {
  const int64_t per_channel = N * HxW;
  const int64_t chunks = channel_reduce_chunks(C, per_channel);
  channel_partials_kernel<<<unsigned(C * chunks), kThreads, 0, stream>>>(
      g, other, C, HxW, per_channel, chunks, partials);
  TG_CUDA_CHECK_LAUNCH();
  finish_sums_kernel<<<unsigned(C), kThreads, 0, stream>>>(partials, chunks, scale, out);
  TG_CUDA_CHECK_LAUNCH();
}

#define TG_INSTANTIATE_ELEMENTWISE_CUDA(T)                                                     \
  template void binary_cuda<T>(BinaryOp, const T*, const T*, T*, const BinaryParams&,          \
                               cudaStream_t);                                                  \
  template void affine_cuda<T>(const T*, T*, int64_t, double, double, cudaStream_t);           \
  template void sigmoid_forward_cuda<T>(const T*, T*, int64_t, cudaStream_t);                  \
  template void sigmoid_backward_cuda<T>(const T*, const T*, T*, int64_t, cudaStream_t);       \
  template void square_backward_cuda<T>(const T*, const T*, T*, int64_t, cudaStream_t);        \
  template void sum_cuda<T>(const T*, T*, int64_t, double, double*, cudaStream_t);             \
  template void fill_scaled_cuda<T>(const T*, T*, int64_t, double, cudaStream_t);              \
  template void channel_sum_cuda<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, double, \
                                    double*, cudaStream_t);
TG_INSTANTIATE_ELEMENTWISE_CUDA(float)
TG_INSTANTIATE_ELEMENTWISE_CUDA(double)
#undef TG_INSTANTIATE_ELEMENTWISE_CUDA

}  // namespace tg::ops::detail
