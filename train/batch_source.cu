// The device-resident batch source's gather (dst row i = src row rows[i]) and a test hook.
// Thread mapping: blockIdx.y walks the rows, blockIdx.x and the threads the words of a row; 16-byte
// words when rows and pointers allow it, else 4-byte words (every dtype's size divides a row).
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

__global__ void spin_kernel(unsigned long long ns) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}

}  // namespace

void gather_rows_cuda(void* dst, const void* src, const int64_t* rows, int64_t n, size_t row_bytes) {
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

void spin_stream_cuda(double ms) {
  spin_kernel<<<1, 1, 0, cuda::stream()>>>((unsigned long long)(ms * 1e6));
  TG_CUDA_CHECK_LAUNCH();
}

}  // namespace tg::train::detail
