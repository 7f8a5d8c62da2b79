// Device discovery for builds without CUDA: there is never a GPU.
#ifndef TG_WITH_CUDA
#include "cuda_context.h"
#include "error.h"
#include "memory.h"

namespace tg::cuda {
bool is_available() { return false; }
int device_count() { return 0; }
void set_device(int index) {
  TG_THROW("cuda::set_device(", index, "): this build of tapegrad has no CUDA support");
}
int current_device() { return 0; }
void synchronize() {}
StreamGuard::StreamGuard(void* stream) : prev_stream_(stream), prev_device_(-1) {}
StreamGuard::~StreamGuard() = default;
MemoryStats memory_stats() { return {}; }
void reset_peak_memory() {}
void empty_cache() {}
}  // namespace tg::cuda
#endif
