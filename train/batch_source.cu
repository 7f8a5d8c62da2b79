// The CUDA batch sources' kernels: the device-resident gather (dst row i = src row rows[i]), as
// bytes or widening 16-bit rows, the widening of a streamed half-width batch, and a test hook.
// Gather thread mapping: blockIdx.y walks the rows, blockIdx.x and the threads the words (elements)
// of a row; byte copies use 16-byte words when rows and pointers allow it, else 4-byte words (every
// dtype's size divides a row). Widening is exact: cvt.f32.f16 for float16 (subnormals included),
// a shift for bfloat16.
#include <cuda_fp16.h>

#include "../core/cuda_utils.h"
#include "batch_source_cuda.h"

namespace tg::train::detail {
namespace {

template <typename Word>
__global__ void gather_rows_kernel(Word* dst, const Word* src, const int64_t* rows, int64_t n,
                                   int64_t row_words) {
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const Word* from = src + rows[i] * row_words;
    Word* to = dst + i * row_words;
    for (int64_t w = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; w < row_words;
         w += int64_t(gridDim.x) * blockDim.x)
      to[w] = from[w];
  }
}

__device__ __forceinline__ float widen(uint16_t h, bool f16) {
  return f16 ? __half2float(__ushort_as_half(h)) : __uint_as_float(uint32_t(h) << 16);
}

template <typename Out>
__global__ void gather_widen_kernel(Out* dst, const uint16_t* src, const int64_t* rows, int64_t n,
                                    int64_t row_elems, bool f16) {
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const uint16_t* from = src + rows[i] * row_elems;
    Out* to = dst + i * row_elems;
    for (int64_t w = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; w < row_elems;
         w += int64_t(gridDim.x) * blockDim.x)
      to[w] = Out(widen(from[w], f16));
  }
}

template <typename Out>
__global__ void widen_kernel(Out* dst, const uint16_t* src, int64_t n, bool f16) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = Out(widen(src[i], f16));
}

__global__ void spin_kernel(unsigned long long ns) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}

}  // namespace

void gather_rows_cuda(void* dst, const void* src, const int64_t* rows, int64_t n,
                      size_t row_bytes) {
  if (n == 0 || row_bytes == 0) return;
  const bool wide = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(src) % 16 == 0;
  const int64_t words = int64_t(row_bytes / (wide ? 16 : 4));
  const int threads = 256;
  const dim3 grid(unsigned(std::min<int64_t>((words + threads - 1) / threads, 64)),
                  unsigned(std::min<int64_t>(n, 65535)));
  if (wide)
    gather_rows_kernel<<<grid, threads, 0, cuda::stream()>>>(
        static_cast<uint4*>(dst), static_cast<const uint4*>(src), rows, n, words);
  else
    gather_rows_kernel<<<grid, threads, 0, cuda::stream()>>>(
        static_cast<uint32_t*>(dst), static_cast<const uint32_t*>(src), rows, n, words);
  TG_CUDA_CHECK_LAUNCH();
}

void gather_widen_rows_cuda(void* dst, DType dtype, const uint16_t* src, io::ElementType type,
                            const int64_t* rows, int64_t n, int64_t row_elems) {
  if (n == 0 || row_elems == 0) return;
  const int threads = 256;
  const dim3 grid(unsigned(std::min<int64_t>((row_elems + threads - 1) / threads, 64)),
                  unsigned(std::min<int64_t>(n, 65535)));
  const bool f16 = type == io::ElementType::Float16;
  if (dtype == DType::Float32)
    gather_widen_kernel<<<grid, threads, 0, cuda::stream()>>>(static_cast<float*>(dst), src, rows,
                                                              n, row_elems, f16);
  else
    gather_widen_kernel<<<grid, threads, 0, cuda::stream()>>>(static_cast<double*>(dst), src, rows,
                                                              n, row_elems, f16);
  TG_CUDA_CHECK_LAUNCH();
}

void widen_half_cuda(void* dst, DType dtype, const uint16_t* src, io::ElementType type, int64_t n,
                     cudaStream_t stream) {
  if (n == 0) return;
  const int threads = 256;
  const unsigned blocks = unsigned(std::min<int64_t>((n + threads - 1) / threads, 4096));
  const bool f16 = type == io::ElementType::Float16;
  if (dtype == DType::Float32)
    widen_kernel<<<blocks, threads, 0, stream>>>(static_cast<float*>(dst), src, n, f16);
  else
    widen_kernel<<<blocks, threads, 0, stream>>>(static_cast<double*>(dst), src, n, f16);
  TG_CUDA_CHECK_LAUNCH();
}

void spin_stream_cuda(double ms) {
  spin_kernel<<<1, 1, 0, cuda::stream()>>>((unsigned long long)(ms * 1e6));
  TG_CUDA_CHECK_LAUNCH();
}

}  // namespace tg::train::detail
