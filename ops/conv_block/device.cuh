// Device helpers shared by the fused block's kernels (ops/conv_block/*.cu): the sigmoid, cp.async
// copies into shared memory and TF32 tensor-core MMA. Compiled by nvcc and by NVRTC (no host
// headers there).
#pragma once

#ifdef __CUDACC_RTC__
using uint32_t = unsigned int;
#else
#include <cstdint>
#endif

namespace tg::ops::detail {

__device__ __forceinline__ float sigmoidf(float u) { return __fdividef(1.0f, 1.0f + __expf(-u)); }


// Starts copying the input tile (Cin x IH x IW, zero outside the image) of sample n at (iy0, ix0)
// into shared memory with cp.async (no registers, no wait): the kernels issue the next tile's copy
// before computing on the current one, so the loads' latency hides behind the arithmetic.
__device__ __forceinline__ void cp_async4(float* dst, const float* src, bool valid) {
  const unsigned d = unsigned(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace tg::ops::detail
