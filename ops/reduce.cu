// The CUDA reduction of ops/reduce.h over (outer, reduced, inner) index triples (mapping there).
// Sums accumulate in double; maxima in T and propagate NaN. Fixed orders, no atomics.
#include <math_constants.h>

#include "../core/cuda_utils.h"
#include "reduce.h"

namespace tg::ops::detail {
namespace {

constexpr int kThreads = 256;
// Reductions at least this long with inner == 1 get a block per output.
constexpr int64_t kBlockReduceMin = 1024;

struct Acc {
  ReduceOp op;
  __device__ double init() const { return op == ReduceOp::Sum ? 0.0 : -CUDART_INF; }
  __device__ double combine(double acc, double v) const {
    if (op == ReduceOp::Sum) return acc + v;
    if (acc != acc) return acc;  // NaN propagates
    return (v != v || v > acc) ? v : acc;
  }
};

// One thread per output (o, i).
template <typename T>
__global__ void reduce_thread_kernel(ReduceOp op, const T* __restrict__ x, T* __restrict__ out,
                                     int64_t outer, int64_t reduced, int64_t inner, double scale) {
  const Acc acc_op{op};
  for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < outer * inner;
       j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = j / inner, i = j - o * inner;
    const T* base = x + o * reduced * inner + i;
    double acc = acc_op.init();
    for (int64_t r = 0; r < reduced; ++r) acc = acc_op.combine(acc, double(base[r * inner]));
    out[j] = T(op == ReduceOp::Sum ? scale * acc : acc);
  }
}

// One block per output o (inner == 1): strided partials, then a shared-memory tree.
template <typename T>
__global__ void reduce_block_kernel(ReduceOp op, const T* __restrict__ x, T* __restrict__ out,
                                    int64_t reduced, double scale) {
  __shared__ double scratch[kThreads];
  const Acc acc_op{op};
  const T* base = x + int64_t(blockIdx.x) * reduced;
  double acc = acc_op.init();
  for (int64_t r = threadIdx.x; r < reduced; r += kThreads) acc = acc_op.combine(acc, double(base[r]));
  scratch[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s)
      scratch[threadIdx.x] = acc_op.combine(scratch[threadIdx.x], scratch[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = T(op == ReduceOp::Sum ? scale * scratch[0] : scratch[0]);
}

}  // namespace

template <typename T>
void reduce_cuda(ReduceOp op, const T* x, T* out, int64_t outer, int64_t reduced, int64_t inner,
                 double scale, cudaStream_t stream) {
  if (inner == 1 && reduced >= kBlockReduceMin && outer <= int64_t(0x7fffffff)) {
    reduce_block_kernel<T><<<unsigned(outer), kThreads, 0, stream>>>(op, x, out, reduced, scale);
  } else {
    reduce_thread_kernel<T><<<tg::cuda::grid_for(outer * inner, kThreads), kThreads, 0, stream>>>(
        op, x, out, outer, reduced, inner, scale);
  }
  TG_CUDA_CHECK_LAUNCH();
}

template void reduce_cuda<float>(ReduceOp, const float*, float*, int64_t, int64_t, int64_t, double,
                                 cudaStream_t);
template void reduce_cuda<double>(ReduceOp, const double*, double*, int64_t, int64_t, int64_t,
                                  double, cudaStream_t);

}  // namespace tg::ops::detail
