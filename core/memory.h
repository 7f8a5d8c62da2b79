// Storage and allocation: 64-byte aligned host memory, pinned host memory, and a caching CUDA allocator.
//
// The CUDA allocator keeps freed blocks in a free list keyed by their (rounded) size and hands them out
// again; it calls cudaMalloc only on a miss, and on an out-of-memory first frees its cache and retries.
// All device work runs on one stream per device, so a block freed by the host may be reused by the next
// launch in stream order without synchronising (the same rule as PyTorch's allocator).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "dtype.h"
#include "error.h"

namespace tg {

/// A block of memory on one device, shared by every Tensor that views it. It carries the version
/// counter that autograd uses to detect in-place changes of saved tensors.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device = Device::CPU;
  bool pinned = false;
  uint64_t version = 0;
  bool owned = true;  ///< false: borrowed memory (Tensor::from_external), never freed
  void (*external_free)(void*) = nullptr;  ///< set: data from an ExternalAllocatorGuard

  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

/// Allocates nbytes on device (pinned page-locked host memory when pinned is set and CUDA is
/// built). A request that cannot be served (more than PTRDIFF_MAX bytes, or the host or device is
/// out of memory) throws tg::Error naming the bytes asked for and, when given, the tensor's shape.
std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device device, bool pinned = false,
                                          const Shape* shape = nullptr);

namespace cuda {

/// While the guard lives, this thread's CUDA storage comes from allocate (and goes back to free, even
/// after the guard is gone) instead of tapegrad's caching allocator: a host framework passes its own
/// (tapegrad_torch: PyTorch's caching allocator, so that blocks follow PyTorch's streams). Nests.
class ExternalAllocatorGuard {
 public:
  ExternalAllocatorGuard(void* (*allocate)(size_t), void (*free)(void*));
  ~ExternalAllocatorGuard();
  ExternalAllocatorGuard(const ExternalAllocatorGuard&) = delete;
  ExternalAllocatorGuard& operator=(const ExternalAllocatorGuard&) = delete;

 private:
  void* (*prev_allocate_)(size_t);
  void (*prev_free_)(void*);
};

struct MemoryStats {
  size_t bytes_in_use = 0;     ///< bytes handed out to live tensors (rounded block sizes)
  size_t peak_bytes = 0;       ///< maximum of bytes_in_use since the last reset_peak_memory()
  size_t bytes_reserved = 0;   ///< bytes obtained from cudaMalloc (in use + cached)
  uint64_t cuda_mallocs = 0;   ///< number of cudaMalloc calls
  uint64_t cache_hits = 0;     ///< allocations served from the cache
};

/// Counters of the caching allocator of the current device (all zero in a build without CUDA).
MemoryStats memory_stats();
void reset_peak_memory();
/// Returns every cached, unused block to the driver.
void empty_cache();

}  // namespace cuda
}  // namespace tg
