// The CUDA kernel of ops/pointwise.h: one grid-stride loop, one thread per output element, that
// evaluates apply_pointwise (the op is a kernel argument, uniform across the grid, so the switch
// costs a predictable branch and the file compiles to two kernels, float and double).
#include "../core/cuda_utils.h"
#include "pointwise.h"

namespace tg::ops::detail {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void pointwise_kernel(PointwiseOp op, T* __restrict__ out, const T* a, const T* b,
                                 const T* c, PointwiseParams p) {
  const T s0 = T(p.s0), s1 = T(p.s1);
  const T* in[3] = {a, b, c};
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off_out = i;
    int64_t off[3] = {i, i, i};
    if (p.flat) {
      for (int k = 0; k < 3; ++k)
        if (p.in_single[k]) off[k] = 0;
    } else {
      // Coordinates of i in the index space, last dimension fastest.
      off_out = 0;
      off[0] = off[1] = off[2] = 0;
      int64_t rest = i;
      for (int d = p.ndim - 1; d >= 0; --d) {
        const int64_t x = rest % p.shape[d];
        rest /= p.shape[d];
        off_out += x * p.out_stride[d];
        for (int k = 0; k < 3; ++k) off[k] += x * p.in_stride[k][d];
      }
    }
    T v[3];
    for (int k = 0; k < 3; ++k) v[k] = in[k] ? in[k][off[k]] : T(0);
    out[off_out] = apply_pointwise<T>(op, v[0], v[1], v[2], s0, s1);
  }
}

}  // namespace

template <typename T>
void pointwise_cuda(PointwiseOp op, T* out, const T* a, const T* b, const T* c,
                    const PointwiseParams& p, cudaStream_t stream) {
  pointwise_kernel<T><<<tg::cuda::grid_for(p.n, kThreads), kThreads, 0, stream>>>(op, out, a, b, c,
                                                                                 p);
  TG_CUDA_CHECK_LAUNCH();
}

template void pointwise_cuda<float>(PointwiseOp, float*, const float*, const float*, const float*,
                                    const PointwiseParams&, cudaStream_t);
template void pointwise_cuda<double>(PointwiseOp, double*, const double*, const double*,
                                     const double*, const PointwiseParams&, cudaStream_t);

}  // namespace tg::ops::detail
