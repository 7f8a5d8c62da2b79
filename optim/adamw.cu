// The CUDA side of AdamW: one launch updates up to kAdamWTensorsPerLaunch tensors (multi-tensor
// apply, descriptors in the kernel arguments). Thread mapping as optim/sgd.cu: one 256-thread block
// per 4096-element chunk (grid-stride over chunks), the tensor found by binary search on chunk_begin,
// threads striding through the chunk, coalesced. Each element is updated by adamw_update_element,
// the code of the CPU loop.
#include <algorithm>

#include "../core/cuda_utils.h"
#include "adamw.h"

namespace tg::optim::detail {
namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ void adamw_chunk(const AdamWTensorDesc& d, int64_t begin, int64_t end,
                            const AdamWOptions& o) {
  T* p = static_cast<T*>(d.param);
  const T* g = static_cast<const T*>(d.grad);
  T* m = static_cast<T*>(d.exp_avg);
  T* v = static_cast<T*>(d.exp_avg_sq);
  const T decay = T(d.s.decay), omb1 = T(1.0 - o.beta1), b2 = T(o.beta2), omb2 = T(1.0 - o.beta2),
          step = T(d.s.step_size), bc2 = T(d.s.bc2_sqrt), eps = T(o.eps);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    T pi = p[i], mi = m[i], vi = v[i];
    adamw_update_element<T>(pi, g[i], mi, vi, decay, omb1, b2, omb2, step, bc2, eps);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

__global__ void adamw_kernel(AdamWLaunch launch, AdamWOptions o) {
  for (int64_t c = blockIdx.x; c < launch.total_chunks; c += gridDim.x) {
    int lo = 0, hi = launch.num_tensors - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (launch.tensors[mid].chunk_begin <= c) lo = mid;
      else hi = mid - 1;
    }
    const AdamWTensorDesc& d = launch.tensors[lo];
    const int64_t begin = (c - d.chunk_begin) * kAdamWChunk;
    const int64_t end = min(begin + kAdamWChunk, d.numel);
    if (d.is_double) adamw_chunk<double>(d, begin, end, o);
    else adamw_chunk<float>(d, begin, end, o);
  }
}

}  // namespace

void adamw_multi_tensor_step_cuda(const AdamWLaunch& launch, const AdamWOptions& o,
                                  cudaStream_t stream) {
  if (launch.num_tensors <= 0 || launch.total_chunks <= 0) return;
  const int64_t cap = int64_t(tg::cuda::device_properties().multiProcessorCount) * 32;
  adamw_kernel<<<unsigned(std::min(launch.total_chunks, cap)), kThreads, 0, stream>>>(launch, o);
  TG_CUDA_CHECK_LAUNCH();
}

}  // namespace tg::optim::detail
